"""The linear probe: folds, standardisation, L-BFGS fits, heareval's scorers, per-layer scores."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..embeddings import TaskFolder, frame_labels
from ..hear2021 import LOWER_IS_BETTER
from .layers import Layer
from .features import Features


PROTOCOLS = ("linear", "heareval")
L2_GRID = (1e-1, 1e-2, 1e-3, 1e-4)  # weight of 0.5 ||W||^2 beside the mean loss; each fit
# starts from the solution of the one before (strongest first), so weaker ones converge fast
LBFGS_ITERATIONS = 100
MAX_TRAIN_FRAMES = 20_000  # event tasks: training frames per fit (a seeded subsample above)


# -- labels and folds --------------------------------------------------------------------
def fold_plan(metadata: Dict[str, Any]) -> List[Dict[str, List[str]]]:
    """heareval's runs: train/valid/test, or k-fold (test i, valid i + 1, train the rest)."""
    return heareval_predictions().get_splits_from_metadata(metadata)


def heareval_predictions():
    """heareval's ``task_predictions`` module. Importing it imports pytorch-lightning, whose
    own import warns that ``pkg_resources`` is deprecated (advice to lightning's authors,
    nothing a user of the probe can act on): silenced for that import only."""
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*(declare_namespace|ModuleAvailableCache)",
                                category=DeprecationWarning)
        return importlib.import_module("heareval.predictions.task_predictions")


@dataclass
class SplitData:
    """Rows of some splits, their multi-hot targets, and (events) clip and time per row."""

    targets: np.ndarray  # (rows, n_labels) float32
    clips: List[str]  # per row
    timestamps: Optional[np.ndarray] = None  # per row, ms (events)
    events: Dict[str, list] = field(default_factory=dict)  # clip -> reference events


def split_data(task: TaskFolder, feats: Features, split: str) -> SplitData:
    vocab = {lab: i for i, lab in enumerate(task.labels)}
    event = task.embedding_type == "event"
    data = task.splits[split]
    n = feats.rows(split).shape[0]
    targets = np.zeros((n, len(vocab)), dtype=np.float32)
    clips: List[str] = [""] * n
    ts_all = np.zeros(n) if event else None
    for clip, (first, count, ts) in feats.index[split]["clips"].items():
        clips[first:first + count] = [clip] * count
        if event:
            ts_all[first:first + count] = ts
            for j, labels in enumerate(frame_labels(data[clip], np.asarray(ts))):
                for lab in labels:
                    targets[first + j, vocab[str(lab)]] = 1.0
        else:
            for lab in data[clip]:
                targets[first, vocab[str(lab)]] = 1.0
    return SplitData(targets, clips, ts_all, dict(data) if event else {})


def _concat(parts: List[SplitData]) -> SplitData:
    return SplitData(np.concatenate([p.targets for p in parts]), sum((p.clips for p in parts), []),
                     None if parts[0].timestamps is None else np.concatenate([p.timestamps for p in parts]),
                     {k: v for p in parts for k, v in p.events.items()})


# -- the linear probe ----------------------------------------------------------------------
def fit_linear(x: np.ndarray, y: np.ndarray, multiclass: bool, l2: float,
               iterations: int = LBFGS_ITERATIONS, init=None):
    """Logistic regression (softmax or per-label sigmoid) by full-batch L-BFGS from zeros
    (or from ``init``, an earlier solution).

    x : (n, D) standardised features; y : (n, C) multi-hot -> (W (D, C), b (C,))."""
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if init is None:
        w = torch.zeros(x.shape[1], y.shape[1], requires_grad=True)
        b = torch.zeros(y.shape[1], requires_grad=True)
    else:
        w, b = (t.clone().requires_grad_(True) for t in init)
    target = yt.argmax(1) if multiclass else yt
    loss_fn = torch.nn.functional.cross_entropy if multiclass else torch.nn.functional.binary_cross_entropy_with_logits
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iterations, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(xt @ w + b, target) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def predict_linear(params, x: np.ndarray, multiclass: bool) -> np.ndarray:
    import torch

    w, b = params
    logits = torch.from_numpy(x) @ w + b
    return (logits.softmax(1) if multiclass else logits.sigmoid()).numpy()


def _score_value(ret) -> float:
    """heareval score functions return a float or ((name, value), ...): the first value."""
    return float(ret[0][1]) if isinstance(ret, tuple) else float(ret)


class TaskScorer:
    """The task's metrics, computed by heareval's own score functions."""

    def __init__(self, task: TaskFolder):
        heareval_predictions()  # first, quietly: heareval.score may import it too
        from heareval.score import available_scores

        self.task = task
        self.metrics = list(task.metadata["evaluation"])
        self.label_to_idx = {lab: i for i, lab in enumerate(task.labels)}
        self.fns = {m: available_scores[m](label_to_idx=self.label_to_idx) for m in self.metrics}
        self.event = task.embedding_type == "event"
        if self.event:
            EVENT_POSTPROCESSING_GRID = heareval_predictions().EVENT_POSTPROCESSING_GRID
            from sklearn.model_selection import ParameterGrid

            grid = task.metadata.get("evaluation_params", {}).get("event_postprocessing_grid",
                                                                  EVENT_POSTPROCESSING_GRID)
            self.postprocessing = [tuple(p.items()) for p in ParameterGrid(grid)]

    @property
    def primary(self) -> str:
        return self.metrics[0]

    def better(self, a: float, b: float) -> bool:
        """a strictly better than b on the primary metric (NaN is never better)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a < b if self.primary in LOWER_IS_BETTER else a > b

    def scores(self, probs: np.ndarray, data: SplitData, metrics: Sequence[str],
               postprocessing=None) -> Tuple[Dict[str, float], Any]:
        """{metric: value} on these rows; events: with ``postprocessing`` (None: the one of
        the task's grid best on the primary metric), returned beside the scores."""
        if not self.event:
            return {m: self._safe(lambda: self.fns[m](probs, data.targets)) for m in metrics}, None
        import torch
        get_events_for_all_files = heareval_predictions().get_events_for_all_files

        idx_to_label = {i: lab for lab, i in self.label_to_idx.items()}
        grid = [postprocessing] if postprocessing is not None else self.postprocessing
        by_pp: Dict[Any, Dict[str, list]] = {}
        for pp in grid:
            by_pp.update(get_events_for_all_files(torch.from_numpy(probs), data.clips,
                                                  torch.from_numpy(data.timestamps), idx_to_label, {}, pp))
        reference = {clip: data.events[clip] for clip in dict.fromkeys(data.clips)}
        best, best_pp = None, None
        for pp in grid:
            pred = {clip: by_pp[pp].get(clip, []) for clip in reference}
            s = {m: self._safe(lambda: self.fns[m](pred, reference)) for m in metrics}
            if best is None or self.better(s[self.primary], best[self.primary]):
                best, best_pp = s, pp
        return best, best_pp

    @staticmethod
    def _safe(fn) -> float:
        try:
            return _score_value(fn())
        except (ValueError, ZeroDivisionError):
            return float("nan")


def per_class_ap(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Average precision of each class's scores (NaN where the class has no positive)."""
    from sklearn.metrics import average_precision_score

    out = np.full(targets.shape[1], np.nan)
    for c in range(targets.shape[1]):
        if targets[:, c].any():
            out[c] = average_precision_score(targets[:, c], probs[:, c])
    return out


class Standardiser:
    """Standardisation with a training split's statistics, safe on degenerate features:
    a dimension constant on the training rows (std <= 1e-6 of its magnitude, or 0) maps to
    0 (its probe weight stays 0: it carries nothing), a non-finite value (NaN, inf) to 0,
    the training mean of its dimension; statistics in float64 over the finite values only.
    Nothing here warns: ``constant`` and ``non_finite`` say what was found."""

    def __init__(self, x: np.ndarray):
        finite = np.isfinite(x)
        self.non_finite = int(x.size - np.count_nonzero(finite))
        x0 = np.where(finite, x, 0).astype(np.float64)
        count = np.maximum(finite.sum(0), 1)
        self.mean = x0.sum(0) / count
        dev = np.where(finite, x0 - self.mean, 0.0)
        std = np.sqrt((dev * dev).sum(0) / count)
        self.is_constant = std <= 1e-6 * np.abs(self.mean)  # also std == 0
        self.constant = int(self.is_constant.sum())
        self.scale = np.where(self.is_constant, 1.0, std)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        finite = np.isfinite(x)
        z = (np.where(finite, x, 0).astype(np.float64) - self.mean) / self.scale
        z[~finite] = 0.0
        z[:, self.is_constant] = 0.0
        return z.astype(np.float32)


def degenerate_text(dims: int, constant: int, non_finite: int, rows: int) -> str:
    """What the report says of a layer with degenerate features ('' when none)."""
    parts = []
    if constant:
        parts.append("every dimension constant on a training split: the probe can only guess the class prior"
                     if constant == dims else f"{constant} of {dims} dimensions constant on a training split")
    if non_finite:
        parts.append(f"{non_finite} non-finite values (NaN / inf) in {rows} rows x {dims} dimensions, "
                     "replaced by the training mean")
    return "; ".join(parts)


def probe_layer(task: TaskFolder, feats: Features, layer: Layer, folds, data: Dict[str, SplitData],
                scorer: TaskScorer, seed: int, max_train_frames: int) -> Dict[str, Any]:
    """Linear probe of one layer on one task: per fold, L2 chosen on valid, scored on test."""
    multiclass = task.metadata["prediction_type"] == "multiclass" and not scorer.event
    mats = {s: feats.matrix(s, layer) for s in task.metadata["splits"]}
    n_rows = sum(len(m) for m in mats.values())
    dims = next(iter(mats.values())).shape[1]
    non_finite = sum(int(m.size - np.count_nonzero(np.isfinite(m))) for m in mats.values())
    constant = 0
    per_fold: List[Dict[str, float]] = []
    chosen: List[Dict[str, Any]] = []
    test_probs, test_targets = [], []
    for k, run in enumerate(folds):
        xtr = np.concatenate([mats[s] for s in run["train"]])
        ytr = np.concatenate([data[s].targets for s in run["train"]])
        if len(xtr) > max_train_frames:  # a seeded subsample (event tasks on long audio)
            keep = np.sort(np.random.default_rng([seed, k]).choice(len(xtr), max_train_frames, replace=False))
            xtr, ytr = xtr[keep], ytr[keep]
        norm = Standardiser(xtr)
        constant = max(constant, norm.constant)
        xtr = norm(xtr)
        valid = _concat([data[s] for s in run["valid"]])
        xva = norm(np.concatenate([mats[s] for s in run["valid"]]))
        best, params = None, None
        for l2 in L2_GRID:
            params = fit_linear(xtr, ytr, multiclass, l2, init=params)
            s, pp = scorer.scores(predict_linear(params, xva, multiclass), valid, [scorer.primary])
            if best is None or scorer.better(s[scorer.primary], best[0]):
                best = (s[scorer.primary], l2, pp, params)
        valid_score, l2, pp, params = best
        test = _concat([data[s] for s in run["test"]])
        probs = predict_linear(params, norm(np.concatenate([mats[s] for s in run["test"]])), multiclass)
        s, _ = scorer.scores(probs, test, scorer.metrics, postprocessing=pp)
        per_fold.append(s)
        chosen.append({"test": run["test"], "l2": l2, "valid": valid_score,
                       "postprocessing": dict(pp) if pp else None})
        test_probs.append(probs)
        test_targets.append(test.targets)
    scores = {m: _mean([f[m] for f in per_fold]) for m in scorer.metrics}
    stds = {m: _std([f[m] for f in per_fold]) if len(per_fold) > 1 else None for m in scorer.metrics}
    return {"scores": scores, "stds": stds, "folds": chosen,
            "class_ap": per_class_ap(np.concatenate(test_probs), np.concatenate(test_targets)),
            "degenerate": degenerate_text(dims, constant, non_finite, n_rows)}


def _mean(values: List[float]) -> float:
    """The mean over folds, as heareval's aggregate: inf when a fold is inf (d' on a
    perfectly separated class), NaN when a fold is undefined; no numpy warning."""
    v = np.asarray(values, dtype=np.float64)
    if np.isnan(v).any() or (np.isposinf(v).any() and np.isneginf(v).any()):
        return float("nan")
    return float(v.sum() / len(v)) if np.isfinite(v).all() else float(v[~np.isfinite(v)][0])


def _std(values: List[float]) -> float:
    """The fold std (ddof 1), NaN where a fold is not finite (it is undefined there)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.std(v, ddof=1)) if np.isfinite(v).all() else float("nan")


def chance(task: TaskFolder, folds, metric: str) -> Optional[float]:
    """A constant guess on the test labels (scene tasks; :mod:`.results`' rule)."""
    from ..results import _constant_guess

    if task.embedding_type != "scene":
        return None
    vocab = {lab: i for i, lab in enumerate(task.labels)}
    values = []
    for run in folds:
        labels = [task.splits[s][c] for s in run["test"] for c in task.splits[s]]
        v = _constant_guess(labels, vocab).get(metric)
        if v is not None:
            values.append(v)
    return float(np.mean(values)) if values else None
