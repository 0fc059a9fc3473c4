"""Conformer SSL (Srivastava et al., ICASSP 2022): a conformer on log-mels, pretrained with
a wav2vec 2.0-style contrastive objective without a quantiser.

Front end: ``CONFORMER_64_16K`` (16 kHz, 64 log-mel bins, 64 ms window, 20 ms hop).

Feature encoder: 4 consecutive mel frames (80 ms) stacked frame-major into 256 values
(torchaudio's ``_TimeReduction`` order), ``Linear 256 -> 256``: the latents z, one every
80 ms. Context encoder: ``LayerNorm(256)``, ``Linear 256 -> D`` (dropout 0), 12
:class:`~hear_models.layers.ConformerBlock` (macaron FFNs of width 1024, convolution module
BEFORE self-attention, no relative position encoding, kernel 31 in block 1 and 15 after,
dropout 0.1; each block ends in a LayerNorm). Pretraining adds a target projection
``Linear 256 -> D`` and a learned mask embedding (256 values, in place of masked
latents, as torchaudio's ``MaskGenerator``).

Parameter counts (``tests/test_conformer.py`` checks them exactly):

======  ===  =====  ==================  ==========================  =====================
size     D   heads  encoder             + target projection          + mask embedding
======  ===  =====  ==================  ==========================  =====================
S       256    8    18,350,080 (18.35M)  18,415,872 (18.4M)          18,416,128
L       768   12    87,898,624 (87.90M)  88,096,000 (88.1M)          88,096,256
======  ===  =====  ==================  ==========================  =====================

How the layout was derived: torchaudio's ``conformer_wav2vec2_base`` (feature extractor
``TimeReduction(4) + Linear 256 -> 256``, ``FeatureProjection`` = LN + Linear 256 -> D,
12 ``ConformerLayer`` with ``convolution_first=True``) gives exactly 18,350,080 /
87,898,624 with the convolution module's default ``bias=False`` (pointwise D -> 2D + GLU,
depthwise, a 2D-parameter norm, SiLU, pointwise D -> D); with conv biases it would be
18.36M / 87.94M. An exhaustive search over the other choices (biases, norms, GLU, an
output Linear D -> D or D -> 256) finds no other layout that gives 18.35M / 87.90M and
18.4M / 88.1M: the papers' counts leave room for exactly ONE extra D x 256 Linear. We
make it the target projection ``Linear 256 -> D`` (the papers' 256-d targets) and compare it
with the context encoder's output, the last block's (LayerNorm'd) output; a separate
``Linear out`` D -> D would make cf_S 18.42M / cf_L 88.49M, contradicting the counts, so
there is none. BatchNorm, GroupNorm(1) and LayerNorm all have 2D parameters; we use a
per-frame LayerNorm (``conv_norm="layer"``): independent of padding and window length.

HEAR frames: latents are 80 ms apart, HEAR wants <= 50 ms. Each latent j covers mel
frames 4j..4j+3 (centred at 80j, 80j+20, 80j+40, 80j+60 ms), i.e. [80j - 10, 80j + 70) ms;
its feature is given to two 40 ms frames, the halves [80j - 10, 80j + 30) and
[80j + 30, 80j + 70), timestamped at their centres 80j + 10 and 80j + 50 ms. So frame k
is at 10 + 40k ms and carries latent k // 2 (true resolution 80 ms, stated honestly: two
equal rows per latent).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..frontends import CONFORMER_64_16K, LogMel
from ..hear_api import FrameEncoder, LayerSelector
from ..layers import LayerNorm, Linear, last, masked_mean
from ..layers.conformer import ConformerBlock
from . import Dims, LoadedEncoder, identify, load_strict, read_checkpoint, sizes_of

SAMPLE_RATE = 16000  # Hz
MEL_HOP = 320  # samples: 20 ms
STACK = 4  # mel frames per latent
LATENT_HOP = STACK * MEL_HOP  # samples: 1280 = 80 ms
FRAME_HOP = LATENT_HOP // 2  # samples: 640 = 40 ms between HEAR frames
FIRST_CENTER = 160  # samples: 10 ms, centre of HEAR frame 0
WINDOW = 128 * LATENT_HOP  # samples: 163840 = 10.24 s, the longest input of one forward

VARIANTS: Dict[str, Dict[str, int]] = {
    "S": dict(width=256, heads=8),
    "L": dict(width=768, heads=12),
    # for offline tests and quick runs (not from the paper)
    "tiny": dict(width=64, heads=4, layers=4, ffn=256),
}


@dataclass
class ConformerDims(Dims):
    """Sizes of a Conformer SSL model (stored with every checkpoint we write)."""

    FAMILY: ClassVar[str] = "Conformer"
    VARIANTS: ClassVar[Dict[str, Dict[str, int]]] = VARIANTS

    width: int = 256  # D
    heads: int = 8
    layers: int = 12
    ffn: int = 1024  # macaron FFN width (both sizes)
    n_mels: int = 64
    stack: int = STACK
    latent: int = 256  # feature-encoder output (z)
    kernel_first: int = 31
    kernel: int = 15
    dropout: float = 0.1
    conv_norm: str = "layer"  # layer | batch | group (same parameter count)
    conv_bias: bool = False
    drop_path: float = 0.0

    def kernels(self) -> List[int]:
        return [self.kernel_first] + [self.kernel] * (self.layers - 1)


# -- encoder ---------------------------------------------------------------------------------
class FeatureEncoder(nn.Module):
    """Stack ``stack`` mel frames (frame-major) and ``Linear(stack * n_mels, latent)``."""

    def __init__(self, dims: ConformerDims):
        super().__init__()
        self.stack = dims.stack
        self.proj = Linear(dims.stack * dims.n_mels, dims.latent)

    def forward(self, mel: Tensor) -> Tensor:
        """mel (B, n_mels, T) -> z (B, T // stack, latent); trailing frames that do not fill
        a latent are dropped."""
        B, n_mels, T = mel.shape
        L = T // self.stack
        if L == 0:
            raise ValueError(f"{T} mel frames: need at least {self.stack} for one latent")
        x = mel[..., : L * self.stack].transpose(1, 2).reshape(B, L, self.stack * n_mels)
        return self.proj(x)


class ContextEncoder(nn.Module):
    """``ln`` (LayerNorm on z), ``proj`` (Linear latent -> D), the conformer ``blocks``."""

    def __init__(self, dims: ConformerDims):
        super().__init__()
        self.ln = LayerNorm(dims.latent)
        self.proj = Linear(dims.latent, dims.width)
        dpr = [dims.drop_path * i / max(dims.layers - 1, 1) for i in range(dims.layers)]
        self.blocks = nn.ModuleList([
            ConformerBlock(dims.width, dims.heads, dims.ffn, k, dropout=dims.dropout, convolution_first=True,
                           conv_norm=dims.conv_norm, conv_bias=dims.conv_bias, drop_path=p)
            for k, p in zip(dims.kernels(), dpr)])

    def run_blocks(self, x: Tensor, key_padding_mask: Optional[Tensor] = None) -> Iterator[Tensor]:
        """x (B, L, D) after ``proj`` -> every block's output (B, L, D), one at a time."""
        for block in self.blocks:
            x = block(x, key_padding_mask)
            yield x


class ConformerEncoder(nn.Module):
    """Front end (no parameters), feature encoder, context encoder."""

    def __init__(self, dims: ConformerDims):
        super().__init__()
        self.dims = dims
        self.frontend = LogMel(CONFORMER_64_16K.replace(n_mels=dims.n_mels))
        self.feature_encoder = FeatureEncoder(dims)
        self.context = ContextEncoder(dims)

    def silence_level(self) -> float:
        """The log-mel value of digital silence (what padding with zeros gives)."""
        return math.log(self.frontend.config.log_offset)

    def hidden_states(self, z: Tensor, key_padding_mask: Optional[Tensor] = None,
                      mask: Optional[Tensor] = None, mask_emb: Optional[Tensor] = None) -> Iterator[Tensor]:
        """Latents z (B, L, latent) -> every block's output (B, L, D).

        mask (B, L) bool with mask_emb (latent,): masked steps are replaced, after the
        LayerNorm, by the mask embedding (torchaudio's ``MaskGenerator`` placement).
        """
        x = self.context.ln(z)
        if mask is not None:
            x = torch.where(mask[..., None], mask_emb.to(x.dtype), x)
        x = self.context.proj(x)
        return self.context.run_blocks(x, key_padding_mask)


def latent_lengths(lengths: Tensor, n_latents: int) -> Tensor:
    """Audio lengths in samples (B,) -> latents holding at least one valid mel frame (B,).

    A centred STFT gives ``n // 320 + 1`` frames for n samples; a latent is valid when its
    first frame is."""
    frames = lengths // MEL_HOP + 1
    return ((frames + STACK - 1) // STACK).clamp(max=n_latents)


def padding_from_lengths(lengths: Tensor, n: int) -> Tensor:
    """(B,) valid lengths -> (B, n) bool, True = padded."""
    return torch.arange(n, device=lengths.device)[None] >= lengths[:, None]


# -- wav2vec 2.0-style pretraining ------------------------------------------------------------
class ConformerWav2Vec2(nn.Module):
    """Contrastive pretraining: span-masked latents, the context output at each masked
    step must pick the true projected latent among K distractors from other masked steps
    of the same clip (cosine similarity / temperature, cross-entropy).

    Masking (fairseq ``compute_mask_indices``, ``mask_selection="static"``, as torchaudio's
    ``conformer_wav2vec2_pretrain_*``): per clip of n valid latents,
    ``int(mask_prob * n / mask_length + u)`` (u ~ U[0, 1), at least ``min_masks``) span
    starts drawn without replacement from the n - mask_length + 1 possible ones, spans of
    ``mask_length``, overlaps allowed; padding is never masked. With mask_prob 0.3 and
    mask_length 3 (torchaudio's defaults for this paper) about 26-27 % of the steps end
    up masked (overlaps); ``mask_prob`` is the fraction before overlaps, as in fairseq.

    Distractors: for a masked step with rank i among the clip's M masked steps, K indices
    drawn uniformly with replacement from the other M - 1 (so never the positive, never
    padding, never another clip); distractors whose target equals the positive (e.g. two
    silent latents) get logit -inf, as fairseq's ``neg_is_pos``. Clips with fewer than 2
    masked steps contribute nothing.
    """

    def __init__(self, dims: ConformerDims, mask_prob: float = 0.3, mask_length: int = 3, min_masks: int = 2,
                 n_negatives: int = 100, temperature: float = 0.1):
        super().__init__()
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob={mask_prob}: expected a fraction in (0, 1)")
        if mask_length < 1 or n_negatives < 1 or temperature <= 0:
            raise ValueError("mask_length and n_negatives must be >= 1, temperature > 0")
        self.dims = dims
        self.mask_prob, self.mask_length, self.min_masks = mask_prob, mask_length, min_masks
        self.n_negatives, self.temperature = n_negatives, temperature
        self.encoder = ConformerEncoder(dims)
        self.target_proj = Linear(dims.latent, dims.width)
        self.mask_emb = nn.Parameter(torch.empty(dims.latent).uniform_())

    # ---- the named steps ---------------------------------------------------------------
    def compute_mask(self, lengths: Tensor, n_latents: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """(B,) valid latents -> (B, n_latents) bool, True = masked (see the class docstring)."""
        B = lengths.shape[0]
        mask = torch.zeros(B, n_latents, dtype=torch.bool)
        span = self.mask_length
        for b in range(B):
            n = int(lengths[b])
            if n < 2:
                continue
            n_starts = max(1, n - span + 1)
            u = float(torch.rand((), generator=generator))
            num = max(self.min_masks, int(self.mask_prob * n / span + u))
            num = min(num, n_starts)
            starts = torch.randperm(n_starts, generator=generator)[:num]
            idx = (starts[:, None] + torch.arange(span)[None]).flatten()
            mask[b, idx[idx < n]] = True
        return mask.to(lengths.device)

    def sample_distractors(self, mask: Tensor, generator: Optional[torch.Generator] = None
                           ) -> Tuple[Tensor, Tensor, Tensor]:
        """mask (B, L) -> (b (N,), t (N,), neg_t (N, K)): every usable masked step (b, t)
        and the time indices of its K distractors in the same clip b."""
        B, L = mask.shape
        counts = mask.sum(1)  # (B,)
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # masked positions first, in order
        b_idx, t_idx = mask.nonzero(as_tuple=True)
        rank = (mask.cumsum(1) - 1)[b_idx, t_idx]  # (N,) position among the clip's masked steps
        M = counts[b_idx]
        keep = M >= 2
        b_idx, t_idx, rank, M = b_idx[keep], t_idx[keep], rank[keep], M[keep]
        u = torch.rand(b_idx.shape[0], self.n_negatives, generator=generator).to(mask.device)
        r = (u * (M - 1)[:, None]).long().clamp(max=L - 2) if L >= 2 else torch.zeros_like(u, dtype=torch.long)
        r = r + (r >= rank[:, None]).long()  # skip the positive itself
        neg_t = order[b_idx[:, None], r]  # (N, K)
        return b_idx, t_idx, neg_t

    def forward_loss(self, c: Tensor, y: Tensor, b_idx: Tensor, t_idx: Tensor, neg_t: Tensor
                     ) -> Tuple[Tensor, Tensor]:
        """c (B, L, D) context outputs, y (B, L, D) projected targets -> (loss, accuracy).

        logits = [cos(c_t, y_t), cos(c_t, y_d1), ..., cos(c_t, y_dK)] / temperature;
        cross-entropy with the positive at index 0, mean over the masked steps."""
        if b_idx.numel() == 0:
            zero = c.sum() * 0.0 + y.sum() * 0.0
            return zero, zero.detach()
        ct = c[b_idx, t_idx].float()  # (N, D)
        pos = y[b_idx, t_idx].float()  # (N, D)
        neg = y[b_idx[:, None], neg_t].float()  # (N, K, D)
        cand = torch.cat([pos[:, None], neg], dim=1)  # (N, 1 + K, D)
        logits = F.cosine_similarity(ct[:, None], cand, dim=-1, eps=1e-6) / self.temperature
        neg_is_pos = (neg == pos[:, None]).all(-1)  # (N, K)
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(neg_is_pos, float("-inf"))], dim=1)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(-1) == 0).float().mean()
        return loss, acc.detach()

    def forward(self, mel: Tensor, lengths: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
                ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """mel (B, n_mels, T), lengths (B,) valid LATENTS (None: all valid) -> (loss, logs)."""
        z = self.encoder.feature_encoder(mel)  # (B, L, latent)
        B, L, _ = z.shape
        if lengths is None:
            lengths = torch.full((B,), L, dtype=torch.long, device=z.device)
        padding = padding_from_lengths(lengths, L)
        kpm = padding if bool(padding.any()) else None
        mask = self.compute_mask(lengths.cpu(), L, generator).to(z.device)
        c = last(self.encoder.hidden_states(z, kpm, mask=mask, mask_emb=self.mask_emb))
        y = self.target_proj(z)  # (B, L, D)
        b_idx, t_idx, neg_t = self.sample_distractors(mask, generator)
        loss, acc = self.forward_loss(c, y, b_idx, t_idx, neg_t)
        valid = (~padding).sum().clamp_min(1)
        return loss, {"acc": acc, "masked": mask.sum() / valid, "steps": torch.tensor(float(b_idx.numel()))}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- fine-tuning ------------------------------------------------------------------------------
class ConformerClassifier(nn.Module):
    """Fine-tuning head on the context output (the last block), all weights trainable.

    ``multilabel=False``: mean of the valid latents, ``Linear D -> n_classes`` (logits).
    ``multilabel=True``: frame-level ``Linear D -> n_classes`` + sigmoid, then linear-softmax
    pooling over the valid latents, ``p = sum_t p_t^2 / sum_t p_t`` per class (the clip
    PROBABILITIES are returned).
    """

    def __init__(self, dims: ConformerDims, n_classes: int, multilabel: bool = False):
        super().__init__()
        self.dims = dims
        self.multilabel = multilabel
        self.encoder = ConformerEncoder(dims)
        self.head = Linear(dims.width, n_classes)

    def forward(self, mel: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """mel (B, n_mels, T), lengths (B,) valid latents -> (B, n_classes) logits
        (single-label) or probabilities (multilabel)."""
        z = self.encoder.feature_encoder(mel)
        B, L, _ = z.shape
        if lengths is None:
            lengths = torch.full((B,), L, dtype=torch.long, device=z.device)
        padding = padding_from_lengths(lengths, L)
        h = last(self.encoder.hidden_states(z, padding if bool(padding.any()) else None))
        if not self.multilabel:
            return self.head(masked_mean(h, padding))
        keep = (~padding).to(h.dtype)[..., None]  # (B, L, 1)
        p = torch.sigmoid(self.head(h).float()) * keep.float()  # (B, L, C)
        return (p * p).sum(1) / p.sum(1).clamp_min(1e-7)


# -- HEAR frame encoder ------------------------------------------------------------------------
class ConformerFrameEncoder(FrameEncoder):
    """Conformer latents as HEAR frames every 40 ms (each 80 ms latent gives two frames,
    timestamped at the centres of its halves: 10 + 40 k ms; see the module docstring).

    ``layers`` chooses the blocks (default "all": the mean of the 12 block outputs; "last":
    the last block's LayerNorm'd output, what the contrastive loss sees). Windows of
    10.24 s (128 latents), encoded independently; mel frames missing at the end of a
    window are filled with the log-mel of silence.
    """

    sample_rate = SAMPLE_RATE
    hop_samples = FRAME_HOP
    first_center_samples = float(FIRST_CENTER)
    window_samples = WINDOW
    min_samples = FRAME_HOP  # 40 ms (the reflect-padded STFT needs > 512 samples)

    def __init__(self, encoder: ConformerEncoder, layers: Union[str, int, Sequence[int]] = "all",
                 combine: str = "mean"):
        super().__init__()
        self.encoder = encoder
        self.n_layers = len(encoder.context.blocks)
        self.layers = LayerSelector(layers, combine, self.n_layers)
        self.embedding_size = self.layers.width(encoder.dims.width)

    def n_frames(self, n_samples: int) -> int:
        """Frames centred inside the clip: 10 + 40 k ms <= its length."""
        n = int(n_samples)
        return (n - FIRST_CENTER) // FRAME_HOP + 1 if n >= FIRST_CENTER else 0

    def _latent_states(self, audio: Tensor) -> Tuple[Iterator[Tensor], int]:
        K = self.n_frames(audio.shape[1])
        L = -(-K // 2)  # latents needed
        enc = self.encoder
        mel = enc.frontend(audio)  # (B, n_mels, T), frame j centred at 20 j ms
        need = L * STACK
        if mel.shape[-1] < need:
            mel = F.pad(mel, (0, need - mel.shape[-1]), value=enc.silence_level())
        z = enc.feature_encoder(mel[..., :need])
        return enc.hidden_states(z), K

    def hidden_states(self, audio: Tensor) -> Iterator[Tensor]:
        """Every block's output on the 40 ms frames, (B, n_frames, D) each."""
        states, K = self._latent_states(audio)
        for h in states:
            yield h.repeat_interleave(2, dim=1)[:, :K]

    def forward(self, audio: Tensor) -> Tensor:
        """audio (B, n_samples) -> frames (B, n_frames(n_samples), embedding_size)."""
        states, K = self._latent_states(audio)
        return self.layers.reduce(states).repeat_interleave(2, dim=1)[:, :K]


# -- weights files ------------------------------------------------------------------------------
def infer_dims(sd: Mapping[str, Tensor]) -> ConformerDims:
    """Sizes from one of OUR encoder state dicts (keys ``feature_encoder.*``, ``context.*``)."""
    try:
        D = sd["context.proj.weight"].shape[0]
        latent = sd["context.proj.weight"].shape[1]
        n_in = sd["feature_encoder.proj.weight"].shape[1]
        blocks = sorted({int(k.split(".")[2]) for k in sd if k.startswith("context.blocks.")})
        sd["context.blocks.0.ffn1.0.weight"]
        # what the blocks agree on: one corrupted block is then the one reported mis-shaped
        ffn = Counter(v.shape[0] for k, v in sd.items() if k.startswith("context.blocks.")
                      and k.endswith(".ffn1.0.weight")).most_common(1)[0][0]
        k_first = sd["context.blocks.0.conv.depthwise_conv.weight"].shape[-1]
        k_rest = sd[f"context.blocks.{blocks[-1]}.conv.depthwise_conv.weight"].shape[-1]
    except (KeyError, IndexError) as e:
        raise ValueError(f"not a Conformer SSL encoder state dict (missing {e})") from None
    heads = ConformerDims.heads_for(D)
    conv_norm = "batch" if any(k.endswith("conv.norm.running_mean") for k in sd) else "layer"
    return ConformerDims(width=D, heads=heads, layers=len(blocks), ffn=ffn, latent=latent,
                         n_mels=n_in // STACK, kernel_first=k_first, kernel=k_rest, conv_norm=conv_norm,
                         conv_bias="context.blocks.0.conv.pointwise_conv1.bias" in sd)


# -- loading ---------------------------------------------------------------------------------
EXPORT_FORMAT = "hear_models.conformer/1"


def load_encoder(path: str = "", variant: str = "tiny", seed: int = 0) -> LoadedEncoder:
    """The conformer encoder (its log-mel front-end inside) from a weights file, or seeded
    random weights.

    Accepted files (read with ``torch.load(weights_only=True)``):

    - our export (``hear-models train export``): ``{"format": "hear_models.conformer/1",
      "dims": {...}, "state_dict": {feature_encoder.*, context.*}, ...}``;
    - a state dict of ours: a ``ConformerWav2Vec2`` / classifier (``encoder.*`` keys; the
      others, e.g. ``target_proj``, are dropped) or a bare encoder.
    """
    from ..checkpoints import CheckpointError

    if not path:
        dims = ConformerDims.variant(variant)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            encoder = ConformerEncoder(dims)
        return LoadedEncoder(encoder, None, f"conformer-{variant} UNTRAINED (random weights, seed {seed})")

    obj = read_checkpoint(path, "conformer", "a Conformer SSL checkpoint")
    if "format" in obj:
        if obj["format"] != EXPORT_FORMAT:
            raise CheckpointError(f"{path}: not a Conformer SSL checkpoint: it is "
                                  f"{identify(obj)[1]}, not {EXPORT_FORMAT!r}")
        dims = ConformerDims.from_dict(obj["dims"])
        sd = obj["state_dict"]
        desc = obj.get("description", f"conformer ({path})")
    else:
        sd = obj.get("state_dict", obj)
        if not isinstance(sd, dict):
            raise CheckpointError(f"{path}: not a Conformer SSL checkpoint")
        if any(k.startswith("encoder.") for k in sd):
            sd = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
        sd = {k: v for k, v in sd.items() if k.startswith(("feature_encoder.", "context."))}
        dims = sizes_of(infer_dims, sd, path, obj, "a Conformer SSL checkpoint")
        desc = f"conformer ({path})"
    encoder = ConformerEncoder(dims)
    load_strict(encoder, sd, source=path)
    return LoadedEncoder(encoder, None, desc)
