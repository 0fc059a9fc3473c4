"""The one training engine: a Lightning 2.x ``LightningModule`` base for every objective,
plus the run wiring (data, checkpoints, logs, resume, export).

Lightning does the distributed work (DDP over GPUs and nodes), mixed precision,
gradient accumulation and clipping, and the checkpoint/restore machinery. We add:

- :class:`TrainModule`: optimiser (AdamW or SGD, parameter groups with lr scales), warm-up +
  cosine/linear schedule per step, a NaN/inf guard, an optional EMA of the weights, and
  checkpoint extras: the config, the data position, the RNG states, the EMA state.
- :class:`AtomicCheckpointIO`: checkpoints written to a temporary file and renamed.
- :class:`JsonlLogger`: one JSON line per ``log_every`` steps (losses, lrs, throughput).
- :func:`fit`, :func:`export`.

An objective subclasses :class:`TrainModule` and implements ``build_model``,
``compute_loss(batch) -> (loss, logs)`` and ``export_state() -> dict``; it may add
callbacks (``extra_callbacks``) and work after training (``after_fit``): the fine-tuning
objectives keep their best checkpoint and score the test split there (training/finetune.py).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .config import TrainConfig, build_config

CKPT_KEY = "hear_models"


class TrainingInterrupted(RuntimeError):
    """The run got SIGTERM or SIGINT: it stopped after the current step, with a checkpoint to
    resume from. ``status``: the exit status a shell gives a process ended by that signal."""

    def __init__(self, step: int, checkpoint: str, signal_name: str = "SIGTERM"):
        super().__init__(f"{signal_name} at step {step}: stopped after that step; checkpoint {checkpoint} "
                         f"(continue with the same command and --resume auto, or --resume {checkpoint})")
        self.step, self.checkpoint, self.signal_name = step, checkpoint, signal_name
        self.status = 128 + int(getattr(signal, signal_name, signal.SIGTERM))


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or inf."""


# -- RNG state ------------------------------------------------------------------------------
def get_rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": [list(v) if isinstance(v, tuple) else v for v in random.getstate()],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- schedule ---------------------------------------------------------------------------------
def lr_factor(step: int, max_steps: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr at ``step``: linear warm-up, then cosine / linear / constant."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    if schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        shape = 1.0 - progress
    else:
        raise ValueError(f"optim.schedule={schedule!r}: expected cosine, linear or constant")
    return min_ratio + (1.0 - min_ratio) * shape


def peak_lr(cfg: TrainConfig, world: int = 1) -> float:
    """optim.lr, or optim.base_lr scaled by the effective batch / 256."""
    o = cfg.optim
    if o.lr > 0:
        return o.lr
    return o.base_lr * cfg.data.batch_size * world * cfg.trainer.accumulate_grad_batches / 256


def schedule_factor(cfg: TrainConfig, step: int, peak: float) -> float:
    """Multiplier of the peak lr ``peak`` at ``step`` under ``cfg``'s schedule."""
    o, t = cfg.optim, cfg.trainer
    warmup = o.warmup_steps or int(round(o.warmup_fraction * t.max_steps))
    return lr_factor(step, t.max_steps, warmup, o.schedule, o.min_lr / peak if peak > 0 else 0.0)


SCHEDULE_KEYS = (("trainer", "max_steps"), ("trainer", "accumulate_grad_batches"), ("data", "batch_size"),
                 ("optim", "lr"), ("optim", "base_lr"), ("optim", "min_lr"), ("optim", "schedule"),
                 ("optim", "warmup_steps"), ("optim", "warmup_fraction"))


def warn_schedule_change(old: TrainConfig, new: TrainConfig, step: int, world: int = 1) -> None:
    """On resume: say so when the settings that shape the lr schedule differ from the
    checkpoint's. The schedule is a function of the current settings, so a changed
    ``trainer.max_steps`` (say) moves the lr at the resumed step (a warm restart of a
    cosine) instead of continuing the curve the run was on."""
    import warnings

    values = [(f"{sec}.{key}", getattr(getattr(old, sec), key), getattr(getattr(new, sec), key))
              for sec, key in SCHEDULE_KEYS]
    changed = [f"{name} {a!r} -> {b!r}" for name, a, b in values if a != b]
    if not changed:
        return
    if step >= new.trainer.max_steps:
        warnings.warn(f"resuming at step {step} with trainer.max_steps={new.trainer.max_steps}: nothing left to "
                      "train (raise trainer.max_steps to train further)", UserWarning, stacklevel=2)
        return
    peak_old, peak_new = peak_lr(old, world), peak_lr(new, world)
    before = peak_old * schedule_factor(old, step, peak_old)
    after = peak_new * schedule_factor(new, step, peak_new)
    warnings.warn(f"resuming at step {step} with a changed lr schedule ({', '.join(changed)}): the schedule is "
                  f"recomputed for the new settings, so the lr at step {step} moves from {before:.3g} to "
                  f"{after:.3g}{' (a warm restart)' if after > 1.5 * before else ''}; keep the checkpoint's "
                  "settings to continue the curve it was on", UserWarning, stacklevel=2)


# -- EMA ---------------------------------------------------------------------------------------
class EMA:
    """Exponential moving average of a module's floating-point state."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for k, v in module.state_dict().items():
            if k in self.shadow:
                s = self.shadow[k]
                if s.device != v.device:  # follows the module to its device
                    s = self.shadow[k] = s.to(v.device)
                s.mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        for k, v in state["shadow"].items():
            self.shadow[k] = v.to(self.shadow[k].device).clone()


def _batch_size(batch: dict) -> int:
    """Clips in a batch: audio batches (the data pipeline) or feature batches (cached features)."""
    for key in ("audio", "features"):
        if key in batch:
            return int(batch[key].shape[0])
    raise KeyError("a batch needs 'audio' or 'features'")


# -- the module --------------------------------------------------------------------------------
class TrainModule(L.LightningModule):
    """Base of every objective. ``self.model`` is the nn.Module being trained."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.model = self.build_model()
        self.ema = EMA(self.model, cfg.trainer.ema_decay) if cfg.trainer.ema_decay > 0 else None
        self._next_batch = 0  # global index of the next training batch
        self._pending_rng: Optional[dict] = None
        self.data_position = 0  # set from a checkpoint on resume

    # -- to implement ----------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_loss(self, batch: dict, train: bool = True
                     ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:  # pragma: no cover
        """The objective's loss on a batch (see training.data) and named parts to log."""
        raise NotImplementedError

    def export_state(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_callbacks(self) -> List[Callback]:
        """Callbacks the objective adds to the run (fine-tuning: keep the best checkpoint)."""
        return []

    def after_fit(self, trainer: "L.Trainer") -> None:
        """Called once training has ended and ``final.ckpt`` is written (fine-tuning: the
        test score)."""

    def param_groups(self) -> List[dict]:
        """Parameter groups (weight decay off for biases / norms / tokens); override for
        layer-wise lr decay. A group may carry ``lr_scale``."""
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.endswith("_token") else decay).append(p)
        return [{"params": decay, "weight_decay": self.cfg.optim.weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    # -- Lightning -------------------------------------------------------------------------
    def peak_lr(self) -> float:
        return peak_lr(self.cfg, self.trainer.world_size if self._trainer is not None else 1)

    def configure_optimizers(self):
        o = self.cfg.optim
        lr = self.peak_lr()
        groups = self.param_groups()
        for g in groups:
            g["lr"] = lr * g.pop("lr_scale", 1.0)
            g.pop("names", None)
        if o.name == "adamw":
            opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
        elif o.name == "sgd":
            opt = torch.optim.SGD(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
        else:
            raise ValueError(f"optim.name={o.name!r}: expected adamw or sgd")
        cfg = self.cfg

        def factor(step: int) -> float:
            return schedule_factor(cfg, step, lr)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def on_train_batch_start(self, batch, batch_idx):
        if self._pending_rng is not None:  # restore right before the first resumed step
            set_rng_state(self._pending_rng)
            self._pending_rng = None

    def training_step(self, batch, batch_idx):
        loss, logs = self.compute_loss(batch)
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self.trainer.strategy.reduce_boolean_decision(bad, all=False):
            parts = ", ".join(f"{k}={float(v):.4g}" for k, v in logs.items())
            lrs = ", ".join(f"{g['lr']:.3g}" for g in self.optimizers().optimizer.param_groups) \
                if self._trainer is not None else "?"
            raise NonFiniteLossError(
                f"non-finite training loss at step {self.global_step} (batch {int(batch['index'])}): "
                f"loss={float(loss.detach()):.4g} [{parts}], lr=[{lrs}]. Training stopped; the last "
                f"checkpoint in {self.cfg.trainer.out_dir}/checkpoints is from before the failure. "
                "Try a lower optim.lr / longer warm-up, optim.grad_clip=1.0, or trainer.precision=32-true; "
                "check the data for silent or corrupt clips.")
        self._next_batch = int(batch["index"]) + 1
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False,
                 batch_size=_batch_size(batch))
        for k, v in logs.items():
            self.log(f"train/{k}", v.detach() if torch.is_tensor(v) else v, on_step=True, on_epoch=False,
                     batch_size=_batch_size(batch))
        return loss

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model)

    def validation_step(self, batch, batch_idx):
        loss, logs = self.compute_loss(batch, train=False)
        self.log("val/loss", loss, sync_dist=True, batch_size=_batch_size(batch))
        for k, v in logs.items():
            self.log(f"val/{k}", v, sync_dist=True, batch_size=_batch_size(batch))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CKPT_KEY] = {
            "config": self.cfg.to_dict(),
            "data_position": self._next_batch,
            "rng": get_rng_state(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "format": 1,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        extra = checkpoint.get(CKPT_KEY) or {}
        if self._trainer is not None:  # resuming a run (not export): Lightning loads next
            check_resume(checkpoint, self, str(self.trainer.ckpt_path))
        if extra.get("config") and self._trainer is not None:
            warn_schedule_change(build_config(extra["config"]), self.cfg, int(checkpoint.get("global_step", 0)),
                                 self.trainer.world_size)
        self.data_position = int(extra.get("data_position", 0))
        self._next_batch = self.data_position
        self._pending_rng = extra.get("rng")
        if self.ema is not None and extra.get("ema") is not None:
            self.ema.load_state_dict(extra["ema"])


# -- data module ------------------------------------------------------------------------------
class AudioDataModule(L.LightningDataModule):
    def __init__(self, cfg: TrainConfig, sample_rate: int, module: TrainModule):
        super().__init__()
        self.cfg = cfg
        self.sample_rate = cfg.data.sample_rate or sample_rate
        self.module = module
        self.train_set = self.val_set = None

    def setup(self, stage: Optional[str] = None) -> None:
        from .data import ClipDataset, finalise_labels, read_source

        d = self.cfg.data
        if self.train_set is None:
            src = finalise_labels(read_source(d.source, d.split, self.sample_rate))
            if d.limit:
                src.items = src.items[: d.limit]
            self.train_set = ClipDataset(src, self.sample_rate, d.crop_seconds, d.random_crop)
            if d.val_source:
                vsrc = finalise_labels(read_source(d.val_source, d.val_split, self.sample_rate))
                vsrc.vocab = src.vocab or vsrc.vocab
                vsrc.multilabel = src.multilabel if src.vocab else vsrc.multilabel
                # fine-tuning validates on whole clips (its predict() cuts them as the test does)
                crop = getattr(self.module, "eval_crop_seconds", d.crop_seconds)
                self.val_set = ClipDataset(vsrc, self.sample_rate, crop, random_crop=False)

    def train_dataloader(self):
        from .data import make_loader

        d, t = self.cfg.data, self.cfg.trainer
        return make_loader(self.train_set, d.batch_size, d.num_workers, t.seed,
                           start=self.module.data_position, rank=self.trainer.global_rank,
                           world_size=self.trainer.world_size, shuffle=d.shuffle)

    def val_dataloader(self):
        from .data import make_eval_loader

        if self.val_set is None:
            return []
        return make_eval_loader(self.val_set, self.cfg.data.batch_size, self.cfg.data.num_workers)


# -- checkpoint IO, logs ------------------------------------------------------------------------
class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to ``<path>.tmp-<pid>``, fsync, then ``os.replace``: a checkpoint file is either
    the previous one or the complete new one, never half written. Loads with
    ``weights_only=True``."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        from hear_models.checkpoints import torch_load_trusted_weights

        return torch_load_trusted_weights(path, map_location or "cpu")


class JsonlLogger(Callback):
    """One JSON object per line in ``<out_dir>/log.jsonl`` every ``every`` steps (rank 0):
    step, every logged ``train/*`` value, the lr of each parameter group, seconds since the
    start and samples per second."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = Path(path), max(1, every)
        self._t0 = self._t_last = None
        self._samples = 0

    def on_train_start(self, trainer, pl_module):
        self._t0 = self._t_last = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._samples += _batch_size(batch) * trainer.world_size
        step = trainer.global_step
        if step % self.every or not trainer.is_global_zero:
            return
        now = time.time()
        rec: Dict[str, Any] = {"step": step}
        for k, v in trainer.callback_metrics.items():
            if k.startswith(("train/", "val/")):
                rec[k] = float(v)
        rec["lr"] = [g["lr"] for g in trainer.optimizers[0].param_groups]
        rec["time_s"] = round(now - self._t0, 3)
        rec["samples_per_s"] = round(self._samples / max(now - self._t_last, 1e-9), 2)
        self._samples, self._t_last = 0, now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")


class CheckpointOnSigterm(Callback):
    """On SIGTERM (a scheduler's pre-emption, ``kill``, ``timeout``) or SIGINT (Ctrl-C), write
    ``last.ckpt`` after the step in flight. Lightning then stops the loop; :func:`fit` turns
    that into :class:`TrainingInterrupted` (without this, Lightning exits with status 0 and
    nothing saved on SIGTERM, status 1 and nothing saved on SIGINT).

    SIGINT is routed to Lightning's SIGTERM handler (a second SIGINT stops at once); data
    loader workers ignore both (:func:`training.data.ignore_stop_signals`), as schedulers
    signal the whole process group and a worker killed mid-batch would crash the run."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.signal_name = "SIGTERM"
        self.pending = None  # Lightning's handler and its arguments, called after the checkpoint

    def on_train_start(self, trainer, pl_module):
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        term = signal.getsignal(signal.SIGTERM)  # Lightning's, registered by trainer.fit
        if not callable(term):
            return

        # Lightning's handler makes the loop stop at its next check, which may come before
        # this callback's on_train_batch_end: a signal between the two would stop the run
        # with no checkpoint. So the signal is only noted here, and handed to Lightning once
        # last.ckpt is written at the end of the step under way.
        def on_term(signum, frame):
            self.signal_name = "SIGTERM"
            self.pending = (term, signum, frame)

        def on_int(signum, frame):
            if self.pending is not None or trainer.received_sigterm:
                raise KeyboardInterrupt
            self.signal_name = "SIGINT"
            self.pending = (term, signum, frame)

        signal.signal(signal.SIGTERM, on_term)  # Lightning's teardown restores both
        signal.signal(signal.SIGINT, on_int)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.pending is not None or trainer.received_sigterm:
            trainer.save_checkpoint(str(self.path), weights_only=False)
            if self.pending is not None:
                term, signum, frame = self.pending
                self.pending = None
                term(signum, frame)  # Lightning stops the loop (SIGTERMException) from here


class StepProgressBar(TQDMProgressBar):
    """The bar counts optimizer steps up to ``trainer.max_steps``, also after a resume
    (Lightning's counts batches of an epoch, whose number an endless loader does not have)."""

    def _set_total(self, trainer) -> None:
        bar = self.train_progress_bar
        if bar is not None:
            bar.reset(total=trainer.max_steps)
            bar.initial = bar.n = trainer.global_step
            bar.refresh()

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        self._set_total(trainer)

    def on_train_epoch_start(self, trainer, *args):
        super().on_train_epoch_start(trainer, *args)
        self._set_total(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bar, n = self.train_progress_bar, trainer.global_step
        if bar is not None and self._should_update(n, bar.total):
            bar.n = n
            bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, pl_module))


class StepCheckpoint(ModelCheckpoint):
    """``step*.ckpt`` every ``every_n_train_steps``, the newest ``save_top_k`` kept, counting
    the files earlier runs in the same folder left (a resume, a run killed between writing
    a step file and ``last.ckpt``): Lightning's own count starts from the resumed
    checkpoint's list, which misses those."""

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        if self.save_top_k < 0 or not trainer.is_global_zero or not self.dirpath:
            return
        for f in Path(self.dirpath).glob("step*.ckpt"):
            try:
                step = int(f.stem[len("step"):])
            except ValueError:
                continue
            if step <= trainer.global_step and str(f) not in self.best_k_models:
                self.best_k_models[str(f)] = torch.tensor(float(step))
        keep = sorted(self.best_k_models, key=lambda k: float(self.best_k_models[k]), reverse=True)
        for path in keep[self.save_top_k:]:
            self.best_k_models.pop(path)
            if Path(path).is_file():
                os.remove(path)
        if keep[: self.save_top_k]:
            newest = keep[: self.save_top_k]
            self.kth_best_model_path = newest[-1]
            self.kth_value = self.best_k_models[self.kth_best_model_path]
            self.best_model_path = newest[0]
            self.best_model_score = self.best_k_models[self.best_model_path]


# -- running --------------------------------------------------------------------------------------
def load_init(path: str, load_encoder, encoders: Sequence[torch.nn.Module],
              frontends: Sequence[torch.nn.Module] = ()):
    """``model.init``: read ``path`` with the family's ``load_encoder`` (every format it
    knows: packaged, our exports, training checkpoints, official files) and copy its encoder
    (and front-end) weights into ``encoders`` (``frontends``), strictly: a file of other
    sizes is an error naming it and the mis-shaped keys. Returns the ``LoadedEncoder``."""
    from hear_models.models import load_strict

    loaded = load_encoder(path)
    for target in encoders:
        load_strict(target, loaded.encoder.state_dict(), source=f"model.init={path}")
    for target in frontends:
        load_strict(target, loaded.frontend.state_dict(), source=f"model.init={path}")
    return loaded


def build_module(cfg: TrainConfig) -> TrainModule:
    from .objectives import get_objective

    return get_objective(cfg.objective).module(cfg)


def find_resume(out_dir: str, resume: Optional[str]) -> Optional[str]:
    """``None``: no resume; ``"auto"``: the newest checkpoint in out_dir, if any; a path."""
    if not resume:
        return None
    if resume != "auto":
        if not Path(resume).is_file():
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint")
        return resume
    ckdir = Path(out_dir) / "checkpoints"
    last = ckdir / "last.ckpt"
    if last.is_file():
        return str(last)
    cands = sorted(ckdir.glob("step*.ckpt"))
    return str(cands[-1]) if cands else None


def make_trainer(cfg: TrainConfig, callbacks: Sequence[Callback] = ()) -> L.Trainer:
    t = cfg.trainer
    out = Path(t.out_dir)
    ckpt = StepCheckpoint(dirpath=out / "checkpoints", filename="step{step:07d}",
                           auto_insert_metric_name=False, every_n_train_steps=max(1, t.checkpoint_every),
                           save_top_k=t.keep_checkpoints, monitor="step", mode="max",
                           save_last=True, save_on_train_epoch_end=False)
    cbs: List[Callback] = [JsonlLogger(out / "log.jsonl", t.log_every), ckpt,
                           CheckpointOnSigterm(out / "checkpoints" / "last.ckpt"), *callbacks]
    if t.progress_bar:
        cbs.append(StepProgressBar(refresh_rate=max(1, min(t.log_every, 10))))
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=t.precision, max_steps=t.max_steps, max_epochs=-1,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=cfg.optim.grad_clip or None,
        deterministic=t.deterministic, callbacks=cbs, plugins=[AtomicCheckpointIO()],
        default_root_dir=str(out), logger=False, enable_progress_bar=t.progress_bar,
        enable_model_summary=False, use_distributed_sampler=False,
        val_check_interval=t.val_every if t.val_every else None,
        check_val_every_n_epoch=None if t.val_every else 1,
        limit_val_batches=None if t.val_every else 0, num_sanity_val_steps=0,
    )


def fit(cfg: TrainConfig, resume: Optional[str] = None, callbacks: Sequence[Callback] = ()) -> TrainModule:
    """Train ``cfg``; ``resume``: a checkpoint path or ``"auto"``. Returns the module."""
    import warnings

    L.seed_everything(cfg.trainer.seed, workers=False, verbose=False)
    module = build_module(cfg)
    ckpt_path = find_resume(cfg.trainer.out_dir, resume)
    out = Path(cfg.trainer.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "config.json", "w") as f:
        json.dump(cfg.to_dict(), f, indent=1)
    trainer = make_trainer(cfg, [*callbacks, *module.extra_callbacks()])
    if trainer.is_global_zero:  # a run killed while writing a checkpoint leaves its temporary file
        for stale in (out / "checkpoints").glob("*.ckpt.tmp-*"):
            stale.unlink()
    # an objective that does not read audio (e.g. heads on cached features) brings its own data
    dm = module.make_datamodule() if hasattr(module, "make_datamodule") else AudioDataModule(cfg, module.sample_rate, module)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*infinite.*")
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        except SIGTERMException:  # a SystemExit: without this, status 0 as if finished
            sig = next((c.signal_name for c in trainer.callbacks if isinstance(c, CheckpointOnSigterm)), "SIGTERM")
            raise TrainingInterrupted(trainer.global_step, str(out / "checkpoints" / "last.ckpt"), sig) from None
    trainer.save_checkpoint(str(out / "checkpoints" / "final.ckpt"), weights_only=False)
    module.after_fit(trainer)
    return module


def check_resume(ckpt: dict, module: "TrainModule", path: str) -> None:
    """Refuse a checkpoint to resume from that is not of this run's kind, in words naming
    the file: not a hear-models training checkpoint (what it is instead), another
    objective (which), or weights that do not fit this run's model (the keys missing,
    unexpected and mis-shaped, with the shapes the model declares)."""
    from hear_models.checkpoints import CheckpointError
    from hear_models.models import check_fit, identify

    extra = ckpt.get(CKPT_KEY)
    if not isinstance(extra, dict):
        raise CheckpointError(f"--resume {path}: not a hear-models training checkpoint (no "
                              f"'{CKPT_KEY}' entry): it is {identify(ckpt)[1]}")
    objective = (extra.get("config") or {}).get("objective")
    if objective != module.cfg.objective:
        raise CheckpointError(f"--resume {path}: a checkpoint of objective {objective!r}; this "
                              f"run trains {module.cfg.objective!r}. Resume with a checkpoint of "
                              "this run, or start it without --resume")
    check_fit(module.state_dict(), ckpt.get("state_dict") or {},
              f"this run's {module.cfg.objective} model", source=f"--resume {path}")


def load_checkpoint(path: str) -> Tuple[TrainConfig, dict]:
    from hear_models.checkpoints import torch_load_trusted_weights

    from hear_models.models import identify

    ckpt = torch_load_trusted_weights(path)
    extra = ckpt.get(CKPT_KEY) if isinstance(ckpt, dict) else None
    if extra is None:
        raise ValueError(f"{path}: not a hear-models training checkpoint (no '{CKPT_KEY}' entry): "
                         f"it is {identify(ckpt)[1]}")
    return build_config(extra["config"]), ckpt


def export(checkpoint: str, out: str, use_ema: bool = False, description: str = "",
           data_note: str = "") -> str:
    """Write the weights a model's HEAR module ``load_model(out)`` reads; returns sha256.

    ``description`` replaces the file's one-line description (shown by ``load_model``);
    ``data_note`` replaces the data paths kept in the stored training config (files that
    are shared should say what the data was, not where it sat on the training machine)."""
    from hear_models.checkpoints import sha256_file

    cfg, ckpt = load_checkpoint(checkpoint)
    module = build_module(cfg)
    module.load_state_dict(ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)  # objectives' own state (e.g. a weight average)
    if use_ema:
        extra = ckpt[CKPT_KEY]
        if not extra.get("ema"):
            raise ValueError(f"{checkpoint}: no EMA state (trainer.ema_decay was 0)")
        module.model.load_state_dict({**module.model.state_dict(), **extra["ema"]["shadow"]})
    state = module.export_state()
    config = cfg.to_dict()
    if data_note:
        for key in ("source", "val_source"):
            if config["data"].get(key):
                config["data"][key] = data_note
    if description:
        state["description"] = description
    state["trained"] = {"steps": int(ckpt.get("global_step", 0)), "objective": cfg.objective,
                        "config": config, "ema": use_ema}
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out_path)
    return sha256_file(out_path)
