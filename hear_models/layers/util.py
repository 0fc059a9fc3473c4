"""Small pieces the model families share: pooling over unpadded tokens, "run the blocks,
keep the last", and the fused-qkv split of timm-style checkpoints."""

from __future__ import annotations

from typing import Dict, Iterable, Optional, TypeVar

from torch import Tensor

T = TypeVar("T")


def masked_mean(tokens: Tensor, padding: Optional[Tensor]) -> Tensor:
    """(B, K, D) mean over the unpadded tokens (padding (B, K) bool, True = padded)."""
    if padding is None:
        return tokens.mean(dim=1)
    keep = (~padding).to(tokens.dtype)[..., None]
    return (tokens * keep).sum(1) / keep.sum(1).clamp_min(1.0)


def last(items: Iterable[T]) -> T:
    """The last item of ``items``, consuming them all (e.g. the final block's output of a
    ``run_blocks`` generator)."""
    missing = out = object()
    for out in items:
        pass
    if out is missing:
        raise ValueError("no items")
    return out  # type: ignore[return-value]


def split_qkv(prefix: str, kind: str, fused: Tensor) -> Dict[str, Tensor]:
    """A fused ``attn.qkv.{weight,bias}`` (3D, ...) as our ``{prefix}query/key/value.{kind}``."""
    q, k, v = fused.chunk(3, dim=0)
    return {f"{prefix}query.{kind}": q, f"{prefix}key.{kind}": k, f"{prefix}value.{kind}": v}
