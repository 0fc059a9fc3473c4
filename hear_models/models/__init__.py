"""The model families. Each module owns its network and every checkpoint format of that
family, read by one function::

    load_encoder(path_or_name="", variant=..., seed=0, **options) -> LoadedEncoder

(``""``: the variant with seeded random weights; a path: our exports, our training
checkpoints, the official formats). The HEAR modules (``hear_models.maskspec`` etc.) and
the training objectives both load through it. What the families share is here: the
:class:`LoadedEncoder` record, :func:`read_weights` and :func:`load_strict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence

from torch import Tensor, nn

from ..checkpoints import CheckpointError, torch_load_trusted_weights

__all__ = ["Dims", "LoadedEncoder", "check_fit", "identify", "load_strict", "read_checkpoint", "read_weights",
           "sizes_of", "wrong_family"]


class Dims:
    """What a family's sizes dataclass (``MaskSpecDims`` ...) shares: named variants, and a
    plain dict for checkpoints (``to_dict`` / ``from_dict``, unknown keys refused).

    A subclass is a ``@dataclass`` that sets ``FAMILY`` (named in errors) and ``VARIANTS``
    (name -> field overrides)."""

    FAMILY: ClassVar[str] = ""
    VARIANTS: ClassVar[Dict[str, Dict[str, Any]]] = {}
    EXTRA_HEADS: ClassVar[Dict[int, int]] = {}  # width -> heads of published sizes not in VARIANTS

    @classmethod
    def heads_for(cls, width: int) -> int:
        """Attention heads of a checkpoint of this width (state dicts do not store them):
        the family's sizes, else one head per 64 channels."""
        table = {v["width"]: v["heads"] for v in cls.VARIANTS.values()}
        return {**table, **cls.EXTRA_HEADS}.get(int(width), max(1, int(width) // 64))

    @classmethod
    def variant(cls, name: str, **overrides):
        if name not in cls.VARIANTS:
            raise KeyError(f"unknown {cls.FAMILY} variant {name!r}; known: {', '.join(cls.VARIANTS)}")
        return cls(**{**cls.VARIANTS[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping):
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown {cls.FAMILY} dims {sorted(unknown)}")
        return cls(**dict(d))


@dataclass
class LoadedEncoder:
    """What ``load_encoder`` returns.

    encoder : the family's encoder (eval mode is the caller's choice)
    frontend : its log-mel front-end module where the family keeps one apart (MaskSpec,
        ATST), else None (the conformer's is inside its encoder)
    description : one line naming the weights (file, official or ours, or UNTRAINED)
    meta : what the file says beyond the weights (e.g. ATST's ``chunk_seconds``)
    """

    encoder: nn.Module
    frontend: Optional[nn.Module]
    description: str
    meta: Dict[str, Any] = field(default_factory=dict)


def read_weights(path: str) -> Any:
    """The file's contents, read by :func:`~hear_models.checkpoints.torch_load_trusted_weights`
    (``"packaged:<name>"`` too): tensors and plain data, with ``argparse.Namespace`` (the
    official MAE-style and audiossl files keep their command-line ``args`` in one) and other
    inert types; any other pickled class becomes an inert placeholder, nothing is executed."""
    return torch_load_trusted_weights(path)


# training objective -> the family of its weights (training/objectives.py names them)
_OBJECTIVE_FAMILY = {"maskspec": "maskspec", "atst": "atst", "conformer": "conformer",
                     "whisper_at": "whisper-at heads"}
FAMILY_NAMES = {"maskspec": "MaskSpec", "atst": "ATST", "atst_frame": "ATST-Frame", "conformer": "Conformer SSL",
                "whisper": "Whisper", "whisper-at heads": "Whisper-AT tagging heads"}


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'AEIOU' else 'a'} {noun}"


def identify(obj: Any) -> "tuple[Optional[str], str]":
    """What a loaded checkpoint holds: ``(family or None, description in words)``.

    ``family`` is one of :data:`FAMILY_NAMES`' keys when the file is recognisably of that
    family (our exports, our training checkpoints with their objective, our state dicts,
    the official formats), else None; the words are for error messages ("an official ATST
    (audiossl) checkpoint", "a hear-models training checkpoint of objective
    'atst_pretrain'", "12 tensors of an unknown model (e.g. ...)")."""
    if not isinstance(obj, Mapping):
        return None, f"a {type(obj).__name__}, not a dict of weights"
    fmt = obj.get("format")
    if isinstance(fmt, str):
        fam = fmt.split("/")[0].rsplit(".", 1)[-1] if fmt.startswith("hear_models.") else None
        fam = fam if fam in ("maskspec", "atst", "conformer") else None
        if fam is None and "head" in fmt:
            fam = "whisper-at heads"
        return fam, (f"{_a(FAMILY_NAMES[fam])} export (format {fmt!r})" if fam
                     else f"a file of format {fmt!r}")
    train = obj.get("hear_models")
    if isinstance(train, Mapping):
        objective = str((train.get("config") or {}).get("objective", "?"))
        fam = next((f for p, f in _OBJECTIVE_FAMILY.items() if objective.startswith(p)), None)
        return fam, f"a hear-models training checkpoint of objective {objective!r}"
    if "dims" in obj and "model_state_dict" in obj:
        return "whisper", "a Whisper checkpoint (openai-whisper format)"
    keys = set()
    for part in (obj, obj.get("state_dict"), obj.get("model"), obj.get("teacher")):
        if isinstance(part, Mapping):
            keys |= {k for k, v in part.items() if isinstance(k, str) and isinstance(v, Tensor)}

    def has(name):
        return any(k == name or k.endswith("." + name) for k in keys)

    if has("patch_embed.patch_embed.weight") and has("norm_frame.weight"):
        return "atst_frame", "an official ATST-Frame (audiossl) checkpoint"
    if has("patch_embed.patch_embed.weight"):
        return "atst", "an official ATST (audiossl) checkpoint"
    if has("attn.qkv.weight") and (has("decoder_embed.weight") or has("mask_token")):
        return "maskspec", "an official MaskSpec (models_mae) pretraining checkpoint"
    if has("attn.qkv.weight") and (has("head.weight") or has("fc_norm.weight")):
        return "maskspec", "an official fine-tuned MaskSpec ViT checkpoint"
    if has("context.blocks.0.conv.depthwise_conv.weight") or has("feature_encoder.proj.weight"):
        return "conformer", "Conformer SSL weights"
    if has("attn.query.weight") and has("pos_embed"):
        return "atst", "ATST weights (hear-models key names)"
    if has("attn.query.weight") and has("cls_token"):
        return "maskspec", "MaskSpec weights (hear-models key names)"
    if has("encoder.conv1.weight") and has("decoder.token_embedding.weight"):
        return "whisper", "a Whisper state dict"
    if not keys:
        return None, f"no tensors (top-level keys {sorted(map(str, obj))[:8]})"
    return None, f"{len(keys)} tensors of an unknown model (e.g. {sorted(keys)[:3]})"


def wrong_family(path: str, obj: Any, family: str) -> Optional[CheckpointError]:
    """The error for a file of another family than ``family`` (None when it is not
    recognisably of another one): names the file, what it is, and which loader it needs."""
    fam, words = identify(obj)
    if fam is None or fam == family:
        return None
    return CheckpointError(f"{path}: not {_a(FAMILY_NAMES[family])} checkpoint: it is {words}; "
                           f"load it as {_a(FAMILY_NAMES[fam])} model")


def check_fit(own: Mapping[str, Tensor], sd: Mapping[str, Tensor], what: str,
              allowed_missing: Sequence[str] = (), source: str = "") -> None:
    """Raise a :class:`CheckpointError` when ``sd`` does not fit the state dict ``own``
    (of ``what``): missing keys (other than ``allowed_missing``; prefixes ending in '.'
    match a whole submodule), unexpected keys, mis-shaped keys with the shape found and
    the shape ``own`` declares."""

    def allowed(k):
        return any(k == a or (a.endswith(".") and k.startswith(a)) for a in allowed_missing)

    missing = [k for k in own if k not in sd and not allowed(k)]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} (expected {tuple(own[k].shape)})" for k in sd
              if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        where = f"{source}: " if source else ""

        def some(keys):
            return f"{keys[:10]}{'...' if len(keys) > 10 else ''}"

        raise CheckpointError(
            f"{where}does not fit {what}: missing {some(missing)}, "
            f"unexpected {some(unexpected)}" + (f", mis-shaped {some(shapes)}" if shapes else ""))


def load_strict(model: nn.Module, sd: Mapping[str, Tensor], allowed_missing: Sequence[str] = (),
                source: str = "", what: str = "") -> None:
    """``load_state_dict`` that fails on any unexpected or mis-shaped key and on any missing
    key other than those named (prefixes ending in '.' match a whole submodule).

    Raises
    ------
    CheckpointError
        Naming ``source`` (the file), the model, and the keys: missing, unexpected, and
        mis-shaped ones with the shape found and the shape the model declares
        (:func:`check_fit`); ``what`` names the model (default: its class).
    """
    check_fit(model.state_dict(), sd, what or type(model).__name__, allowed_missing, source)
    model.load_state_dict(dict(sd), strict=False)


def read_checkpoint(path: str, family: str, what: str) -> Dict[str, Any]:
    """:func:`read_weights`, refusing a file that is not a dict or is recognisably another
    family's (``what``: the family's checkpoint in words, for the message)."""
    obj = read_weights(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not {what}: it is {identify(obj)[1]}")
    other = wrong_family(path, obj, family)
    if other is not None:
        raise other
    return obj


def sizes_of(infer_dims, sd: Mapping[str, Tensor], path: str, obj: Any, what: str):
    """``infer_dims(sd)``, its ValueError as a CheckpointError naming the file and what it is."""
    try:
        return infer_dims(sd)
    except ValueError as e:
        raise CheckpointError(f"{path}: not {what} ({e}): it is {identify(obj)[1]}") from None
