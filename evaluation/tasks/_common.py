"""What the task generators share: split helpers, durations, the speech bed, metric lists.

Every generator is a function ``gen(ctx) -> Iterator[Clip]`` drawing all randomness from
``ctx.rng`` (seeded per seed and task) and iterating over sorted sources, so the same
seed and tool versions give the same bytes.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from ._audio import MASTER_SR, at_snr, fit, noise, normalize
from ._build import Ctx

SR = MASTER_SR
TVT = ["train", "valid", "test"]

# sentences the speech-bearing tasks have their synthetic talkers say
SENTENCES = [
    "It's eleven o'clock.", "That is exactly what happened.", "I'm on my way to the meeting.",
    "I wonder what this is about.", "The airplane is almost full.",
    "Maybe tomorrow it will be cold.", "I would like a new alarm clock.",
    "I think I have a doctor's appointment.", "Don't forget a jacket.",
    "I think I've seen this before.", "The surface is slick.",
    "We'll stop in a couple of minutes.",
]
LONG_SENTENCES = [
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
]


def _folds(n: int) -> List[str]:
    return [f"fold{i:02d}" for i in range(n)]


def _tvt_split(items: Sequence, rng: np.random.Generator, valid: float = 0.2,
               test: float = 0.2, minimum: int = 1) -> Dict[str, list]:
    """Shuffle ``items`` and cut them into train/valid/test (each at least ``minimum``)."""
    items = list(items)
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    n = len(items)
    n_test = max(minimum, int(round(test * n)))
    n_valid = max(minimum, int(round(valid * n)))
    return {"test": items[:n_test], "valid": items[n_test:n_test + n_valid],
            "train": items[n_test + n_valid:]}


def _kfold(items: Sequence, rng: np.random.Generator, k: int) -> List[list]:
    items = list(items)
    order = rng.permutation(len(items))
    out: List[list] = [[] for _ in range(k)]
    for j, i in enumerate(order):
        out[j % k].append(items[i])
    return out


def _n(dur: float) -> int:
    return int(round(dur * SR))


def _speech_bed(ctx: Ctx, x: np.ndarray, n: int, snr=(12, 35)) -> np.ndarray:
    """Fit speech into ``n`` samples at a random level with a little pink noise."""
    rng = ctx.rng
    x = normalize(x, float(rng.uniform(0.25, 0.7)))
    buf = fit(x, n, rng)
    return buf + at_snr(buf, noise(n, rng, "pink"), float(rng.uniform(*snr)))


ONSET_GRID = {"event_postprocessing_grid": {"median_filter_ms": [150], "min_duration": [50]},
              "task_specific_param_grid": {"max_epochs": [50], "check_val_every_n_epoch": [1]}}
SCENE_METRICS = ["top1_acc", "mAP", "d_prime", "aucroc"]

