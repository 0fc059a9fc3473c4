"""Multi-head attention with openai-whisper's parameter names, on PyTorch's fused SDPA.

Parameter names follow ``whisper.model.MultiHeadAttention`` (``query``, ``key``, ``value``,
``out``) so whisper and Whisper-AT state dicts load with ``strict=True``. Options cover the
other families: biases on all projections (ViT / MaskSpec), no biases (ATST), dropout.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LayerNorm", "Linear", "MultiHeadAttention", "build_attention_mask"]


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back to the input dtype (as whisper does).

    ``eps`` defaults to 1e-5 (whisper); ViT-style models use 1e-6.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


class Linear(nn.Linear):
    """Linear layer whose parameters are cast to the input dtype (as whisper does)."""

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def build_attention_mask(
    n_queries: int,
    n_keys: int,
    key_padding_mask: Optional[Tensor] = None,
    attn_mask: Optional[Tensor] = None,
    is_causal: bool = False,
    device: Optional[torch.device] = None,
) -> Optional[Tensor]:
    """Combine the mask kinds into one boolean ``keep`` mask for SDPA (True = may attend).

    Parameters
    ----------
    key_padding_mask : Tensor, shape = (batch, n_keys), bool, optional
        True marks a PADDED key (ignored).
    attn_mask : Tensor, optional
        Boolean (True = may attend), broadcastable to ``(batch, n_head, n_queries, n_keys)``.
    is_causal : bool
        Query ``i`` sees keys ``j <= i`` (top-left aligned, as SDPA's ``is_causal``).

    Returns
    -------
    Tensor, shape broadcastable to (batch, n_head, n_queries, n_keys), bool; or None
        Rows in which every key is masked are opened entirely, so that they give finite
        (meaningless) outputs instead of NaN; such rows belong to padded queries.
    """
    keep = None
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise ValueError("key_padding_mask must be a bool tensor (True = padded)")
        if key_padding_mask.dim() != 2 or key_padding_mask.shape[-1] != n_keys:
            raise ValueError(f"key_padding_mask must have shape (batch, {n_keys}), "
                             f"got {tuple(key_padding_mask.shape)}")
        keep = ~key_padding_mask[:, None, None, :]  # (batch, 1, 1, n_keys)
    if is_causal:
        causal = torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril()
        keep = causal if keep is None else keep & causal
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            raise ValueError("attn_mask must be a bool tensor (True = may attend)")
        keep = attn_mask if keep is None else keep & attn_mask
    if keep is not None:
        keep = keep | ~keep.any(dim=-1, keepdim=True)
    return keep


class MultiHeadAttention(nn.Module):
    """Multi-head (self- or cross-) attention.

    Parameters
    ----------
    n_state : int
        Model width; the head width is ``n_state // n_head``.
    n_head : int
        Number of heads.
    qkv_bias : bool
        Bias on the ``query`` and ``value`` projections (and on ``key`` when ``key_bias`` is
        None). Whisper: True; ViT/MaskSpec: True; ATST: False.
    key_bias : bool or None
        Bias on ``key``. Whisper has none (False, the default); None = same as ``qkv_bias``.
    out_bias : bool
        Bias on the ``out`` projection.
    attn_dropout : float
        Dropout on the attention weights (training only).
    proj_dropout : float
        Dropout on the output projection (training only).
    """

    def __init__(self, n_state: int, n_head: int, *, qkv_bias: bool = True,
                 key_bias: Optional[bool] = False, out_bias: bool = True,
                 attn_dropout: float = 0.0, proj_dropout: float = 0.0):
        super().__init__()
        if n_state % n_head:
            raise ValueError(f"n_state={n_state} is not divisible by n_head={n_head}")
        self.n_head = n_head
        key_bias = qkv_bias if key_bias is None else key_bias
        self.query = Linear(n_state, n_state, bias=qkv_bias)
        self.key = Linear(n_state, n_state, bias=key_bias)
        self.value = Linear(n_state, n_state, bias=qkv_bias)
        self.out = Linear(n_state, n_state, bias=out_bias)
        self.attn_dropout = attn_dropout
        self.proj_dropout = nn.Dropout(proj_dropout) if proj_dropout > 0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        xa: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Attend from ``x`` to ``x`` (self) or to ``xa`` (cross).

        Parameters
        ----------
        x : Tensor, shape = (batch, n_queries, n_state)
        xa : Tensor, shape = (batch, n_keys, n_state), optional
            Keys/values for cross-attention; None = self-attention.
        key_padding_mask : Tensor, shape = (batch, n_keys), bool, optional
            True = padded key (of ``x`` for self-attention, of ``xa`` for cross-attention).
        attn_mask : Tensor, bool, optional
            True = may attend; broadcastable to (batch, n_head, n_queries, n_keys).
        is_causal : bool
            Causal self-attention (whisper's decoder).

        Returns
        -------
        Tensor, shape = (batch, n_queries, n_state)
        """
        source = x if xa is None else xa
        q, k, v = self.query(x), self.key(source), self.value(source)
        batch, n_q, n_state = q.shape
        n_k = k.shape[1]
        # (batch, n_head, n_ctx, head_dim)
        q = q.view(batch, n_q, self.n_head, -1).transpose(1, 2)
        k = k.view(batch, n_k, self.n_head, -1).transpose(1, 2)
        v = v.view(batch, n_k, self.n_head, -1).transpose(1, 2)
        dropout_p = self.attn_dropout if self.training else 0.0
        if key_padding_mask is None and attn_mask is None:
            causal = is_causal and n_q > 1
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
        else:
            keep = build_attention_mask(n_q, n_k, key_padding_mask, attn_mask, is_causal,
                                        device=q.device)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout_p)
        a = a.transpose(1, 2).reshape(batch, n_q, n_state)
        return self.proj_dropout(self.out(a))
