"""heareval's shallow-classifier protocol on every layer's embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

from ..embeddings import TaskFolder
from .layers import Layer
from .features import Features


# -- heareval's protocol on every layer --------------------------------------------------------
def heareval_layers(task: TaskFolder, feats: Features, layers: Sequence[Layer], root: Path, model: str,
                    grid: str, grid_points: int, log: Path, progress: bool) -> Dict[str, Dict[str, Any]]:
    """Write each layer's embeddings in heareval's format from the cached features, run
    heareval's predictions on them (:func:`.predict.run_predictions`), read the scores."""
    from ..embeddings import _finish_task_dir, _start_task_dir, is_done, write_split
    from ..predict import run_predictions
    from ..results import task_rows

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
