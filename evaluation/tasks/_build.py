"""Writes one task folder in the hear-preprocess layout that heareval reads."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from ._audio import MASTER_SR, resample


@dataclass
class Clip:
    name: str            # file stem (".wav" is appended)
    split: str           # "train"/"valid"/"test" or "fold00", ...
    group: str           # the grouping key the split rule keeps disjoint
    audio: np.ndarray    # float audio at MASTER_SR
    labels: list         # scene: ["label", ...]; event: [{"label", "start", "end"}] (ms)


@dataclass
class Ctx:
    """What a task generator gets: its RNG, its suite's size parameters, helpers."""
    rng: np.random.Generator
    size: Dict[str, Any]
    suite: str
    sr: int = MASTER_SR
    vocab: Optional[List[str]] = None   # set by generators that need a fixed order
    _synth: Any = None

    @property
    def synth(self):
        if self._synth is None:
            from ._sources import Synth

            self._synth = Synth(self.sr)
        return self._synth

    def close(self):
        if self._synth is not None:
            self._synth.close()
            self._synth = None


@dataclass
class TaskDef:
    name: str
    hear_task: str                 # the HEAR 2021 task it stands for
    embedding_type: str            # scene | event
    prediction_type: str           # multiclass | multilabel
    split_mode: str                # trainvaltest | new_split_kfold | presplit_kfold
    sample_duration: float
    evaluation: List[str]
    sizes: Dict[str, Dict[str, Any]]   # suite -> generator parameters
    generate: Callable[[Ctx], Iterator[Clip]]
    nfolds: Optional[int] = None
    version: str = "v1"
    evaluation_params: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    group_key: str = "source item"   # what the groups are (for the docs/tests)
    cost: float = 1.0                # relative generation time (scheduling)
    sources: Sequence[str] = ()

    @property
    def splits(self) -> List[str]:
        if self.split_mode == "trainvaltest":
            return ["train", "valid", "test"]
        return [f"fold{i:02d}" for i in range(int(self.nfolds))]

    def folder(self, suite: str) -> str:
        return f"{self.name}-{self.version}-{suite}"


def write_task(task: TaskDef, suite: str, out_root: Path, seed: int,
               rates: Sequence[int]) -> Dict[str, Any]:
    """Generate ``task`` for ``suite`` into ``out_root/<task>-<version>-<suite>``."""
    import soundfile as sf

    final = out_root / task.folder(suite)
    tmp = out_root / (task.folder(suite) + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    # one independent, stable stream per (seed, task)
    key = [seed] + [ord(c) for c in task.name]
    ctx = Ctx(rng=np.random.default_rng(key), size=task.sizes[suite], suite=suite)
    split_data: Dict[str, Dict[str, list]] = {s: {} for s in task.splits}
    groups: Dict[str, Dict[str, str]] = {s: {} for s in task.splits}
    dur = task.sample_duration
    try:
        for rate in rates:
            for s in task.splits:
                (tmp / str(rate) / s).mkdir(parents=True, exist_ok=True)
        for clip in task.generate(ctx):
            fname = clip.name + ".wav"
            if clip.split not in split_data:
                raise ValueError(f"{task.name}: clip {fname} has unknown split {clip.split}")
            if fname in split_data[clip.split]:
                raise ValueError(f"{task.name}: duplicate clip {fname}")
            x = np.asarray(clip.audio, dtype=np.float64)
            n_master = int(round(dur * MASTER_SR))
            if len(x) != n_master:
                raise ValueError(f"{task.name}: {fname} has {len(x)} samples, want {n_master}")
            peak = np.max(np.abs(x))
            if peak > 0.99:
                x = x * (0.99 / peak)
            for rate in rates:
                y = resample(x, MASTER_SR, rate)
                n = int(round(dur * rate))
                y = y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))
                y = np.clip(y, -1.0, 32767 / 32768)
                sf.write(str(tmp / str(rate) / clip.split / fname), y, rate, subtype="PCM_16",
                         format="WAV")
            split_data[clip.split][fname] = clip.labels
            groups[clip.split][fname] = clip.group
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        ctx.close()

    # vocabulary
    if task.embedding_type == "event":
        seen = {e["label"] for d in split_data.values() for evs in d.values() for e in evs}
    else:
        seen = {lab for d in split_data.values() for labs in d.values() for lab in labs}
    vocab = ctx.vocab if ctx.vocab is not None else sorted(seen)
    missing = seen - set(vocab)
    if missing:
        raise ValueError(f"{task.name}: labels outside the vocabulary: {sorted(missing)}")
    for s in task.splits:
        if not split_data[s]:
            raise ValueError(f"{task.name}/{suite}: split {s} is empty")

    with open(tmp / "labelvocabulary.csv", "w", newline="\n") as f:
        f.write("idx,label\n")
        for i, lab in enumerate(vocab):
            f.write(f"{i},{lab}\n")
    for s in task.splits:
        data = {k: split_data[s][k] for k in sorted(split_data[s])}
        with open(tmp / f"{s}.json", "w") as f:
            json.dump(data, f, indent=1)
    with open(tmp / "groups.json", "w") as f:
        json.dump({"group_key": task.group_key,
                   "splits": {s: {k: groups[s][k] for k in sorted(groups[s])}
                              for s in task.splits}}, f, indent=1)
    meta: Dict[str, Any] = {
        "task_name": task.name,
        "version": task.version,
        "embedding_type": task.embedding_type,
        "prediction_type": task.prediction_type,
        "split_mode": task.split_mode,
    }
    if task.nfolds is not None:
        meta["nfolds"] = task.nfolds
    meta["sample_duration"] = task.sample_duration
    meta["evaluation"] = list(task.evaluation)
    if task.evaluation_params is not None:
        meta["evaluation_params"] = task.evaluation_params
    for k, v in task.extra.items():
        meta[k] = ctx.size[v[5:]] if isinstance(v, str) and v.startswith("size:") else v
    meta["splits"] = task.splits
    meta["default_mode"] = suite
    meta["mode"] = suite
    meta["sample_rates"] = [int(r) for r in rates]
    meta["hear_analogue"] = task.hear_task
    meta["generator"] = {"package": "hear_models.evaluation.tasks", "seed": seed,
                         "suite": suite}
    with open(tmp / "task_metadata.json", "w") as f:
        json.dump(meta, f, indent=1)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    counts = {s: len(split_data[s]) for s in task.splits}
    return {"task": task.name, "folder": final.name, "clips": sum(counts.values()),
            "splits": counts, "labels": len(vocab)}
