"""Training data: audio folders, CSV / JSONL manifests and HEAR task splits.

Every source becomes a list of :class:`Item` (path, labels, duration). A
:class:`ClipDataset` decodes with soundfile (only the frames of the crop), mixes to mono,
resamples to the model's rate, and crops or zero-pads to a fixed length; a batch carries
``audio`` (B, n), ``lengths`` (B,), ``padding_mask`` (B, n) (True = padding), ``target``
(B, n_classes) when there are labels, and ``index``, the global number of the batch.

Which clips and crops make batch b is a pure function of (seed, b): the
:class:`StepBatchSampler` walks an endless sequence of seeded per-epoch permutations,
each rank taking its own slice of every global batch, so a resumed run continues with
exactly the batches the uninterrupted run would have seen, whatever the number of
worker processes.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")


@dataclass
class Item:
    path: str
    labels: Optional[List[str]] = None
    duration: Optional[float] = None  # seconds, if the manifest says


@dataclass
class Source:
    items: List[Item]
    vocab: List[str] = field(default_factory=list)
    multilabel: Optional[bool] = None  # None: decide from the labels


def _split_labels(value) -> Optional[List[str]]:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    s = str(value).strip()
    if s.startswith("["):
        return [str(v) for v in json.loads(s)]
    return [t.strip() for t in s.replace("|", ";").split(";") if t.strip()]


def _duration(value) -> Optional[float]:
    if value is None or value == "":
        return None
    return float(value)


def read_folder(folder: Path) -> Source:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    return Source([Item(str(p)) for p in files])


def read_manifest(path: Path) -> Source:
    """CSV (header with ``path``; optional ``labels`` as "a;b" or a JSON list, ``duration``)
    or JSONL (``{"path": ..., "labels": [...], "duration": ...}`` per line). Relative
    paths are relative to the manifest's folder."""
    rows: List[dict] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise ValueError(f"{path}: a CSV manifest needs a 'path' column (header: path,labels,duration)")
            rows = list(reader)
    else:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{n}: not JSON ({e})") from None
    items = []
    for n, r in enumerate(rows, 1):
        if not r.get("path"):
            raise ValueError(f"{path}: row {n} has no path")
        p = Path(r["path"])
        if not p.is_absolute():
            p = path.parent / p
        items.append(Item(str(p), _split_labels(r.get("labels", r.get("label"))), _duration(r.get("duration"))))
    if not items:
        raise ValueError(f"{path}: the manifest is empty")
    return Source(items)


def read_hear_task(folder: Path, splits: str, sample_rate: int) -> Source:
    """A split (or comma-separated splits) of a HEAR task folder.

    Audio from ``<rate>/<split>/``: the model's rate if the task offers it, else the
    highest offered rate (resampled on load). Scene tasks give their clip labels; event
    tasks the set of event labels of each clip (clip-level multilabel targets).
    """
    meta = json.loads((folder / "task_metadata.json").read_text())
    vocab = []
    with open(folder / "labelvocabulary.csv", newline="") as f:
        for row in csv.DictReader(f):
            vocab.append(str(row["label"]))
    rates = [int(r) for r in meta.get("sample_rates", [])] or sorted(
        int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    if not rates:
        raise ValueError(f"{folder}: no audio folders (<rate>/<split>/)")
    rate = sample_rate if sample_rate in rates else max(rates)
    items = []
    for split in [s.strip() for s in splits.split(",") if s.strip()]:
        split_file = folder / f"{split}.json"
        if not split_file.is_file():
            raise ValueError(f"{folder}: no split {split!r} (splits: {meta.get('splits')})")
        data = json.loads(split_file.read_text())
        for name, labels in sorted(data.items()):
            if labels and isinstance(labels[0], dict):  # event task
                labels = sorted({str(e["label"]) for e in labels})
            items.append(Item(str(folder / str(rate) / split / name), [str(x) for x in labels]))
    multilabel = meta.get("prediction_type") == "multilabel" or meta.get("embedding_type") == "event"
    return Source(items, vocab, multilabel)


def read_source(source: str, split: str = "train", sample_rate: int = 32000) -> Source:
    if not source:
        raise ValueError("data.source is empty: give an audio folder, a .csv/.jsonl manifest "
                         "or a HEAR task folder")
    p = Path(source).expanduser()
    if p.is_dir() and (p / "task_metadata.json").is_file():
        return read_hear_task(p, split, sample_rate)
    if p.is_dir():
        return read_folder(p)
    if p.is_file() and p.suffix.lower() in (".csv", ".jsonl", ".json"):
        return read_manifest(p)
    raise ValueError(f"data.source {source!r}: not a folder, a .csv/.jsonl manifest or a HEAR task folder")


def finalise_labels(src: Source) -> Source:
    """Fill in the vocabulary and multilabel flag from the labels when not given."""
    labelled = [it for it in src.items if it.labels is not None]
    if not labelled:
        return src
    if len(labelled) != len(src.items):
        raise ValueError(f"{len(src.items) - len(labelled)} clips have no labels while others do")
    if not src.vocab:
        src.vocab = sorted({lab for it in labelled for lab in it.labels})
    if src.multilabel is None:
        src.multilabel = any(len(it.labels) != 1 for it in labelled)
    known = set(src.vocab)
    bad = {lab for it in labelled for lab in it.labels} - known
    if bad:
        raise ValueError(f"labels outside the vocabulary: {sorted(bad)[:10]}")
    return src


# -- decoding ------------------------------------------------------------------------------
def read_crop(path: str, sample_rate: int, n_samples: int, rng: Optional[np.random.Generator]
              ) -> Tuple[np.ndarray, int]:
    """Decode a crop of ``n_samples`` at ``sample_rate`` (random start with ``rng``, else the
    start); shorter clips are zero-padded. ``n_samples <= 0``: the whole clip.

    Returns (audio float32 of n_samples (or the clip's length), valid samples).
    """
    import soundfile as sf

    from hear_models.audio import resample

    try:
        info = sf.info(path)
    except Exception as e:
        raise ValueError(f"{path}: cannot decode audio ({e})") from None
    sr, total = int(info.samplerate), int(info.frames)
    start, stop = 0, total
    if n_samples > 0:
        native = int(math.ceil(n_samples * sr / sample_rate))
        if total > native:
            start = int(rng.integers(0, total - native + 1)) if rng is not None else 0
            stop = start + native
    data, _ = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
    audio = resample(data.mean(axis=1), sr, sample_rate).astype(np.float32)
    if n_samples <= 0:
        return audio, len(audio)
    valid = min(len(audio), n_samples)
    out = np.zeros(n_samples, dtype=np.float32)
    out[:valid] = audio[:valid]
    return out, valid


class ClipDataset(torch.utils.data.Dataset):
    """Indexed by ``(item index, crop seed)``: the crop is a function of the seed alone."""

    def __init__(self, source: Source, sample_rate: int, crop_seconds: float, random_crop: bool = True):
        self.items = source.items
        self.vocab = list(source.vocab)
        self.multilabel = bool(source.multilabel)
        self.label_index = {lab: i for i, lab in enumerate(self.vocab)}
        self.sample_rate = sample_rate
        self.n_samples = int(round(crop_seconds * sample_rate)) if crop_seconds > 0 else 0
        self.random_crop = random_crop

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key) -> dict:
        idx, seed = key if isinstance(key, tuple) else (key, None)
        item = self.items[idx]
        rng = np.random.default_rng(seed) if (self.random_crop and seed is not None) else None
        audio, valid = read_crop(item.path, self.sample_rate, self.n_samples, rng)
        out = {"audio": torch.from_numpy(audio), "length": valid, "item": idx}
        if self.vocab and item.labels is not None:
            t = torch.zeros(len(self.vocab))
            for lab in item.labels:
                t[self.label_index[lab]] = 1.0
            out["target"] = t
        return out


def collate(batch: List[dict], index: int = -1) -> dict:
    n = max(int(b["audio"].shape[0]) for b in batch)
    audio = torch.zeros(len(batch), n)
    lengths = torch.tensor([int(b["length"]) for b in batch])
    for i, b in enumerate(batch):
        audio[i, : b["audio"].shape[0]] = b["audio"]
    out = {"audio": audio, "lengths": lengths,
           "padding_mask": torch.arange(n)[None] >= lengths[:, None],
           "items": torch.tensor([int(b["item"]) for b in batch])}
    if "target" in batch[0]:
        out["target"] = torch.stack([b["target"] for b in batch])
    return out


class StepBatchSampler(torch.utils.data.Sampler):
    """Endless batches; global batch ``b`` is a pure function of (seed, b).

    Positions ``[b * G, (b + 1) * G)`` (G = batch size x world size) of the endless
    concatenation of per-epoch permutations (epoch e: ``randperm(n, seed + e)``); rank r
    takes its slice of B. Each element is ``(item index, crop seed)`` and the batch's
    ``index`` b travels with it (see :func:`collate_with_index`).
    """

    def __init__(self, n_items: int, batch_size: int, seed: int = 0, start: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if n_items <= 0:
            raise ValueError("no training clips")
        self.n, self.B, self.seed, self.start = n_items, batch_size, seed, start
        self.rank, self.world = rank, world_size
        self.shuffle = shuffle
        self._perm: Dict[int, np.ndarray] = {}

    def _position(self, pos: int) -> int:
        epoch, i = divmod(pos, self.n)
        if epoch not in self._perm:
            if len(self._perm) > 4:
                self._perm.clear()
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            self._perm[epoch] = (torch.randperm(self.n, generator=g).numpy() if self.shuffle
                                 else np.arange(self.n))
        return int(self._perm[epoch][i])

    def batch(self, b: int) -> List[Tuple[int, int, int]]:
        G = self.B * self.world
        first = b * G + self.rank * self.B
        return [(self._position(p), self.seed * 1_000_003 + p, b) for p in range(first, first + self.B)]

    def __iter__(self) -> Iterator[List[Tuple[int, int, int]]]:
        b = self.start
        while True:
            yield self.batch(b)
            b += 1


class _IndexedDataset(torch.utils.data.Dataset):
    """Wraps a :class:`ClipDataset` for (item, seed, batch) keys."""

    def __init__(self, ds: ClipDataset):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        idx, seed, b = key
        out = self.ds[(idx, seed)]
        out["batch"] = b
        return out


def collate_with_index(batch: List[dict]) -> dict:
    out = collate(batch)
    out["index"] = torch.tensor(int(batch[0]["batch"]))
    return out


def ignore_stop_signals(worker_id: int = 0) -> None:
    """In a data-loader worker: ignore SIGTERM and SIGINT. Schedulers (SLURM, ``timeout``) and
    Ctrl-C signal the whole process group; the main process finishes its step, checkpoints
    and shuts the workers down itself, and a worker that died first would crash it."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker_init(worker_id: int) -> None:
    ignore_stop_signals()
    info = torch.utils.data.get_worker_info()
    np.random.seed(info.seed % 2 ** 32)  # crops do not use it; other libraries might
    torch.set_num_threads(1)


def mixup(x: torch.Tensor, y: Optional[torch.Tensor], alpha: float, generator=None
          ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Mix each sample with a random partner: ``lam x + (1 - lam) x[perm]`` (and targets),
    ``lam = max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)`` per sample (MaskSpec / PaSST).

    x : (B, ...) ; y : (B, n_classes) or None. Returns x, y, lam (B,), perm (B,).
    """
    B = x.shape[0]
    perm = torch.randperm(B, generator=generator, device="cpu").to(x.device)
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    lam = beta.sample((B,)).to(x.device)
    lam = torch.maximum(lam, 1 - lam)
    shape = (B,) + (1,) * (x.ndim - 1)
    x = x * lam.view(shape).to(x.dtype) + x[perm] * (1 - lam.view(shape)).to(x.dtype)
    if y is not None:
        y = y * lam[:, None] + y[perm] * (1 - lam[:, None])
    return x, y, lam, perm


def make_loader(ds: ClipDataset, batch_size: int, num_workers: int, seed: int, start: int = 0,
                rank: int = 0, world_size: int = 1, shuffle: bool = True) -> torch.utils.data.DataLoader:
    """An endless training loader starting at global batch ``start``."""
    sampler = StepBatchSampler(len(ds), batch_size, seed, start, rank, world_size, shuffle)
    return torch.utils.data.DataLoader(
        _IndexedDataset(ds), batch_sampler=sampler, collate_fn=collate_with_index,
        num_workers=num_workers, persistent_workers=num_workers > 0,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),  # never draws from the global RNG
    )


def make_eval_loader(ds: ClipDataset, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers,
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(0))
