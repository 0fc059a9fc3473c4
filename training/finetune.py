"""What every fine-tuning objective shares (``maskspec_finetune``, ``conformer_finetune``,
``atst_finetune``): one base class, :class:`FinetuneModule`, and one config block,
:class:`FinetuneConfig`.

- **Labels** from the training data (a HEAR task folder or a manifest with labels):
  ``model.labels``, ``n_classes``, ``multilabel``.
- **heareval's splits** of a HEAR task folder: ``data.fold=i`` takes heareval's run i
  (``get_splits_from_metadata``: train/valid/test tasks have one run; k-fold tasks: fold i
  tests, fold i + 1 validates, the other folds train); ``data.test_split=auto`` (the
  default) finds the test split of the run whose training splits are ``data.split``.
- **Length in epochs** (``model.epochs``, ``model.warmup_epochs``): turned into
  ``trainer.max_steps`` and ``optim.warmup_steps`` from the number of training clips and
  the global batch.
- **Validation** on whole clips (``predict``: the objective's own clip protocol), scored
  with the task's primary metric by heareval's own score function (top-1 accuracy or mAP
  for a manifest): ``val/score``; the best step is kept as ``checkpoints/best.ckpt``.
- **Test score**: after training, the best checkpoint (the final one without validation)
  predicts the test split; heareval's score functions give every metric of the task;
  ``test_scores.json`` in the run folder, printed as one JSON line.

An objective implements ``clip_probabilities(audio, lengths)`` (B, C) for clips of at most
``eval_window_seconds`` (longer ones are cut into such windows and their probabilities
averaged; 0 = the objective takes any length itself).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from .engine import TrainModule

TEST_SCORES = "test_scores.json"


@dataclass
class FinetuneConfig:
    """``model:`` fields of every fine-tuning objective (beside the model's own)."""

    n_classes: int = 0  # 0 = from the training data's labels
    labels: List[str] = field(default_factory=list)  # filled from the data
    multilabel: Optional[bool] = None  # None = from the data
    epochs: float = 0.0  # > 0: trainer.max_steps = epochs x steps per epoch (clips / global batch)
    warmup_epochs: float = 0.0  # > 0: optim.warmup_steps = warmup_epochs x steps per epoch
    steps_per_epoch: int = 0  # filled from the data when epochs are used


def _is_task_folder(source: str) -> bool:
    p = Path(source).expanduser() if source else None
    return bool(p and p.is_dir() and (p / "task_metadata.json").is_file())


def _splits(text: str) -> List[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def heareval_runs(metadata: dict) -> List[Dict[str, List[str]]]:
    """heareval's train/valid/test runs of a task (its own ``get_splits_from_metadata``)."""
    from heareval.predictions.task_predictions import get_splits_from_metadata

    return get_splits_from_metadata(metadata)


def resolve_splits(cfg) -> None:
    """Fill ``data.split / val_source / val_split / test_split`` from heareval's runs of a
    HEAR task folder (``data.fold``, ``data.test_split=auto``); see the module docstring."""
    d = cfg.data
    if not _is_task_folder(d.source):
        if d.fold >= 0:
            raise ValueError(f"data.fold={d.fold}: folds are those of a HEAR task folder; "
                             f"data.source={d.source!r} is not one")
        if d.test_split not in ("", "auto"):
            raise ValueError(f"data.test_split={d.test_split!r}: a test split needs a HEAR task folder "
                             f"as data.source (got {d.source!r})")
        d.test_split = ""
        return
    folder = Path(d.source).expanduser()
    meta = json.loads((folder / "task_metadata.json").read_text())
    event = meta.get("embedding_type") == "event"
    if event and d.test_split not in ("", "auto"):
        raise ValueError(f"{folder.name} is an event task: a fine-tuned clip classifier gives no "
                         "timestamped events, so its metrics cannot be computed; set data.test_split=''")
    runs = heareval_runs(meta) if "split_mode" in meta else []
    if d.fold >= 0:
        if d.fold >= len(runs):
            raise ValueError(f"data.fold={d.fold}: {folder.name} has {len(runs)} heareval run(s) "
                             f"(split_mode {meta.get('split_mode')!r})")
        run = runs[d.fold]
        d.split, d.val_split = ",".join(run["train"]), ",".join(run["valid"])
        d.val_source = d.val_source or str(folder)
        if d.test_split in ("", "auto"):
            d.test_split = ",".join(run["test"])
    elif d.test_split == "auto":
        same = [r for r in runs if sorted(r["train"]) == sorted(_splits(d.split))]
        if d.val_source:
            same = [r for r in same if sorted(r["valid"]) == sorted(_splits(d.val_split))]
        if not same:
            plan = "; ".join(f"data.fold={i}: train {','.join(r['train'])}, valid {','.join(r['valid'])}, "
                             f"test {','.join(r['test'])}" for i, r in enumerate(runs))
            warnings.warn(f"{folder.name}: data.split={d.split!r} is not one of heareval's runs, so no test "
                          f"score will be computed; use one of them ({plan or 'none: no split_mode'}) "
                          "or name data.test_split", UserWarning, stacklevel=2)
            d.test_split = ""
        else:
            run = same[0]

            def present(splits):  # a folder may hold fewer splits than its split_mode has
                return all((folder / f"{s}.json").is_file() for s in splits)

            if not d.val_source and present(run["valid"]):
                d.val_source, d.val_split = str(folder), ",".join(run["valid"])
            d.test_split = ",".join(run["test"]) if present(run["test"]) else ""
    if event:
        warnings.warn(f"{folder.name} is an event task: trained on clip-level labels, validated by their "
                      "mAP, no test score", UserWarning, stacklevel=2)
        d.test_split = ""
    for s in _splits(d.test_split):
        if not (folder / f"{s}.json").is_file():
            raise ValueError(f"data.test_split={d.test_split!r}: {folder} has no split {s!r}")


def resolve_epochs(cfg, n_clips: int) -> None:
    """``model.epochs`` / ``warmup_epochs`` -> ``trainer.max_steps`` / ``optim.warmup_steps``."""
    m, t = cfg.model, cfg.trainer
    if m.epochs <= 0 and m.warmup_epochs <= 0:
        return
    if not m.steps_per_epoch:
        world = (t.devices if isinstance(t.devices, int) else 1) * t.num_nodes
        m.steps_per_epoch = max(1, math.ceil(n_clips / (cfg.data.batch_size * world * t.accumulate_grad_batches)))
    if m.epochs > 0:
        t.max_steps = max(1, int(round(m.epochs * m.steps_per_epoch)))
    if m.warmup_epochs > 0:
        cfg.optim.warmup_steps = max(1, int(round(m.warmup_epochs * m.steps_per_epoch)))


def read_labels_and_size(cfg, sample_rate: int, objective: str) -> None:
    """Labels (``model.labels / n_classes / multilabel``) and the epoch length from the
    training data, where the config leaves them open."""
    from .data import finalise_labels, read_source

    m = cfg.model
    need_labels = m.n_classes == 0 or m.multilabel is None
    need_size = (m.epochs > 0 or m.warmup_epochs > 0) and not m.steps_per_epoch
    if not (need_labels or need_size):
        return
    src = finalise_labels(read_source(cfg.data.source, cfg.data.split, cfg.data.sample_rate or sample_rate))
    if need_labels:
        if not src.vocab:
            raise ValueError(f"{objective}: {cfg.data.source} has no labels")
        m.labels = list(src.vocab)
        m.n_classes = m.n_classes or len(src.vocab)
        m.multilabel = bool(src.multilabel) if m.multilabel is None else m.multilabel
    resolve_epochs(cfg, len(src.items))


class FinetuneModule(TrainModule):
    """Base of the fine-tuning objectives (see the module docstring)."""

    eval_crop_seconds = 0.0  # validation and test read whole clips; predict() cuts them

    def __init__(self, cfg):
        if not getattr(cfg.model, "steps_per_epoch", 0) and not cfg.model.labels:
            resolve_splits(cfg)  # a fresh config (a checkpoint's is resolved already)
        read_labels_and_size(cfg, self.sample_rate, cfg.objective)
        super().__init__(cfg)
        self._val: List[tuple] = []
        self._best_cb = None

    # -- to implement ------------------------------------------------------------------
    def clip_probabilities(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """(B, n) audio, (B,) valid samples -> (B, C) class probabilities (eval mode)."""
        raise NotImplementedError

    @property
    def eval_window_seconds(self) -> float:
        """Clips longer than this are cut into windows whose probabilities are averaged
        (the trailing window only when more than half full); 0 = any length."""
        return self.cfg.data.crop_seconds

    # -- prediction ------------------------------------------------------------------------
    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return logits.sigmoid() if self.cfg.model.multilabel else logits.softmax(-1)

    @torch.no_grad()
    def predict(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Whole clips (B, n) -> (B, C) probabilities."""
        lengths = lengths.to(audio.device).clamp(min=1, max=audio.shape[1])
        W = int(round(self.eval_window_seconds * self.sample_rate))
        n = int(lengths.max())
        if W <= 0 or n <= W:
            return self.clip_probabilities(audio[:, :n], lengths)
        total, count = None, torch.zeros(audio.shape[0], device=audio.device)
        for i, start in enumerate(range(0, n, W)):
            valid = (lengths - start).clamp(0, W)
            use = (valid > 0) if i == 0 else (valid > W // 2)
            if not bool(use.any()):
                break
            p = self.clip_probabilities(audio[:, start:start + W], valid.clamp_min(1)) * use[:, None]
            total = p if total is None else total + p
            count += use
        return total / count.clamp_min(1)[:, None]

    # -- validation --------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch, batch_idx):
        probs = self.predict(batch["audio"], batch["lengths"])
        self._val.append((probs.cpu(), batch["target"].float().cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        probs = torch.cat([v[0] for v in self._val]).numpy()
        target = torch.cat([v[1] for v in self._val]).numpy()
        self._val = []
        eps = 1e-7
        if self.cfg.model.multilabel:
            p = np.clip(probs, eps, 1 - eps)
            loss = float(-(target * np.log(p) + (1 - target) * np.log(1 - p)).mean())
        else:
            loss = float(-(target * np.log(np.clip(probs, eps, 1))).sum(1).mean())
        score = self.score(probs, target, split=self.cfg.data.val_split, primary_only=True)
        self.log("val/loss", loss, batch_size=len(target))
        self.log("val/score", next(iter(score.values())), prog_bar=True, batch_size=len(target))

    # -- scoring -------------------------------------------------------------------------
    def task(self):
        """The HEAR scene task folder being fine-tuned on (evaluation's reader), or None
        (a manifest, an event task, a folder heareval cannot read)."""
        if not _is_task_folder(self.cfg.data.source):
            return None
        if getattr(self, "_task", None) is not None:
            return self._task or None
        from hear_models.evaluation.embeddings import TaskFolderError, read_task

        # metadata, vocabulary and split files (the audio is the data pipeline's business:
        # it resamples from whatever rate the folder offers)
        try:
            task = read_task(Path(self.cfg.data.source).expanduser(), sample_rate=None, check_audio=False)
        except TaskFolderError as e:
            warnings.warn(f"heareval could not evaluate this task folder ({e}); validation is scored as "
                          "for a manifest (top-1 accuracy / mAP)", UserWarning, stacklevel=2)
            self._task = False
            return None
        if task.embedding_type == "event":  # trained on clip-level labels: no event metrics
            self._task = False
            return None
        if list(task.labels) != list(self.cfg.model.labels):
            raise ValueError(f"{task.path}: labelvocabulary.csv {task.labels[:5]}... differs from the "
                             f"model's labels {self.cfg.model.labels[:5]}...")
        self._task = task
        return task

    def score(self, probs: np.ndarray, target: np.ndarray, split: str = "",
              primary_only: bool = False) -> Dict[str, float]:
        """{metric: value}: the task's metrics by heareval's own score functions (the
        primary one first); for a manifest, top-1 accuracy or (multilabel) mAP."""
        task = self.task()
        if task is None:
            if self.cfg.model.multilabel:
                from sklearn.metrics import average_precision_score

                cols = [c for c in range(target.shape[1]) if target[:, c].any()]
                return {"mAP": float(np.mean([average_precision_score(target[:, c], probs[:, c])
                                              for c in cols])) if cols else float("nan")}
            return {"top1_acc": float((probs.argmax(1) == target.argmax(1)).mean())}
        from hear_models.evaluation.probe.linear import SplitData, TaskScorer

        scorer = TaskScorer(task)
        metrics = [scorer.primary] if primary_only else scorer.metrics
        scores, _ = scorer.scores(probs, SplitData(target.astype(np.float32), [""] * len(target)), metrics)
        return scores

    # -- best checkpoint, test --------------------------------------------------------------
    def extra_callbacks(self):
        if not (self.cfg.data.val_source and self.cfg.trainer.val_every):
            return []
        from lightning.pytorch.callbacks import ModelCheckpoint

        self._best_cb = ModelCheckpoint(
            dirpath=Path(self.cfg.trainer.out_dir) / "checkpoints", filename="best", monitor="val/score",
            mode="max", save_top_k=1, auto_insert_metric_name=False, save_last=False,
            save_on_train_epoch_end=False, enable_version_counter=False)
        return [self._best_cb]

    def evaluate_split(self, split: str) -> Dict[str, object]:
        """Probabilities of every clip of ``split`` (whole clips, ``predict``) scored."""
        from .data import ClipDataset, make_eval_loader, read_source

        src = read_source(self.cfg.data.source, split, self.cfg.data.sample_rate or self.sample_rate)
        src.vocab, src.multilabel = list(self.cfg.model.labels), bool(self.cfg.model.multilabel)
        ds = ClipDataset(src, self.cfg.data.sample_rate or self.sample_rate, self.eval_crop_seconds,
                         random_crop=False)
        loader = make_eval_loader(ds, self.cfg.data.batch_size, self.cfg.data.num_workers)
        device = next(self.model.parameters()).device
        was_training = self.training
        self.eval()
        probs, target = [], []
        with torch.no_grad():
            for batch in loader:
                probs.append(self.predict(batch["audio"].to(device), batch["lengths"].to(device)).cpu())
                target.append(batch["target"].float())
        self.train(was_training)
        p, t = torch.cat(probs).numpy(), torch.cat(target).numpy()
        return {"scores": self.score(p, t, split=split), "n_clips": int(len(t))}

    def after_fit(self, trainer) -> None:
        from hear_models.checkpoints import torch_load_trusted_weights

        if not trainer.is_global_zero:
            return
        out = Path(self.cfg.trainer.out_dir)
        best = self._best_cb.best_model_path if self._best_cb is not None else ""
        path = Path(best) if best else out / "checkpoints" / "final.ckpt"
        ckpt = torch_load_trusted_weights(str(path))
        self.load_state_dict(ckpt["state_dict"])
        d = self.cfg.data
        if not d.test_split:
            return
        task = self.task()
        result = self.evaluate_split(d.test_split)
        report = {
            "task": task.name if task else d.source, "objective": self.cfg.objective,
            "fold": d.fold if d.fold >= 0 else None, "train_split": d.split, "valid_split": d.val_split,
            "test_split": d.test_split, "n_test_clips": result["n_clips"],
            "checkpoint": path.name, "step": int(ckpt.get("global_step", 0)),
            "val_score": float(self._best_cb.best_model_score) if best else None,
            "primary": next(iter(result["scores"])), "scores": result["scores"],
            "init": getattr(self.cfg.model, "init", "") or "random",
            "scorer": "heareval.score" if task is not None else "top1_acc / mAP (sklearn)",
        }
        (out / TEST_SCORES).write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps({"test_scores": str(out / TEST_SCORES), **report}), flush=True)


def fit_all_folds(config: str, overrides=(), resume: Optional[str] = None) -> dict:
    """Fine-tune once per heareval run of a HEAR task folder (``data.fold=0 .. k-1``, in
    ``trainer.out_dir/foldNN``) and report what heareval reports for the task: the mean
    (and sample std) over the runs of every metric, in ``trainer.out_dir/test_scores.json``."""
    from .config import load_config
    from .engine import fit
    from .objectives import get_objective

    cfg = load_config(config, overrides)
    if not issubclass(get_objective(cfg.objective).module, FinetuneModule):
        raise ValueError(f"--all-folds: {cfg.objective} is not a fine-tuning objective")
    if not _is_task_folder(cfg.data.source):
        raise ValueError(f"--all-folds: data.source={cfg.data.source!r} is not a HEAR task folder")
    folder = Path(cfg.data.source).expanduser()
    runs = heareval_runs(json.loads((folder / "task_metadata.json").read_text()))
    out = Path(cfg.trainer.out_dir)
    reports = []
    for i in range(len(runs)):
        run_dir = out / f"fold{i:02d}"
        fit(load_config(config, [*overrides, f"data.fold={i}", f"trainer.out_dir={run_dir}"]),
            resume="auto" if resume else None)
        reports.append(json.loads((run_dir / TEST_SCORES).read_text()))
    metrics = list(reports[0]["scores"])
    values = {m: np.array([r["scores"][m] for r in reports], dtype=float) for m in metrics}
    summary = {"task": reports[0]["task"], "objective": cfg.objective, "runs": len(reports),
               "primary": reports[0]["primary"], "scores": {m: float(v.mean()) for m, v in values.items()},
               "stds": {m: float(v.std(ddof=1)) if len(v) > 1 else None for m, v in values.items()},
               "per_run": [{"fold": r["fold"], "test_split": r["test_split"], "scores": r["scores"]} for r in reports],
               "init": reports[0]["init"], "scorer": reports[0]["scorer"]}
    (out / TEST_SCORES).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({"test_scores": str(out / TEST_SCORES), **summary}), flush=True)
    return summary
