"""MaskSpec (Chong et al., 2022): a ViT on 16 x 16 log-mel patches, pretrained as a masked
autoencoder (MAE) on spectrograms.

Front end: the PaSST preset (``PASST_128_32K``: 32 kHz, 128 mel bins, 10 ms hop), then a
per-bin standardisation (``frontend.mean`` / ``frontend.std``): the official code uses
AudioSet statistics, which its checkpoints do not carry; ``load_encoder`` applies them
(:mod:`.maskspec_audioset_stats`) to official checkpoints, our files carry their own
(identity for our models), ``mel_stats`` overrides.

Patches: 16 mel bins x 16 frames (160 ms), a grid of 8 x floor(T / 16) for T frames; the
paper's 992 frames give 8 x 62 = 496 patches. Tokens are ordered row-major over
(frequency row, time column), as the official ``patchify``. Fixed 2-D sin-cos position
embeddings are built for the actual grid (any clip length; the official code assumes
square grids in ``unpatchify`` and in position interpolation, which we do not). The official
AudioSet fine-tuned ViT instead has a trained table (``dims.pos_cols``: the first w columns
serve a w-column grid, as the official ``target_size`` cut), ``fc_norm`` (our ``norm``) on
the mean patch token, and a 527-class ``head`` (``dims.n_classes``): :mod:`.maskspec_official`.

Sizes (trainable parameters of the encoder: patch embedding, CLS, 12 blocks, final norm):
base 768 x 12 heads 85.25M, small 384 x 6 heads 21.4M, tiny 192 x 3 heads 5.39M.
Decoder: 512 wide, 8 blocks, 16 heads, Linear 512 -> 256 per patch (25.7M with base).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..frontends import PASST_128_32K, LogMel
from ..hear_api import FrameEncoder, LayerSelector
from ..layers import LayerNorm, ResidualAttentionBlock, last, masked_mean
from . import Dims, LoadedEncoder, identify, load_strict, read_checkpoint, sizes_of

SAMPLE_RATE = 32000  # Hz
MEL_HOP = 320  # samples: 10 ms
PATCH = 16  # mel bins x mel frames per patch (16 frames = 160 ms)
FRAME_MEL = 4  # mel frames per HEAR frame: 40 ms
FRAME_HOP = FRAME_MEL * MEL_HOP  # samples: 1280 = 40 ms
PRETRAIN_FRAMES = 992  # mel frames of the paper's input (9.92 s): a 8 x 62 grid

VARIANTS: Dict[str, Dict[str, int]] = {
    "base": dict(width=768, heads=12),
    "small": dict(width=384, heads=6),
    "tiny": dict(width=192, heads=3),
}


@dataclass
class MaskSpecDims(Dims):
    """Sizes of a MaskSpec model (stored with every checkpoint we write)."""

    FAMILY: ClassVar[str] = "MaskSpec"
    VARIANTS: ClassVar[Dict[str, Dict[str, int]]] = VARIANTS
    EXTRA_HEADS: ClassVar[Dict[int, int]] = {1024: 16, 1280: 16}  # ViT-L, ViT-H

    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    n_mels: int = 128
    patch: int = PATCH
    decoder_width: int = 512
    decoder_layers: int = 8
    decoder_heads: int = 16
    drop_path: float = 0.0  # stochastic depth of the last encoder block (linear from 0)
    pos_cols: int = 0  # > 0: a LEARNED position table of (n_mels / patch) x pos_cols patches
    n_classes: int = 0  # > 0: a tagging head on the pooled tokens (official fine-tuned files)


# -- position embeddings -------------------------------------------------------------------
def sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """pos : (M,) float64 -> (M, dim): [sin(pos w_i), cos(pos w_i)], w_i = 10000^(-2i/dim)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double()[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding of a (grid_h, grid_w) grid, row-major.

    Layout of MAE's ``get_2d_sincos_pos_embed`` (so official checkpoints compare equal):
    the first ``dim / 2`` channels encode the column (time) index, the last ``dim / 2`` the
    row (frequency) index. Works for any grid, square or not.

    Returns
    -------
    Tensor, shape = (grid_h * grid_w, dim), float32
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    rows = torch.arange(grid_h, dtype=torch.float64).repeat_interleave(grid_w)  # (h*w,)
    cols = torch.arange(grid_w, dtype=torch.float64).repeat(grid_h)  # (h*w,)
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1).float()


class _PosCache:
    """Position tables per (grid, device, dtype), computed once: fixed, never trained,
    never in a state dict."""

    def __init__(self, dim: int):
        self.dim = dim
        self._cache: Dict[tuple, Tensor] = {}

    def __call__(self, grid_h: int, grid_w: int, like: Tensor) -> Tensor:
        key = (grid_h, grid_w, like.device, like.dtype)
        if key not in self._cache:
            if len(self._cache) > 32:
                self._cache.clear()
            self._cache[key] = sincos_2d(self.dim, grid_h, grid_w).to(like.device, like.dtype)
        return self._cache[key]


# -- front end -----------------------------------------------------------------------------
class MaskSpecFrontend(nn.Module):
    """PaSST log-mel (``PASST_128_32K``) then per-bin standardisation ``(x - mean) / std``.

    ``mean`` and ``std`` (shape (n_mels,)) are persistent buffers: identity (0, 1) for our
    models, the dataset statistics for converted official checkpoints.
    """

    def __init__(self, n_mels: int = 128):
        super().__init__()
        self.logmel = LogMel(PASST_128_32K.replace(n_mels=n_mels))
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    def n_frames(self, n_samples: int) -> int:
        return self.logmel.n_frames(n_samples)

    def forward(self, audio: Tensor) -> Tensor:
        """audio : (batch, n_samples) at 32 kHz -> (batch, n_mels, n_frames), float32."""
        mel = self.logmel(audio)
        return (mel - self.mean[:, None]) / self.std[:, None]

    def silence(self) -> Tensor:
        """The standardised value of digital silence per bin, shape (n_mels,): what padding
        with zeros would give away from the edges."""
        c = self.logmel.config
        level = (math.log(c.log_offset) + c.affine[0]) / c.affine[1]
        return (level - self.mean) / self.std


# -- encoder -------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Non-overlapping 16 x 16 patches -> tokens (a strided Conv2d, key ``proj``)."""

    def __init__(self, width: int, patch: int = PATCH):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(1, width, kernel_size=patch, stride=patch)

    def forward(self, mel: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """mel : (batch, n_mels, T) -> tokens (batch, h * w, width), grid (h, w) with
        h = n_mels / 16, w = floor(T / 16) (trailing frames that do not fill a patch are
        dropped)."""
        p = self.patch
        T = mel.shape[-1] // p * p
        if T == 0:
            raise ValueError(f"{mel.shape[-1]} mel frames: need at least {p} for one patch")
        x = self.proj(mel[:, None, :, :T])  # (batch, width, h, w)
        grid = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), grid


class MaskSpecEncoder(nn.Module):
    """The ViT encoder: patch embedding, CLS token, fixed 2-D sin-cos positions (or a
    learned table, ``dims.pos_cols``), blocks (qkv bias, LayerNorm eps 1e-6, MLP ratio 4),
    final LayerNorm ``norm``, optional tagging ``head`` (``dims.n_classes``)."""

    def __init__(self, dims: MaskSpecDims):
        super().__init__()
        self.dims = dims
        D = dims.width
        self.patch_embed = PatchEmbed(D, dims.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        dpr = [dims.drop_path * i / max(dims.layers - 1, 1) for i in range(dims.layers)]
        self.blocks = nn.ModuleList([
            ResidualAttentionBlock(D, dims.heads, mlp_ratio=dims.mlp_ratio, qkv_bias=True,
                                   key_bias=True, ln_eps=1e-6, drop_path=p) for p in dpr])
        self.norm = LayerNorm(D, eps=1e-6)
        self.pos = _PosCache(D)
        if dims.pos_cols:  # the official fine-tuned ViT's trained table, CLS position first
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + dims.n_mels // dims.patch * dims.pos_cols, D))
        if dims.n_classes:  # applied to norm(mean of the patch tokens): see ``pooled``
            self.head = nn.Linear(D, dims.n_classes)

    def positions(self, h: int, w: int, like: Tensor) -> Tensor:
        """(h * w, D) positions of a (h, w) grid: the fixed sin-cos table, or the first w
        columns of the learned one (as the official ``target_size`` cut)."""
        if not self.dims.pos_cols:
            return self.pos(h, w, like)
        rows, cols = self.dims.n_mels // self.dims.patch, self.dims.pos_cols
        if h != rows or w > cols:
            raise ValueError(f"a {h} x {w} patch grid: the learned position table covers {rows} x {cols} "
                             f"({cols * self.dims.patch} mel frames at most)")
        return self.pos_embed[0, 1:].view(rows, cols, -1)[:, :w].reshape(h * w, -1).to(like.dtype)

    def tokens(self, mel: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """mel (batch, n_mels, T) -> patch tokens with positions (batch, h * w, D), grid."""
        x, (h, w) = self.patch_embed(mel)
        return x + self.positions(h, w, x), (h, w)

    def with_cls(self, x: Tensor) -> Tensor:
        """(batch, L, D) -> (batch, 1 + L, D), CLS first (plus its learned position; MAE's
        fixed CLS position is zero)."""
        cls = self.cls_token + self.pos_embed[:, :1] if self.dims.pos_cols else self.cls_token
        return torch.cat([cls.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)

    def pooled(self, x: Tensor) -> Tensor:
        """Last block's output (batch, 1 + L, D) -> ``norm`` of the mean patch token (batch,
        D): the official fine-tuned ViT's global pooling (``norm`` holds its ``fc_norm``)."""
        return self.norm(x[:, 1:].mean(dim=1))

    def run_blocks(self, x: Tensor, key_padding_mask: Optional[Tensor] = None) -> Iterator[Tensor]:
        """Outputs of every block (before ``norm``), one at a time."""
        for block in self.blocks:
            x = block(x, key_padding_mask=key_padding_mask)
            yield x

    def forward(self, mel: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """mel (batch, n_mels, T) -> normalised tokens (batch, 1 + h * w, D), CLS first.

        key_padding_mask : (batch, h * w) bool, True = padded patch (ignored as a key).
        """
        x, _ = self.tokens(mel)
        x = self.with_cls(x)
        if key_padding_mask is not None:
            key_padding_mask = F.pad(key_padding_mask, (1, 0), value=False)
        return self.norm(last(self.run_blocks(x, key_padding_mask)))


def init_vit_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform Linear (and the patch projection as a Linear),
    zero biases, unit LayerNorms, N(0, 0.02) tokens."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbed):
            w = m.proj.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.zeros_(m.proj.bias)
    for name, p in module.named_parameters():
        if name.endswith("cls_token") or name.endswith("mask_token"):
            nn.init.normal_(p, std=0.02)


# -- the masked autoencoder ------------------------------------------------------------------
class MaskSpecMAE(nn.Module):
    """Masked-spectrogram pretraining: encoder on the visible 25 % of patches, a light
    decoder reconstructs the masked ones, MSE on masked patches (per-patch normalised
    targets).

    Parameters
    ----------
    dims : MaskSpecDims
    mask_ratio : float
        Fraction of patches masked per sample (0.75).
    norm_pix_loss : bool
        Normalise each target patch by its own mean and variance (the paper: True).
    """

    def __init__(self, dims: MaskSpecDims, mask_ratio: float = 0.75, norm_pix_loss: bool = True):
        super().__init__()
        self.dims = dims
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.frontend = MaskSpecFrontend(dims.n_mels)
        self.encoder = MaskSpecEncoder(dims)
        Dd = dims.decoder_width
        self.decoder_embed = nn.Linear(dims.width, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_blocks = nn.ModuleList([
            ResidualAttentionBlock(Dd, dims.decoder_heads, mlp_ratio=dims.mlp_ratio, qkv_bias=True,
                                   key_bias=True, ln_eps=1e-6) for _ in range(dims.decoder_layers)])
        self.decoder_norm = LayerNorm(Dd, eps=1e-6)
        self.decoder_pred = nn.Linear(Dd, dims.patch ** 2)
        self.decoder_pos = _PosCache(Dd)
        init_vit_weights(self)

    # ---- the named steps ---------------------------------------------------------------
    def patchify(self, mel: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """mel (N, n_mels, T) -> patches (N, h * w, p * p), grid (h, w).

        Row-major over (frequency row, time column); inside a patch, row-major over
        (bin, frame): the order of the official ``patchify`` and of the Conv2d embedding.
        """
        p = self.dims.patch
        N, H, T = mel.shape
        h, w = H // p, T // p
        x = mel[:, : h * p, : w * p].reshape(N, h, p, w, p)  # (N, h, p_bin, w, p_frame)
        x = x.permute(0, 1, 3, 2, 4)  # (N, h, w, p_bin, p_frame)
        return x.reshape(N, h * w, p * p), (h, w)

    def unpatchify(self, patches: Tensor, grid: Tuple[int, int]) -> Tensor:
        """patches (N, h * w, p * p) -> mel (N, h * p, w * p): the inverse of ``patchify``
        for any grid (the official code uses h for the time axis: wrong unless h == w)."""
        p = self.dims.patch
        h, w = grid
        N = patches.shape[0]
        x = patches.reshape(N, h, w, p, p).permute(0, 1, 3, 2, 4)  # (N, h, p_bin, w, p_frame)
        return x.reshape(N, h * p, w * p)

    def random_masking(self, x: Tensor, mask_ratio: float, noise: Optional[Tensor] = None
                       ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-sample random masking by sorting per-sample noise.

        Parameters
        ----------
        x : Tensor, shape = (N, L, D)
        noise : Tensor, shape = (N, L), optional (uniform [0, 1) by default)

        Returns
        -------
        x_visible : (N, L_keep, D), L_keep = int(L * (1 - mask_ratio))
        mask : (N, L) float, 1 = masked (removed), 0 = visible; exactly L - L_keep ones
        ids_restore : (N, L) long, un-shuffles [visible, masked] back to patch order
        ids_keep : (N, L_keep) long, the visible patch indices
        """
        N, L, D = x.shape
        len_keep = max(1, int(L * (1 - mask_ratio)))
        if noise is None:
            noise = torch.rand(N, L, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small = keep
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_visible = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, D))
        mask = torch.ones(N, L, device=x.device, dtype=x.dtype)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_visible, mask, ids_restore, ids_keep

    def forward_encoder(self, mel: Tensor, mask_ratio: float, padding: Optional[Tensor] = None,
                        noise: Optional[Tensor] = None):
        """mel (N, n_mels, T) -> latent (N, 1 + L_keep, D) of CLS + visible patches.

        padding : (N, L) bool, True = patch made of padding; visible padded patches are
        ignored as attention keys.

        Returns latent, mask (N, L), ids_restore (N, L), grid, visible padding (N, L_keep)
        """
        x, grid = self.encoder.tokens(mel)  # (N, L, D), positions added
        x, mask, ids_restore, ids_keep = self.random_masking(x, mask_ratio, noise)
        kpm = None
        if padding is not None:
            kpm = F.pad(torch.gather(padding, 1, ids_keep), (1, 0), value=False)  # (N, 1 + L_keep)
        x = self.encoder.with_cls(x)  # (N, 1 + L_keep, D)
        return self.encoder.norm(last(self.encoder.run_blocks(x, kpm))), mask, ids_restore, grid, kpm

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor, grid: Tuple[int, int],
                        padding: Optional[Tensor] = None) -> Tensor:
        """latent (N, 1 + L_keep, D) -> predicted patches (N, L, p * p)."""
        x = self.decoder_embed(latent)  # (N, 1 + L_keep, Dd)
        N, L = ids_restore.shape
        Dd = x.shape[-1]
        masked = self.mask_token.to(x.dtype).expand(N, L + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:], masked], dim=1)  # (N, L, Dd), visible first
        x_ = torch.gather(x_, 1, ids_restore[..., None].expand(-1, -1, Dd))  # patch order
        x_ = x_ + self.decoder_pos(grid[0], grid[1], x_)
        x = torch.cat([x[:, :1], x_], dim=1)  # (N, 1 + L, Dd); the CLS position is zero
        kpm = None if padding is None else F.pad(padding, (1, 0), value=False)
        for block in self.decoder_blocks:
            x = block(x, key_padding_mask=kpm)
        x = self.decoder_pred(self.decoder_norm(x))  # (N, 1 + L, p * p)
        return x[:, 1:]

    def forward_loss(self, mel: Tensor, pred: Tensor, mask: Tensor,
                     padding: Optional[Tensor] = None) -> Tensor:
        """Mean squared error on masked (and not padded) patches.

        mel (N, n_mels, T); pred (N, L, p * p); mask (N, L), 1 = masked; padding (N, L) bool.
        """
        target, _ = self.patchify(mel)  # (N, L, p * p)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred.float() - target.float()) ** 2).mean(dim=-1)  # (N, L) per patch
        weight = mask.float()
        if padding is not None:
            weight = weight * (~padding).float()
        return (loss * weight).sum() / weight.sum().clamp_min(1.0)

    def forward(self, mel: Tensor, mask_ratio: Optional[float] = None,
                padding: Optional[Tensor] = None, noise: Optional[Tensor] = None):
        """mel (N, n_mels, T) -> (loss, pred (N, L, p * p), mask (N, L))."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore, grid, _ = self.forward_encoder(mel, ratio, padding, noise)
        pred = self.forward_decoder(latent, ids_restore, grid, padding)
        return self.forward_loss(mel, pred, mask, padding), pred, mask

    def patch_padding(self, valid_frames: Tensor, n_frames: int) -> Tensor:
        return patch_padding(valid_frames, n_frames, self.dims.n_mels, self.dims.patch)


def patch_padding(valid_frames: Tensor, n_frames: int, n_mels: int = 128, patch: int = PATCH) -> Tensor:
    """(N,) valid mel frames of each clip -> (N, L) bool, True = the patch lies wholly in
    padding (L = (n_mels / patch) x floor(n_frames / patch), row-major)."""
    h, w = n_mels // patch, n_frames // patch
    col_start = torch.arange(w, device=valid_frames.device) * patch
    pad_col = col_start[None] >= valid_frames[:, None]  # (N, w)
    return pad_col[:, None, :].expand(-1, h, -1).reshape(-1, h * w)


# -- fine-tuning ------------------------------------------------------------------------------
class MaskSpecClassifier(nn.Module):
    """Fine-tuning: LayerNorm + Linear on the mean of the patch tokens (CLS excluded), as
    the paper's global pooling (the encoder's final ``norm`` is not used there)."""

    def __init__(self, dims: MaskSpecDims, n_classes: int):
        super().__init__()
        self.dims = dims
        self.frontend = MaskSpecFrontend(dims.n_mels)
        self.encoder = MaskSpecEncoder(dims)
        self.fc_norm = LayerNorm(dims.width, eps=1e-6)
        self.head = nn.Linear(dims.width, n_classes)
        init_vit_weights(self)
        nn.init.normal_(self.head.weight, std=2e-5)  # MAE's fine-tuning head init
        # the pooled head replaces the encoder's final norm (MAE's global_pool deletes it);
        # kept, frozen, so that pretrained encoder weights load unchanged
        self.encoder.norm.requires_grad_(False)

    def forward(self, mel: Tensor, padding: Optional[Tensor] = None) -> Tensor:
        """mel (N, n_mels, T) -> logits (N, n_classes)."""
        x, _ = self.encoder.tokens(mel)
        x = self.encoder.with_cls(x)
        kpm = None if padding is None else F.pad(padding, (1, 0), value=False)
        tokens = last(self.encoder.run_blocks(x, kpm))[:, 1:]
        return self.head(self.fc_norm(masked_mean(tokens, padding)))


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def decoder_parameters(mae: MaskSpecMAE) -> Iterator[nn.Parameter]:
    for name, p in mae.named_parameters():
        if not name.startswith(("encoder.", "frontend.")):
            yield p


# -- HEAR frame encoder ----------------------------------------------------------------------
class MaskSpecFrameEncoder(FrameEncoder):
    """MaskSpec tokens as frames every 40 ms (HEAR needs a hop <= 50 ms; a patch column is
    160 ms).

    ``shifts=4`` (default): the encoder runs on four copies of the window's spectrogram
    shifted by 0, 40, 80, 120 ms (batched), so every 40 ms frame k gets its OWN patch
    column, the one spanning [40 k - 80, 40 k + 80) ms (centred on the frame to within
    5 ms; edges padded with the log-mel of silence). Cost: 4 encoder passes.
    ``shifts=1``: one pass; each 40 ms frame repeats the feature of the column that
    contains it (true resolution 160 ms, honest about it: four equal rows).

    A frame's feature is the mean (or the concatenation, ``freq_pool="concat"``) of the
    8 frequency tokens of its column, taken from the chosen blocks (``layers``; "final" =
    the last block followed by the encoder's final LayerNorm). Windows: 9.92 s (248
    frames; the 8 x 62 grid of pretraining), each encoded independently.
    """

    sample_rate = SAMPLE_RATE
    hop_samples = FRAME_HOP
    first_center_samples = 0.0
    window_samples = 248 * FRAME_HOP  # 317440 samples = 9.92 s
    min_samples = FRAME_HOP  # 40 ms

    def __init__(self, frontend: MaskSpecFrontend, encoder: MaskSpecEncoder,
                 layers: Union[str, int, Sequence[int]] = "final", combine: str = "mean",
                 freq_pool: str = "mean", shifts: int = 4):
        super().__init__()
        if shifts not in (1, 4):
            raise ValueError(f"shifts={shifts}: expected 4 (own column per 40 ms frame) or 1 (repeat)")
        if freq_pool not in ("mean", "concat"):
            raise ValueError(f"freq_pool={freq_pool!r}: expected 'mean' or 'concat'")
        self.frontend = frontend
        self.encoder = encoder
        self.final = layers == "final"
        self.n_layers = len(encoder.blocks)  # hidden_states: the blocks' outputs before norm
        self.layers = LayerSelector("last" if self.final else layers, combine, self.n_layers)
        self.shifts = shifts
        self.freq_pool = freq_pool
        self.n_rows = encoder.dims.n_mels // encoder.dims.patch
        width = self.layers.width(encoder.dims.width)
        self.embedding_size = width * (self.n_rows if freq_pool == "concat" else 1)

    def n_frames(self, n_samples: int) -> int:
        return -(-int(n_samples) // FRAME_HOP)

    def _grids(self, audio: Tensor):
        """audio (B, n) -> block outputs (S B, 1 + rows * cols, width) one at a time, the
        grid (rows, cols), B and K = n_frames(n)."""
        B = audio.shape[0]
        K = self.n_frames(audio.shape[1])
        mel = self.frontend(audio)  # (B, n_mels, T), frame j centred at 10 j ms
        p = PATCH
        n_cols = -(-K // FRAME_MEL)  # columns per shifted grid
        sil = self.frontend.silence().to(mel.dtype)[None, :, None]
        left = p // 2 if self.shifts == 4 else 0
        # padded frames needed: the last shift starts FRAME_MEL * (shifts - 1) frames in
        need = FRAME_MEL * (self.shifts - 1) + p * n_cols
        right = need - left - mel.shape[-1]
        if right < 0:
            mel = mel[..., : mel.shape[-1] + right]
            right = 0
        padded = torch.cat([sil.expand(B, -1, left), mel, sil.expand(B, -1, right)], dim=-1)
        if self.shifts == 4:  # (4 B, n_mels, 16 n_cols): shift s covers frames s + 4 c
            x = torch.cat([padded[..., FRAME_MEL * s: FRAME_MEL * s + p * n_cols] for s in range(4)])
        else:
            x = padded
        tokens, grid = self.encoder.tokens(x)
        return self.encoder.run_blocks(self.encoder.with_cls(tokens)), grid, B, K

    def _frames(self, out: Tensor, grid: Tuple[int, int], B: int, K: int) -> Tensor:
        """Tokens (S B, 1 + rows * cols, D) -> frames (B, K, D or rows * D)."""
        h, w = grid
        out = out[:, 1:].reshape(out.shape[0], h, w, -1)  # (S B, rows, cols, width)
        if self.freq_pool == "mean":
            out = out.mean(dim=1)  # (S B, cols, width)
        else:
            out = out.permute(0, 2, 1, 3).reshape(out.shape[0], w, -1)  # (S B, cols, rows * width)
        if self.shifts == 4:
            out = out.reshape(4, B, w, -1).permute(1, 2, 0, 3).reshape(B, 4 * w, -1)  # frame 4 c + s
        else:
            out = out.repeat_interleave(FRAME_MEL, dim=1)
        return out[:, :K]

    def hidden_states(self, audio: Tensor) -> Iterator[Tensor]:
        """Every block's output (before the final ``norm``) on the 40 ms frames, its 8
        frequency tokens per column pooled as ``freq_pool`` says: (B, n_frames, D) each
        (``rows x D`` with ``freq_pool="concat"``)."""
        hidden, grid, B, K = self._grids(audio)
        for x in hidden:
            yield self._frames(x, grid, B, K)

    def forward(self, audio: Tensor) -> Tensor:
        """audio (B, n_samples) -> frames (B, ceil(n_samples / 1280), embedding_size)."""
        hidden, grid, B, K = self._grids(audio)
        out = self.layers.reduce(hidden)
        if self.final:
            out = self.encoder.norm(out)
        return self._frames(out, grid, B, K)


# -- loading ---------------------------------------------------------------------------------
EXPORT_FORMAT = "hear_models.maskspec/1"


def load_encoder(path: str = "", variant: str = "tiny", seed: int = 0, mel_stats: str = "auto") -> LoadedEncoder:
    """MaskSpec's front-end and encoder from a weights file, or seeded random weights.

    Accepted files (all read with ``torch.load(weights_only=True)``):

    - our export (``hear-models train export``): ``{"format": "hear_models.maskspec/1",
      "dims": {...}, "state_dict": {frontend.*, encoder.*}}``;
    - a state dict of ours (``MaskSpecMAE`` / ``MaskSpecClassifier``; other keys dropped);
    - an official MaskSpec pretraining checkpoint (``{"model": state_dict, ...}`` with
      ``models_mae`` key names), or an official fine-tuned one (``models_vit`` keys with
      ``fc_norm`` / ``head``, e.g. the published AudioSet tagger): its learned position
      table and 527-class head are kept (``dims.pos_cols``, ``dims.n_classes``); both
      converted by :func:`checkpoint_filter_fn`. Its ``args``
      (an ``argparse.Namespace``) and other pickled objects are read inertly (``read_weights``).

    ``variant`` and ``seed`` apply to ``path=""`` only (a file carries its own sizes).

    ``mel_stats``, the per-bin standardisation of the log-mel:

    - ``"auto"`` (default): an official checkpoint gets the official AudioSet statistics
      (:func:`audioset_mel_stats`; the official code always applies them and its files do
      not carry them); our files keep the ``frontend.mean`` / ``frontend.std`` they carry
      (identity for models we train); random weights get identity;
    - ``"official"``: the AudioSet statistics whatever the file;
    - ``"none"``: identity (mean 0, std 1);
    - a path: a ``.npy`` file read by :func:`read_mel_stats` (e.g. another dataset's
      ``mean_std_128.npy`` of the official repo).

    What was applied is stated in the description (``mel stats: ...``).
    """
    from ..checkpoints import CheckpointError

    if not path:
        dims = MaskSpecDims.variant(variant)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            frontend, encoder = MaskSpecFrontend(dims.n_mels), MaskSpecEncoder(dims)
            init_vit_weights(encoder)
        desc = f"maskspec-{variant} UNTRAINED (random weights, seed {seed})"
        stats = _chosen_mel_stats(mel_stats, official=False)
        if stats is not None:
            _check_n_mels(stats, dims.n_mels)
            frontend.mean.copy_(stats[1][0])
            frontend.std.copy_(stats[1][1])
            desc += f"; mel stats: {stats[0]}"
        return LoadedEncoder(encoder, frontend, desc)
    stats = _chosen_mel_stats(mel_stats, official=False)  # a bad option fails before reading

    obj = read_checkpoint(path, "maskspec", "a MaskSpec checkpoint")
    if obj.get("format") == EXPORT_FORMAT:
        dims = MaskSpecDims.from_dict(obj["dims"])
        sd = obj["state_dict"]
        desc = obj.get("description", f"maskspec ({path})")
    else:
        sd = obj.get("state_dict", obj.get("model", obj))
        if not isinstance(sd, dict) or "format" in obj:
            raise CheckpointError(f"{path}: not a MaskSpec checkpoint: it is {identify(obj)[1]}")
        if is_official_state_dict(sd):
            try:
                sd = checkpoint_filter_fn(sd)
            except ValueError as e:
                raise CheckpointError(f"{path}: {e}") from None
            stats = _chosen_mel_stats(mel_stats, official=True)
        dims = sizes_of(infer_dims, sd, path, obj, "a MaskSpec checkpoint")
        desc = f"maskspec ({path})"
        if dims.n_classes:
            desc += (f"; fine-tuned: {dims.n_classes}-class head, learned {dims.n_mels // dims.patch}"
                     f" x {dims.pos_cols} position table")
    sd = {k: v for k, v in sd.items() if k.startswith(("encoder.", "frontend."))}
    if stats is not None:
        _check_n_mels(stats, dims.n_mels)
        sd["frontend.mean"], sd["frontend.std"] = stats[1]
        desc += f"; mel stats: {stats[0]}"
    else:
        mean, std = sd.get("frontend.mean"), sd.get("frontend.std")
        identity = mean is not None and std is not None and not mean.any() and bool((std == 1).all())
        desc += "; mel stats: the file's" + (" (identity)" if identity else "")
    frontend, encoder = MaskSpecFrontend(dims.n_mels), MaskSpecEncoder(dims)
    holder = nn.Module()
    holder.frontend, holder.encoder = frontend, encoder
    load_strict(holder, sd, source=path,
                what=f"a MaskSpec front-end and encoder {dims.width} x {dims.layers}")
    return LoadedEncoder(encoder, frontend, desc)


def _chosen_mel_stats(option: str, official: bool) -> Optional[Tuple[str, Tuple[Tensor, Tensor]]]:
    """(label, (mean, std)) that ``load_encoder``'s ``mel_stats`` asks for, or None to keep
    what the file carries (identity when there is no file)."""
    if not isinstance(option, str) or not option:
        raise ValueError(f"mel_stats={option!r}: expected 'auto', 'official', 'none' or a .npy path")
    if option == "official" or (option == "auto" and official):
        return "AudioSet (official mean_std_128.npy)", audioset_mel_stats()
    if option == "none":
        return "identity", (torch.zeros(128), torch.ones(128))
    if option == "auto":
        return None
    return f"from {option}", read_mel_stats(option)


def _check_n_mels(stats: Tuple[str, Tuple[Tensor, Tensor]], n_mels: int) -> None:
    if stats[1][0].shape != (n_mels,):
        raise ValueError(f"mel stats {stats[0]} have {stats[1][0].numel()} bins; the model has {n_mels}")


# The official formats (key conversion, AudioSet statistics, sizes from a state dict) live in
# maskspec_official; importable from here as before.
from .maskspec_official import (audioset_mel_stats, checkpoint_filter_fn, infer_dims,  # noqa: E402,F401
                                is_finetuned, is_official_state_dict, read_mel_stats)
