"""A model-free difficulty probe for generated task folders (needs scikit-learn).

Log-mel band statistics (mean, std, max, mean |delta|; 40 bands) and a logistic
regression, trained and tested on each task's own splits (k-fold: every fold tested
once, the rest train). Scene tasks only. Much weaker than any learned embedding: a
task this probe nearly solves is easy; one where it stays at chance may still be
learnable from better features.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np


def _features(path: Path, sr: int) -> np.ndarray:
    from scipy.signal import stft

    from hear_models.audio import load_audio

    x = load_audio(path, sr)
    f, _, z = stft(x, sr, nperseg=512, noverlap=352)
    power = np.abs(z) ** 2
    edges = np.geomspace(60, sr / 2, 41)
    bands = np.stack([power[(f >= edges[i]) & (f < edges[i + 1])].sum(0) for i in range(40)])
    logm = np.log(bands + 1e-8)
    return np.concatenate([logm.mean(1), logm.std(1), np.abs(np.diff(logm, axis=1)).mean(1),
                           logm.max(1)])


def difficulty_task(task_dir: Path) -> Dict[str, object]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    task_dir = Path(task_dir)
    meta = json.loads((task_dir / "task_metadata.json").read_text())
    if meta["embedding_type"] != "scene":
        return {"task": meta["task_name"], "skipped": "event task"}
    rate = meta["sample_rates"][0]
    vocab = [ln.split(",", 1)[1] for ln in
             (task_dir / "labelvocabulary.csv").read_text().splitlines()[1:] if ln]
    data = {}
    for split in meta["splits"]:
        labels = json.loads((task_dir / f"{split}.json").read_text())
        names = sorted(labels)
        x = np.stack([_features(task_dir / str(rate) / split / n, rate) for n in names])
        data[split] = (x, [labels[n] for n in names])
    if meta["split_mode"] == "trainvaltest":
        runs = [(["train", "valid"], "test")]
    else:
        runs = [([s for s in meta["splits"] if s != t], t) for t in meta["splits"]]
    scores: List[float] = []
    for train, test in runs:
        xtr = np.concatenate([data[s][0] for s in train])
        ytr = sum([data[s][1] for s in train], [])
        xte, yte = data[test]
        if meta["prediction_type"] == "multiclass":
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
            clf.fit(xtr, [y[0] for y in ytr])
            scores.append(float(clf.score(xte, [y[0] for y in yte])))
        else:
            mtr = np.array([[v in y for v in vocab] for y in ytr])
            mte = np.array([[v in y for v in vocab] for y in yte])
            aucs = []
            for j in range(len(vocab)):
                if not (0 < mtr[:, j].sum() < len(mtr)) or not (0 < mte[:, j].sum() < len(mte)):
                    continue
                clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
                clf.fit(xtr, mtr[:, j])
                aucs.append(roc_auc_score(mte[:, j], clf.predict_proba(xte)[:, 1]))
            scores.append(float(np.mean(aucs)))
    metric = "top1_acc" if meta["prediction_type"] == "multiclass" else "mean_aucroc"
    chance = 1.0 / len(vocab) if metric == "top1_acc" else 0.5
    return {"task": meta["task_name"], "metric": metric, "score": round(float(np.mean(scores)), 3),
            "chance": round(chance, 3), "clips": sum(len(v[1]) for v in data.values())}


def difficulty_suite(root: Path) -> List[Dict[str, object]]:
    root = Path(root)
    dirs = sorted(p for p in root.iterdir() if (p / "task_metadata.json").is_file()) \
        if not (root / "task_metadata.json").is_file() else [root]
    return [difficulty_task(d) for d in dirs]
