"""Results tables from heareval's ``test.predicted-scores.json`` files.

One row per model x task x metric (the task's ``evaluation`` list, first = primary, the
one heareval selects models by). k-fold tasks report the mean over test folds and its
standard deviation (heareval's ``aggregated_scores``). Beside our score:

- ``chance``: what a constant guess scores on the test labels (majority class for
  accuracies, class prevalence for mAP, 0.5 for AUC-ROC, 0 for d'), to judge how far
  above chance a task is learnt; blank for event metrics;
- ``hear_task``: the HEAR 2021 task it is (real folders) or stands for (offline suite);
- published leaderboard scores (:data:`hear2021.LEADERBOARD`), only on the primary
  metric of REAL HEAR 2021 tasks: an offline task is not comparable with its analogue.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import hear2021
from .predict import SCORES_FILE

SYSTEMS = tuple(hear2021.LEADERBOARD)


def _offline_analogues() -> Dict[str, str]:
    try:
        from .tasks import list_tasks
    except Exception:  # the generator is optional for reading results
        return {}
    return {row["name"]: row["hear_task"] for row in list_tasks()}


def is_real_hear_task(metadata: Dict[str, Any]) -> bool:
    """A HEAR 2021 task folder (not an offline stand-in carrying an analogue)."""
    return (metadata.get("task_name") in hear2021.task_names()
            and "hear_analogue" not in metadata and "generator" not in metadata)


def _test_splits(metadata: Dict[str, Any]) -> List[str]:
    return ["test"] if metadata["split_mode"] == "trainvaltest" else list(metadata["splits"])


def chance_levels(emb_task_dir: Path, metadata: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """Score of a constant guess on the test labels, per metric (None: not defined here).

    k-fold tasks: the mean over test folds, as heareval averages its scores.
    """
    out: Dict[str, Optional[float]] = {m: None for m in metadata["evaluation"]}
    if metadata["embedding_type"] != "scene":
        return out
    vocab = _vocab(Path(emb_task_dir) / "labelvocabulary.csv")
    per_split: List[Dict[str, float]] = []
    for split in _test_splits(metadata):
        p = Path(emb_task_dir) / f"{split}.target-labels.pkl"
        if not p.exists():
            return out
        with open(p, "rb") as f:
            labels = pickle.load(f)
        if labels:
            per_split.append(_constant_guess(labels, vocab))
    for m in out:
        values = [c[m] for c in per_split if c.get(m) is not None]
        out[m] = sum(values) / len(values) if values else None
    return out


def _constant_guess(labels: List[list], vocab: Dict[str, int]) -> Dict[str, float]:
    counts: Dict[str, int] = {}
    for ls in labels:
        for lab in ls:
            counts[str(lab)] = counts.get(str(lab), 0) + 1
    n = len(labels)
    chroma: Dict[int, int] = {}
    for lab, c in counts.items():
        if lab in vocab:
            chroma[vocab[lab] % 12] = chroma.get(vocab[lab] % 12, 0) + c
    out = {"aucroc": 0.5, "d_prime": 0.0}
    if counts:
        out["top1_acc"] = out["pitch_acc"] = max(counts.values()) / n
    if chroma:
        out["chroma_acc"] = max(chroma.values()) / n
    if vocab:
        out["mAP"] = sum(c / n for c in counts.values()) / len(vocab)
    return out


def _vocab(path: Path) -> Dict[str, int]:
    with open(path, newline="") as f:
        return {row["label"]: int(row["idx"]) for row in csv.DictReader(f)}


def task_rows(model: str, emb_task_dir: Path, seconds: Optional[Dict[str, float]] = None,
              analogues: Optional[Dict[str, str]] = None) -> List[Dict[str, Any]]:
    """Rows for one model and task from its embedding folder (scores may be absent)."""
    emb_task_dir = Path(emb_task_dir)
    metadata = json.loads((emb_task_dir / "task_metadata.json").read_text())
    real = is_real_hear_task(metadata)
    if analogues is None:
        analogues = _offline_analogues()
    hear_task = (metadata["task_name"] if real else
                 metadata.get("hear_analogue") or analogues.get(metadata["task_name"], ""))
    scores_path = emb_task_dir / SCORES_FILE
    scores = json.loads(scores_path.read_text()) if scores_path.exists() else None
    chance = chance_levels(emb_task_dir, metadata)
    published = hear2021.published(metadata["task_name"], metadata.get("mode")) if real else {}
    rows = []
    for i, metric in enumerate(metadata["evaluation"]):
        value = std = None
        folds = 1
        if scores is not None:
            if "aggregated_scores" in scores:
                agg = scores["aggregated_scores"]
                value = agg.get(f"test_{metric}_mean")
                std = agg.get(f"test_{metric}_std")
                folds = sum(1 for k in scores if k in metadata["splits"])
            else:
                value = scores.get("test", {}).get(f"test_{metric}")
        row = {
            "model": model,
            "task": emb_task_dir.name,
            "task_name": metadata["task_name"],
            "hear_task": hear_task,
            "real_hear_task": real,
            "metric": metric,
            "primary": i == 0,
            "lower_is_better": metric in hear2021.LOWER_IS_BETTER,
            "score": _num(value),
            "std": _num(std),
            "folds": folds,
            "chance": _num(chance.get(metric)),
            "status": "ok" if value is not None and math.isfinite(float(value)) else
                      "not finite" if value is not None else ("missing" if scores is None else "no score"),
        }
        for system in SYSTEMS:
            pub = published.get(system) if i == 0 else None
            row[system] = pub[0] if pub else None
            row[f"{system} source"] = pub[1] if pub else ""
        if seconds:
            row.update({f"{k}_s": round(v, 1) for k, v in seconds.items()})
        rows.append(row)
    return rows


def _num(x) -> Optional[float]:
    if x is None:
        return None
    return float(x)  # may be nan / inf (heareval's d' on tiny folds): shown as such


def _fmt(x: Optional[float], digits: int = 3) -> str:
    if x is None:
        return ""
    return f"{x:.{digits}f}" if math.isfinite(x) else str(x)


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)  # "nan", "inf": strict JSON has no such numbers
    return x


def markdown(rows: List[Dict[str, Any]]) -> str:
    """The table printed and written to results.md."""
    head = ["model", "task", "HEAR task", "metric", "score", "± std (folds)", "chance"] + list(SYSTEMS)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    sources = {}
    for r in rows:
        metric = r["metric"] + (" *" if r["primary"] else "") + (" (↓)" if r["lower_is_better"] else "")
        spread = f"{r['std']:.3f} ({r['folds']})" if r["std"] is not None else (
            f"({r['folds']})" if r["folds"] > 1 else "")
        score = _fmt(r["score"]) if r["score"] is not None else r["status"].upper()
        hear = r["hear_task"] + ("" if r["real_hear_task"] or not r["hear_task"] else " (analogue)")
        cells = [r["model"], r["task"], hear, metric, score, spread, _fmt(r["chance"])]
        for system in SYSTEMS:
            cells.append(_fmt(r[system]))
            if r[system] is not None:
                sources[f"{system}, {r['task_name']}"] = r[f"{system} source"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "`*` primary metric (heareval selects hyper-parameters on it); `(↓)` lower is better; "
             "k-fold tasks: mean ± std over test folds. chance: a constant guess on the test labels. "
             "Published scores are shown only for real HEAR 2021 tasks, never beside offline "
             "analogues (different data)."]
    if sources:
        notes.append("Sources: " + "; ".join(f"{k}: {v}" for k, v in sorted(sources.items())) + ".")
    return "\n".join(lines + notes) + "\n"


def csv_text(rows: List[Dict[str, Any]]) -> str:
    """Rows (dicts) as CSV: the union of their keys as columns, None as empty."""
    fields: List[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def write_results(rows: List[Dict[str, Any]], out_dir: Path, settings: Optional[dict] = None) -> Dict[str, Path]:
    """results.md, results.csv, results.json in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"results.{ext}" for ext in ("md", "csv", "json")}
    paths["md"].write_text(markdown(rows))
    paths["csv"].write_text(csv_text(rows))
    safe = [{k: _json_safe(v) for k, v in r.items()} for r in rows]
    paths["json"].write_text(json.dumps({"settings": settings or {}, "rows": safe}, indent=1, allow_nan=False))
    return paths


# -- comparing runs -------------------------------------------------------------------------
def read_results(paths: List[Path]) -> Dict[str, Dict[str, Any]]:
    """Primary-metric rows of one or more ``results.json`` files, by task folder name
    (``name-vN-suite``: different task versions never match). A task in a later file
    replaces the same task in an earlier one; files with several models are refused."""
    rows: Dict[str, Dict[str, Any]] = {}
    for path in paths:
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        try:
            data = json.loads(path.read_text())
            file_rows = data["rows"]
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such results file") from None
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a results.json of hear-models evaluate ({e})") from None
        models = {r["model"] for r in file_rows}
        if len(models) > 1:
            raise ValueError(f"{path}: holds {len(models)} models ({', '.join(sorted(models))}); "
                             "compare one model per file")
        for r in file_rows:
            if r.get("primary") and r.get("status") == "ok":
                rows[r["task"]] = r
    return rows


def compare(baseline: Dict[str, Dict[str, Any]], others: Dict[str, Dict[str, Dict[str, Any]]],
            baseline_label: str = "baseline") -> str:
    """A Markdown table of primary scores, the baseline beside each other run, on the tasks
    every run has; the better score of each pair in bold, and a last line counting the
    tasks each run beats the baseline on (and of those, by more than the baseline's fold
    standard deviation)."""
    tasks = sorted(set(baseline).intersection(*[set(o) for o in others.values()]))
    if not tasks:
        raise ValueError("the runs share no task (task folders must match, version included)")
    head = ["task", "metric", "chance", baseline_label] + list(others)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    wins = {label: [0, 0] for label in others}

    def cell(r, bold):
        s = _fmt(_num(r["score"]))
        s = f"**{s}**" if bold else s
        return s + (f" ± {_fmt(_num(r['std']))}" if r.get("std") is not None else "")

    for task in tasks:
        b = baseline[task]
        sign = -1.0 if b["lower_is_better"] else 1.0
        margin = {label: sign * (_num(o[task]["score"]) - _num(b["score"])) for label, o in others.items()}
        cells = [task, b["metric"] + (" (↓)" if b["lower_is_better"] else ""), _fmt(_num(b["chance"])),
                 cell(b, not any(m > 0 for m in margin.values()))]
        for label, o in others.items():
            cells.append(cell(o[task], margin[label] > 0))
            if margin[label] > 0:
                wins[label][0] += 1
                if b.get("std") is None or margin[label] > _num(b["std"]):
                    wins[label][1] += 1
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| **better than " + baseline_label + " on** | | | | " + " | ".join(
        f"**{w} of {len(tasks)}** ({s} by more than a fold std)" for w, s in wins.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    """``hear-models compare``: primary scores of evaluate runs side by side."""
    import argparse

    p = argparse.ArgumentParser(
        prog="hear-models compare",
        description="Primary scores of `hear-models evaluate` runs beside a baseline run, on the tasks "
                    "they share. A run is LABEL=PATH[,PATH...] or PATH: results.json files or the "
                    "folders holding them (several paths: one run split over several evaluate calls).")
    p.add_argument("baseline", help="the run the others are compared with")
    p.add_argument("runs", nargs="+", help="runs to compare with the baseline")
    p.add_argument("--out", default=None, help="also write the Markdown table here")
    a = p.parse_args(argv)

    def parse(spec: str):
        label, _, paths = spec.partition("=") if "=" in spec else ("", "", spec)
        files = [Path(x) for x in paths.split(",") if x]
        if not files:
            raise SystemExit(f"hear-models compare: {spec!r} names no results file")
        first = files[0].parent if files[0].name == "results.json" else files[0]
        return label or first.name, read_results(files)

    base_label, base = parse(a.baseline)
    others = dict(parse(s) for s in a.runs)
    if len(others) != len(a.runs):
        raise SystemExit("hear-models compare: two runs have the same label; name them LABEL=PATH")
    table = compare(base, others, base_label)
    print(table, end="")
    if a.out:
        Path(a.out).write_text(table)
    return 0
