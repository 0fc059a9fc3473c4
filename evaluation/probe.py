"""``hear-models probe``: which block of which model knows what (layer-wise probe reports).

    hear-models probe MODEL... --tasks DIR|smoke|mini [--task NAME ...]
        [--layers all|LIST] [--protocol linear|heareval] [--out DIR] [--cache-dir DIR]
        [--seed N] [--grid faster] [--grid-points N] [--max-train-frames N]
        [--y-range metric|panel|METRIC=LO:HI] [--note TEXT]
    hear-models probe --from DIR [--from DIR ...] --out DIR [--y-range ...] [--note TEXT]

For every block of every model (the registry's ``hidden_states`` interface, through
``HearModel.layer_scene_embeddings`` / ``layer_timestamp_embeddings``: fusion members
block by block, e.g. ``hubert.3``, ``crepe.5``), the mean of all blocks (per fusion
member: ``hubert.mean``; only over blocks of one width) and the model's default HEAR
embedding, a probe is fitted per task and scored with the task's own metrics:

- ``linear`` (default): a linear classifier as in the Whisper-AT paper's layer-wise
  analysis: features standardised on the training split, softmax (multiclass) or sigmoid
  (multilabel, events) outputs, full-batch L-BFGS from zero weights (a convex problem:
  no random initialisation), L2 weight chosen from :data:`L2_GRID` on the task's own
  validation split (k-fold: heareval's rule, fold i tests, fold i + 1 validates, the rest
  train), scored by heareval's own score functions. Event tasks are probed frame by
  frame; frame posteriors become events through heareval's own post-processing (median
  filter, minimum duration; the task's grid, chosen on validation) and are scored with
  the task's event metric.
- ``heareval``: heareval's full shallow-classifier protocol (:mod:`.predict`) on every
  layer's embeddings, written in heareval's format from the same cached features.

Features are extracted once per clip for all layers (one pass over the blocks plus the
default embedding) into ``--cache-dir`` (default ``OUT/features``) in the evaluation
runner's row format (:func:`.embeddings.embed_clips`), keyed by the model, its options
and the task's files; a later run, another ``--layers`` or ``--protocol`` reuses them.

Outputs in ``--out`` (:mod:`.probe_report`): ``probe.csv`` / ``probe.json`` (score and
fold std per model x task x layer, every metric), ``best_layers.csv`` (per class, the
block whose probe ranks it best: the Whisper-AT Figure 3 histogram), the figures
``scores`` and ``best_layer_hist`` (PNG, SVG, PDF, at print size), ``report.md`` and a
self-contained ``report.html``. ``--from`` draws them again from earlier runs' probe.json
(one or several: models side by side) without probing. Deterministic: the same features
and seed give the same numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .embeddings import TaskFolder, TaskFolderError, embed_clips, frame_labels, read_task, split_batches
from .hear2021 import LOWER_IS_BETTER
from .probe_report import TIE, member_of, parse_y_range, read_reports, write_report
from .results import _fmt

FORMAT = 1
PROTOCOLS = ("linear", "heareval")
L2_GRID = (1e-1, 1e-2, 1e-3, 1e-4)  # weight of 0.5 ||W||^2 beside the mean loss; each fit
# starts from the solution of the one before (strongest first), so weaker ones converge fast
LBFGS_ITERATIONS = 100
MAX_TRAIN_FRAMES = 20_000  # event tasks: training frames per fit (a seeded subsample above)


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


# -- features: every block and the default, once per clip ----------------------------------
class LayerEmbedder:
    """An :class:`~.embeddings.Embedder` whose rows are every block's embedding and the
    default one side by side: [block 0 | block 1 | ... | default]. ``embed_clips`` runs
    it like any embedder (heareval's batches, one row per clip or per frame)."""

    def __init__(self, embedder):
        model = embedder.model
        enc = getattr(model, "encoder", None)
        if not hasattr(model, "layer_scene_embeddings") or not getattr(enc, "n_layers", 0):
            raise SystemExit(f"error: {embedder.module.__name__}'s model exposes no blocks "
                             "(hear_models.hear_api.HearModel with an encoder's hidden_states); "
                             "layer-wise probes need a model of this package")
        self.embedder = embedder
        self.model = model
        self.sample_rate = embedder.sample_rate
        self.device = embedder.device
        self.layer_names = list(enc.layer_names)
        self.widths: Dict[str, List[int]] = {}  # "scene" | "timestamp" -> widths of the row parts
        self.calls = 0
        # The default embedding IS the mean of all blocks when the encoder's LayerSelector
        # takes every block with combine="mean", nothing follows it (no final LayerNorm, no
        # window summary) and the adapter pools frames plainly (e.g. Whisper's default):
        # then it is not computed a second time. Checked on the first batch.
        sel = getattr(enc, "layers", None)
        self.default_is_mean = (type(model).__name__ == "HearModel" and not getattr(enc, "final", False)
                                and getattr(enc, "summary_size", 0) == 0
                                and getattr(sel, "combine", None) == "mean"
                                and list(getattr(sel, "indices", [])) == list(range(enc.n_layers)))
        self.checked = False

    def _default(self, layers, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The default embedding: computed, or (see ``default_is_mean``) the block mean."""
        if not self.default_is_mean:
            return compute()
        mean = (sum(h.double() for h in layers) / len(layers)).float().cpu().numpy()
        if not self.checked:
            ref = compute()
            if ref.shape != mean.shape or not np.allclose(ref, mean, rtol=1e-4, atol=1e-4 * np.abs(ref).max()):
                self.default_is_mean = False
                return ref
            self.checked = True
        return mean

    def _join(self, layers, default: np.ndarray, kind: str) -> np.ndarray:
        parts = [h.detach().cpu().numpy() for h in layers] + [default]
        widths = self.widths.setdefault(kind, [p.shape[-1] for p in parts])
        if [p.shape[-1] for p in parts] != widths:
            raise ValueError(f"layer widths changed between batches: {[p.shape[-1] for p in parts]} != {widths}")
        return np.concatenate(parts, axis=-1)

    def scene(self, audio: np.ndarray) -> np.ndarray:
        import torch

        self.calls += 1
        with torch.no_grad():
            layers = self.model.layer_scene_embeddings(torch.tensor(audio, device=self.device))
        return self._join(layers, self._default(layers, lambda: self.embedder.scene(audio)), "scene")

    def timestamp(self, audio: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        import torch

        self.calls += 1
        with torch.no_grad():
            layers, ts = self.model.layer_timestamp_embeddings(torch.tensor(audio, device=self.device))
        got: Dict[str, np.ndarray] = {}

        def compute():
            got["emb"], ts_default = self.embedder.timestamp(audio)
            if ts.shape != ts_default.shape or not np.allclose(ts.cpu().numpy(), ts_default, atol=1e-3):
                raise ValueError("per-block frames and the default timestamp embedding disagree on the timestamps")
            return got["emb"]

        return self._join(layers, self._default(layers, compute), "timestamp"), ts.cpu().numpy()


def _task_key(task: TaskFolder) -> Dict[str, str]:
    from hear_models.checkpoints import sha256_file

    files = ["task_metadata.json", "labelvocabulary.csv"] + [f"{s}.json" for s in task.metadata["splits"]]
    return {f: sha256_file(task.path / f) for f in files}


@dataclass
class Features:
    """A task's cached features for one model: per split, rows x [blocks | default]."""

    folder: Path
    info: Dict[str, Any]
    index: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    _rows: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def layer_names(self) -> List[str]:
        return self.info["layer_names"]

    def rows(self, split: str) -> np.ndarray:
        if split not in self._rows:
            n = sum(v[1] for v in self.index[split]["clips"].values())
            self._rows[split] = np.memmap(self.folder / f"{split}.rows", dtype=np.float32, mode="r",
                                          shape=(n, self.index[split]["dim"]))
        return self._rows[split]

    def columns(self, layer: Layer) -> List[Tuple[int, int]]:
        widths = self.info["widths"]
        starts = np.concatenate([[0], np.cumsum(widths)]).astype(int)
        idx = layer.blocks if layer.kind != "default" else (len(widths) - 1,)
        return [(int(starts[i]), int(starts[i + 1])) for i in idx]

    def matrix(self, split: str, layer: Layer) -> np.ndarray:
        """(rows, D) float32 of one layer (a mean: the mean of its blocks' columns)."""
        rows = self.rows(split)
        cols = self.columns(layer)
        if len({b - a for a, b in cols}) > 1:
            raise ValueError(f"{layer.key}: blocks of different widths cannot be averaged")
        out = np.array(rows[:, cols[0][0]:cols[0][1]], dtype=np.float32)
        for a, b in cols[1:]:
            out += rows[:, a:b]
        return out / len(cols) if len(cols) > 1 else out


def extract_features(task: TaskFolder, folder: Path, key: Dict[str, Any],
                     make_embedder: Callable[[], LayerEmbedder], progress: bool = True) -> Tuple[Features, float]:
    """A task's features from ``folder``, computed there first unless cached under the same
    ``key`` (model, options, the task's file hashes). Returns (features, seconds spent)."""
    folder = Path(folder)
    info_path = folder / "features.json"
    key = {**key, "format": FORMAT, "task_files": _task_key(task)}
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("key") == key:
            feats = Features(folder, info)
            for split in task.metadata["splits"]:
                feats.index[split] = json.loads((folder / f"{split}.index.json").read_text())
            return feats, 0.0
        info_path.unlink()  # stale: another model build or changed task files
    folder.mkdir(parents=True, exist_ok=True)
    embedder = make_embedder()
    t0 = time.time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(d) for d in task.splits.values()), desc=f"features {task.name}",
                   unit="clip", leave=False)
    feats = Features(folder, {})
    try:
        for split in task.metadata["splits"]:
            index = embed_clips(embedder, task, split, split_batches(task, split, embedder.sample_rate),
                                folder / f"{split}.rows", bar)
            (folder / f"{split}.index.json").write_text(json.dumps(index))
            feats.index[split] = index
    finally:
        if bar is not None:
            bar.close()
    seconds = time.time() - t0
    kind = "timestamp" if task.embedding_type == "event" else "scene"
    feats.info = {"key": key, "layer_names": embedder.layer_names, "widths": embedder.widths[kind],
                  "default_is_mean": embedder.default_is_mean, "seconds": round(seconds, 1),
                  "device": embedder.device}
    info_path.write_text(json.dumps(feats.info, indent=1))  # written last: the done marker
    return feats, seconds


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
    from .results import _constant_guess

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


# -- heareval's protocol on every layer --------------------------------------------------------
def heareval_layers(task: TaskFolder, feats: Features, layers: Sequence[Layer], root: Path, model: str,
                    grid: str, grid_points: int, log: Path, progress: bool) -> Dict[str, Dict[str, Any]]:
    """Write each layer's embeddings in heareval's format from the cached features, run
    heareval's predictions on them (:func:`.predict.run_predictions`), read the scores."""
    from .embeddings import _finish_task_dir, _start_task_dir, is_done, write_split
    from .predict import run_predictions
    from .results import task_rows

    dirs = {}
    for layer in layers:  # names unique within one heareval run (it reports tasks by folder name)
        d = Path(root) / model / task.name / f"layer-{layer.key}"
        dirs[layer.key] = d
        if is_done(d):
            continue
        prng = _start_task_dir(task, d)
        for split in task.metadata["splits"]:
            x = feats.matrix(split, layer)
            rows_path = d / f".{split}.rows.tmp"
            x.tofile(rows_path)
            index = {**feats.index[split], "dim": x.shape[1]}
            write_split(task, split, d, [(rows_path, index)], prng)
            rows_path.unlink()
        _finish_task_dir(d, 0.0, "cached", probe_layer=layer.key)
    outcomes = run_predictions(list(dirs.values()), grid=grid, grid_points=grid_points, log_path=log,
                               progress=progress)
    out = {}
    for (key, d), o in zip(dirs.items(), outcomes):
        rows = task_rows(model, d)
        out[key] = {"scores": {r["metric"]: r["score"] for r in rows},
                    "stds": {r["metric"]: r["std"] for r in rows},
                    "folds": [{"ok": o.ok, "seconds": round(o.seconds, 1)}], "class_ap": None}
    return out


# -- the command ---------------------------------------------------------------------------
def probe(models: Sequence[str], tasks: str, only: Optional[Sequence[str]] = None, layers: str = "all",
          protocol: str = "linear", out: Path = Path("probe"), cache_dir: Optional[Path] = None,
          model_options: Optional[dict] = None, weights: Optional[str] = None, device: Optional[str] = None,
          seed: int = 0, grid: str = "default", grid_points: int = 8,
          max_train_frames: int = MAX_TRAIN_FRAMES, progress: bool = True, y_range: str = "metric",
          note: str = "", command: str = "") -> Dict[str, Any]:
    """Probe every layer of ``models`` on ``tasks``; writes the report into ``out`` and
    returns what ``probe.json`` holds."""
    from .predict import grid_settings
    from .runner import (SUITES, _version, check_heareval, ensure_suite, environment, find_tasks,
                         load_embedder, registry_description, resolve_model, tasks_text)

    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol {protocol!r}: expected one of {list(PROTOCOLS)}")
    check_heareval(hint="")  # both protocols score with heareval's own functions: checked before any model loads
    for name in models:
        resolve_model(name, weights, model_options or {})
    out = Path(out).resolve()
    cache_root = Path(cache_dir).resolve() if cache_dir else out / "features"
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    user_options = dict(model_options or {})
    rows: List[Dict[str, Any]] = []
    classes: List[Dict[str, Any]] = []
    model_details: List[Dict[str, Any]] = []
    task_folders: Dict[str, Path] = {}
    timing: Dict[str, Dict[str, float]] = {}
    t_all = time.time()
    for name in models:
        module_path, w, options, folder = resolve_model(name, weights, user_options)
        loaded: Dict[str, Any] = {}

        def make_embedder() -> LayerEmbedder:
            if "embedder" not in loaded:
                t0 = time.time()
                loaded["embedder"] = LayerEmbedder(load_embedder(module_path, w, options, device))
                say(f"[{name}] loaded in {time.time() - t0:.1f} s")
            return loaded["embedder"]

        if tasks in SUITES:  # the suite is generated for the model's rate
            folders = ensure_suite(tasks, seed, make_embedder().sample_rate, only, progress)
        else:
            folders = find_tasks(Path(tasks), only)
        timing[folder] = {"features_s": 0.0, "probe_s": 0.0}
        model_details.append({"name": folder, "module": module_path, "weights": w, "options": options,
                              "description": registry_description(name)})
        key = {"model": name, "module": module_path, "weights": w, "options": options}
        for tf in folders:
            task = read_task(tf, check_audio=False)
            feats, secs = extract_features(task, cache_root / folder / task.name, key,
                                           lambda: _checked(make_embedder(), task), progress)
            timing[folder]["features_s"] += secs
            say(f"[{name}] {task.name}: features " + (f"{secs:.1f} s" if secs else "cached"))
            plan = select_layers(layer_plan(feats.layer_names, feats.info["widths"]), layers)
            t0 = time.time()
            folds = fold_plan(task.metadata)
            if protocol == "linear":
                scorer = TaskScorer(task)
                data = {s: split_data(task, feats, s) for s in task.metadata["splits"]}
                results = {}
                it = plan
                if progress:
                    from tqdm.auto import tqdm

                    it = tqdm(plan, desc=f"probe {task.name}", unit="layer", leave=False)
                for layer in it:
                    results[layer.key] = probe_layer(task, feats, layer, folds, data, scorer, seed, max_train_frames)
                metrics = scorer.metrics
            else:
                results = heareval_layers(task, feats, plan, out / "heareval", folder, grid, grid_points,
                                          out / "logs" / f"{folder}.{task.name}.predictions.log", progress)
                metrics = list(task.metadata["evaluation"])
            timing[folder]["probe_s"] += time.time() - t0
            primary = metrics[0]
            ch = chance(task, folds, primary)
            n_blocks: Dict[str, int] = {}
            for layer in layer_plan(feats.layer_names):
                if layer.kind == "block":
                    n_blocks[member_of(layer.key)] = n_blocks.get(member_of(layer.key), 0) + 1
            for layer in plan:
                r = results[layer.key]
                row = {"model": folder, "task": task.name, "task_name": task.metadata["task_name"],
                       "layer": layer.key, "kind": layer.kind, "depth": layer.depth,
                       "metric": primary, "lower_is_better": primary in LOWER_IS_BETTER,
                       "score": r["scores"].get(primary), "std": r["stds"].get(primary),
                       "folds": len(folds), "chance": ch,
                       "l2": ";".join(f"{f['l2']:g}" for f in r["folds"] if "l2" in f),
                       "n_blocks": n_blocks.get(member_of(layer.key)), "degenerate": r.get("degenerate")}  # None: not checked (heareval's protocol)
                for m in metrics[1:]:
                    row[f"score_{m}"] = r["scores"].get(m)
                    row[f"std_{m}"] = r["stds"].get(m)
                rows.append(row)
            classes += best_layer_per_class(folder, task, plan, results)
            task_folders[task.name] = task.path
            say(f"[{name}] {task.name}: probed {len(plan)} layer(s) in {time.time() - t0:.1f} s; " +
                ", ".join(f"{layer.key} {_fmt(results[layer.key]['scores'].get(primary))}" for layer in plan))
            for layer in plan:
                if results[layer.key].get("degenerate"):
                    say(f"[{name}] {task.name}, layer {layer.key}: degenerate features: "
                        f"{results[layer.key]['degenerate']}")
    settings = {"models": list(models), "tasks": str(tasks), "only": list(only or []), "layers": layers,
                "protocol": protocol, "seed": seed, "l2_grid": list(L2_GRID), "lbfgs_iterations": LBFGS_ITERATIONS,
                "max_train_frames": max_train_frames, "grid": grid, "grid_points": grid_points,
                "model_options": user_options, "weights": weights, "timing": timing,
                "grid_settings": grid_settings(grid) if protocol == "heareval" else {},
                "tasks_text": tasks_text(tasks, seed, task_folders), "model_details": model_details,
                "heareval_version": _version("heareval"), "environment": environment(),
                "command": command or "", "note": note or "", "wall_s": round(time.time() - t_all, 1)}
    report = {"settings": settings, "rows": rows, "best_layers": classes,
              "histogram": histogram(classes)}
    write_report(report, out, y_range)
    return report


def _checked(embedder: LayerEmbedder, task: TaskFolder) -> LayerEmbedder:
    from .embeddings import check_audio_folders

    check_audio_folders(task, embedder.sample_rate)
    return embedder


def best_layer_per_class(model: str, task: TaskFolder, plan: Sequence[Layer],
                         results: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per class of the task, the block whose probe ranks it best (per-class average
    precision on the pooled test predictions; ties: the shallower block; ``best_layer`` is
    ``TIE`` when every block scores the same). Classes without a positive test example are
    left out."""
    blocks = [layer for layer in plan if layer.kind == "block" and results[layer.key].get("class_ap") is not None]
    if not blocks:
        return []
    ap = np.stack([results[layer.key]["class_ap"] for layer in blocks])  # (blocks, classes)
    out = []
    for c, label in enumerate(task.labels):
        col = ap[:, c]
        if np.isnan(col).all():
            continue
        best = int(np.nanargmax(col))  # the first maximum: the shallower block on ties
        tie = bool(np.nanmax(col) - np.nanmin(col) <= 1e-9)
        out.append({"model": model, "task": task.name, "class": label, "best_layer": TIE if tie else blocks[best].key,
                    "best_ap": float(col[best]), "worst_ap": float(np.nanmin(col))})
    return out


def histogram(classes: List[Dict[str, Any]]) -> Dict[str, Dict[str, int]]:
    """model -> {block: number of classes whose best block it is, TIE: classes all blocks
    score alike}."""
    out: Dict[str, Dict[str, int]] = {}
    for c in classes:
        h = out.setdefault(c["model"], {})
        h[c["best_layer"]] = h.get(c["best_layer"], 0) + 1
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hear-models probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", metavar="MODEL", help="registry name or HEAR module of this package "
                   "(several: one report, one figure)")
    p.add_argument("--tasks", default=None, help="folder of HEAR task folders, or smoke | mini")
    p.add_argument("--task", action="append", default=None, metavar="NAME",
                   help="only this task (folder name or task_name; repeatable)")
    p.add_argument("--layers", default="all", help="all (default), or a comma-separated list of block "
                   "indices (negative from the end) and layer names (hubert.3, mean, default)")
    p.add_argument("--protocol", default="linear", choices=PROTOCOLS)
    p.add_argument("--out", default="probe", help="report folder (default: ./probe)")
    p.add_argument("--cache-dir", default=None, help="features cache (default: OUT/features)")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame subsample and of a generated suite")
    p.add_argument("--model-options", default="{}", help="JSON object of load_model keyword options")
    p.add_argument("--weights", default=None, help="model_file_path for load_model")
    p.add_argument("--device", default=None, help="torch device for features (default: cuda if available)")
    p.add_argument("--grid", default="default", help="heareval protocol: heareval's grid (default: default, "
                   "as hear-models evaluate; faster: a quick check whose tiny grid barely trains)")
    p.add_argument("--grid-points", type=int, default=8, help="heareval protocol: grid points (default 8)")
    p.add_argument("--max-train-frames", type=int, default=MAX_TRAIN_FRAMES,
                   help=f"linear protocol, event tasks: training frames per fit (default {MAX_TRAIN_FRAMES})")
    p.add_argument("--y-range", default="metric", metavar="SPEC",
                   help="figure y-axes: metric (default: the panels of one metric share a range), panel "
                   "(each its own), and/or METRIC=LO:HI, comma-separated (e.g. metric,top1_acc=0:1)")
    p.add_argument("--note", default=None, help="a paragraph put under the report's title (kept by --from)")
    p.add_argument("--from", dest="sources", action="append", default=None, metavar="DIR",
                   help="no probing: draw the report again from an earlier run's probe.json (new --y-range, "
                   "--note); repeatable: several runs (other models, same protocol) in one report")
    p.add_argument("--quiet", action="store_true")
    return p


def redraw(sources: Sequence[str], out: Path, y_range: str, note: Optional[str], command: str) -> Dict[str, Any]:
    """``--from``: the report of earlier runs drawn again (their numbers unchanged)."""
    report = read_reports([Path(x) for x in sources])
    report["settings"] = {**report["settings"], "rendered_by": command}
    if note is not None:
        report["settings"]["note"] = note
    write_report(report, out, y_range)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    import shlex

    from .predict import GRIDS
    from .runner import ToolMissing, parse_model_options

    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    command = "hear-models probe " + shlex.join(argv)
    try:
        options = parse_model_options(a.model_options)
        parse_y_range(a.y_range)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    if a.sources:
        if a.models or a.tasks:
            print("error: --from draws an earlier run's report again: give no MODEL and no --tasks",
                  file=sys.stderr)
            return 2
        try:
            report = redraw(a.sources, out, a.y_range, a.note, command)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        if not a.models or not a.tasks:
            print("error: give MODEL... and --tasks (or --from DIR to draw an earlier report again)",
                  file=sys.stderr)
            return 2
        if a.grid not in GRIDS:
            print(f"error: --grid {a.grid!r}: expected one of {list(GRIDS)}", file=sys.stderr)
            return 2
        try:
            report = probe(a.models, a.tasks, a.task, a.layers, a.protocol, out, a.cache_dir, options,
                           a.weights, a.device, a.seed, a.grid, a.grid_points, a.max_train_frames,
                           progress=not a.quiet, y_range=a.y_range, note=a.note or "", command=command)
        except TaskFolderError as e:
            print(f"error: bad task folder: {e}", file=sys.stderr)
            return 2
        except (ValueError, ToolMissing) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"report: {out / 'report.md'} and report.html ({len(report['rows'])} scores; probe.csv, probe.json, "
          f"best_layers.csv, scores.png/.svg/.pdf, best_layer_hist.png/.svg/.pdf)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
