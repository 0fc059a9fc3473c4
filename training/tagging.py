"""Whisper-AT tagging heads on a frozen Whisper: the paper's recipe in the shared engine.

The backbone is frozen, so its features are extracted ONCE into an on-disk cache and
reused across epochs and head types: for every clip, every encoder block's output
(before ``ln_post``) mean-pooled by 20 frames (0.4 s), float16, shape
``(n_layers, n_pooled, width)``. The cache is keyed by the backbone, the data and the
clip length, not by the head, so training Last-MLP, WA-MLP, WA-Tr and TL-Tr on the same data
extracts once.

Recipe (Gong et al. 2023, configs/whisper_at_*.yaml): BCE with logits; Adam (0.95, 0.999),
weight decay 5e-7; lr 1e-4; mixup on features with probability 0.5 and lambda ~ Beta(10, 10);
label smoothing 0.1; time masking of up to 10 of the 25 pooled frames; balanced sampling
for multilabel data; weights averaged over the last half of training. Any label set: the
labels of a manifest or a HEAR task's vocabulary.

Deviations (documented in docs/whisper_at.md): the engine counts steps, not epochs, so the
paper's MultiStepLR (x0.75 every 5 epochs from epoch 15) is replaced by the engine's
schedules (cosine by default), and the weight average starts at a fraction of the steps.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from hear_models.models.whisper_at_heads import POOLED_PER_SECOND, create_head, pool_time

from .engine import TrainModule

CACHE_VERSION = 1


@dataclass
class TaggingConfig:
    whisper: str = ""  # backbone (hear_models.checkpoints.load_whisper source; "" = offline base)
    head: str = "tl_tr"  # last_mlp | wa_mlp | wa_tr | tl_tr
    proj_dim: Optional[int] = None  # tl_tr only: TL-Tr-512 etc.
    cache_dir: str = ""  # "" = $HEAR_MODELS_CACHE or ~/.cache/hear_models, + /whisper_at_features
    clip_seconds: float = 10.0  # pooled frames per training example: clip_seconds x 2.5
    label_smoothing: float = 0.1
    time_mask: int = 10  # up to this many consecutive pooled frames zeroed (training)
    mixup: float = 0.5  # probability that a training example is mixed
    mixup_alpha: float = 10.0
    balanced: bool = True  # multilabel data: sample clips by the rarity of their labels
    average_from: float = 0.5  # average the weights over the steps after this fraction (1 = off)
    labels: List[str] = field(default_factory=list)  # filled from the data
    multilabel: Optional[bool] = None  # filled from the data


def _cache_root(cfg: TaggingConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    from hear_models.checkpoints import cache_dir

    return cache_dir() / "whisper_at_features"


def _whisper_id(source: str) -> str:
    """A stable name for a backbone: the file's size and mtime for paths, the name otherwise."""
    p = Path(source)
    if source and p.exists():
        files = [p] if p.is_file() else sorted(q for q in p.iterdir() if q.is_file())
        return json.dumps([str(p.resolve())] + [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files])
    return source or "offline:base"


def extract_features(source: str, split: str, cfg: TaggingConfig, progress: bool = True) -> Path:
    """Pool every block of the frozen Whisper over every clip of ``source``, once.

    Returns the cache folder: ``features.npy`` (float16, (total pooled frames, n_layers,
    width)), ``index.json`` (per clip: path, offset, n_pooled, labels; the vocabulary).
    Clips longer than 30 s (Whisper's context) are cut to their first 30 s.
    """
    from hear_models.audio import load_audio
    from hear_models.checkpoints import load_whisper
    from hear_models.models.whisper import WhisperEncoder

    from .data import finalise_labels, read_source

    src = finalise_labels(read_source(source, split, 16000))
    items = [(it.path, sorted(it.labels or [])) for it in src.items]
    if not items:
        raise ValueError(f"{source} ({split}): no clips")
    key = hashlib.sha256(json.dumps({
        "v": CACHE_VERSION, "whisper": _whisper_id(cfg.whisper), "items": items,
        "stats": [(os.path.getsize(p), int(os.path.getmtime(p))) for p, _ in items],
    }).encode()).hexdigest()[:20]
    folder = _cache_root(cfg) / key
    if (folder / "index.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    encoder = WhisperEncoder(load_whisper(cfg.whisper).encoder).eval()
    pooled, rows, offset = [], [], 0
    iterator = items
    if progress:
        from tqdm import tqdm

        iterator = tqdm(items, desc=f"Whisper features ({len(items)} clips, once)", unit="clip")
    with torch.inference_mode():
        for path, labels in iterator:
            audio = torch.from_numpy(load_audio(path, 16000)[: 30 * 16000])
            if audio.shape[0] < encoder.min_samples:
                audio = F.pad(audio, (0, encoder.min_samples - audio.shape[0]))
            hidden = torch.stack(list(encoder.hidden_states(audio[None])), 1)  # (1, L, F, D)
            p = pool_time(hidden)[0].permute(1, 0, 2).to(torch.float16)  # (T, L, D)
            pooled.append(p.numpy())
            rows.append({"path": path, "offset": offset, "n_pooled": p.shape[0], "labels": labels})
            offset += p.shape[0]
    tmp = folder / "features.npy.tmp"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16,
                                    shape=(offset, encoder.n_layers, encoder.width))
    for row, p in zip(rows, pooled):
        arr[row["offset"]:row["offset"] + row["n_pooled"]] = p
    arr.flush()
    del arr
    os.replace(tmp, folder / "features.npy")
    index = {"whisper": cfg.whisper, "n_layers": encoder.n_layers, "width": encoder.width,
             "vocab": list(src.vocab or []), "multilabel": bool(src.multilabel), "clips": rows}
    (folder / "index.json.tmp").write_text(json.dumps(index))
    os.replace(folder / "index.json.tmp", folder / "index.json")
    return folder


class FeatureSet:
    """Cached pooled features of one data split, with multi-hot targets."""

    def __init__(self, folder: Path, vocab: Optional[List[str]] = None):
        index = json.loads((Path(folder) / "index.json").read_text())
        self.features = np.load(Path(folder) / "features.npy", mmap_mode="r")
        self.clips = index["clips"]
        self.vocab = list(vocab or index["vocab"])
        self.multilabel = index["multilabel"]
        self.n_layers, self.width = index["n_layers"], index["width"]
        pos = {label: i for i, label in enumerate(self.vocab)}
        self.targets = torch.zeros(len(self.clips), len(self.vocab))
        for i, c in enumerate(self.clips):
            for label in c["labels"]:
                if label not in pos:
                    raise ValueError(f"{c['path']}: label {label!r} is not in the vocabulary")
                self.targets[i, pos[label]] = 1.0

    def __len__(self) -> int:
        return len(self.clips)

    def window(self, i: int, length: int, start: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Clip i's features cut to ``length`` pooled frames from ``start`` (None: the start),
        zero-padded; returns (n_layers, length, width) float32 and a padding mask (length,)."""
        c = self.clips[i]
        n = c["n_pooled"]
        s = 0 if start is None else min(start, max(0, n - length))
        take = min(length, n - s)
        x = torch.zeros(self.n_layers, length, self.width)
        x[:, :take] = torch.from_numpy(np.array(self.features[c["offset"] + s:c["offset"] + s + take],
                                                dtype=np.float32)).permute(1, 0, 2)
        mask = torch.arange(length) >= take
        return x, mask

    def sample_weights(self) -> torch.Tensor:
        """Balanced sampling: a clip's weight is the sum over its labels of 1 / label count."""
        counts = self.targets.sum(0).clamp_min(1.0)
        w = (self.targets / counts).sum(1)
        return torch.where(w > 0, w, torch.full_like(w, float(w[w > 0].min()) if (w > 0).any() else 1.0))


class _FeatureBatches(torch.utils.data.IterableDataset):
    """Endless training batches that are a function of (seed, global batch index): a resumed
    run sees exactly the batches the uninterrupted one would have seen."""

    def __init__(self, fs: FeatureSet, cfg: TaggingConfig, batch_size: int, seed: int, start: int,
                 rank: int = 0, world_size: int = 1):
        self.fs, self.cfg, self.bs, self.seed = fs, cfg, batch_size, seed
        self.start, self.rank, self.world = start, rank, world_size
        self.length = max(1, int(round(cfg.clip_seconds * POOLED_PER_SECOND)))
        self.weights = fs.sample_weights() if (cfg.balanced and fs.multilabel) else None
        smooth = cfg.label_smoothing
        self.targets = fs.targets * (1 - smooth) + smooth / max(1, fs.targets.shape[1]) if smooth else fs.targets

    def batch(self, b: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
        n_global = self.bs * self.world
        if self.weights is not None:
            idx = torch.multinomial(self.weights, n_global, replacement=True, generator=g)
        else:
            idx = torch.randint(len(self.fs), (n_global,), generator=g)
        idx = idx[self.rank * self.bs:(self.rank + 1) * self.bs]
        xs, ms = [], []
        for i in idx.tolist():
            n = self.fs.clips[i]["n_pooled"]
            start = int(torch.randint(max(1, n - self.length + 1), (1,), generator=g))
            x, m = self.fs.window(i, self.length, start)
            xs.append(x)
            ms.append(m)
        x, mask, y = torch.stack(xs), torch.stack(ms), self.targets[idx].clone()
        c = self.cfg
        if c.time_mask > 0:  # SpecAugment-style time mask on the pooled frames
            for k in range(x.shape[0]):
                w = int(torch.randint(c.time_mask + 1, (1,), generator=g))
                s = int(torch.randint(max(1, self.length - w + 1), (1,), generator=g))
                x[k, :, s:s + w] = 0.0
        if c.mixup > 0:  # feature mixup with a partner from the same batch
            lam = _beta(c.mixup_alpha, x.shape[0], g)
            use = torch.rand(x.shape[0], generator=g) < c.mixup
            lam = torch.where(use, lam, torch.ones_like(lam))
            perm = torch.randperm(x.shape[0], generator=g)
            x = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm]
            y = lam.view(-1, 1) * y + (1 - lam.view(-1, 1)) * y[perm]
            mask = mask & mask[perm]
        return {"features": x, "padding_mask": mask, "targets": y, "index": torch.tensor(b)}

    def __iter__(self):
        b = self.start
        while True:
            yield self.batch(b)
            b += 1


def _beta(alpha: float, n: int, g: torch.Generator) -> torch.Tensor:
    """Beta(alpha, alpha) samples drawn from a seeded generator (torch's Beta sampler takes no
    generator). Integer alpha (the recipe's 10): exact, the alpha-th order statistic of
    2 alpha - 1 uniforms. Other alpha: a normal with Beta's mean and variance, clamped."""
    if float(alpha).is_integer() and alpha >= 1:
        a = int(alpha)
        u = torch.rand(n, 2 * a - 1, generator=g).sort(dim=1).values
        return u[:, a - 1]  # the a-th order statistic of 2a-1 uniforms ~ Beta(a, a)
    var = 1.0 / (4 * (2 * alpha + 1))
    return (0.5 + var ** 0.5 * torch.randn(n, generator=g)).clamp(0.0, 1.0)


class TaggingHeads(TrainModule):
    """Trains one Whisper-AT head on cached features of a frozen Whisper."""

    sample_rate = 16000

    def build_model(self) -> torch.nn.Module:
        c: TaggingConfig = self.cfg.model
        d = self.cfg.data
        self.cache = extract_features(d.source, d.split, c, progress=self.cfg.trainer.progress_bar)
        self.train_set = FeatureSet(self.cache)
        if not self.train_set.vocab:
            raise ValueError(f"{d.source}: the data carry no labels; tagging heads need labelled clips")
        c.labels = list(self.train_set.vocab)
        c.multilabel = self.train_set.multilabel
        self.val_set = None
        if d.val_source:
            self.val_set = FeatureSet(extract_features(d.val_source, d.val_split, c, progress=False), c.labels)
        self.average: Optional[Dict[str, torch.Tensor]] = None
        self.n_averaged = 0
        return create_head(c.head, self.train_set.n_layers, self.train_set.width, len(c.labels), c.proj_dim)

    def make_datamodule(self):
        return _FeatureDataModule(self)

    def compute_loss(self, batch: dict, train: bool = True):
        logits = self.model(batch["features"], batch["padding_mask"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["targets"])
        return loss, {}

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        c: TaggingConfig = self.cfg.model
        if c.average_from < 1 and self.global_step >= int(c.average_from * self.cfg.trainer.max_steps):
            state = {k: v.detach().float().clone() for k, v in self.model.state_dict().items()}
            if self.average is None:
                self.average, self.n_averaged = state, 1
            else:
                self.n_averaged += 1
                for k, v in state.items():
                    self.average[k] += (v - self.average[k]) / self.n_averaged

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        from .engine import CKPT_KEY

        checkpoint[CKPT_KEY]["weight_average"] = {"n": self.n_averaged, "state": self.average}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        from .engine import CKPT_KEY

        avg = (checkpoint.get(CKPT_KEY) or {}).get("weight_average") or {}
        self.average, self.n_averaged = avg.get("state"), int(avg.get("n", 0))

    def export_state(self) -> dict:
        """A head file that ``hear_models.tagging.load_head`` and ``whisper_at.load_model(head=)``
        read: the averaged weights when averaging ran, else the final ones."""
        from hear_models.tagging import HEAD_FORMAT

        c: TaggingConfig = self.cfg.model
        state = self.average if self.average is not None else self.model.state_dict()
        return {"format": HEAD_FORMAT, "kind": c.head, "n_layers": self.model.n_layers,
                "width": self.model.width, "n_classes": self.model.n_classes, "proj_dim": c.proj_dim,
                "labels": list(c.labels),
                "meta": {"backbone": c.whisper or "offline:base", "multilabel": c.multilabel,
                         "averaged_steps": self.n_averaged},
                "state_dict": {k: v.clone() for k, v in state.items()}}


class _FeatureDataModule:
    """Lightning data hooks for cached features (duck-typed LightningDataModule)."""

    def __new__(cls, module: TaggingHeads):
        import lightning.pytorch as L

        class DM(L.LightningDataModule):
            def train_dataloader(self_dm):
                d, t = module.cfg.data, module.cfg.trainer
                ds = _FeatureBatches(module.train_set, module.cfg.model, d.batch_size, t.seed,
                                     module.data_position, module.trainer.global_rank, module.trainer.world_size)
                return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)

            def val_dataloader(self_dm):
                if module.val_set is None:
                    return []
                vs = module.val_set
                length = max(1, int(round(module.cfg.model.clip_seconds * POOLED_PER_SECOND)))
                batches = []
                for s in range(0, len(vs), module.cfg.data.batch_size):
                    ids = list(range(s, min(len(vs), s + module.cfg.data.batch_size)))
                    xs, ms = zip(*(vs.window(i, length, None) for i in ids))
                    batches.append({"features": torch.stack(xs), "padding_mask": torch.stack(ms),
                                    "targets": vs.targets[ids], "index": torch.tensor(-1)})
                return batches

        return DM()
