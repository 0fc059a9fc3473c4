"""Embeddings of HEAR task folders, written in heareval's exact on-disk format.

Our extractor replaces ``python -m heareval.embeddings.runner`` (heareval 2021.1.3,
``heareval/embeddings/task_embeddings.py``) and writes the same files, which heareval's
predictions runner reads::

    <embeddings_dir>/<model folder>/<task folder>/
        task_metadata.json, labelvocabulary.csv, <split>.json     copies of the task's files
        <split>.embeddings.npy            raw float32 rows (np.memmap, no .npy header)
        <split>.embedding-dimensions.json [n_rows, dim]
        <split>.target-labels.pkl         labels per row (scene: per clip; event: per frame)
        <split>.filename-timestamps.json  event tasks: [clip path, timestamp ms] per row
        profile.embeddings.json, .done.embeddings

Rows are in heareval's order (clips shuffled by ``random.Random(0)``, one generator per
task, shuffled split after split), clips are batched as heareval batches them, and frame
labels come from the same interval query, so the files equal heareval's (a test checks).
What differs: long clips are chunked by the model's adapter (bounded memory), clips of a
batch with different lengths are split into equal-length groups instead of failing, the
per-clip ``<split>/<clip>.embedding.npy`` intermediates are not left behind (rows stream
into one temporary file), a progress bar counts clips, and a bad task folder is refused
before the model runs, with the file named.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .hear2021 import (EMBEDDING_TYPES, HEAREVAL_REQUIRED_FIELDS, METRICS, PREDICTION_TYPES,
                       SPLIT_MODES)

DONE_MARKER = ".done.embeddings"


class TaskFolderError(ValueError):
    """A task folder that heareval could not evaluate; the message names the file."""


# -- naming ------------------------------------------------------------------------------
def _slugify(text: str) -> str:
    try:
        from slugify import slugify
    except ImportError:  # python-slugify is an eval dependency; a close fallback
        import re

        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slugify(text)


def options_suffix(options: Dict[str, Any]) -> str:
    """heareval's folder suffix for ``--model-options``: ``-key=value-key=value``."""
    if not isinstance(options, dict):
        raise ValueError("model options must be a JSON object (dict)")
    if not options:
        return ""
    return "-" + "-".join(f"{_slugify(k)}={_slugify(str(v))}" for k, v in options.items())


# -- task folders ------------------------------------------------------------------------
@dataclass
class TaskFolder:
    """A validated HEAR task folder (hear-preprocess layout)."""

    path: Path
    metadata: Dict[str, Any]
    labels: List[str]
    splits: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # split -> {clip: labels}

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def embedding_type(self) -> str:
        return self.metadata["embedding_type"]

    def sample_rates(self) -> List[int]:
        return sorted(int(p.name) for p in self.path.iterdir() if p.is_dir() and p.name.isdigit())


def _load_json(path: Path):
    if not path.is_file():
        raise TaskFolderError(f"{path}: file missing")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise TaskFolderError(f"{path}: not valid JSON ({e})") from None


def read_vocabulary(path: Path) -> List[str]:
    """labelvocabulary.csv -> labels by idx; checks the header and idx = 0..n-1."""
    if not path.is_file():
        raise TaskFolderError(f"{path}: file missing")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["idx", "label"]:
        raise TaskFolderError(f"{path}: the header must be 'idx,label'")
    labels: Dict[int, str] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise TaskFolderError(f"{path}: line {n}: expected 2 columns, got {len(row)}")
        try:
            idx = int(row[0])
        except ValueError:
            raise TaskFolderError(f"{path}: line {n}: idx {row[0]!r} is not an integer") from None
        if idx in labels:
            raise TaskFolderError(f"{path}: line {n}: idx {idx} appears twice")
        labels[idx] = row[1]
    if sorted(labels) != list(range(len(labels))) or not labels:
        raise TaskFolderError(f"{path}: idx must run 0..n-1 without gaps")
    out = [labels[i] for i in range(len(labels))]
    if len(set(out)) != len(out):
        raise TaskFolderError(f"{path}: a label appears twice")
    return out


def check_metadata(metadata: Dict[str, Any], path: Path) -> None:
    """The fields heareval reads, with values it knows."""
    missing = [k for k in HEAREVAL_REQUIRED_FIELDS if k not in metadata]
    if missing:
        raise TaskFolderError(f"{path}: missing field(s) {missing} that heareval reads")
    for key, allowed in (("embedding_type", EMBEDDING_TYPES), ("prediction_type", PREDICTION_TYPES),
                         ("split_mode", SPLIT_MODES)):
        if metadata[key] not in allowed:
            raise TaskFolderError(f"{path}: {key}={metadata[key]!r}, expected one of {list(allowed)}")
    unknown = [m for m in metadata["evaluation"] if m not in METRICS]
    if unknown or not metadata["evaluation"]:
        raise TaskFolderError(f"{path}: evaluation {metadata['evaluation']!r}: unknown metric(s) "
                              f"{unknown}; heareval knows {list(METRICS)}")
    splits = metadata["splits"]
    if metadata["split_mode"] == "trainvaltest":
        if sorted(splits) != ["test", "train", "valid"]:
            raise TaskFolderError(f"{path}: split_mode trainvaltest needs splits train, valid, test; "
                                  f"got {splits}")
    else:
        if len(splits) < 3:
            raise TaskFolderError(f"{path}: {metadata['split_mode']} needs at least 3 folds "
                                  f"(test, valid, train), got {splits}")
    sd = metadata["sample_duration"]
    if sd is not None and not (isinstance(sd, (int, float)) and sd > 0):
        raise TaskFolderError(f"{path}: sample_duration must be a positive number or null, got {sd!r}")


def read_task(task_dir, sample_rate: Optional[int] = None, check_audio: bool = True) -> TaskFolder:
    """Read and check a task folder before any embedding is computed.

    Checks: metadata fields heareval reads, the label vocabulary, every split file
    (labels inside the vocabulary, exactly one label per clip for multiclass scene tasks,
    event start/end in ms), the ``<sample_rate>/<split>/`` folders, that every listed clip
    exists, and (``check_audio``) the rate and channel count of every clip's header.

    Raises
    ------
    TaskFolderError
        naming the offending file.
    """
    path = Path(task_dir)
    if not path.is_dir():
        raise TaskFolderError(f"{path}: not a task folder (no such directory)")
    meta_path = path / "task_metadata.json"
    metadata = _load_json(meta_path)
    if not isinstance(metadata, dict):
        raise TaskFolderError(f"{meta_path}: expected a JSON object")
    check_metadata(metadata, meta_path)
    vocab = read_vocabulary(path / "labelvocabulary.csv")
    known = set(vocab)
    task = TaskFolder(path, metadata, vocab)
    event = metadata["embedding_type"] == "event"
    multiclass = metadata["prediction_type"] == "multiclass"
    for split in metadata["splits"]:
        split_path = path / f"{split}.json"
        data = _load_json(split_path)
        if not isinstance(data, dict):
            raise TaskFolderError(f"{split_path}: expected a JSON object {{clip: labels}}")
        for clip, labels in data.items():
            if not isinstance(labels, list):
                raise TaskFolderError(f"{split_path}: {clip}: labels must be a list")
            if event:
                for ev in labels:
                    if not (isinstance(ev, dict) and {"label", "start", "end"} <= set(ev)):
                        raise TaskFolderError(f"{split_path}: {clip}: events need label, start, end (ms)")
                    if str(ev["label"]) not in known:
                        raise TaskFolderError(f"{split_path}: {clip}: label {ev['label']!r} is not in "
                                              f"{path / 'labelvocabulary.csv'}")
                    if not float(ev["start"]) <= float(ev["end"]):
                        raise TaskFolderError(f"{split_path}: {clip}: event ends before it starts")
            else:
                bad = [lab for lab in labels if str(lab) not in known]
                if bad:
                    raise TaskFolderError(f"{split_path}: {clip}: label(s) {bad} not in "
                                          f"{path / 'labelvocabulary.csv'}")
                if multiclass and len(labels) != 1:
                    raise TaskFolderError(f"{split_path}: {clip}: a multiclass task needs exactly one "
                                          f"label, got {labels}")
        task.splits[split] = data
    if sample_rate is not None:
        check_audio_folders(task, sample_rate, headers=check_audio)
    return task


def check_audio_folders(task: TaskFolder, sample_rate: int, headers: bool = True) -> None:
    """``<rate>/<split>/`` exists and holds every clip (mono, at ``sample_rate``)."""
    rate_dir = task.path / str(sample_rate)
    if not rate_dir.is_dir():
        offered = task.sample_rates()
        raise TaskFolderError(
            f"{rate_dir}: missing; the model needs {sample_rate} Hz audio and this task offers "
            f"{offered or 'no rate folder'} (hear-2021.0.6 folders offer 16000, 22050, 32000, "
            f"44100, 48000; regenerate offline tasks with --rates {sample_rate})")
    for split, data in task.splits.items():
        audio_dir = rate_dir / split
        if not audio_dir.is_dir():
            raise TaskFolderError(f"{audio_dir}: missing (split {split!r} of {task.path / 'task_metadata.json'})")
        present = set(os.listdir(audio_dir))
        absent = [c for c in data if c not in present]
        if absent:
            raise TaskFolderError(f"{audio_dir / absent[0]}: missing ({len(absent)} clip(s) of "
                                  f"{task.path / (split + '.json')} have no audio)")
        if headers:
            import soundfile as sf

            for clip in data:
                f = audio_dir / clip
                try:
                    info = sf.info(str(f))
                except Exception as e:  # soundfile raises its own error types
                    raise TaskFolderError(f"{f}: cannot read audio ({e})") from None
                if info.samplerate != sample_rate:
                    raise TaskFolderError(f"{f}: audio at {info.samplerate} Hz in the {sample_rate} Hz folder")
                if info.channels != 1:
                    raise TaskFolderError(f"{f}: {info.channels} channels; HEAR task audio is mono")


# -- the model ---------------------------------------------------------------------------
class Embedder:
    """A HEAR module and its loaded model, as heareval's ``Embedding`` calls them."""

    def __init__(self, module, model, device: Optional[str] = None):
        import torch

        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"{module.__name__}.load_model returned {type(model).__name__}; "
                            "this runner evaluates PyTorch HEAR modules")
        self.module = module
        self.model = model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.sample_rate = int(model.sample_rate)

    def scene(self, audio: np.ndarray) -> np.ndarray:
        import torch

        x = torch.tensor(audio, device=self.device)
        with torch.no_grad():
            return self.module.get_scene_embeddings(x, self.model).detach().cpu().numpy()

    def timestamp(self, audio: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        import torch

        x = torch.tensor(audio, device=self.device)
        with torch.no_grad():
            emb, ts = self.module.get_timestamp_embeddings(x, self.model)
            return emb.detach().cpu().numpy(), ts.detach().cpu().numpy()


def heareval_batch_size(metadata: Dict[str, Any], sample_rate: int) -> int:
    """Clips per batch exactly as heareval's task_embeddings estimates it."""
    if metadata["sample_duration"] is None:
        return 1
    return max(1, int(0.7 * (120 / metadata["sample_duration"]) * (16000 / sample_rate)))


def frame_labels(events: List[dict], timestamps: np.ndarray) -> List[List[str]]:
    """Labels active at each timestamp (ms), by the interval query heareval uses."""
    from intervaltree import IntervalTree

    tree = IntervalTree()
    for ev in events:
        tree.addi(ev["start"], ev["end"] + 0.0001, ev["label"])  # end inclusive, as heareval
    return [[iv.data for iv in tree[t]] for t in timestamps]


def _read_clip(path: Path, sample_rate: int) -> np.ndarray:
    import soundfile as sf

    try:
        audio, sr = sf.read(str(path), dtype=np.float32)
    except Exception as e:
        raise TaskFolderError(f"{path}: cannot read audio ({e})") from None
    if sr != sample_rate:
        raise TaskFolderError(f"{path}: audio at {sr} Hz in the {sample_rate} Hz folder")
    if audio.ndim != 1:
        raise TaskFolderError(f"{path}: {audio.shape[1]} channels; HEAR task audio is mono")
    return audio


def _batches(clips: Sequence[str], batch_size: int):
    for i in range(0, len(clips), batch_size):
        yield clips[i:i + batch_size]


def split_batches(task: TaskFolder, split: str, sample_rate: int) -> List[List[str]]:
    """The split's clips in heareval's batches (split order, heareval's batch size).

    Batches are the unit of work of sharded extraction: a batch is computed whole by one
    process, so every clip sees the same neighbours as in a single-process run."""
    return list(_batches(list(task.splits[split]), heareval_batch_size(task.metadata, sample_rate)))


def embed_clips(embedder: Embedder, task: TaskFolder, split: str, batches: Sequence[Sequence[str]],
                rows_path: Path, bar=None) -> Dict[str, Any]:
    """Embed the clips of ``batches``, appending float32 rows to ``rows_path``.

    Returns the index of what was written: ``{"dim": D, "clips": {clip: [first_row,
    n_rows, timestamps or None]}}`` (JSON-serialisable; a shard stores it beside its rows).
    """
    event = task.embedding_type == "event"
    audio_dir = task.path / str(embedder.sample_rate) / split
    index: Dict[str, Any] = {"dim": None, "clips": {}}
    n_rows = 0
    with open(rows_path, "wb") as tmp:
        for batch in batches:
            audios = [_read_clip(audio_dir / c, embedder.sample_rate) for c in batch]
            groups: Dict[int, List[int]] = {}
            for i, a in enumerate(audios):  # equal lengths run together (heareval: one batch)
                groups.setdefault(len(a), []).append(i)
            results: Dict[int, Tuple[np.ndarray, Optional[np.ndarray]]] = {}
            for idx in groups.values():
                stack = np.stack([audios[i] for i in idx])
                if event:
                    emb, ts = embedder.timestamp(stack)
                    for j, i in enumerate(idx):
                        results[i] = (emb[j], ts[j])
                else:
                    emb = embedder.scene(stack)
                    for j, i in enumerate(idx):
                        results[i] = (emb[j], None)
            for i, clip in enumerate(batch):
                emb, ts = results[i]
                emb = np.ascontiguousarray(emb, dtype=np.float32)
                if not np.isfinite(emb).all():
                    raise ValueError(f"{audio_dir / clip}: the model returned NaN or inf embeddings")
                rows = emb.reshape(1, -1) if not event else emb
                if event and ts.ndim != 1:
                    raise ValueError(f"{audio_dir / clip}: timestamps must be 1-D per clip")
                if index["dim"] is None:
                    index["dim"] = rows.shape[1]
                elif rows.shape[1] != index["dim"]:
                    raise ValueError(f"{audio_dir / clip}: embedding width {rows.shape[1]} != {index['dim']}")
                tmp.write(rows.tobytes())
                index["clips"][clip] = [n_rows, rows.shape[0], ts.tolist() if event else None]
                n_rows += rows.shape[0]
            if bar is not None:
                bar.update(len(batch))
    return index


def write_split(task: TaskFolder, split: str, out_dir: Path, parts: Sequence[Tuple[Path, Dict[str, Any]]],
                prng: random.Random) -> int:
    """heareval's files of one split from computed rows (one part, or one per shard);
    returns the number of rows."""
    data = task.splits[split]
    clips = list(data)
    event = task.embedding_type == "event"
    where: Dict[str, Tuple[int, list]] = {}
    dims = {index["dim"] for _, index in parts if index["dim"] is not None}
    if not dims:
        raise TaskFolderError(f"{task.path / (split + '.json')}: the split lists no clips")
    if len(dims) > 1:
        raise ValueError(f"{task.name} {split}: the parts have different widths {sorted(dims)}")
    dim = dims.pop()
    srcs = []
    for k, (rows_path, index) in enumerate(parts):
        n = sum(v[1] for v in index["clips"].values())
        srcs.append(np.memmap(rows_path, dtype=np.float32, mode="r", shape=(n, dim)) if n else None)
        for clip, v in index["clips"].items():
            where[clip] = (k, v)
    missing = [c for c in clips if c not in where]
    if missing:
        raise ValueError(f"{task.name} {split}: no embedding for {len(missing)} clip(s), e.g. {missing[0]}")
    # heareval's order: the clip list shuffled by the task's generator
    order = list(range(len(clips)))
    prng.shuffle(order)
    n_rows = sum(where[c][1][1] for c in clips)
    (out_dir / f"{split}.embedding-dimensions.json").write_text(json.dumps((n_rows, dim)))
    dst = np.memmap(out_dir / f"{split}.embeddings.npy", dtype=np.float32, mode="w+", shape=(n_rows, dim))
    labels: List[Any] = []
    filename_timestamps: List[Tuple[str, float]] = []
    row = 0
    for i in order:
        k, (first, n, ts) = where[clips[i]]
        dst[row:row + n] = srcs[k][first:first + n]
        row += n
        if event:
            # through JSON, as heareval's per-clip files: equal pickles, byte for byte
            labels += json.loads(json.dumps(frame_labels(data[clips[i]], np.asarray(ts))))
            # heareval's slug: the path of its per-clip file without ".embedding.npy"
            slug = str(out_dir.joinpath(split, clips[i]))
            filename_timestamps += [(slug, t) for t in ts]
        else:
            labels.append(data[clips[i]])
    dst.flush()
    del dst, srcs
    with open(out_dir / f"{split}.target-labels.pkl", "wb") as f:
        pickle.dump(labels, f)
    if event:
        (out_dir / f"{split}.filename-timestamps.json").write_text(json.dumps(filename_timestamps, indent=4))
    return n_rows


def embed_split(embedder: Embedder, task: TaskFolder, split: str, out_dir: Path,
                prng: random.Random, bar=None) -> int:
    """Embed one split into ``out_dir`` (heareval's files for that split); returns rows."""
    tmp_path = out_dir / f".{split}.rows.tmp"
    index = embed_clips(embedder, task, split, split_batches(task, split, embedder.sample_rate), tmp_path, bar)
    n_rows = write_split(task, split, out_dir, [(tmp_path, index)], prng)
    tmp_path.unlink()
    return n_rows


def _progress_bar(task: TaskFolder, total: int, progress: bool, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="clip", leave=False)


def _start_task_dir(task: TaskFolder, embed_task_dir: Path) -> random.Random:
    """A fresh task folder with the task's metadata files; heareval's row-order generator."""
    if embed_task_dir.exists():
        shutil.rmtree(embed_task_dir)
    embed_task_dir.mkdir(parents=True)
    shutil.copy(task.path / "task_metadata.json", embed_task_dir)
    shutil.copy(task.path / "labelvocabulary.csv", embed_task_dir)
    for split in task.metadata["splits"]:
        shutil.copy(task.path / f"{split}.json", embed_task_dir)
    prng = random.Random()
    prng.seed(0)
    return prng


def _finish_task_dir(embed_task_dir: Path, elapsed: float, device: str, **extra) -> None:
    (embed_task_dir / "profile.embeddings.json").write_text(json.dumps(
        {"time_elapsed": elapsed, "gpu_max_mem": None, "gpu_device_name": device,
         "extractor": "hear_models.evaluation.embeddings", **extra}, indent=4))
    (embed_task_dir / DONE_MARKER).touch()


def embed_task(embedder: Embedder, task: TaskFolder, embed_task_dir: Path, progress: bool = True) -> float:
    """Write one task's embeddings; returns seconds. Overwrites an unfinished folder."""
    embed_task_dir = Path(embed_task_dir)
    start = time.time()
    prng = _start_task_dir(task, embed_task_dir)
    bar = _progress_bar(task, sum(len(d) for d in task.splits.values()), progress, f"embed {task.name}")
    try:
        for split in task.metadata["splits"]:
            embed_split(embedder, task, split, embed_task_dir, prng, bar)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.time() - start
    _finish_task_dir(embed_task_dir, elapsed, embedder.device)
    return elapsed


# -- sharded extraction ------------------------------------------------------------------
# Shard k of n computes heareval batches k, k + n, k + 2n, ... of every split into
# ``<embeddings>/<model>/.<task>.shards-<n>/`` (rows + index per split, then a done marker
# per shard), so an interrupted run redoes only the shards without a marker. Once every
# shard is done, one process merges them into the task folder, in heareval's format and
# row order: the files equal a single-process run's (same batches, same neighbours;
# bit for bit on the same device and thread count).
def shard_dir(embed_task_dir: Path, n_shards: int) -> Path:
    embed_task_dir = Path(embed_task_dir)
    return embed_task_dir.parent / f".{embed_task_dir.name}.shards-{n_shards}"


def shard_done(embed_task_dir: Path, shard: int, n_shards: int) -> bool:
    return (shard_dir(embed_task_dir, n_shards) / f"done.{shard}").exists()


def embed_task_shard(embedder: Embedder, task: TaskFolder, embed_task_dir: Path, shard: int,
                     n_shards: int, progress: bool = True) -> Optional[float]:
    """Compute shard ``shard`` of ``n_shards`` of a task; returns seconds, or None when that
    shard (or the whole task) was done before."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} of {n_shards}: expected 0 <= shard < n_shards")
    if is_done(embed_task_dir) or shard_done(embed_task_dir, shard, n_shards):
        return None
    folder = shard_dir(embed_task_dir, n_shards)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.time()
    work = {split: split_batches(task, split, embedder.sample_rate)[shard::n_shards]
            for split in task.metadata["splits"]}
    bar = _progress_bar(task, sum(len(c) for b in work.values() for c in b), progress,
                        f"embed {task.name} [{shard + 1}/{n_shards}]")
    try:
        for split, batches in work.items():
            index = embed_clips(embedder, task, split, batches, folder / f"{split}.{shard}.rows", bar)
            index["sample_rate"] = embedder.sample_rate
            (folder / f"{split}.{shard}.json").write_text(json.dumps(index))
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.time() - start
    (folder / f"done.{shard}").write_text(json.dumps({"seconds": elapsed, "device": embedder.device}))
    return elapsed


def merge_shards(task: TaskFolder, embed_task_dir: Path, n_shards: int, exclusive: bool = True) -> bool:
    """Merge a task's finished shards into its heareval folder; False if a shard is
    missing (nothing written). ``exclusive``: safe to call from several processes, one
    merges (through a lock file; a merge that crashed leaves it: delete ``merge.lock``);
    False: the caller is the only merger (torchrun's rank 0)."""
    embed_task_dir = Path(embed_task_dir)
    folder = shard_dir(embed_task_dir, n_shards)
    if is_done(embed_task_dir):
        return True
    if not all(shard_done(embed_task_dir, k, n_shards) for k in range(n_shards)):
        return False
    if exclusive:
        try:
            os.close(os.open(folder / "merge.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False  # another process merges
    prng = _start_task_dir(task, embed_task_dir)
    for split in task.metadata["splits"]:
        parts = [(folder / f"{split}.{k}.rows", json.loads((folder / f"{split}.{k}.json").read_text()))
                 for k in range(n_shards)]
        write_split(task, split, embed_task_dir, parts, prng)
    done = [json.loads((folder / f"done.{k}").read_text()) for k in range(n_shards)]
    _finish_task_dir(embed_task_dir, max(d["seconds"] for d in done), done[0]["device"],
                     shards=n_shards, shard_seconds=[d["seconds"] for d in done])
    shutil.rmtree(folder)
    return True


def is_done(embed_task_dir: Path) -> bool:
    return (Path(embed_task_dir) / DONE_MARKER).exists()
