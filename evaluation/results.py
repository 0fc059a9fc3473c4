"""Results tables from heareval's ``test.predicted-scores.json`` files.

One row per model x task x metric (the task's ``evaluation`` list, first = primary, the
one heareval selects models by). k-fold tasks report the mean over test folds and its
standard deviation (heareval's ``aggregated_scores``). Beside our score:

- ``chance``: what a constant guess scores on the test labels (majority class for
  accuracies, class prevalence for mAP, 0.5 for AUC-ROC, 0 for d'), to judge how far
  above chance a task is learnt; blank for event metrics;
- ``hear_task``: the HEAR 2021 task it is (real folders) or stands for (offline suite);
- published leaderboard scores (:func:`hear2021.leaderboard`), only on the primary metric
  of folders recognised as REAL HEAR 2021 tasks by their content
  (:func:`hear2021.recognise`): an offline task, or a folder that only carries a task's
  name, is not comparable with the published numbers.

Every table states the protocol it was made with (:func:`protocol_lines`): grid and its
settings, grid points, suite and task versions, model weights and options, versions.
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



def _offline_analogues() -> Dict[str, str]:
    try:
        from .tasks import list_tasks
    except Exception:  # the generator is optional for reading results
        return {}
    return {row["name"]: row["hear_task"] for row in list_tasks()}


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
    release, not_release = hear2021.recognise(emb_task_dir)
    real = release is not None
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
            "not_release": not_release,
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
        row["published"] = {k: v[0] for k, v in published.items()} if i == 0 else {}
        row["published_source"] = next(iter(published.values()))[1] if i == 0 and published else ""
        if seconds:
            row.update({f"{k}_s": round(v, 1) for k, v in seconds.items()})
        rows.append(row)
    return rows


def _num(x) -> Optional[float]:
    if x is None:
        return None
    return float(x)  # may be nan / inf (heareval's d'): shown with what it means


def _fmt(x: Optional[float], digits: int = 3) -> str:
    if x is None:
        return ""
    if math.isfinite(x):
        return f"{x:.{digits}f}"
    return "∞ †" if x > 0 else ("−∞ †" if x < 0 else "undefined †")


NON_FINITE_NOTE = ("† Non-finite values are heareval's: d' = √2·Φ⁻¹(AUC) per class, averaged over "
                   "classes, is ∞ when some class has AUC = 1 on a test split (every positive "
                   "ranked above every negative: perfect separation, not an error); it is "
                   "undefined when a class is absent from a test fold (no AUC), and a fold std is "
                   "undefined when a fold's value is ∞.")


# -- leaderboard columns ------------------------------------------------------------------------
LEADERBOARD_CHOICES = ("best", "top3", "seeds", "all")


def leaderboard_columns(spec: str = "best,seeds") -> List[str]:
    """Column keys for ``--leaderboard``: ``best`` (the best system of each task), ``top3``
    (the three best), ``seeds`` (:data:`hear2021.SEED_SYSTEMS`), ``all`` (every system), or
    system names, comma-separated (``none``: no published column)."""
    systems = hear2021.systems()
    cols: List[str] = []
    for item in [x.strip() for x in str(spec).split(",") if x.strip()]:
        if item == "none":
            continue
        if item == "best":
            new = ["#1"]
        elif item == "top3":
            new = ["#1", "#2", "#3"]
        elif item == "seeds":
            new = list(hear2021.SEED_SYSTEMS)
        elif item == "all":
            new = systems
        elif item in systems:
            new = [item]
        else:
            import difflib

            close = difflib.get_close_matches(item, systems, n=3, cutoff=0.5)
            raise ValueError(f"--leaderboard {item!r}: not a HEAR 2021 leaderboard system"
                             + (f" (did you mean {' / '.join(close)}?)" if close else "")
                             + f"; use best, top3, seeds, all, none, or names from: {', '.join(systems)}")
        cols += [c for c in new if c not in cols]
    return cols


def _ranked(published: Dict[str, float], lower_is_better: bool) -> List[tuple]:
    return sorted(published.items(), key=lambda kv: kv[1], reverse=not lower_is_better)


def published_cell(row: Dict[str, Any], column: str) -> Optional[tuple]:
    """(score, system) of a leaderboard column for a row, or None."""
    pub = row.get("published") or {}
    if not pub:
        return None
    if column.startswith("#"):
        ranked = _ranked(pub, row.get("lower_is_better", False))
        k = int(column[1:]) - 1
        return (ranked[k][1], ranked[k][0]) if k < len(ranked) else None
    return (pub[column], column) if column in pub else None


def _column_title(column: str) -> str:
    return f"HEAR 2021 {column}" if column.startswith("#") else column


# -- the protocol a table was made with ---------------------------------------------------------
def protocol_lines(settings: Dict[str, Any], protocol: Optional[str] = None) -> List[str]:
    """What a reader needs to know to read the numbers: how they were made. ``protocol``
    replaces the text of the first item, heareval's shallow classifiers (the layer-wise
    probe's linear protocol states its own)."""
    if not settings:
        return []
    grid = settings.get("grid_settings") or {}
    grid_text = ", ".join(f"{k} {v}" for k, v in grid.items()) if grid else "heareval's grid"
    if protocol is None:
        protocol = (f"heareval {settings.get('heareval_version', '?')} shallow classifiers "
                    f"(`heareval.predictions.runner`), grid `{settings.get('grid')}` ({grid_text}), "
                    f"{settings.get('grid_points')} grid point(s) per task, deterministic, seed 42 "
                    "(heareval's); k-fold tasks: each fold tested in turn, mean ± std over folds.")
    lines = [
        f"- **Protocol**: {protocol}",
        f"- **Tasks**: {settings.get('tasks_text') or settings.get('tasks')}.",
    ]
    for m in settings.get("model_details", []):
        lines.append(f"- **Model** `{m['name']}`: {m['module']}, weights {m['weights']!r}"
                     + (f", options {json.dumps(m['options'], sort_keys=True)}" if m.get("options") else "")
                     + (f"; {m['description']}" if m.get("description") else "")
                     + (f"; {m['precision']}" if m.get("precision") else "") + ".")
    env = settings.get("environment") or {}
    if env:
        lines.append("- **Run**: " + ", ".join(f"{k} {v}" for k, v in env.items())
                     + (f"; wall time {settings['wall_s'] / 60:.1f} min" if settings.get("wall_s") else "")
                     + ".")
    return lines


def markdown(rows: List[Dict[str, Any]], settings: Optional[Dict[str, Any]] = None,
             leaderboard: str = "best,seeds") -> str:
    """The table printed and written to results.md, with the protocol above it."""
    columns = leaderboard_columns(leaderboard)
    any_real = any(r.get("published") for r in rows)
    shown = columns if any_real else []
    head = ["model", "task", "HEAR task", "metric", "score", "± std (folds)", "chance"] + \
        [_column_title(c) for c in shown]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    non_finite = False
    for r in rows:
        metric = r["metric"] + (" *" if r["primary"] else "") + (" (↓)" if r["lower_is_better"] else "")
        if r["std"] is not None:
            spread = f"{_fmt(r['std'])} ({r['folds']})"
        else:
            spread = f"({r['folds']})" if r["folds"] > 1 else ""
        score = _fmt(r["score"]) if r["score"] is not None else r["status"].upper()
        non_finite |= "†" in score + spread
        hear = r["hear_task"] + ("" if r["real_hear_task"] or not r["hear_task"] else " (analogue)")
        cells = [r["model"], r["task"], hear, metric, score, spread, _fmt(r["chance"])]
        for c in shown:
            cell = published_cell(r, c)
            cells.append("" if cell is None else
                         f"{cell[0]:.3f}" + (f" ({cell[1]})" if c.startswith("#") else ""))
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "`*` primary metric (heareval selects hyper-parameters on it); `(↓)` lower is better; "
             "k-fold tasks: mean ± std over test folds. chance: a constant guess on the test labels "
             "(majority class, class prevalence for mAP, 0.5 AUC, 0 d')."]
    if non_finite:
        notes.append(NON_FINITE_NOTE)
    if any_real:
        notes.append("Published scores (primary metric only) are shown only beside folders recognised as "
                     f"real HEAR 2021 tasks (metadata and clip counts of the release: {hear2021.NUM_CLIPS_SOURCE}); "
                     f"source: {next(r['published_source'] for r in rows if r.get('published'))}.")
    else:
        notes.append("No published HEAR 2021 scores: none of these folders is a real HEAR 2021 task "
                     "(offline analogues are different data; see `--leaderboard` for real tasks).")
    unrecognised = sorted({f"{r['task']}: {r['not_release']}" for r in rows if r.get("not_release")})
    if unrecognised:
        notes.append("Not shown with published scores: " + "; ".join(unrecognised) + ".")
    head_lines: List[str] = []
    if settings:
        head_lines = ["# hear-models evaluate", ""] + protocol_lines(settings) + [""]
    return "\n".join(head_lines + lines + notes) + "\n"


def above_chance(row: Dict[str, Any]) -> Optional[bool]:
    """Primary score clearly above a constant guess: score > chance + max(0.05, fold std)
    (None where chance is not defined, e.g. event metrics)."""
    if row.get("score") is None or row.get("chance") is None or not math.isfinite(row["score"]):
        return None
    std = row["std"] if row.get("std") is not None and math.isfinite(row["std"]) else 0.0
    return row["score"] > row["chance"] + max(0.05, std)


def headline(rows: List[Dict[str, Any]], settings: Optional[Dict[str, Any]] = None,
             out: Optional[Path] = None) -> str:
    """A few lines to end a run with: per model, tasks clearly above chance, the mean score
    normalised between chance (0) and perfect (1), wall time, where the files are."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        prim = [r for r in rows if r["model"] == model and r["primary"]]
        judged = [(r, above_chance(r)) for r in prim]
        judged = [(r, a) for r, a in judged if a is not None]
        norm = [(r["score"] - r["chance"]) / (1 - r["chance"]) for r, _ in judged if r["chance"] < 1]
        events = [r for r in prim if r["chance"] is None and r["score"] is not None]
        missing = [r["task"] for r in prim if r["score"] is None]
        text = (f"{model}: {sum(a for _, a in judged)} of {len(judged)} scene tasks clearly above chance "
                f"(score > chance + max(0.05, fold std))")
        if norm:
            text += f"; mean normalised score {sum(norm) / len(norm):.2f} (0 = chance, 1 = perfect)"
        if events:
            text += "; event tasks: " + ", ".join(f"{r['task_name']} {r['metric']} {_fmt(r['score'])}"
                                                  for r in events)
        if missing:
            text += f"; MISSING: {', '.join(missing)}"
        lines.append(text)
    if settings and settings.get("wall_s"):
        lines.append(f"wall time {settings['wall_s'] / 60:.1f} min")
    if out is not None:
        lines.append(f"files: {Path(out) / 'results.md'} (.csv, .json), logs in {Path(out) / 'logs'}")
    return "\n".join(lines)


def csv_text(rows: List[Dict[str, Any]], leaderboard: str = "best,seeds") -> str:
    """Rows as CSV: their scalar fields, then one column per chosen leaderboard column."""
    columns = leaderboard_columns(leaderboard) if any(r.get("published") for r in rows) else []
    flat = []
    for r in rows:
        f = {k: v for k, v in r.items() if not isinstance(v, (dict, list))}
        for c in columns:
            cell = published_cell(r, c)
            f[f"published {_column_title(c)}"] = None if cell is None else cell[0]
            if c.startswith("#"):
                f[f"published {_column_title(c)} system"] = None if cell is None else cell[1]
        flat.append(f)
    fields: List[str] = []
    for r in flat:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in flat:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)  # "nan", "inf": strict JSON has no such numbers
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    return x


def write_results(rows: List[Dict[str, Any]], out_dir: Path, settings: Optional[dict] = None,
                  leaderboard: str = "best,seeds") -> Dict[str, Path]:
    """results.md, results.csv, results.json in ``out_dir`` (the JSON holds every published
    score of the real tasks, whatever columns the tables show)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"results.{ext}" for ext in ("md", "csv", "json")}
    paths["md"].write_text(markdown(rows, settings, leaderboard))
    csv_body = csv_text(rows, leaderboard)
    if settings:
        csv_body = "".join(f"# {ln.lstrip('- ').replace('**', '')}\n" for ln in protocol_lines(settings)) + csv_body
    paths["csv"].write_text(csv_body)
    safe = [_json_safe(r) for r in rows]
    paths["json"].write_text(json.dumps({"settings": _json_safe(settings or {}), "rows": safe}, indent=1,
                                        allow_nan=False))
    return paths


# -- comparing runs -------------------------------------------------------------------------
class CompareError(ValueError):
    """A run `compare` cannot read (missing, not an evaluate run, several models)."""


def read_results(paths: List[Path]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Rows of one or more ``results.json`` files: task folder name (``name-vN-suite``:
    different task versions never match) -> metric -> row, the primary metric first; only
    rows with a finite score. A task in a later file replaces the same task in an earlier
    one; files with several models are refused."""
    rows: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for path in paths:
        path = Path(path)
        if path.is_dir():
            if not (path / "results.json").is_file() and (path / "probe.json").is_file():
                raise CompareError(f"{path}: a probe report (probe.json), not an evaluate run; "
                                   "compare reads the results.json of `hear-models evaluate`")
            path = path / "results.json"
        if not path.is_file():
            raise CompareError(f"{path}: no such results file (give a results.json or the folder of "
                               "an evaluate run)")
        try:
            data = json.loads(path.read_text())
            file_rows = data["rows"]
            models = {r["model"] for r in file_rows}
        except (ValueError, KeyError, TypeError) as e:
            raise CompareError(f"{path}: not a results.json of hear-models evaluate ({e})") from None
        if len(models) > 1:
            raise CompareError(f"{path}: holds {len(models)} models ({', '.join(sorted(models))}); "
                               "compare one model per file")
        by_task: Dict[str, List[Dict[str, Any]]] = {}
        for r in file_rows:
            by_task.setdefault(r["task"], []).append(r)
        for task, task_rows_ in by_task.items():
            ok = [r for r in task_rows_ if r.get("status") == "ok"]
            if any(r.get("primary") for r in ok):
                rows[task] = {}
                for r in sorted(ok, key=lambda r: not r.get("primary")):
                    rows[task].setdefault(r["metric"], r)
    return rows


def _verdict(b: Dict[str, Any], o: Dict[str, Any]) -> int:
    """+1 / -1 when ``o`` beats / loses to ``b`` by more than the larger fold std of the
    two (single-split runs have none: any difference counts), 0 otherwise (a tie)."""
    sign = -1.0 if b["lower_is_better"] else 1.0
    diff = sign * (_num(o["score"]) - _num(b["score"]))
    if not math.isfinite(diff):
        return 0
    stds = [_num(r["std"]) for r in (b, o) if r.get("std") is not None and math.isfinite(_num(r["std"]))]
    margin = max(stds) if stds else 0.0
    return 1 if diff > margin else (-1 if diff < -margin else 0)


def compare(baseline: Dict[str, Dict[str, Dict[str, Any]]], others: Dict[str, Dict[str, Dict[str, Dict[str, Any]]]],
            baseline_label: str = "baseline", all_metrics: bool = False) -> str:
    """A Markdown table, the baseline beside each other run, on the tasks every run has
    (the primary metric, or with ``all_metrics`` every metric they share), the better
    score of each pair in bold, then the tasks not in every run, and one summary line:
    per run, wins / ties / losses against the baseline on the primary metric, a win or
    loss being a difference larger than the larger fold std of the two."""
    runs = {baseline_label: baseline, **others}
    every = set(baseline).intersection(*[set(o) for o in others.values()])
    tasks = sorted(every)
    if not tasks:
        raise CompareError("the runs share no task (task folders must match, version included): "
                           + "; ".join(f"{label}: {', '.join(sorted(r)) or 'none'}" for label, r in runs.items()))
    head = ["task", "metric", "chance", baseline_label] + list(others)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    tally = {label: [0, 0, 0] for label in others}  # wins, ties, losses

    def cell(r, bold):
        s = _fmt(_num(r["score"]))
        s = f"**{s}**" if bold else s
        return s + (f" ± {_fmt(_num(r['std']))}" if r.get("std") is not None else "")

    for task in tasks:
        primary = next(iter(baseline[task]))
        metrics = [m for m in baseline[task] if all(m in o[task] for o in others.values())] if all_metrics \
            else [primary]
        for metric in metrics:
            b = baseline[task][metric]
            sign = -1.0 if b["lower_is_better"] else 1.0
            gain = {label: sign * (_num(o[task][metric]["score"]) - _num(b["score"])) for label, o in others.items()}
            name = metric + (" *" if all_metrics and metric == primary else "") + \
                (" (↓)" if b["lower_is_better"] else "")
            cells = [task, name, _fmt(_num(b.get("chance"))), cell(b, not any(g > 0 for g in gain.values()))]
            for label, o in others.items():
                cells.append(cell(o[task][metric], gain[label] > 0))
                if metric == primary:
                    tally[label][1 - _verdict(b, o[task][primary])] += 1
            lines.append("| " + " | ".join(cells) + " |")
    notes = [""]
    if all_metrics:
        notes.append("`*` primary metric; only metrics every run has are shown.")
    partial = sorted(set().union(*[set(r) for r in runs.values()]) - every)
    if partial:
        notes.append("Not in every run, left out: " + "; ".join(
            f"{t} (only in {', '.join(label for label, r in runs.items() if t in r)})" for t in partial) + ".")
    notes.append(f"**Against {baseline_label}** (primary metric, {len(tasks)} shared tasks; wins / ties / "
                 "losses by more than the larger fold std of the two, any difference on single-split "
                 "tasks): " + "; ".join(f"{label} {w} / {t} / {lo}" for label, (w, t, lo) in tally.items())
                 + ".")
    return "\n".join(lines + notes) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    """``hear-models compare``: scores of evaluate runs side by side."""
    import argparse
    import sys

    p = argparse.ArgumentParser(
        prog="hear-models compare",
        description="Scores of `hear-models evaluate` runs beside a baseline run, on the tasks they "
                    "share (tasks in only some runs are listed under the table). A run is "
                    "LABEL=PATH[,PATH...] or PATH: results.json files or the folders holding them "
                    "(several paths: one run split over several evaluate calls).")
    p.add_argument("baseline", help="the run the others are compared with")
    p.add_argument("runs", nargs="+", help="runs to compare with the baseline")
    p.add_argument("--metrics", choices=("primary", "all"), default="primary",
                   help="primary (default): each task's primary metric; all: every metric the runs share")
    p.add_argument("--out", default=None, help="also write the Markdown table here")
    a = p.parse_args(argv)

    def parse(spec: str):
        label, _, paths = spec.partition("=") if "=" in spec else ("", "", spec)
        files = [Path(x) for x in paths.split(",") if x]
        if not files:
            raise CompareError(f"{spec!r} names no results file")
        first = files[0].parent if files[0].name == "results.json" else files[0]
        return label or first.name, read_results(files)

    try:
        base_label, base = parse(a.baseline)
        others = dict(parse(s) for s in a.runs)
        if len(others) != len(a.runs) or base_label in others:
            raise CompareError("two runs have the same label; name them LABEL=PATH")
        table = compare(base, others, base_label, all_metrics=a.metrics == "all")
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table, end="")
    if a.out:
        Path(a.out).write_text(table)
    return 0
