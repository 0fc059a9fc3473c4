"""CTranslate2 ``model.bin`` (binary version 6): a reader, and Whisper specs in openai names.

:func:`read_ct2_model_bin` parses the file with the standard library (no ctranslate2
needed). :func:`ct2_whisper_to_openai` renames a ``WhisperSpec``'s variables to
openai-whisper's, driven by name tables (:data:`BLOCK_TABLE` per encoder block,
:data:`DECODER_BLOCK_TABLE` for what decoder blocks add, :data:`TOP_TABLE` outside the
blocks) as the block maps of the other model families are.
"""

from __future__ import annotations

import os
import re
import struct
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from . import CheckpointError, PathLike, verify_sha256

if TYPE_CHECKING:  # pragma: no cover
    from whisper.model import ModelDimensions

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
# A CTranslate2 WhisperSpec in openai-whisper names
# --------------------------------------------------------------------------------------

# width -> attention heads of the official Whisper sizes (tiny, base, small, medium, large),
# for specs that do not store num_heads
WHISPER_HEADS_BY_WIDTH = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}

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

# The name tables: (openai name, CTranslate2 name, kind). Kinds:
#   tensor  one tensor, renamed
#   linear  ``/weight`` + ``/bias``  -> ``.weight`` + ``.bias``
#   norm    ``/gamma`` + ``/beta``   -> ``.weight`` + ``.bias``
#   qkv     query, key, value stacked on dim 0 -> ``.query``, ``.key`` (no bias: the stacked
#           key bias must be zero), ``.value``
#   kv      key and value stacked (cross-attention) -> ``.key`` (no bias), ``.value``
# Per encoder block (``encoder/layer_{i}`` -> ``encoder.blocks.{i}``); decoder blocks have
# the same plus DECODER_BLOCK_TABLE.
BLOCK_TABLE = [
    ("attn", "self_attention/linear_0", "qkv"),
    ("attn.out", "self_attention/linear_1", "linear"),
    ("attn_ln", "self_attention/layer_norm", "norm"),
    ("mlp.0", "ffn/linear_0", "linear"),
    ("mlp.2", "ffn/linear_1", "linear"),
    ("mlp_ln", "ffn/layer_norm", "norm"),
]
DECODER_BLOCK_TABLE = [
    ("cross_attn.query", "attention/linear_0", "linear"),
    ("cross_attn", "attention/linear_1", "kv"),
    ("cross_attn.out", "attention/linear_2", "linear"),
    ("cross_attn_ln", "attention/layer_norm", "norm"),
]
TOP_TABLE = [
    ("encoder.conv1", "encoder/conv1", "linear"),
    ("encoder.conv2", "encoder/conv2", "linear"),
    ("encoder.positional_embedding", "encoder/position_encodings/encodings", "tensor"),
    ("encoder.ln_post", "encoder/layer_norm", "norm"),
    ("decoder.token_embedding.weight", "decoder/embeddings/weight", "tensor"),
    ("decoder.positional_embedding", "decoder/position_encodings/encodings", "tensor"),
    ("decoder.ln", "decoder/layer_norm", "norm"),
]


class _Renamer:
    """Reads CT2 variables as float32 into openai names, remembering which were used."""

    def __init__(self, ct2: CT2Model):
        self.ct2, self.src = ct2, ct2.source
        self.used: set = set()
        self.sd: Dict[str, torch.Tensor] = {}

    def get(self, name: str) -> torch.Tensor:
        t = self.ct2.get(name)
        if t is None:
            raise CheckpointError(f"{self.src}: variable {name!r} is missing from the CTranslate2 model")
        self.used.add(name)
        if not t.is_floating_point():
            raise CheckpointError(
                f"{self.src}: variable {name!r} is stored as {t.dtype} (quantised or not a "
                "weight); only float32/float16/bfloat16 weights can be converted"
            )
        return t.to(torch.float32, copy=True)

    def scalar_int(self, name: str) -> Optional[int]:
        t = self.ct2.get(name)
        if t is None:
            return None
        self.used.add(name)
        return int(t.reshape(-1)[0].item())

    def stacked(self, name: str, parts: int, d: int) -> List[torch.Tensor]:
        t = self.get(name)
        if t.shape[0] != parts * d:
            raise CheckpointError(
                f"{self.src}: {name} has {t.shape[0]} rows, expected {parts} x {d} stacked projections"
            )
        return list(t.split(d, dim=0))

    def zero_key_bias(self, b: torch.Tensor, name: str) -> None:
        m = b.abs().max().item() if b.numel() else 0.0
        if m > 1e-6:
            raise CheckpointError(
                f"{self.src}: the key part of {name} is not zero (max |b| = {m:.3g}); openai "
                "Whisper's key projection has no bias, refusing to drop it"
            )

    def apply(self, dst: str, src: str, kind: str, d: int = 0) -> None:
        sd = self.sd
        if kind == "tensor":
            sd[dst] = self.get(src)
        elif kind == "linear":
            sd[dst + ".weight"], sd[dst + ".bias"] = self.get(src + "/weight"), self.get(src + "/bias")
        elif kind == "norm":
            sd[dst + ".weight"], sd[dst + ".bias"] = self.get(src + "/gamma"), self.get(src + "/beta")
        else:  # qkv / kv: stacked projections, the key without bias
            n = 3 if kind == "qkv" else 2
            w = self.stacked(src + "/weight", n, d)
            b = self.stacked(src + "/bias", n, d)
            self.zero_key_bias(b[-2], src + "/bias")
            if kind == "qkv":
                sd[dst + ".query.weight"], sd[dst + ".query.bias"] = w[0], b[0]
            sd[dst + ".key.weight"] = w[-2]
            sd[dst + ".value.weight"], sd[dst + ".value.bias"] = w[-1], b[-1]

    def check_flags(self, names: Iterable[str]) -> None:
        """Check the scalar flags among ``names`` that the renaming did not use."""
        for var in sorted(set(names) - self.used):
            if var in _CT2_IGNORED:
                self.used.add(var)
                continue
            t = self.ct2.get(var)
            if t is None or t.numel() != 1 or t.ndim > 1:
                continue  # not a flag: reported as unused by the caller
            v = t.reshape(-1)[0].item()
            ok, expected = _CT2_FLAGS.get(var, (lambda v: not v, "0 / False (feature off)"))
            if not ok(v):
                raise CheckpointError(
                    f"{self.src}: {var} = {v}, but openai Whisper needs {expected}; this model "
                    "is not a Whisper that openai-whisper can represent"
                )
            self.used.add(var)


def _layer_count(names: Iterable[str], prefix: str, source: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)/")
    idx = {int(m.group(1)) for n in names for m in [pat.match(n)] if m}
    if not idx:
        return 0
    if idx != set(range(max(idx) + 1)):
        raise CheckpointError(f"{source}: {prefix}* layers are not contiguous: {sorted(idx)}")
    return max(idx) + 1


def _check_tied_projection(r: _Renamer, emb: torch.Tensor) -> None:
    """openai ties the output projection to the token embedding, without bias."""
    ct2, src, proj_name = r.ct2, r.src, "decoder/projection/weight"
    if ct2.aliases.get(proj_name) == "decoder/embeddings/weight":
        r.used.add(proj_name)
    elif ct2.get(proj_name) is not None:
        proj = r.get(proj_name)
        if proj.shape != emb.shape or not torch.equal(proj, emb):
            raise CheckpointError(
                f"{src}: decoder/projection/weight differs from decoder/embeddings/weight; "
                "openai Whisper ties the output projection to the token embedding"
            )
    if ct2.get("decoder/projection/bias") is not None:
        if r.get("decoder/projection/bias").abs().max().item() > 1e-6:
            raise CheckpointError(f"{src}: decoder/projection/bias is not zero; openai "
                                  "Whisper's output projection has no bias")


def ct2_whisper_to_openai(
    ct2: CT2Model, config: Optional[dict] = None
) -> Tuple["ModelDimensions", Dict[str, torch.Tensor]]:
    """Convert the variables of a CTranslate2 ``WhisperSpec`` to openai-whisper names.

    The renaming is :data:`TOP_TABLE`, :data:`BLOCK_TABLE` per block and
    :data:`DECODER_BLOCK_TABLE` per decoder block. Every variable must be used: the
    output projection must be tied to the embeddings (alias or equal values), as in
    openai-whisper, and scalar flags must have the values openai's Whisper implies.

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
    r = _Renamer(ct2)
    names = list(ct2.variables) + list(ct2.aliases)
    n_layers = {side: _layer_count(names, f"{side}/layer_", src) for side in ("encoder", "decoder")}

    conv1 = r.get("encoder/conv1/weight")
    if conv1.ndim != 3 or conv1.shape[2] != 3:
        raise CheckpointError(f"{src}: encoder/conv1/weight has shape {tuple(conv1.shape)}, "
                              "expected (width, n_mels, 3)")
    for dst, name, kind in TOP_TABLE:
        r.apply(dst, name, kind)
    emb = r.sd["decoder.token_embedding.weight"]
    width = {"encoder": int(conv1.shape[0]), "decoder": int(emb.shape[1])}
    for side, table in (("encoder", BLOCK_TABLE), ("decoder", BLOCK_TABLE + DECODER_BLOCK_TABLE)):
        for i in range(n_layers[side]):
            for dst, name, kind in table:
                r.apply(f"{side}.blocks.{i}.{dst}", f"{side}/layer_{i}/{name}", kind, width[side])
    _check_tied_projection(r, emb)

    heads = {}
    for side in ("encoder", "decoder"):
        h = r.scalar_int(f"{side}/num_heads")
        heads[side] = WHISPER_HEADS_BY_WIDTH.get(width[side]) if h is None else h
    if heads["encoder"] is None or heads["decoder"] is None:
        raise CheckpointError(
            f"{src}: no num_heads variable and width {width['encoder']} is not an official "
            f"Whisper size ({sorted(WHISPER_HEADS_BY_WIDTH)}); cannot infer the head count"
        )
    for side in ("encoder", "decoder"):
        if heads[side] <= 0 or width[side] % heads[side]:
            raise CheckpointError(f"{src}: {side} width {width[side]} is not divisible by {heads[side]} heads")

    r.check_flags(names)
    unused = sorted(set(names) - r.used)
    if unused:
        raise CheckpointError(
            f"{src}: {len(unused)} CTranslate2 variables have no openai-whisper counterpart "
            f"(e.g. {unused[:8]}); refusing to drop them silently"
        )
    dims = ModelDimensions(
        n_mels=int(conv1.shape[1]), n_audio_ctx=int(r.sd["encoder.positional_embedding"].shape[0]),
        n_audio_state=width["encoder"], n_audio_head=heads["encoder"], n_audio_layer=n_layers["encoder"],
        n_vocab=int(emb.shape[0]), n_text_ctx=int(r.sd["decoder.positional_embedding"].shape[0]),
        n_text_state=width["decoder"], n_text_head=heads["decoder"], n_text_layer=n_layers["decoder"],
    )
    return dims, r.sd
