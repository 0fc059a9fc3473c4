"""Features for probes: every block and the default embedding, once per clip, cached."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from ..embeddings import TaskFolder, embed_clips, split_batches
from .layers import Layer

FORMAT = 1  # of the feature cache's key


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
