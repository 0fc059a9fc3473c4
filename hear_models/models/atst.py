"""ATST (Li & Li, Interspeech 2022): an audio Transformer trained as a BYOL teacher-student
on two long (6 s) crops of each clip.

Front end: the ``ATST_64_16K`` preset (16 kHz, n_fft = win = 1024, hop 160 (10 ms), 64 mel
bins 60-7800 Hz, dB with top_db 80 per clip, global min-max to [-1, 1]).

Tokens: 4 mel frames x 64 bins (40 ms, the whole spectrum) -> Linear 256 -> D. A token's
vector is ordered (bin, frame), bin-major, as audiossl's ``Rearrange('b c (h p1) (w p2) ->
b (w h) (p1 p2 c)')`` with p1 = 64 bins, p2 = 4 frames. Token k covers mel frames
4k .. 4k + 3, centred on 40 k + 15 ms. A CLS token goes first; a LEARNED position
embedding of 1 + 250 positions (10 s) is cut to the input length (audiossl's
``pos_type="cut"``). Blocks: pre-LN, no qkv bias, LayerNorm eps 1e-6, MLP ratio 4,
stochastic depth linear from 0 to ``drop_path`` (0.1 in pretraining); final LayerNorm
``norm``, which the official downstream code applies to EVERY block's output.

Sizes (encoder parameters: token embedding, CLS, position table, 12 blocks, final norm):
small 384 x 6 heads 21,475,968 (21.48M), base 768 x 12 heads 85,419,264 (85.42M),
tiny 192 x 6 blocks x 3 heads 2,763,840 (this package's offline/test variant, not in the
paper).

Official checkpoints (github Audio-WestlakeU/audiossl) are converted by
:func:`checkpoint_filter_fn` (teacher weights, as the official downstream code uses).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..frontends import ATST_64_16K, LogMel
from ..hear_api import FrameEncoder, LayerSelector
from ..layers import LayerNorm, ResidualAttentionBlock, last, masked_mean, split_qkv  # noqa: F401
from . import Dims, LoadedEncoder, identify, load_strict, read_checkpoint

SAMPLE_RATE = 16000  # Hz
MEL_HOP = 160  # samples: 10 ms
TOKEN_FRAMES = 4  # mel frames per token: 40 ms
TOKEN_HOP = TOKEN_FRAMES * MEL_HOP  # samples: 640 = 40 ms
TOKEN_CENTER = 1.5 * MEL_HOP  # samples: token 0 is centred between mel frames 1 and 2 (15 ms)
N_MELS = 64
MAX_TOKENS = 250  # positions of the learned table (10 s), plus the CLS position
CHUNK_SECONDS = 6.0  # the official downstream chunk = the pretraining crop

VARIANTS: Dict[str, Dict[str, int]] = {
    "base": dict(width=768, heads=12),
    "small": dict(width=384, heads=6),
    "tiny": dict(width=192, heads=3, layers=6),  # ours, for offline tests and small runs
}


@dataclass
class ATSTDims(Dims):
    """Sizes of an ATST encoder (stored with every checkpoint we write)."""

    FAMILY: ClassVar[str] = "ATST"
    VARIANTS: ClassVar[Dict[str, Dict[str, int]]] = VARIANTS
    EXTRA_HEADS: ClassVar[Dict[int, int]] = {1024: 16}  # a ViT-L-sized ATST

    width: int = 384
    layers: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    n_mels: int = N_MELS
    token_frames: int = TOKEN_FRAMES
    max_tokens: int = MAX_TOKENS
    drop_path: float = 0.0  # stochastic depth of the last block (linear from 0)


# -- front end -------------------------------------------------------------------------------
def n_tokens(n_samples: int) -> int:
    """Tokens of a clip of ``n_samples``: those centred inside it (centre 640 k + 240 <= n).

    A full 6 s chunk (96000 samples) gives 150 tokens, 10 s (160000) 250, exactly; the
    official code keeps ``floor((1 + n // 160) / 4)`` tokens (the same number, or one
    fewer at some lengths)."""
    n = int(n_samples)
    return 0 if n < TOKEN_CENTER else int((n - TOKEN_CENTER) // TOKEN_HOP) + 1


class ATSTFrontend(nn.Module):
    """``ATST_64_16K`` log-mel, cut or zero-padded (in the waveform) to 4 frames a token."""

    def __init__(self):
        super().__init__()
        self.logmel = LogMel(ATST_64_16K)

    def forward(self, audio: Tensor, tokens: Optional[int] = None) -> Tensor:
        """audio (batch, n_samples) at 16 kHz -> mel (batch, 64, 4 x tokens), in [-1, 1].

        ``tokens`` defaults to :func:`n_tokens` (at least 1). The waveform is zero-padded
        when the last token needs frames past the end (zeros do not move the top_db
        cut-off, which is the clip's peak)."""
        K = max(1, n_tokens(audio.shape[-1])) if tokens is None else int(tokens)
        need = max(TOKEN_HOP * K, self.logmel.min_samples)
        if audio.shape[-1] < need:
            audio = F.pad(audio, (0, need - audio.shape[-1]))
        return self.logmel(audio)[..., : TOKEN_FRAMES * K]


# -- encoder -------------------------------------------------------------------------------
class TokenEmbed(nn.Module):
    """(batch, 64, 4 K) mel -> (batch, K, D): each 4-frame slice, bin-major, through
    ``proj`` = Linear(256, D) (audiossl's ``patch_embed.patch_embed``)."""

    def __init__(self, width: int, n_mels: int = N_MELS, frames: int = TOKEN_FRAMES):
        super().__init__()
        self.n_mels, self.frames = n_mels, frames
        self.proj = nn.Linear(n_mels * frames, width)

    def patches(self, mel: Tensor) -> Tensor:
        """(B, n_mels, T) -> (B, T // 4, n_mels * 4), vector index = bin * 4 + frame."""
        B, H, T = mel.shape
        if H != self.n_mels:
            raise ValueError(f"expected {self.n_mels} mel bins, got {H}")
        K = T // self.frames
        if K == 0:
            raise ValueError(f"{T} mel frames: need at least {self.frames} for one token")
        x = mel[..., : K * self.frames].reshape(B, H, K, self.frames)
        return x.permute(0, 2, 1, 3).reshape(B, K, H * self.frames)

    def forward(self, mel: Tensor) -> Tensor:
        return self.proj(self.patches(mel))


def atst_blocks(dims, drop_path: float = 0.0) -> nn.ModuleList:
    """ATST's blocks (audiossl's ``Block``, shared by ATST-Frame): pre-LN, no qkv bias,
    LayerNorm eps 1e-6, ``dims.mlp_ratio``; stochastic depth linear from 0 to ``drop_path``."""
    dpr = [drop_path * i / max(dims.layers - 1, 1) for i in range(dims.layers)]
    return nn.ModuleList([
        ResidualAttentionBlock(dims.width, dims.heads, mlp_ratio=dims.mlp_ratio, qkv_bias=False,
                               key_bias=False, ln_eps=1e-6, drop_path=p) for p in dpr])


def check_token_count(K: int, max_tokens: int) -> None:
    """A forward pass takes at most the position table's ``max_tokens`` tokens."""
    if K > max_tokens:
        raise ValueError(f"{K} tokens ({K * 40} ms): the position table holds {max_tokens}; cut the "
                         "input into chunks")


class ATSTEncoder(nn.Module):
    """The ATST Transformer: token embedding, CLS, learned cut positions, blocks, ``norm``."""

    def __init__(self, dims: ATSTDims):
        super().__init__()
        self.dims = dims
        D = dims.width
        self.patch_embed = TokenEmbed(D, dims.n_mels, dims.token_frames)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + dims.max_tokens, D))
        self.blocks = atst_blocks(dims, dims.drop_path)
        self.norm = LayerNorm(D, eps=1e-6)

    def tokens(self, mel: Tensor) -> Tensor:
        """mel (B, 64, 4 K) -> (B, 1 + K, D): CLS first, positions 0 .. K added."""
        x = self.patch_embed(mel)
        K = x.shape[1]
        check_token_count(K, self.dims.max_tokens)
        x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed[:, : K + 1].to(x.dtype)

    def run_blocks(self, x: Tensor, key_padding_mask: Optional[Tensor] = None) -> Iterator[Tensor]:
        """Every block's output (before ``norm``), one at a time.

        key_padding_mask : (B, 1 + K) bool, True = padded token (never the CLS)."""
        for block in self.blocks:
            x = block(x, key_padding_mask=key_padding_mask)
            yield x

    def forward(self, mel: Tensor, token_padding: Optional[Tensor] = None) -> Tensor:
        """mel (B, 64, 4 K) -> normalised tokens (B, 1 + K, D), CLS first.

        token_padding : (B, K) bool, True = token made of padding (ignored as a key)."""
        x = self.tokens(mel)
        kpm = None if token_padding is None else F.pad(token_padding, (1, 0), value=False)
        return self.norm(last(self.run_blocks(x, kpm)))


def init_atst_weights(module: nn.Module) -> None:
    """audiossl's initialisation: truncated normal (std 0.02, cut at +-2) for Linear
    weights, the position table and the CLS token; zero biases; unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for name, p in module.named_parameters():
        if name.endswith(("cls_token", "pos_embed")):
            nn.init.trunc_normal_(p, std=0.02, a=-2.0, b=2.0)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- official checkpoints ---------------------------------------------------------------------
_BLOCK_MAP = {  # audiossl Block names -> our ResidualAttentionBlock names
    "norm1.": "attn_ln.", "attn.proj.": "attn.out.", "norm2.": "mlp_ln.",
    "mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.2.",
}
# keys of audiossl's AST that our encoder does not have: the mask embedding and the masked
# reconstruction head (only used with mask_ratio > 0, never downstream)
_DROPPED = ("mask_embed", "final_to_melsp.")


def official_encoder_state(obj: Mapping, which: str = "teacher") -> Tuple[Dict[str, Tensor], dict]:
    """Find the encoder state dict inside an official audiossl ATST file.

    Accepted layouts:

    - a PyTorch-Lightning checkpoint of ``ATSTLightningModule`` (``state_dict`` with
      ``model.teacher.encoder.*`` / ``model.student.encoder.*``, ``hyper_parameters``);
    - a DINO-style dict ``{"teacher": {...}, "student": {...}, "args": ...}`` whose keys may
      carry ``module.`` / ``backbone.`` / ``encoder.`` prefixes (stripped, as audiossl's
      ``load_pretrained_weights`` does);
    - a bare ``AST`` state dict.

    Returns (state dict with audiossl's AST key names, meta): meta has ``arch`` and
    ``train_len`` (seconds) when the file says.
    """
    if which not in ("teacher", "student"):
        raise ValueError(f"which={which!r}: expected 'teacher' or 'student'")
    meta: dict = {}
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        hp = obj.get("hyper_parameters") or {}
        if isinstance(hp, Mapping):
            meta = {k: hp[k] for k in ("arch", "train_len") if k in hp}
        sd = obj["state_dict"]
        prefix = f"model.{which}.encoder."
        out = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not out:
            raise ValueError(f"no '{prefix}*' keys: not an ATSTLightningModule checkpoint")
        return out, meta
    sd = obj
    if which in obj and isinstance(obj[which], Mapping):
        sd = obj[which]
        args = obj.get("args")
        for k in ("arch", "anchor_len"):
            if args is not None and hasattr(args, k):
                meta[k] = getattr(args, k)
        if "anchor_len" in meta:
            a = meta.pop("anchor_len")
            meta["train_len"] = float(a[0] if isinstance(a, (list, tuple)) else a)
    out = {}
    for k, v in sd.items():
        for p in ("module.", "backbone.", "encoder."):
            if k.startswith(p):
                k = k[len(p):]
        if k.startswith(("projector.", "predictor.", "head.")):
            continue  # the wrapper's heads, not the encoder (audiossl loads with strict=False)
        out[k] = v
    return out, meta


def is_official_state_dict(sd: Mapping) -> bool:
    return any(k.endswith("attn.qkv.weight") for k in sd) or "patch_embed.patch_embed.weight" in sd


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Convert an audiossl ``AST`` encoder state dict to our :class:`ATSTEncoder` keys.

    ``patch_embed.patch_embed`` -> ``patch_embed.proj``; ``blocks.i.attn.qkv.weight``
    (3D, D; no bias in ATST) splits into ``attn.query/key/value.weight``; ``norm1`` ->
    ``attn_ln``, ``attn.proj`` -> ``attn.out``, ``norm2`` -> ``mlp_ln``, ``mlp.fc1/fc2`` ->
    ``mlp.0/2``; ``cls_token``, ``pos_embed``, ``norm`` unchanged; ``mask_embed`` (and a
    masked-reconstruction head) dropped. Any other key is an error.
    """
    out: Dict[str, Tensor] = {}
    for k, v in state_dict.items():
        if k.startswith(_DROPPED):
            continue
        if k.startswith("blocks."):
            i, rest = k[len("blocks."):].split(".", 1)
            base = f"blocks.{i}."
            if rest == "attn.qkv.weight":
                out.update(split_qkv(base + "attn.", "weight", v))
                continue
            if rest == "attn.qkv.bias":
                raise ValueError(f"{k}: this checkpoint has qkv biases; ATST's blocks have none")
            for a, b in _BLOCK_MAP.items():
                if rest.startswith(a):
                    out[base + b + rest[len(a):]] = v
                    break
            else:
                raise ValueError(f"unexpected key in an official ATST checkpoint: {k}")
        elif k.startswith("patch_embed.patch_embed."):
            out["patch_embed.proj." + k.rsplit(".", 1)[1]] = v
        elif k in ("cls_token", "pos_embed") or k.startswith("norm."):
            out[k] = v
        else:
            raise ValueError(f"unexpected key in an official ATST checkpoint: {k}")
    return out


def infer_dims(sd: Mapping[str, Tensor], heads: Optional[int] = None) -> ATSTDims:
    """Sizes from one of OUR encoder state dicts (keys without the ``encoder.`` prefix)."""
    for k in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.0.weight"):
        if k not in sd:
            raise ValueError(f"not an ATST encoder state dict: no {k!r}")
    D = sd["cls_token"].shape[-1]
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    n_in = sd["patch_embed.proj.weight"].shape[1]
    # the most common MLP size over the blocks (one corrupted block is then the one
    # reported); the position table's length is the architecture's (MAX_TOKENS), not read
    # from the table that load_encoder validates
    hidden = Counter(v.shape[0] for k, v in sd.items()
                     if k.startswith("blocks.") and k.endswith(".mlp.0.weight")).most_common(1)[0][0]
    return ATSTDims(width=D, layers=layers, heads=heads or ATSTDims.heads_for(D),
                    mlp_ratio=hidden / D, n_mels=n_in // TOKEN_FRAMES)


# -- HEAR frame encoder ----------------------------------------------------------------------
class ATSTFrameEncoder(FrameEncoder):
    """ATST tokens as HEAR frames: one per 40 ms, centred (token k at 40 k + 15 ms).

    Every block's output is passed through the encoder's final LayerNorm (as the official
    downstream code does); ``layers`` picks the blocks of the timestamp embedding and
    ``combine`` joins them (official frame embedding: all 12 blocks concatenated, 12 x D).
    Windows of ``chunk_seconds`` (6 s by default: the pretraining crop, so that only
    trained positions are used; at most 10 s, the position table), encoded independently.

    ``chunk_summary`` gives the official per-chunk clip vector: per block,
    [CLS ; mean of the tokens], ordered [CLS_1 .. CLS_L, mean_1 .. mean_L] (2 L D).
    """

    sample_rate = SAMPLE_RATE
    hop_samples = TOKEN_HOP
    first_center_samples = TOKEN_CENTER
    min_samples = TOKEN_HOP  # 40 ms: one token

    def __init__(self, frontend: ATSTFrontend, encoder: ATSTEncoder,
                 layers: Union[str, int, Sequence[int]] = "all", combine: str = "concat",
                 chunk_seconds: float = CHUNK_SECONDS):
        super().__init__()
        tokens = chunk_seconds * SAMPLE_RATE / TOKEN_HOP
        if abs(tokens - round(tokens)) > 1e-6 or not 1 <= round(tokens) <= encoder.dims.max_tokens:
            raise ValueError(f"chunk_seconds={chunk_seconds}: must be a multiple of 0.04 s between "
                             f"0.04 and {encoder.dims.max_tokens * 0.04:g} s (the position table)")
        self.frontend = frontend
        self.encoder = encoder
        self.window_samples = int(round(tokens)) * TOKEN_HOP
        self.n_layers = len(encoder.blocks)
        self.layers = LayerSelector(layers, combine, self.n_layers)
        self.width = encoder.dims.width
        self.embedding_size = self.layers.width(self.width)

    def n_frames(self, n_samples: int) -> int:
        return n_tokens(n_samples)

    def normed_blocks(self, audio: Tensor) -> Iterator[Tensor]:
        """audio (B, n) -> every block's output after ``norm``, each (B, 1 + K, D), K >= 1."""
        mel = self.frontend(audio)
        x = self.encoder.tokens(mel)
        for h in self.encoder.run_blocks(x):
            yield self.encoder.norm(h)

    def hidden_states(self, audio: Tensor) -> Iterator[Tensor]:
        """Every block's output after the final LayerNorm, tokens only: (B, K, D) each."""
        for h in self.normed_blocks(audio):
            yield h[:, 1:]

    def forward(self, audio: Tensor) -> Tensor:
        """audio (B, n) -> frames (B, max(1, n_tokens(n)), embedding_size)."""
        return self.layers.reduce(self.hidden_states(audio))

    def chunk_summary(self, audio: Tensor) -> Tensor:
        """audio (B, n <= window) -> [CLS_1 .. CLS_L, mean_1 .. mean_L] (B, 2 L D), each
        block LayerNormed; the mean runs over the chunk's tokens (all real: HEAR batches
        hold sounds of one length)."""
        cls, avg = [], []
        for h in self.normed_blocks(audio):
            cls.append(h[:, 0])
            avg.append(h[:, 1:].mean(dim=1))
        return torch.cat(cls + avg, dim=-1)


# -- loading ---------------------------------------------------------------------------------
EXPORT_FORMAT = "hear_models.atst/1"


def load_encoder(path: str = "", variant: str = "tiny", seed: int = 0,
                 which: str = "teacher") -> LoadedEncoder:
    """ATST's front-end and encoder from a weights file, or seeded random weights.

    Accepted files (all read with ``torch.load(weights_only=True)``):

    - our export (``hear-models train export``): ``{"format": "hear_models.atst/1",
      "dims": {...}, "state_dict": {encoder.*}}`` (the EMA teacher's encoder);
    - a state dict of ours (``encoder.*``, or a training model's ``teacher.encoder.*``);
    - an official audiossl ATST checkpoint: the Lightning checkpoint of
      ``ATSTLightningModule`` or a DINO-style ``{"teacher": ..., "args": ...}`` file; the
      TEACHER encoder (``which``) is converted by :func:`checkpoint_filter_fn` and loaded
      strictly. ``args`` and other pickled objects are read inertly (``read_weights``).

    ``meta``: ``chunk_seconds`` when the file says what length it was trained on.
    """
    from ..checkpoints import CheckpointError

    if not path:
        dims = ATSTDims.variant(variant)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            encoder = ATSTEncoder(dims)
            init_atst_weights(encoder)
        return LoadedEncoder(encoder, ATSTFrontend(), f"atst-{variant} UNTRAINED (random weights, seed {seed})")

    obj = read_checkpoint(path, "atst", "an ATST checkpoint")
    meta: dict = {}
    dims = None
    if obj.get("format") == EXPORT_FORMAT:
        dims = ATSTDims.from_dict(obj["dims"])
        sd = {k[len("encoder."):]: v for k, v in obj["state_dict"].items() if k.startswith("encoder.")}
        desc = obj.get("description", f"atst ({path})")
        if obj.get("chunk_seconds"):
            meta["chunk_seconds"] = float(obj["chunk_seconds"])
    else:
        flat = obj.get("state_dict", obj)
        ours = None
        for prefix in (f"model.{which}.encoder.", f"{which}.encoder.", "encoder.", ""):
            cand = {k[len(prefix):]: v for k, v in flat.items()
                    if isinstance(k, str) and k.startswith(prefix)} if isinstance(flat, dict) else {}
            if cand and "patch_embed.proj.weight" in cand:
                ours = cand
                break
        if ours is not None:
            sd = ours
            desc = f"atst ({path})"
        else:
            try:
                raw, info = official_encoder_state(obj, which)
            except ValueError as e:
                raise CheckpointError(f"{path}: not an ATST checkpoint ({e}): it is "
                                      f"{identify(obj)[1]}") from None
            if not is_official_state_dict(raw):
                raise CheckpointError(f"{path}: not an ATST checkpoint (no ATST encoder keys "
                                      "such as patch_embed.patch_embed.weight / blocks.0.attn.qkv.weight): "
                                      f"it is {identify(obj)[1]}")
            try:
                sd = checkpoint_filter_fn(raw)
            except ValueError as e:
                raise CheckpointError(f"{path}: {e}") from None
            if "train_len" in info:
                meta["chunk_seconds"] = float(info["train_len"])
            desc = f"atst official {info.get('arch', '')} {which} ({path})".replace("  ", " ")
    try:
        dims = dims or infer_dims(sd)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    table = sd.get("pos_embed")
    if isinstance(table, Tensor) and table.dim() == 3 and table.shape[1] != dims.max_tokens + 1:
        raise CheckpointError(
            f"{path}: the position table pos_embed has {table.shape[1]} rows; an ATST encoder's "
            f"has {dims.max_tokens + 1} (CLS + {dims.max_tokens} tokens of 40 ms = "
            f"{dims.max_tokens * 0.04:g} s): the file is corrupt or not of this architecture")
    encoder = ATSTEncoder(dims)
    load_strict(encoder, sd, source=path, what=f"an ATST encoder {dims.width} x {dims.layers}")
    return LoadedEncoder(encoder, ATSTFrontend(), desc, meta)
