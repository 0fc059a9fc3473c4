"""What we know about the real HEAR 2021 tasks: their metadata and published scores.

``TASKS``: the fields heareval reads from each released task's ``task_metadata.json``
(hear-2021.0.6 on Zenodo), keyed by folder name. They are transcribed from the task
configurations of hear-preprocess (github hearbenchmark/hear-preprocess, commit 610d864,
``hearpreprocess/*.py`` and ``hearpreprocess/secrettasks/hearsecrettasks/*.py``:
``generic_task_config`` with the mode's overrides, ``splits`` added by its runner). They
serve the offline suite's tests (its metadata must mirror its HEAR analogue field by
field) and the runner's check of real folders; nothing in the evaluation branches on a
task's name.

``LEADERBOARD``: published scores on the task's primary (first) metric, each with its
source. Only numbers we can cite are here; add rows with their source, never guesses.
"""

from __future__ import annotations

from typing import Dict, List, Optional

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

_MODELS_MD = "HEAR 2021 leaderboard (hearbenchmark.com), as transcribed in the project's model notes"

# (system, task_name, mode or None for any mode) -> (score on the primary metric, source)
LEADERBOARD: Dict[str, Dict[tuple, tuple]] = {
    "GURA Fuse Cat H+w+C": {
        ("esc50", None): (0.734, _MODELS_MD),
        ("fsd50k", None): (0.420, _MODELS_MD),
        ("dcase2016_task2", None): (0.826, _MODELS_MD),
        ("tfds_crema_d", None): (0.747, _MODELS_MD),
        ("nsynth_pitch", "5h"): (0.846, _MODELS_MD + ": NSynth-5h"),
        ("speech_commands", None): (0.968, _MODELS_MD + ": variant (5h/full) not stated"),
        ("vox_lingua_top10", None): (0.720, _MODELS_MD),
        ("beijing_opera", None): (0.966, _MODELS_MD),
        ("maestro", None): (0.441, _MODELS_MD),
    },
    "PaSST base": {
        ("esc50", None): (0.947, _MODELS_MD),
        ("fsd50k", None): (0.641, _MODELS_MD),
        ("nsynth_pitch", "5h"): (0.256, _MODELS_MD + ": NSynth (taken as the 5h variant)"),
        ("speech_commands", None): (0.639, _MODELS_MD + ": variant (5h/full) not stated"),
    },
}


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
    """{system: (score on the primary metric, source)} for a real HEAR 2021 task."""
    out = {}
    for system, rows in LEADERBOARD.items():
        for (name, m), value in rows.items():
            if name == task_name and (m is None or mode is None or m == mode):
                out[system] = value
    return out
