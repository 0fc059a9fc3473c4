"""The layers of a model a probe reads: block names, widths, ``--layers`` selections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple


# -- the layers of a model ---------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    """One probed representation: a block, a mean of blocks, or the default embedding."""

    key: str  # "3", "hubert.3", "mean", "hubert.mean", "default"
    kind: str  # "block" | "mean" | "default"
    blocks: Tuple[int, ...]  # indices of the blocks it is made of (empty: default)
    depth: Optional[int] = None  # a block's index within its member (its x position)


def layer_plan(names: Sequence[str], widths: Optional[Sequence[int]] = None) -> List[Layer]:
    """Blocks in order, then per member (``name.split('.')[0]``, or the whole model when
    names carry no member) the mean of its blocks where they have one width (``widths``,
    per block), then the default embedding."""
    out: List[Layer] = []
    groups: Dict[str, List[int]] = {}
    for i, name in enumerate(names):
        member = name.rsplit(".", 1)[0] if "." in name else ""
        groups.setdefault(member, []).append(i)
        out.append(Layer(name, "block", (i,), len(groups[member]) - 1))
    for member, idx in groups.items():
        if len(idx) > 1 and (widths is None or len({widths[i] for i in idx}) == 1):
            out.append(Layer(f"{member}.mean" if member else "mean", "mean", tuple(idx)))
    out.append(Layer("default", "default", ()))
    return out


def select_layers(plan: List[Layer], spec: str) -> List[Layer]:
    """``all`` or a comma-separated list of block indices (negative from the end), layer
    names (``hubert.3``, ``mean``, ``default``); unknown entries are an error."""
    if spec == "all":
        return list(plan)
    blocks = [p for p in plan if p.kind == "block"]
    by_key = {p.key: p for p in plan}
    picked: List[Layer] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item in by_key:
            layer = by_key[item]
        else:
            try:
                i = int(item)
            except ValueError:
                raise ValueError(f"--layers: no layer {item!r}; this model has {[p.key for p in plan]}") from None
            if not -len(blocks) <= i < len(blocks):
                raise ValueError(f"--layers: block {i} does not exist (the model has {len(blocks)} blocks, "
                                 f"0 .. {len(blocks) - 1})")
            layer = blocks[i]
        if layer not in picked:
            picked.append(layer)
    if not picked:
        raise ValueError("--layers: the list is empty")
    return picked
