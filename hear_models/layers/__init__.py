"""Shared building blocks (attention, Transformer blocks, ...) used by several model families."""

from .crepe import Crepe, load_crepe  # noqa: F401  (CREPE conv stack, real weights)
from .attention import LayerNorm, Linear, MultiHeadAttention, build_attention_mask
from .transformer import DropPath, ResidualAttentionBlock, drop_path, make_mlp
from .conformer import ConformerBlock, ConformerConvModule  # noqa: E402  (Conformer SSL)
from .util import last, masked_mean, split_qkv

__all__ = [
    "LayerNorm",
    "Linear",
    "MultiHeadAttention",
    "build_attention_mask",
    "DropPath",
    "ResidualAttentionBlock",
    "drop_path",
    "make_mlp",
    "ConformerBlock",
    "ConformerConvModule",
    "last",
    "masked_mean",
    "split_qkv",
]
