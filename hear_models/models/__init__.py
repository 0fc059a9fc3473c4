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

__all__ = ["Dims", "LoadedEncoder", "read_weights", "load_strict"]


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


def load_strict(model: nn.Module, sd: Mapping[str, Tensor], allowed_missing: Sequence[str] = (),
                source: str = "") -> None:
    """``load_state_dict`` that fails on any unexpected or mis-shaped key and on any missing
    key other than those named (prefixes ending in '.' match a whole submodule).

    Raises
    ------
    CheckpointError
        Naming ``source`` (the file), the model, and the keys: missing, unexpected, and
        mis-shaped ones with the shape found and the shape the model declares.
    """
    own = model.state_dict()

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
            f"{where}does not fit {type(model).__name__}: missing {some(missing)}, "
            f"unexpected {some(unexpected)}" + (f", mis-shaped {some(shapes)}" if shapes else ""))
    model.load_state_dict(dict(sd), strict=False)
