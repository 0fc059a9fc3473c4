"""ATST-Frame (Li, Shao, Li & Li, IEEE/ACM TASLP 2024, "Self-supervised audio teacher-student
transformer for both clip-level and frame-level tasks"): ATST's Transformer trained with a
frame-wise BYOL loss on masked crops, so that every 40 ms token carries a representation.

Official code: github Audio-WestlakeU/audiossl, ``audiossl/methods/atstframe``
(``audio_transformer.FrameAST``, ``model.FrameATSTLightningModule``, ``embedding.py``).

Front end: the same as ATST's, ``ATST_64_16K`` (16 kHz, n_fft = win = 1024, hop 160, 64 htk
mel bins 60-7800 Hz, power dB with top_db 80 per clip, audiossl's global MinMax
(-79.6482, 50.6842) to [-1, 1]); ``embedding.py`` computes it over the WHOLE clip, then cuts
the spectrogram into chunks (see :class:`ATSTFrameEncoderFrames`).

Tokens: as ATST's (:class:`~hear_models.models.atst.TokenEmbed`, patch 64 bins x 4 frames,
bin-major, ``Linear(256, D)``), but NO CLS token: ``pos_embed`` has 1 + 250 rows and the
tokens take rows 1 .. K (``pos_type="cut"``; row 0 is never used). Blocks: pre-LN, no qkv
bias, LayerNorm eps 1e-6, MLP ratio 4, exact GELU (the blocks of ATST). Final LayerNorm
``norm_frame``, which the official embedding applies to every block's output. ``mask_embed``
(the vector that replaces masked tokens in pretraining) is kept, unused at inference, so that
official files load strictly and the parameter count is the official one.

Sizes (the official ``FrameAST`` encoder: token embedding, mask vector, position table,
12 blocks, final norm): small 384 x 6 heads 21,475,968 (21.48M), base 768 x 12 heads
85,419,264 (85.42M); tiny 96 x 2 blocks x 3 heads 272,160 (this package's test variant, not
in the paper).

Official checkpoints (``atstframe_small.ckpt`` / ``atstframe_base.ckpt``, Google Drive links
in the atstframe README) are PyTorch-Lightning checkpoints of ``FrameATSTLightningModule``:
``state_dict`` holds ``model.teacher.encoder.*`` (the encoder ``embedding.load_model`` uses),
``model.teacher.projector.*``, ``model.student.{encoder,projector,predictor}.*``;
``hyper_parameters`` holds the training arguments (``arch``, ``patch_h`` 64, ``patch_w`` 4,
``pos_type`` "cut", ``nprompt`` 0, ...). Encoder keys: ``patch_embed.patch_embed.{weight,bias}``,
``mask_embed``, ``pos_embed``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``
(``attn.qkv`` without bias), ``norm_frame.{weight,bias}``.
"""

from __future__ import annotations

from collections.abc import Mapping as _MappingABC
from dataclasses import dataclass
from typing import ClassVar, Dict, Iterator, Mapping, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..frontends import LogMel
from ..hear_api import FrameEncoder, LayerSelector
from ..layers import LayerNorm, last, split_qkv
from . import Dims, LoadedEncoder, check_fit, identify, read_checkpoint
from .atst import (_BLOCK_MAP, ATSTFrontend, TokenEmbed, atst_blocks, check_token_count,  # noqa: F401
                   count_parameters, init_atst_weights, n_tokens)

SAMPLE_RATE = 16000  # Hz
MEL_HOP = 160  # samples: 10 ms
TOKEN_FRAMES = 4  # mel frames per token: 40 ms
TOKEN_HOP = TOKEN_FRAMES * MEL_HOP  # samples: 640 = 40 ms
TOKEN_CENTER = 1.5 * MEL_HOP  # samples: token 0 covers mel frames 0..3, centred at 15 ms
N_MELS = 64
MAX_TOKENS = 250  # rows 1..250 of the position table (10 s); row 0 is unused
CHUNK_FRAMES = 1000  # mel frames per chunk: 250 tokens = 10 s (official: 1001, see below)
OFFICIAL_CHUNK_FRAMES = 1001  # embedding.py's chunk_len

VARIANTS: Dict[str, Dict[str, int]] = {
    "small": dict(width=384, heads=6),
    "base": dict(width=768, heads=12),
    "tiny": dict(width=96, heads=3, layers=2),  # ours, for offline tests
}


@dataclass
class ATSTFrameDims(Dims):
    """Sizes of an ATST-Frame encoder (``FrameAST``)."""

    FAMILY: ClassVar[str] = "ATST-Frame"
    VARIANTS: ClassVar[Dict[str, Dict[str, int]]] = VARIANTS

    width: int = 384
    layers: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    n_mels: int = N_MELS
    token_frames: int = TOKEN_FRAMES
    max_tokens: int = MAX_TOKENS


class ATSTFrameEncoder(nn.Module):
    """``FrameAST``: token embedding, cut positions 1..K, blocks, ``norm_frame``."""

    def __init__(self, dims: ATSTFrameDims):
        super().__init__()
        self.dims = dims
        D = dims.width
        self.patch_embed = TokenEmbed(D, dims.n_mels, dims.token_frames)
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, D))  # pretraining only
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + dims.max_tokens, D))
        self.blocks = atst_blocks(dims)
        self.norm_frame = LayerNorm(D, eps=1e-6)

    def tokens(self, mel: Tensor) -> Tensor:
        """mel (B, 64, F) -> (B, F // 4, D), position rows 1 .. K added (trailing frames
        that do not fill a token are dropped, as the official ``PatchEmbed_v2``)."""
        x = self.patch_embed(mel)
        K = x.shape[1]
        check_token_count(K, self.dims.max_tokens)
        return x + self.pos_embed[:, 1:K + 1].to(x.dtype)

    def normed_blocks(self, mel: Tensor) -> Iterator[Tensor]:
        """Every block's output through ``norm_frame`` (official ``get_intermediate_layers``),
        each (B, K, D)."""
        x = self.tokens(mel)
        for block in self.blocks:
            x = block(x)
            yield self.norm_frame(x)

    def forward(self, mel: Tensor) -> Tensor:
        """mel (B, 64, F) -> the last block's normalised tokens (B, F // 4, D)."""
        return last(self.normed_blocks(mel))


# -- official checkpoints ---------------------------------------------------------------------
def official_shapes(dims: ATSTFrameDims) -> Dict[str, Tuple[int, ...]]:
    """Every key of the official ``FrameAST`` state dict of these sizes, with its shape."""
    D, H = dims.width, int(dims.width * dims.mlp_ratio)
    out: Dict[str, Tuple[int, ...]] = {
        "patch_embed.patch_embed.weight": (D, dims.n_mels * dims.token_frames),
        "patch_embed.patch_embed.bias": (D,),
        "mask_embed": (1, 1, D),
        "pos_embed": (1, 1 + dims.max_tokens, D),
        "norm_frame.weight": (D,), "norm_frame.bias": (D,),
    }
    for i in range(dims.layers):
        b = f"blocks.{i}."
        out.update({b + "norm1.weight": (D,), b + "norm1.bias": (D,),
                    b + "attn.qkv.weight": (3 * D, D),
                    b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
                    b + "norm2.weight": (D,), b + "norm2.bias": (D,),
                    b + "mlp.fc1.weight": (H, D), b + "mlp.fc1.bias": (H,),
                    b + "mlp.fc2.weight": (D, H), b + "mlp.fc2.bias": (D,)})
    return out


def checkpoint_filter_fn(sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """An official ``FrameAST`` state dict (already checked against :func:`official_shapes`)
    -> our :class:`ATSTFrameEncoder` keys: ``patch_embed.patch_embed`` -> ``patch_embed.proj``,
    ``attn.qkv.weight`` split into ``attn.query/key/value.weight``, the block names of ATST
    (``norm1`` -> ``attn_ln``, ``attn.proj`` -> ``attn.out``, ``norm2`` -> ``mlp_ln``,
    ``mlp.fc1/fc2`` -> ``mlp.0/2``); ``mask_embed``, ``pos_embed``, ``norm_frame`` as they are."""
    out: Dict[str, Tensor] = {}
    for k, v in sd.items():
        if k.startswith("blocks."):
            i, rest = k[len("blocks."):].split(".", 1)
            base = f"blocks.{i}."
            if rest == "attn.qkv.weight":
                out.update(split_qkv(base + "attn.", "weight", v))
                continue
            a = next(a for a in _BLOCK_MAP if rest.startswith(a))
            out[base + _BLOCK_MAP[a] + rest[len(a):]] = v
        elif k.startswith("patch_embed.patch_embed."):
            out["patch_embed.proj." + k.rsplit(".", 1)[1]] = v
        else:
            out[k] = v
    return out


def infer_dims(sd: Mapping[str, Tensor]) -> ATSTFrameDims:
    """Sizes from an official ``FrameAST`` state dict."""
    for k in ("pos_embed", "patch_embed.patch_embed.weight", "blocks.0.mlp.fc1.weight"):
        if k not in sd or not isinstance(sd[k], Tensor):
            raise ValueError(f"no {k!r}")
    D = sd["pos_embed"].shape[-1]
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks.") and k.split(".")[1].isdigit())
    n_in = sd["patch_embed.patch_embed.weight"].shape[-1]
    return ATSTFrameDims(width=D, layers=layers, heads=ATSTFrameDims.heads_for(D),
                         mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / D,
                         n_mels=n_in // TOKEN_FRAMES)


def _hparams(obj: Mapping) -> dict:
    """Lightning stores ``dict(model.hparams)``: a plain dict."""
    hp = obj.get("hyper_parameters")
    return dict(hp) if isinstance(hp, _MappingABC) else {}


# the training arguments an encoder of this file depends on, and the only values the
# official inference code (``embedding.py``) supports
_REQUIRED_HPARAMS = {"patch_h": 64, "patch_w": 4, "pos_type": "cut", "nprompt": 0, "patch_embed": "Linear"}


def official_encoder_state(obj: Mapping, path: str, which: str = "teacher") -> Tuple[Dict[str, Tensor], dict]:
    """The ``FrameAST`` state dict inside an official file and its hyper-parameters.

    Accepted: the Lightning checkpoint of ``FrameATSTLightningModule`` (``state_dict`` with
    ``model.{which}.encoder.*``), or a bare ``FrameAST`` state dict."""
    from ..checkpoints import CheckpointError

    if which not in ("teacher", "student"):
        raise ValueError(f"which={which!r}: expected 'teacher' or 'student'")
    if isinstance(obj.get("state_dict"), _MappingABC):
        prefix = f"model.{which}.encoder."
        sd = {k[len(prefix):]: v for k, v in obj["state_dict"].items()
              if isinstance(k, str) and k.startswith(prefix)}
        if not sd:
            seen = sorted({".".join(str(k).split(".")[:3]) for k in obj["state_dict"]})[:6]
            raise CheckpointError(f"{path}: not an ATST-Frame checkpoint: no '{prefix}*' keys in its "
                                  f"state_dict (its keys start {seen}; it is {identify(obj)[1]})")
        hp = _hparams(obj)
        bad = {k: hp[k] for k, v in _REQUIRED_HPARAMS.items() if k in hp and hp[k] != v}
        if bad:
            raise CheckpointError(f"{path}: an ATST-Frame checkpoint trained with {bad}; the official "
                                  f"inference code and this loader support {_REQUIRED_HPARAMS}")
        return sd, hp
    if "norm_frame.weight" in obj and "pos_embed" in obj:
        return {k: v for k, v in obj.items()}, {}
    raise CheckpointError(f"{path}: not an ATST-Frame checkpoint (neither a FrameATSTLightningModule "
                          f"checkpoint nor a FrameAST state dict): it is {identify(obj)[1]}")


def load_encoder(path: str = "", variant: str = "small", seed: int = 0,
                 which: str = "teacher") -> LoadedEncoder:
    """ATST-Frame's front end and encoder from an official file, or seeded random weights.

    ``path=""``: the ``variant`` (small | base | tiny) with audiossl's initialisation
    (truncated normal, std 0.02), seeded. Otherwise an official file, read with
    :func:`~hear_models.models.read_checkpoint` (no code from it runs): the Lightning
    checkpoint's ``model.{which}.encoder.*`` (``which="teacher"``, as ``embedding.py``), or a
    bare ``FrameAST`` state dict; checked strictly in the official key names (missing,
    unexpected and mis-shaped keys are a :class:`CheckpointError` naming the file and keys).
    """
    from ..checkpoints import CheckpointError

    if not path:
        dims = ATSTFrameDims.variant(variant)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            encoder = ATSTFrameEncoder(dims)
            init_atst_weights(encoder)
            nn.init.trunc_normal_(encoder.mask_embed, std=0.02, a=-2.0, b=2.0)
        return LoadedEncoder(encoder, ATSTFrontend(),
                             f"atst_frame-{variant} UNTRAINED (random weights, seed {seed})")

    obj = read_checkpoint(path, "atst_frame", "an ATST-Frame checkpoint")
    raw, hp = official_encoder_state(obj, path, which)
    try:
        dims = infer_dims(raw)
    except ValueError as e:
        raise CheckpointError(f"{path}: not an ATST-Frame encoder ({e}): it is {identify(obj)[1]}") from None
    arch = hp.get("arch")
    if arch in VARIANTS and VARIANTS[arch]["width"] != dims.width:
        raise CheckpointError(f"{path}: hyper_parameters say arch={arch!r} (width "
                              f"{VARIANTS[arch]['width']}) but the encoder weights have width {dims.width}")
    own = {k: torch.empty(s, device="meta") for k, s in official_shapes(dims).items()}
    check_fit(own, raw, f"an ATST-Frame {which} encoder {dims.width} x {dims.layers} "
              "(official FrameAST key names)", source=path)
    encoder = ATSTFrameEncoder(dims)
    encoder.load_state_dict(checkpoint_filter_fn(raw), strict=True)
    desc = f"atst_frame official {arch or ''} {which} ({path})".replace("  ", " ")
    return LoadedEncoder(encoder, ATSTFrontend(), desc, {"arch": arch} if arch else {})


# -- HEAR frame encoder ----------------------------------------------------------------------
class ATSTFrameEncoderFrames(FrameEncoder):
    """ATST-Frame tokens as HEAR frames: one per 40 ms, token k centred at 40 k + 15 ms.

    ``forward`` / ``hidden_states`` take audio (B, n) (log-mel of it, then tokens) or an
    already computed chunk of the clip's log-mel (B, 64, F): the HEAR module computes the
    mel of the whole clip (top_db relative to the clip's peak, as ``embedding.py``) and feeds
    it in chunks of :data:`CHUNK_FRAMES`. Every block's output goes through ``norm_frame``;
    ``layers`` / ``combine`` pick and join blocks (official: all 12 concatenated, 12 x D).
    """

    sample_rate = SAMPLE_RATE
    hop_samples = TOKEN_HOP
    first_center_samples = TOKEN_CENTER
    min_samples = TOKEN_HOP  # 40 ms: one token (5 mel frames)
    window_samples = CHUNK_FRAMES * MEL_HOP  # 160000 = 10 s = 250 tokens
    # the mel is of the whole clip (as the official code): a chunk's last token reads mel
    # frames whose STFT windows reach into the next chunk's audio, so it is the one token
    # that differs from a clip cut at the chunk's end
    boundary_tokens = 1

    def __init__(self, frontend: ATSTFrontend, encoder: ATSTFrameEncoder,
                 layers: Union[str, int, Sequence[int]] = "all", combine: str = "concat"):
        super().__init__()
        self.frontend = frontend
        # the same log-mel up to dB, uncentred and without the range clamp / MinMax: the
        # segments of a long clip's spectrogram (:meth:`mel`)
        c = frontend.logmel.config
        self.segment_db = LogMel(c.replace(center=False, dynamic_range=None, minmax=None))
        self.encoder = encoder
        self.n_layers = len(encoder.blocks)
        self.layers = LayerSelector(layers, combine, self.n_layers)
        self.width = encoder.dims.width
        self.embedding_size = self.layers.width(self.width)

    def n_frames(self, n_samples: int) -> int:
        """Tokens of a clip: those centred inside it (token k at 640 k + 240 <= n; ATST's
        :func:`~hear_models.models.atst.n_tokens`). That is the official count
        ``(1 + n // 160) // 4`` (its mel frames, 4 a token, trailing ones dropped), or one
        more when the dropped frames hold a further token's centre (3 of them, or 2 with
        ``n % 160 >= 80``), so that the last frame is within 40 ms of the end."""
        return n_tokens(n_samples)

    def mel(self, audio: Tensor, segment_frames: int = CHUNK_FRAMES) -> Tensor:
        """audio (B, n >= 640) -> the clip's log-mel (B, 64, F): F = 1 + n // 160 frames
        (plus the silent frames of a last token the official count drops, see
        :meth:`n_frames`), as one centred STFT of the whole clip with top_db relative to each clip's peak
        (``embedding.py``), computed ``segment_frames`` frames at a time so that the STFT's
        memory does not grow with the clip: the clip is reflect-padded once, each segment
        is an uncentred STFT of exactly the samples its frames see, and the dB range clamp
        and MinMax are applied once all segments are in."""
        logmel = self.frontend.logmel
        c = logmel.config
        n = audio.shape[-1]
        if n < self.min_samples:
            audio = F.pad(audio, (0, self.min_samples - n))  # zeros do not move the peak
            n = self.min_samples
        T = 1 + n // c.hop_length
        if T <= segment_frames:
            return self._pad_tokens(logmel(audio), n)
        pad = c.n_fft // 2
        x = F.pad(audio[:, None], (pad, pad), mode="reflect")[:, 0]
        parts = []
        for m0 in range(0, T, segment_frames):
            m1 = min(T, m0 + segment_frames)
            parts.append(self.segment_db(x[:, m0 * c.hop_length:(m1 - 1) * c.hop_length + c.n_fft]))
        mel = torch.cat(parts, dim=-1)
        peak = mel.amax(dim=(-2, -1), keepdim=True)
        mel = torch.maximum(mel, peak - c.dynamic_range)
        lo, hi = c.minmax
        return self._pad_tokens((mel - lo) / (hi - lo) * 2.0 - 1.0, n)

    def _pad_tokens(self, mel: Tensor, n_samples: int) -> Tensor:
        """Append the frames of the last token when the official count drops it
        (:meth:`n_frames`): silence, i.e. each clip's dB floor (its peak - top_db) in the
        normalised scale."""
        need = TOKEN_FRAMES * self.n_frames(n_samples) - mel.shape[-1]
        if need <= 0:
            return mel
        c = self.frontend.logmel.config
        lo, hi = c.minmax
        floor = mel.amax(dim=(-2, -1), keepdim=True) - 2.0 * c.dynamic_range / (hi - lo)
        return torch.cat([mel, floor.expand(-1, mel.shape[1], need)], dim=-1)

    def hidden_states(self, x: Tensor) -> Iterator[Tensor]:
        """audio (B, n) or mel (B, 64, F) -> every block's output after ``norm_frame``,
        (B, F // 4, D) each (audio: F = 1 + n // 160)."""
        if x.dim() == 2:
            x = self.mel(x)
        return self.encoder.normed_blocks(x)

    def forward(self, x: Tensor) -> Tensor:
        """audio (B, n) or mel (B, 64, F) -> frames (B, K, embedding_size)."""
        return self.layers.reduce(self.hidden_states(x))
