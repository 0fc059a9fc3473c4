"""Whisper-AT's audio-tagging heads over the per-block outputs of a frozen Whisper encoder.

Gong et al., "Whisper-AT: Noise-Robust Automatic Speech Recognizers are Also Strong
General Audio Event Taggers", Interspeech 2023.

Input to every head: the output of every encoder block (before ``ln_post``), each
mean-pooled over time by 20 encoder frames (20 x 20 ms = 0.4 s):
``x : Tensor, shape = (batch, n_layers, n_pooled, width)`` (10 s -> 25 pooled frames).

| head | what it does |
|---|---|
| ``last_mlp`` | last block, mean over time, LayerNorm + Linear |
| ``wa_mlp`` | learned layer weights (init 1/L, normalised by their sum, no softmax), mean over time, LN + Linear |
| ``wa_tr`` | weighted layer average, one Whisper residual attention block over time, mean, LN + Linear |
| ``tl_tr`` | one time block (1 head) over each layer's sequence, mean over time, one layer block (8 heads) over the L layer vectors, mean, LN + Linear |
| ``tl_tr`` with ``proj_dim`` | TL-Tr-512 (or 128, 256 ...): LN + Linear width -> proj_dim first |

No positional embeddings in the heads (as in the paper). Key names follow the official
checkpoints (``time_tr``, ``layer_tr``, ``mlp_layer.0/1``, ``down_layer.0/1``; blocks with
Whisper's ``attn.query/key/value/out``, ``attn_ln``, ``mlp.0/2``, ``mlp_ln``), so
``{size}_ori.pth`` / ``{size}_low.pth`` load with :func:`convert_official_head` + strict loading.

Deviation from the official package, on purpose: its encoder pools with
``avg_pool2d(x, (20, 1))[0]``, which keeps only the first item of a batch (we pool every
item), and it drops frames past the last full 0.4 s (we average a partial last pool). Its
last decision window is zero-padded and the zeros enter the means; we mask them. On clips
whose length is a multiple of the decision window, both give the same logits.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor, nn

from ..layers import ResidualAttentionBlock

POOL = 20  # encoder frames per pooled frame: 20 x 20 ms = 0.4 s
POOLED_PER_SECOND = 2.5  # pooled frames per second of audio

WHISPER_SIZES = {  # name: (n_layers, width) of the encoder
    "tiny": (4, 384), "base": (6, 512), "small": (12, 768), "medium": (24, 1024), "large": (32, 1280),
}
HEAD_KINDS = ("last_mlp", "wa_mlp", "wa_tr", "tl_tr")


def pool_time(hidden: Tensor) -> Tensor:
    """Mean over consecutive groups of 20 encoder frames; a partial last group is averaged too.

    hidden : Tensor, shape = (batch, n_layers, n_frames, width)
    returns : Tensor, shape = (batch, n_layers, ceil(n_frames / 20), width)
    """
    b, n_layers, n, d = hidden.shape
    full = n // POOL
    out = hidden[:, :, : full * POOL].reshape(b, n_layers, full, POOL, d).mean(3)
    if n % POOL:
        out = torch.cat([out, hidden[:, :, full * POOL:].mean(2, keepdim=True)], dim=2)
    return out


def decision_windows(pooled: Tensor, window: int = 25):
    """Cut pooled features into Whisper-AT decision windows (``at_time_res * 2.5`` pooled frames).

    pooled : Tensor, shape = (batch, n_layers, n_pooled, width)
    returns : (windows (batch * n_windows, n_layers, window, width), mask (batch * n_windows,
    window), True = padding, n_windows). The last window is zero-padded and masked.
    """
    b, n_layers, t, d = pooled.shape
    n_win = max(1, -(-t // window))
    pad = n_win * window - t
    x = torch.nn.functional.pad(pooled, (0, 0, 0, pad))
    x = x.view(b, n_layers, n_win, window, d).permute(0, 2, 1, 3, 4).reshape(b * n_win, n_layers, window, d)
    mask = torch.zeros(n_win, window, dtype=torch.bool, device=pooled.device)
    if pad:
        mask[-1, window - pad:] = True
    return x, mask.repeat(b, 1), n_win


def _masked_mean(x: Tensor, mask: Optional[Tensor], dim: int) -> Tensor:
    """Mean over ``dim`` (the time axis) ignoring padded steps (mask True = padded)."""
    if mask is None:
        return x.mean(dim)
    keep = (~mask).to(x.dtype)
    shape = [1] * x.ndim
    shape[0], shape[dim] = keep.shape[0], keep.shape[1]
    keep = keep.view(shape)
    return (x * keep).sum(dim) / keep.sum(dim).clamp_min(1.0)


class _Head(nn.Module):
    """Common part: LayerNorm + Linear classifier (``mlp_layer``) over a representation."""

    def __init__(self, n_layers: int, width: int, n_classes: int, rep_dim: int):
        super().__init__()
        self.n_layers, self.width, self.n_classes, self.rep_dim = n_layers, width, n_classes, rep_dim
        self.mlp_layer = nn.Sequential(nn.LayerNorm(rep_dim), nn.Linear(rep_dim, n_classes))

    def representation(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:  # pragma: no cover
        """x : (batch, n_layers, n_pooled, width), mask : (batch, n_pooled) -> (batch, rep_dim)."""
        raise NotImplementedError

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x : (batch, n_layers, n_pooled, width) -> logits (batch, n_classes)."""
        if x.ndim != 4 or x.shape[1] != self.n_layers or x.shape[3] != self.width:
            raise ValueError(f"{type(self).__name__} expects (batch, {self.n_layers}, time, {self.width}), "
                             f"got {tuple(x.shape)}")
        return self.mlp_layer(self.representation(x, mask).float())


class LastMLP(_Head):
    def __init__(self, n_layers: int, width: int, n_classes: int = 527):
        super().__init__(n_layers, width, n_classes, width)

    def representation(self, x, mask=None):
        return _masked_mean(x[:, -1], mask, 1)


class _LayerWeights(nn.Module):
    """Learned weights over layers, initialised to 1/L and normalised by their sum."""

    def __init__(self, n_layers: int):
        super().__init__()
        self.layer_weight = nn.Parameter(torch.full((n_layers,), 1.0 / n_layers))

    def forward(self, x: Tensor) -> Tensor:
        w = self.layer_weight / self.layer_weight.sum()
        return torch.einsum("l,bltd->btd", w, x)


class WAMLP(_Head):
    def __init__(self, n_layers: int, width: int, n_classes: int = 527):
        super().__init__(n_layers, width, n_classes, width)
        self.layer_avg = _LayerWeights(n_layers)

    def representation(self, x, mask=None):
        return _masked_mean(self.layer_avg(x), mask, 1)


class WATr(_Head):
    def __init__(self, n_layers: int, width: int, n_classes: int = 527, n_head: int = 8):
        super().__init__(n_layers, width, n_classes, width)
        self.layer_avg = _LayerWeights(n_layers)
        self.time_tr = ResidualAttentionBlock(width, n_head)

    def representation(self, x, mask=None):
        h = self.time_tr(self.layer_avg(x), key_padding_mask=mask)
        return _masked_mean(h, mask, 1)


class TLTr(_Head):
    def __init__(self, n_layers: int, width: int, n_classes: int = 527, proj_dim: Optional[int] = None,
                 time_heads: int = 1, layer_heads: int = 8):
        dim = proj_dim or width
        super().__init__(n_layers, width, n_classes, dim)
        self.down_layer = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim)) if proj_dim else None
        self.time_tr = ResidualAttentionBlock(dim, time_heads)
        self.layer_tr = ResidualAttentionBlock(dim, layer_heads)

    def representation(self, x, mask=None):
        b, n_layers, t, _ = x.shape
        if self.down_layer is not None:
            x = self.down_layer(x.float())
        h = x.reshape(b * n_layers, t, x.shape[-1])
        m = None if mask is None else mask.repeat_interleave(n_layers, dim=0)
        h = _masked_mean(self.time_tr(h, key_padding_mask=m), m, 1)  # (b * L, dim)
        h = self.layer_tr(h.reshape(b, n_layers, -1))  # attention over the L layer vectors
        return h.mean(1)


def create_head(kind: str, n_layers: int, width: int, n_classes: int = 527,
                proj_dim: Optional[int] = None) -> _Head:
    """A head by name: ``last_mlp``, ``wa_mlp``, ``wa_tr``, ``tl_tr`` (``proj_dim`` for TL-Tr-512 etc.)."""
    if kind == "tl_tr":
        return TLTr(n_layers, width, n_classes, proj_dim=proj_dim)
    if proj_dim is not None:
        raise ValueError(f"proj_dim is an option of tl_tr only, not {kind}")
    try:
        cls = {"last_mlp": LastMLP, "wa_mlp": WAMLP, "wa_tr": WATr}[kind]
    except KeyError:
        raise ValueError(f"unknown head {kind!r}; expected one of {HEAD_KINDS}") from None
    return cls(n_layers, width, n_classes)


def convert_official_head(state_dict: Dict[str, Tensor], source: str = "checkpoint") -> Dict[str, Tensor]:
    """Whisper-AT's ``{size}_ori.pth`` / ``{size}_low.pth`` (keys ``at_model.*``) -> our TL-Tr keys.

    Raises ``ValueError`` naming the file when no ``at_model.`` key is present.
    """
    prefix = "at_model."
    out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not out:
        from . import identify

        raise ValueError(f"{source}: no 'at_model.*' keys: not a Whisper-AT head checkpoint: "
                         f"it is {identify(state_dict)[1]}")
    others = sorted(k for k in state_dict if not k.startswith(prefix))
    if others:
        raise ValueError(f"{source}: keys outside the tagging head: {others[:5]}")
    return out


def head_from_official(state_dict: Dict[str, Tensor], source: str = "checkpoint") -> TLTr:
    """Build the TL-Tr (or TL-Tr-512) an official head file describes, and load it strictly."""
    sd = convert_official_head(state_dict, source)
    n_classes, dim = sd["mlp_layer.1.weight"].shape
    if "down_layer.1.weight" in sd:
        width, proj = sd["down_layer.0.weight"].shape[0], dim
    else:
        width, proj = dim, None
    n_layers = next((n for n, w in WHISPER_SIZES.values() if w == width), None)
    if n_layers is None:
        raise ValueError(f"{source}: width {width} is not a Whisper size")
    head = TLTr(n_layers, width, n_classes, proj_dim=proj)
    try:
        head.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{source}: does not fit a TL-Tr head of width {width}: {e}") from None
    return head
