"""What we know about the real HEAR 2021 tasks: their metadata and published scores.

``TASKS``: the fields heareval reads from each released task's ``task_metadata.json``
(hear-2021.0.6 on Zenodo), keyed by folder name. They are transcribed from the task
configurations of hear-preprocess (github hearbenchmark/hear-preprocess, commit 610d864,
``hearpreprocess/*.py`` and ``hearpreprocess/secrettasks/hearsecrettasks/*.py``:
``generic_task_config`` with the mode's overrides, ``splits`` added by its runner). They
serve the offline suite's tests (its metadata must mirror its HEAR analogue field by
field) and the runner's check of real folders; nothing in the evaluation branches on a
task's name.

:func:`leaderboard`: the whole published HEAR 2021 leaderboard (every system, every task
variant, primary metric, each value with its source); :func:`recognise` tells a real task
folder from one that only carries its name (metadata + the release's clip counts).
"""

from __future__ import annotations

import csv
import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

# Fields heareval 2021.1.3 reads from task_metadata.json (embeddings + predictions runners).
HEAREVAL_REQUIRED_FIELDS = ("task_name", "embedding_type", "prediction_type", "split_mode",
                            "splits", "sample_duration", "evaluation")
HEAREVAL_OPTIONAL_FIELDS = ("evaluation_params", "use_scoring_for_early_stopping")
SPLIT_MODES = ("trainvaltest", "new_split_kfold", "presplit_kfold")
EMBEDDING_TYPES = ("scene", "event")
PREDICTION_TYPES = ("multiclass", "multilabel")
# heareval.score.available_scores; all are "higher is better" but segment_1s_er.
METRICS = ("top1_acc", "pitch_acc", "chroma_acc", "event_onset_200ms_fms", "event_onset_50ms_fms",
           "event_onset_offset_50ms_20perc_fms", "segment_1s_er", "mAP", "d_prime", "aucroc")
LOWER_IS_BETTER = ("segment_1s_er",)

TASKS: Dict[str, dict] = {
    'beehive_states_fold0-v2-full': {'task_name': 'beehive_states_fold0', 'version': 'v2', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'trainvaltest', 'sample_duration': 600, 'evaluation': ['aucroc', 'mAP', 'd_prime', 'top1_acc']},
    'beehive_states_fold1-v2-full': {'task_name': 'beehive_states_fold1', 'version': 'v2', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'trainvaltest', 'sample_duration': 600, 'evaluation': ['aucroc', 'mAP', 'd_prime', 'top1_acc']},
    'beijing_opera-v1.0-hear2021-full': {'task_name': 'beijing_opera', 'version': 'v1.0-hear2021', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'new_split_kfold', 'nfolds': 5, 'sample_duration': 4.77, 'evaluation': ['top1_acc', 'mAP', 'd_prime', 'aucroc']},
    'tfds_crema_d-1.0.0-full': {'task_name': 'tfds_crema_d', 'version': '1.0.0', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'new_split_kfold', 'nfolds': 5, 'sample_duration': 5, 'evaluation': ['top1_acc', 'mAP', 'd_prime', 'aucroc']},
    'dcase2016_task2-hear2021-full': {'task_name': 'dcase2016_task2', 'version': 'hear2021', 'mode': 'full', 'embedding_type': 'event', 'prediction_type': 'multilabel', 'split_mode': 'trainvaltest', 'sample_duration': 120.0, 'evaluation': ['event_onset_200ms_fms', 'segment_1s_er']},
    'esc50-v2.0.0-full': {'task_name': 'esc50', 'version': 'v2.0.0', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'presplit_kfold', 'nfolds': 5, 'sample_duration': 5, 'evaluation': ['top1_acc', 'mAP', 'd_prime', 'aucroc']},
    'fsd50k-v1.0-full': {'task_name': 'fsd50k', 'version': 'v1.0', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multilabel', 'split_mode': 'trainvaltest', 'sample_duration': None, 'evaluation': ['mAP', 'd_prime', 'aucroc', 'top1_acc']},
    'gunshot_triangulation-v1.0-full': {'task_name': 'gunshot_triangulation', 'version': 'v1.0', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'new_split_kfold', 'nfolds': 7, 'sample_duration': 1.5, 'evaluation': ['top1_acc', 'mAP', 'd_prime', 'aucroc']},
    'tfds_gtzan-1.0.0-full': {'task_name': 'tfds_gtzan', 'version': '1.0.0', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'new_split_kfold', 'nfolds': 10, 'sample_duration': 30.0, 'evaluation': ['top1_acc', 'mAP', 'd_prime', 'aucroc']},
    'tfds_gtzan_music_speech-1.0.0-full': {'task_name': 'tfds_gtzan_music_speech', 'version': '1.0.0', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'new_split_kfold', 'nfolds': 10, 'sample_duration': 30.0, 'evaluation': ['top1_acc', 'mAP', 'd_prime', 'aucroc']},
    'libricount-v1.0.0-hear2021-full': {'task_name': 'libricount', 'version': 'v1.0.0-hear2021', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'new_split_kfold', 'nfolds': 5, 'sample_duration': 5.0, 'evaluation': ['top1_acc', 'mAP', 'd_prime', 'aucroc']},
    'maestro-v3.0.0-5h': {'task_name': 'maestro', 'version': 'v3.0.0', 'mode': '5h', 'embedding_type': 'event', 'prediction_type': 'multilabel', 'split_mode': 'new_split_kfold', 'nfolds': 5, 'sample_duration': 120.0, 'evaluation': ['event_onset_50ms_fms', 'event_onset_offset_50ms_20perc_fms'], 'evaluation_params': {'event_postprocessing_grid': {'median_filter_ms': [150], 'min_duration': [50]}, 'task_specific_param_grid': {'max_epochs': [50], 'check_val_every_n_epoch': [1]}}, 'use_scoring_for_early_stopping': False},
    'mridangam_stroke-v1.5-full': {'task_name': 'mridangam_stroke', 'version': 'v1.5', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'new_split_kfold', 'nfolds': 5, 'sample_duration': 0.81, 'evaluation': ['top1_acc', 'mAP', 'd_prime', 'aucroc']},
    'mridangam_tonic-v1.5-full': {'task_name': 'mridangam_tonic', 'version': 'v1.5', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'new_split_kfold', 'nfolds': 5, 'sample_duration': 0.81, 'evaluation': ['top1_acc', 'mAP', 'd_prime', 'aucroc']},
    'nsynth_pitch-v2.2.3-5h': {'task_name': 'nsynth_pitch', 'version': 'v2.2.3', 'mode': '5h', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'trainvaltest', 'sample_duration': 4.0, 'evaluation': ['pitch_acc', 'chroma_acc']},
    'nsynth_pitch-v2.2.3-50h': {'task_name': 'nsynth_pitch', 'version': 'v2.2.3', 'mode': '50h', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'trainvaltest', 'sample_duration': 4.0, 'evaluation': ['pitch_acc', 'chroma_acc']},
    'speech_commands-v0.0.2-5h': {'task_name': 'speech_commands', 'version': 'v0.0.2', 'mode': '5h', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'trainvaltest', 'sample_duration': 1.0, 'evaluation': ['top1_acc']},
    'speech_commands-v0.0.2-full': {'task_name': 'speech_commands', 'version': 'v0.0.2', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'trainvaltest', 'sample_duration': 1.0, 'evaluation': ['top1_acc']},
    'vocal_imitation-v1.1.3-full': {'task_name': 'vocal_imitation', 'version': 'v1.1.3', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'new_split_kfold', 'nfolds': 3, 'sample_duration': 11.26, 'evaluation': ['mAP', 'd_prime', 'aucroc', 'top1_acc']},
    'vox_lingua_top10-hear2021-full': {'task_name': 'vox_lingua_top10', 'version': 'hear2021', 'mode': 'full', 'embedding_type': 'scene', 'prediction_type': 'multiclass', 'split_mode': 'new_split_kfold', 'nfolds': 5, 'sample_duration': 18.64, 'evaluation': ['top1_acc', 'mAP', 'd_prime', 'aucroc']},
}

# Clips per released task variant (train + valid + test, or all folds): "num-clips" of
# hearbenchmark.com docs/_data/hear-tasks.yml @3af3234. With the metadata fields above, this
# is how a folder is recognised as the release (results tables show published scores only
# beside the real tasks; a folder named like one proves nothing).
NUM_CLIPS: Dict[tuple, int] = {
    ("dcase2016_task2", "full"): 72, ("nsynth_pitch", "5h"): 5000, ("nsynth_pitch", "50h"): 49060,
    ("speech_commands", "5h"): 22890, ("speech_commands", "full"): 100503,
    ("beehive_states_fold0", "full"): 576, ("beehive_states_fold1", "full"): 576,
    ("beijing_opera", "full"): 236, ("tfds_crema_d", "full"): 7438, ("esc50", "full"): 2000,
    ("fsd50k", "full"): 51185, ("gunshot_triangulation", "full"): 88, ("tfds_gtzan", "full"): 1000,
    ("tfds_gtzan_music_speech", "full"): 128, ("libricount", "full"): 5720, ("maestro", "5h"): 185,
    ("mridangam_stroke", "full"): 6977, ("mridangam_tonic", "full"): 6977,
    ("vocal_imitation", "full"): 5601, ("vox_lingua_top10", "full"): 972,
}
NUM_CLIPS_SOURCE = "hearbenchmark.com docs/_data/hear-tasks.yml @3af3234 (num-clips)"

# The published leaderboard, every system and task variant, primary metric: the package's
# evaluation/data/hear2021_leaderboard.csv, made by scripts/hear2021_leaderboard.py from
# hearbenchmark.com docs/leaderboard.csv @3af3234 (34 systems, 19 task columns; the Beehive
# column scores both beehive fold tasks).
LEADERBOARD_FILE = Path(__file__).parent / "data" / "hear2021_leaderboard.csv"
# The systems shown by default beside the best system of each task: the NTU-GURA submission
# this package reproduces (hear_models.gura, fusion_cat_xwc) and the strongest HEAR 2021
# submission, PaSST (whose 128-bin 32 kHz front end MaskSpec shares).
SEED_SYSTEMS = ("GURA Fuse Cat H+w+C", "CP-JKU PaSST base")


@lru_cache(maxsize=1)
def leaderboard() -> List[dict]:
    """Rows of the published leaderboard: system, task_name, mode, score, source, ..."""
    with open(LEADERBOARD_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["score"] = float(r["score"])
    return rows


def systems() -> List[str]:
    """Every system of the leaderboard, in its order."""
    return list(dict.fromkeys(r["system"] for r in leaderboard()))


def task_names() -> List[str]:
    """task_name of every HEAR 2021 task (19 variants share 16 + beehive names)."""
    return sorted({t["task_name"] for t in TASKS.values()})


def reference(task_name: str, mode: Optional[str] = None) -> Optional[dict]:
    """The HEAR 2021 metadata for a task_name (and mode, when several were released)."""
    hits = [t for t in TASKS.values() if t["task_name"] == task_name]
    if mode is not None:
        hits = [t for t in hits if t["mode"] == mode] or hits
    return hits[0] if hits else None


def published(task_name: str, mode: Optional[str] = None) -> Dict[str, tuple]:
    """{system: (score on the primary metric, source)} for a real HEAR 2021 task variant."""
    return {r["system"]: (r["score"], r["source"]) for r in leaderboard()
            if r["task_name"] == task_name and (mode is None or r["mode"] == mode)}


def recognise(task_dir: Path) -> Tuple[Optional[str], str]:
    """(the HEAR 2021 task variant a folder is, or None; why not, when named like one).

    A folder is the release when its ``task_metadata.json`` names a released
    ``task_name`` + ``mode``, agrees with that variant on every field heareval reads, was not
    written by the offline generator, and its split files list the release's number of clips
    (:data:`NUM_CLIPS`). Works on task folders and on heareval's embedding folders (which
    copy the metadata and split files).
    """
    task_dir = Path(task_dir)
    try:
        meta = json.loads((task_dir / "task_metadata.json").read_text())
    except (OSError, ValueError):
        return None, ""
    name, mode = meta.get("task_name"), meta.get("mode")
    if "hear_analogue" in meta or "generator" in meta:
        return None, ""  # the offline suite: its analogue is named, never scored as the task
    keys = [k for k, t in TASKS.items() if t["task_name"] == name and t["mode"] == mode]
    if not keys:
        return None, ""
    key = keys[0]
    ref = TASKS[key]
    differs = [f for f in ("version", "embedding_type", "prediction_type", "split_mode", "nfolds",
                           "sample_duration", "evaluation") if meta.get(f) != ref.get(f)]
    if differs:
        return None, f"named like HEAR 2021 {key} but its metadata differs ({', '.join(differs)})"
    clips = 0
    for split in meta.get("splits") or []:
        try:
            clips += len(json.loads((task_dir / f"{split}.json").read_text()))
        except (OSError, ValueError):
            return None, f"named like HEAR 2021 {key} but {split}.json cannot be read"
    expected = NUM_CLIPS[(name, mode)]
    if clips != expected:
        return None, f"named like HEAR 2021 {key} but holds {clips} clips; the release has {expected}"
    return key, ""
