"""Pre-LN Transformer block with openai-whisper's submodule names, plus stochastic depth.

``ResidualAttentionBlock`` loads ``whisper.model.ResidualAttentionBlock`` state dicts with
``strict=True`` (``attn``, ``attn_ln``, ``cross_attn``, ``cross_attn_ln``, ``mlp.0``,
``mlp.2``, ``mlp_ln``) and, through its options, serves the ViT-style encoders (MaskSpec:
qkv bias, LayerNorm eps 1e-6; ATST: no qkv bias; drop-path, dropout).
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor, nn

from .attention import LayerNorm, Linear, MultiHeadAttention

__all__ = ["DropPath", "drop_path", "make_mlp", "ResidualAttentionBlock"]


def drop_path(x: Tensor, p: float = 0.0, training: bool = False) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``p``.

    Kept samples are scaled by ``1 / (1 - p)`` so the expectation is unchanged; identity when
    not training or ``p == 0``.

    Parameters
    ----------
    x : Tensor, shape = (batch, ...)
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (identity in eval mode)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def make_mlp(n_state: int, n_mlp: int, dropout: float = 0.0,
             act_layer: Callable[[], nn.Module] = nn.GELU) -> nn.Sequential:
    """Whisper's feed-forward ``Sequential(Linear, GELU, Linear)`` (keys ``0.*`` and ``2.*``).

    With ``dropout > 0`` the activation slot becomes ``Sequential(act, Dropout)`` and a
    Dropout is appended after the second Linear; neither has parameters, so the state-dict
    keys stay ``0.weight, 0.bias, 2.weight, 2.bias``.
    """
    act = act_layer()
    layers = [Linear(n_state, n_mlp), nn.Sequential(act, nn.Dropout(dropout)) if dropout > 0
              else act, Linear(n_mlp, n_state)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN residual block: self-attention, optional cross-attention, MLP.

    ``x = x + drop_path(attn(attn_ln(x)))``;
    ``x = x + drop_path(cross_attn(cross_attn_ln(x), xa))`` when ``cross_attention``;
    ``x = x + drop_path(mlp(mlp_ln(x)))``.

    Parameters
    ----------
    n_state : int
        Width.
    n_head : int
        Attention heads.
    cross_attention : bool
        Add a cross-attention sub-block (whisper's decoder).
    mlp_ratio : float
        Hidden width of the MLP as a multiple of ``n_state`` (whisper: 4).
    n_mlp : int, optional
        Hidden width of the MLP; overrides ``mlp_ratio``.
    qkv_bias, key_bias : bool, bool or None
        See :class:`MultiHeadAttention`. Defaults are whisper's (key without bias).
    ln_eps : float
        LayerNorm epsilon (whisper 1e-5; ViTs 1e-6).
    dropout : float
        Dropout on the attention output projection and inside/after the MLP.
    attn_dropout : float
        Dropout on the attention weights.
    drop_path : float
        Stochastic-depth probability of each residual branch (identity in eval mode).
    act_layer : callable
        MLP activation (default exact GELU, as whisper and timm).
    """

    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False, *,
                 mlp_ratio: float = 4.0, n_mlp: Optional[int] = None, qkv_bias: bool = True,
                 key_bias: Optional[bool] = False, ln_eps: float = 1e-5, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0,
                 act_layer: Callable[[], nn.Module] = nn.GELU):
        super().__init__()
        attn_kw = dict(qkv_bias=qkv_bias, key_bias=key_bias, attn_dropout=attn_dropout,
                       proj_dropout=dropout)
        self.attn = MultiHeadAttention(n_state, n_head, **attn_kw)
        self.attn_ln = LayerNorm(n_state, eps=ln_eps)
        self.cross_attn = MultiHeadAttention(n_state, n_head, **attn_kw) if cross_attention else None
        self.cross_attn_ln = LayerNorm(n_state, eps=ln_eps) if cross_attention else None
        n_mlp = int(n_state * mlp_ratio) if n_mlp is None else n_mlp
        self.mlp = make_mlp(n_state, n_mlp, dropout, act_layer)
        self.mlp_ln = LayerNorm(n_state, eps=ln_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        xa: Optional[Tensor] = None,
        *,
        key_padding_mask: Optional[Tensor] = None,
        xa_padding_mask: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
        is_causal: bool = False,
    ) -> Tensor:
        """
        Parameters
        ----------
        x : Tensor, shape = (batch, n_ctx, n_state)
        xa : Tensor, shape = (batch, n_ctx_a, n_state), optional
            Cross-attention input (needed when the block has ``cross_attn``).
        key_padding_mask : Tensor, shape = (batch, n_ctx), bool, optional
            True = padded position of ``x`` (ignored as a key in self-attention).
        xa_padding_mask : Tensor, shape = (batch, n_ctx_a), bool, optional
            True = padded position of ``xa``.
        attn_mask : Tensor, bool, optional
            Self-attention mask, True = may attend.
        is_causal : bool
            Causal self-attention.

        Returns
        -------
        Tensor, shape = (batch, n_ctx, n_state)
            Outputs at padded positions are not meaningful.
        """
        x = x + self.drop_path(self.attn(self.attn_ln(x), key_padding_mask=key_padding_mask,
                                         attn_mask=attn_mask, is_causal=is_causal))
        if self.cross_attn is not None:
            if xa is None:
                raise ValueError("this block has cross-attention: pass xa")
            x = x + self.drop_path(self.cross_attn(self.cross_attn_ln(x), xa,
                                                   key_padding_mask=xa_padding_mask))
        x = x + self.drop_path(self.mlp(self.mlp_ln(x)))
        return x
