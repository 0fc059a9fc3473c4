"""Conformer block (Gulati et al., 2020) in the layout of torchaudio's ``ConformerLayer``.

Macaron structure, each sub-module a pre-LN residual branch::

    x = x + 0.5 * ffn1(x)                       LN, Linear D->F, SiLU, Dropout, Linear F->D, Dropout
    x = x + conv(x)         (convolution_first)  LN, pointwise D->2D, GLU, depthwise k, norm, SiLU,
                                                 pointwise D->D, Dropout
    x = x + Dropout(MHSA(LN(x)))                 biases on q, k, v, out; dropout on the weights
    x = x + conv(x)         (otherwise)
    x = x + 0.5 * ffn2(x)
    x = LN(x)                                    final LayerNorm

No relative position encoding: with ``convolution_first=True`` (Conformer SSL for
non-speech audio; torchaudio ``conformer_wav2vec2_*``) the convolution module before
self-attention supplies the positional information.

Parameter count per block (D wide, F feed-forward, kernel k; convolutions without bias,
as torchaudio's ``_ConvolutionModule`` default)::

    2 FFN  2 (2D + 2DF + F + D)      MHSA  4D^2 + 4D + 2D (LN)
    conv   2D (LN) + 2D^2 + Dk + 2D (norm) + D^2               final LN 2D

The norm inside the convolution module is an option with the same 2D parameters:
``"layer"`` (per-frame LayerNorm over channels: no dependence on padding, clip length or
batch; our default), ``"batch"`` (BatchNorm1d, the Conformer paper) or ``"group"``
(GroupNorm with one group, torchaudio's ``use_group_norm``; normalises over the whole
sequence, so outputs depend on the window length).

Padding: with a ``key_padding_mask`` (True = padded frame) padded frames are ignored as
attention keys and zeroed before the depthwise convolution, so they never leak into valid
frames (a padded clip's valid frames equal the clip alone, up to the ``"batch"`` /
``"group"`` statistics).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .attention import LayerNorm, MultiHeadAttention
from .transformer import DropPath, make_mlp

__all__ = ["ConformerConvModule", "ConformerBlock", "CONV_NORMS"]

CONV_NORMS = ("layer", "batch", "group")


class _ChannelLayerNorm(LayerNorm):
    """LayerNorm over channels of a (batch, channels, time) tensor (per frame)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConformerConvModule(nn.Module):
    """LN, pointwise conv D -> 2D, GLU, depthwise conv (kernel k, 'same'), norm, SiLU,
    pointwise conv D -> D, dropout. Submodule names: ``layer_norm``, ``pointwise_conv1``,
    ``depthwise_conv``, ``norm``, ``pointwise_conv2``.

    Parameters
    ----------
    n_state : int
        Width D.
    kernel_size : int
        Depthwise kernel (odd).
    dropout : float
    bias : bool
        Biases on the three convolutions (torchaudio's module default: False).
    norm : "layer" | "batch" | "group"
    """

    def __init__(self, n_state: int, kernel_size: int, dropout: float = 0.0, bias: bool = False,
                 norm: str = "layer"):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"depthwise kernel size must be odd for 'same' padding, got {kernel_size}")
        if norm not in CONV_NORMS:
            raise ValueError(f"conv norm {norm!r}: expected one of {CONV_NORMS}")
        self.layer_norm = LayerNorm(n_state)
        self.pointwise_conv1 = nn.Conv1d(n_state, 2 * n_state, 1, bias=bias)
        self.glu = nn.GLU(dim=1)
        self.depthwise_conv = nn.Conv1d(n_state, n_state, kernel_size, padding=(kernel_size - 1) // 2,
                                        groups=n_state, bias=bias)
        if norm == "layer":
            self.norm = _ChannelLayerNorm(n_state)
        elif norm == "batch":
            self.norm = nn.BatchNorm1d(n_state)
        else:
            self.norm = nn.GroupNorm(1, n_state)
        self.activation = nn.SiLU()
        self.pointwise_conv2 = nn.Conv1d(n_state, n_state, 1, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """x : (batch, time, D) -> (batch, time, D); padding_mask (batch, time) True = padded."""
        y = self.layer_norm(x).transpose(1, 2)  # (batch, D, time)
        y = self.glu(self.pointwise_conv1(y))
        if padding_mask is not None:
            y = y.masked_fill(padding_mask[:, None, :], 0.0)
        y = self.depthwise_conv(y)
        y = self.activation(self.norm(y))
        y = self.dropout(self.pointwise_conv2(y))
        return y.transpose(1, 2)


class ConformerBlock(nn.Module):
    """One Conformer block (see the module docstring).

    Parameters
    ----------
    n_state : int
        Width D.
    n_head : int
        Attention heads.
    n_ffn : int
        Hidden width F of both macaron feed-forward modules.
    kernel_size : int
        Depthwise convolution kernel.
    dropout : float
        Dropout in the FFNs, the conv module, on the attention weights and after attention.
    convolution_first : bool
        Convolution module before self-attention (Conformer SSL) or after (the Conformer paper).
    conv_norm : "layer" | "batch" | "group"
    conv_bias : bool
    drop_path : float
        Stochastic depth of every residual branch.
    """

    def __init__(self, n_state: int, n_head: int, n_ffn: int, kernel_size: int, *, dropout: float = 0.0,
                 convolution_first: bool = True, conv_norm: str = "layer", conv_bias: bool = False,
                 drop_path: float = 0.0):
        super().__init__()
        self.convolution_first = convolution_first
        self.ffn1_ln = LayerNorm(n_state)
        self.ffn1 = make_mlp(n_state, n_ffn, dropout, act_layer=nn.SiLU)
        self.conv = ConformerConvModule(n_state, kernel_size, dropout, bias=conv_bias, norm=conv_norm)
        self.attn_ln = LayerNorm(n_state)
        self.attn = MultiHeadAttention(n_state, n_head, qkv_bias=True, key_bias=True, out_bias=True,
                                       attn_dropout=dropout, proj_dropout=dropout)
        self.ffn2_ln = LayerNorm(n_state)
        self.ffn2 = make_mlp(n_state, n_ffn, dropout, act_layer=nn.SiLU)
        self.final_ln = LayerNorm(n_state)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """
        Parameters
        ----------
        x : Tensor, shape = (batch, time, D)
        key_padding_mask : Tensor, shape = (batch, time), bool, optional
            True = padded frame (ignored as a key, zeroed before the depthwise conv).

        Returns
        -------
        Tensor, shape = (batch, time, D); padded frames are not meaningful.
        """
        dp = self.drop_path
        x = x + dp(0.5 * self.ffn1(self.ffn1_ln(x)))
        if self.convolution_first:
            x = x + dp(self.conv(x, key_padding_mask))
        x = x + dp(self.attn(self.attn_ln(x), key_padding_mask=key_padding_mask))
        if not self.convolution_first:
            x = x + dp(self.conv(x, key_padding_mask))
        x = x + dp(0.5 * self.ffn2(self.ffn2_ln(x)))
        return self.final_ln(x)


def conformer_block_parameters(n_state: int, n_ffn: int, kernel_size: int, conv_bias: bool = False) -> int:
    """Closed-form parameter count of one :class:`ConformerBlock` (see the module docstring)."""
    D, F, k = n_state, n_ffn, kernel_size
    ffn = 2 * D + 2 * D * F + F + D
    attn = 4 * D * D + 4 * D + 2 * D
    conv = 2 * D + 2 * D * D + D * k + 2 * D + D * D + (4 * D if conv_bias else 0)
    return 2 * ffn + attn + conv + 2 * D
