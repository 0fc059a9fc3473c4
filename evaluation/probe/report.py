"""The outputs of ``hear-models probe``: tables, figures and reports a paper can use.

From the probe's rows (one per model x task x layer) and its per-class best blocks:

- ``probe.csv`` / ``probe.json`` / ``best_layers.csv``: the numbers;
- ``scores.{png,svg,pdf}``: score vs block, one panel per task, fold spread as a band
  (blocks) or error bars (mean of blocks, default embedding), chance as a grey line,
  several models in one panel (on the relative depth of a block, 0 = first, 1 = last,
  when their depths differ), the y-range shared by the panels of one metric unless told
  otherwise;
- ``best_layer_hist.{png,svg,pdf}``: per model, the number of classes whose best block
  each block is (Whisper-AT's Figure 3);
- ``report.md`` and ``report.html`` (self-contained: figures inline): the protocol (the
  same lines as ``hear-models evaluate``'s tables, :func:`.results.protocol_lines`),
  mean ± fold std per task and layer, the best block per task in bold, degenerate
  features, the best-block histogram.

Figures are drawn at print size: the text width of a two-column paper (7 in; one column,
3.4 in, for a single panel), fonts of 7.5 to 8.5 pt at that size, at least 1400 px wide.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..results import NON_FINITE_NOTE, _fmt, _json_safe, csv_text, protocol_lines

TIE = "tie"  # best_layers: every block gives the class the same average precision
FIGURE_FORMATS = ("png", "svg", "pdf")
PAGE_WIDTH_IN = 7.0  # text width of a two-column paper (a figure* spanning both columns)
COLUMN_WIDTH_IN = 3.4  # one column
MIN_PIXELS = 1400  # PNG width at least this (dpi chosen from the width)
FONT_PT = {"tick": 7.5, "label": 8.0, "title": 8.5, "legend": 8.0}
Y_RANGE_MODES = ("metric", "panel")


# -- reading the rows -----------------------------------------------------------------------
def member_of(key: str) -> str:
    """The fusion member a layer key belongs to ('' for a single encoder)."""
    return key.rsplit(".", 1)[0] if "." in key else ""


def block_keys(rows: List[Dict[str, Any]], model: str) -> List[str]:
    keys: List[str] = []
    for r in rows:
        if r["model"] == model and r["kind"] == "block" and r["layer"] not in keys:
            keys.append(r["layer"])
    return keys


def curves(rows: List[Dict[str, Any]]) -> List[Tuple[str, str, int]]:
    """(model, member, number of blocks) of every block curve, in order."""
    out: Dict[Tuple[str, str], int] = {}
    for r in rows:
        if r["kind"] != "block":
            continue
        k = (r["model"], member_of(r["layer"]))
        depth = r.get("depth") if r.get("depth") is not None else 0
        n = r.get("n_blocks") or depth + 1  # older probe.json: the deepest block seen
        out[k] = max(out.get(k, 0), n)
    return [(m, mem, n) for (m, mem), n in out.items()]


def best_block(cells: Dict[str, Dict[str, Any]], keys: Sequence[str]) -> str:
    """The block with the best score (the first: the shallower on ties), '' if none."""
    best = ""
    for k in keys:
        r = cells.get(k)
        v = None if r is None else r.get("score")
        if v is None or not math.isfinite(v):
            continue
        if not best or (v < cells[best]["score"] if r["lower_is_better"] else v > cells[best]["score"]):
            best = k
    return best


def parse_y_range(spec: str) -> Tuple[str, Dict[str, Tuple[float, float]]]:
    """``metric`` (panels of one metric share a y-range, the default), ``panel`` (each
    its own), and/or ``METRIC=LO:HI`` items, comma-separated (``metric,top1_acc=0:1``)."""
    mode, fixed = "metric", {}
    for item in [x.strip() for x in str(spec).split(",") if x.strip()]:
        if item in Y_RANGE_MODES:
            mode = item
            continue
        metric, sep, rng = item.partition("=")
        lo, sep2, hi = rng.partition(":")
        try:
            if not sep or not sep2:
                raise ValueError
            a, b = float(lo), float(hi)
            if not a < b:
                raise ValueError
        except ValueError:
            raise ValueError(f"--y-range {item!r}: expected {' or '.join(Y_RANGE_MODES)}, or METRIC=LO:HI "
                             "with LO < HI (e.g. top1_acc=0:1)") from None
        fixed[metric] = (a, b)
    return mode, fixed


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _num(x) -> Optional[float]:
    """A score from probe.json (strings "nan" / "inf" for non-finite) as a float."""
    if x is None:
        return None
    return float(x)


def y_ranges(rows: List[Dict[str, Any]], spec: str) -> Dict[str, Tuple[float, float]]:
    """task -> (lo, hi): one range per metric (over score ± std and chance), or per task."""
    mode, fixed = parse_y_range(spec)
    group = (lambda r: r["metric"]) if mode == "metric" else (lambda r: r["task"])
    spans: Dict[str, List[float]] = {}
    for r in rows:
        s, sd = _num(r.get("score")), _num(r.get("std"))
        if not _finite(s):
            continue
        sd = sd if _finite(sd) else 0.0
        vals = [s - sd, s + sd] + ([r["chance"]] if _finite(r.get("chance")) else [])
        spans.setdefault(group(r), []).extend(vals)
    out = {}
    for r in rows:
        if r["task"] in out:
            continue
        if r["metric"] in fixed:
            out[r["task"]] = fixed[r["metric"]]
            continue
        v = spans.get(group(r))
        if not v:
            continue
        lo, hi = min(v), max(v)
        pad = 0.06 * (hi - lo) if hi > lo else 0.05
        out[r["task"]] = (lo - pad, hi + pad)
    return out


# -- figures --------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "hear-models"  # same figure, same SVG
    import matplotlib.pyplot as plt

    return plt


def _save(fig, stem: Path) -> Dict[str, Path]:
    """PNG (at least MIN_PIXELS wide), SVG and PDF beside each other; no dates inside, so
    the same numbers give the same files."""
    width_in = fig.get_size_inches()[0]
    dpi = max(200, math.ceil(MIN_PIXELS / width_in))
    out = {}
    for fmt in FIGURE_FORMATS:
        path = stem.with_suffix("." + fmt)
        meta = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
        fig.savefig(path, dpi=dpi, metadata=meta)
        out[fmt] = path
    return out


def _grid(n: int) -> Tuple[int, int]:
    ncol = n if n <= 3 else (2 if n == 4 else (3 if n <= 6 else 4))
    return ncol, -(-n // ncol)


def _title(rows: List[Dict[str, Any]], task: str) -> str:
    name = next(r.get("task_name") or task.split("-")[0] for r in rows if r["task"] == task)
    same_name = {r["task"] for r in rows if (r.get("task_name") or r["task"].split("-")[0]) == name}
    if len(same_name) > 1:  # two versions of one task in one report: the folder names them
        return task
    return name


def plot_scores(rows: List[Dict[str, Any]], stem: Path, y_range: str = "metric") -> Dict[str, Path]:
    """Score vs block, a panel per task. Curves: per model (and fusion member), blocks as
    dots joined by a line with a band of ± the fold std; to the right, past a thin line,
    the mean of blocks (diamond) and the default embedding (star) with error bars; chance
    dashed grey. One model, or models of one depth: the x-axis is the block; else the
    relative depth of the block (0 = first, 1 = last)."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    cs = curves(rows)
    relative = len({n for _, _, n in cs}) > 1
    unit = 1.0 / max(max((n for _, _, n in cs), default=2) - 1, 1) if relative else 1.0
    x_last = 1.0 if relative else max((n for _, _, n in cs), default=1) - 1
    present = [k for k in ("mean", "default") if any(r["kind"] == k for r in rows)]
    x_extra = {k: x_last + (1.3 + i) * unit for i, k in enumerate(present)}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {(m, mem): colors[i % len(colors)] for i, (m, mem, _) in enumerate(cs)}
    model_color = {m: next((color[(mm, mem)] for mm, mem, _ in cs if mm == m), colors[i % len(colors)])
                   for i, m in enumerate(models)}
    ncurves = max(len(cs), 1)
    ranges = y_ranges(rows, y_range)

    ncol, nrow = _grid(len(tasks))
    width = COLUMN_WIDTH_IN if len(tasks) == 1 else PAGE_WIDTH_IN
    legend_labels = []  # legend: a line per curve, then the four kinds of marks
    for model, member, n in cs:
        fusion = sum(m == model for m, _, _ in cs) > 1  # members named only where a model has several
        label = " ".join(x for x in (model if len(models) > 1 or not fusion else "", member if fusion else "") if x)
        legend_labels.append(label + (f" ({n} blocks)" if relative else ""))
    marks = {"band": any(_finite(_num(r.get("std"))) for r in rows if r["kind"] == "block"),
             "mean": "mean" in present, "default": "default" in present,
             "chance": any(_finite(r.get("chance")) for r in rows)}
    kinds_text = [t for k, t in (("band", "± std over test folds"), ("mean", "mean of blocks"),
                                 ("default", "default embedding"), ("chance", "chance (constant guess)"))
                  if marks[k]]
    entry_in = max(len(t) for t in legend_labels + kinds_text) * FONT_PT["legend"] * 0.55 / 72 + 0.45
    n_entries = len(legend_labels) + len(kinds_text)
    per_row = max(1, min(n_entries, 4, int((width - 0.2) // entry_in)))
    legend_in = 0.19 * -(-n_entries // per_row) + 0.08  # the legend's height, inches
    panel_in = 2.3 if len(tasks) == 1 else 1.85  # a single column figure: a taller panel
    fig, axes = plt.subplots(nrow, ncol, figsize=(width, panel_in * nrow + legend_in), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        mine = [r for r in rows if r["task"] == task]
        metric = mine[0]["metric"]
        lower = mine[0].get("lower_is_better", False)
        for i, (model, member, n) in enumerate(cs):
            blocks = sorted((r for r in mine if r["model"] == model and r["kind"] == "block"
                             and member_of(r["layer"]) == member and _finite(_num(r["score"]))),
                            key=lambda r: r.get("depth") or 0)
            if not blocks:
                continue
            xs = [(r.get("depth") or 0) / (n - 1 if n > 1 else 1) if relative else (r.get("depth") or 0)
                  for r in blocks]
            ys = [_num(r["score"]) for r in blocks]
            sd = [_num(r.get("std")) if _finite(_num(r.get("std"))) else 0.0 for r in blocks]
            c = color[(model, member)]
            if any(sd):
                ax.fill_between(xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)],
                                color=c, alpha=0.16, lw=0)
            ax.plot(xs, ys, "-o", color=c, ms=3.2, lw=1.3, zorder=3)
        for r in mine:  # mean of blocks, default embedding: markers right of the blocks
            if r["kind"] == "block" or not _finite(_num(r["score"])):
                continue
            key = (r["model"], member_of(r["layer"]))
            c = color.get(key, model_color[r["model"]]) if r["kind"] == "mean" else model_color[r["model"]]
            i = next((j for j, (m, mem, _) in enumerate(cs) if (m, mem) == key),
                     models.index(r["model"]))
            x = x_extra[r["kind"]] + (i - (ncurves - 1) / 2) * min(0.8 / ncurves, 0.3) * unit
            sd = _num(r.get("std"))
            ax.errorbar([x], [_num(r["score"])], yerr=[sd] if _finite(sd) else None, color=c,
                        marker="D" if r["kind"] == "mean" else "*", ms=4.2 if r["kind"] == "mean" else 7.5,
                        capsize=2, lw=1.0, zorder=4, mec="black" if r["kind"] == "default" else c, mew=0.4)
        ch = next((r["chance"] for r in mine if _finite(r.get("chance"))), None)
        if ch is not None:
            ax.axhline(ch, color="0.45", lw=0.9, ls="--", zorder=1)
        if any(r["kind"] != "block" for r in mine):
            ax.axvline(x_last + 0.65 * unit, color="0.75", lw=0.6, zorder=0)
        if relative:
            ticks, labels = [0.0, 0.5, 1.0], ["0", "0.5", "1"]
        else:
            n = int(x_last) + 1
            suffixes = {tuple(k.rsplit(".", 1)[-1] for k in block_keys(rows, m) if member_of(k) == mem)
                        for m, mem, _ in cs}
            names = list(next(iter(suffixes))) if len(suffixes) == 1 else [str(i) for i in range(n)]
            step = 1 if n <= 8 else 2
            ticks = list(range(0, n, step))
            labels = [names[i] if i < len(names) else str(i) for i in ticks]
        kinds = [k for k in ("mean", "default") if any(r["kind"] == k for r in mine)]
        ax.set_xticks(ticks + [x_extra[k] for k in kinds])
        ax.set_xticklabels(labels + [{"mean": "mean", "default": "def."}[k] for k in kinds])
        for t in ax.get_xticklabels()[len(ticks):]:
            t.set_rotation(90)
        ax.set_xlim(-0.45 * unit, max([x_last] + list(x_extra.values())) + 0.55 * unit)
        if task in ranges:
            ax.set_ylim(*ranges[task])
        ax.set_title(_title(rows, task) + "\n" + metric + (" (lower is better)" if lower else ""),
                     fontsize=FONT_PT["title"], pad=3)
        ax.tick_params(labelsize=FONT_PT["tick"], length=2.5, pad=1.5)
        ax.grid(axis="y", color="0.9", lw=0.5, zorder=0)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("relative depth of the block" if relative else "block", fontsize=FONT_PT["label"])
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    # the bottom row of panels may be short: label the last panel of each column too
    for j in range(ncol):
        col = [ax for ax in axes[:, j] if ax.axison]
        if col and col[-1] is not axes[-1, j]:
            col[-1].set_xlabel(axes[-1, 0].get_xlabel(), fontsize=FONT_PT["label"])
    handles = [Line2D([], [], color=color[(model, member)], marker="o", ms=3.2, lw=1.3, label=label)
               for (model, member, _), label in zip(cs, legend_labels)]
    kind_handles = {"band": Patch(color="0.5", alpha=0.3, lw=0, label="± std over test folds"),
                    "mean": Line2D([], [], color="0.3", marker="D", ms=4.2, ls="none", label="mean of blocks"),
                    "default": Line2D([], [], color="0.3", marker="*", ms=7.5, ls="none", mec="black", mew=0.4,
                                      label="default embedding"),
                    "chance": Line2D([], [], color="0.45", lw=0.9, ls="--", label="chance (constant guess)")}
    handles += [h for k, h in kind_handles.items() if marks[k]]
    fig.legend(handles=handles, loc="lower center", ncol=per_row, fontsize=FONT_PT["legend"], frameon=False,
               handlelength=1.8, columnspacing=1.2)
    fig.tight_layout(rect=(0, legend_in / fig.get_size_inches()[1], 1, 1), h_pad=0.8, w_pad=0.6)
    paths = _save(fig, stem)
    plt.close(fig)
    return paths


def plot_histogram(hist: Dict[str, Dict[str, int]], rows: List[Dict[str, Any]], stem: Path) -> Dict[str, Path]:
    """Per model, the number of classes whose best block each block is (Whisper-AT Fig. 3);
    classes every block scores alike (ties) are counted in the title, not drawn."""
    plt = _pyplot()

    models = [m for m in hist if block_keys(rows, m)]
    width = COLUMN_WIDTH_IN if len(models) == 1 and len(block_keys(rows, models[0])) <= 8 else PAGE_WIDTH_IN
    fig, axes = plt.subplots(1, len(models), figsize=(width, 2.3), squeeze=False)
    for ax, model in zip(axes.flat, models):
        keys = block_keys(rows, model)
        counts = [hist[model].get(k, 0) for k in keys]
        bars = ax.bar(range(len(keys)), counts, color="tab:blue", width=0.7, zorder=2)
        ax.bar_label(bars, fontsize=FONT_PT["tick"] - 0.5, padding=1)
        ax.set_xticks(range(len(keys)))
        crowded = sum(len(k) + 1 for k in keys) * FONT_PT["tick"] * 0.55 > 72 * (width / len(models) - 0.6)
        ax.set_xticklabels(keys, rotation=90 if crowded else 0, fontsize=FONT_PT["tick"])
        tie = hist[model].get(TIE, 0)
        ax.set_title(f"{model}\n{sum(counts)} classes" + (f" (+{tie} tied on every block)" if tie else ""),
                     fontsize=FONT_PT["title"], pad=3)
        ax.set_xlabel("best block", fontsize=FONT_PT["label"])
        ax.set_ylabel("classes", fontsize=FONT_PT["label"])
        ax.tick_params(labelsize=FONT_PT["tick"], length=2.5, pad=1.5)
        ax.set_ylim(0, max(counts + [1]) * 1.15)
        ax.grid(axis="y", color="0.9", lw=0.5, zorder=0)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.tight_layout(w_pad=1.0)
    paths = _save(fig, stem)
    plt.close(fig)
    return paths


# -- the report as blocks, written as Markdown and as HTML --------------------------------------
def _cell(r: Optional[Dict[str, Any]], bold: bool = False) -> str:
    if r is None:
        return ""
    s = _fmt(_num(r.get("score")))
    if bold and s:
        s = f"**{s}**"
    sd = _num(r.get("std"))
    if sd is not None and _finite(_num(r.get("score"))):
        s += f" ± {_fmt(sd)}"
    if r.get("degenerate"):
        s += " ‡"
    return s


LINEAR_PROTOCOL = (
    "linear probe per task and layer (the Whisper-AT paper's kind): features standardised with "
    "the training split's statistics, a softmax (multiclass scene tasks) or per-label sigmoid "
    "(multilabel and event tasks) classifier fitted by full-batch L-BFGS (up to {lbfgs_iterations} "
    "iterations, from zero weights for the first L2 weight, then from the previous solution), the "
    "L2 weight chosen from {l2_grid} on the task's validation split by its primary metric; k-fold "
    "tasks: heareval's folds (fold i tests, fold i + 1 validates, the others train), mean ± std "
    "over test folds. Scene tasks: one vector per clip (each block's frames averaged over the "
    "clip); event tasks: one vector per frame, frame labels as heareval assigns them, at most "
    "{max_train_frames} training frames per fit (a subsample seeded by {seed}), frame posteriors "
    "turned into events by heareval's post-processing (the task's grid, chosen on validation). "
    "Every metric is heareval's own score function.")


def protocol_text(settings: Dict[str, Any]) -> List[str]:
    """The protocol items, as ``hear-models evaluate`` states them (one shared function);
    the linear protocol has its own first item."""
    s = dict(settings)
    if s.get("protocol", "linear") == "linear":
        first = LINEAR_PROTOCOL.format(**{k: s.get(k, "?") for k in
                                          ("lbfgs_iterations", "l2_grid", "max_train_frames", "seed")})
        return protocol_lines(s, first)
    s.setdefault("grid_settings", {})
    return protocol_lines(s)


def _y_range_text(spec: str) -> str:
    mode, fixed = parse_y_range(spec)
    text = "Panels of one metric share a y-range" if mode == "metric" else "Each panel has its own y-range"
    if fixed:
        text += "; fixed: " + ", ".join(f"{m} {lo:g} to {hi:g}" for m, (lo, hi) in fixed.items())
    return text + "."


def report_blocks(report: Dict[str, Any], figures: Dict[str, Optional[str]], y_range: str = "metric") -> List[tuple]:
    """The report as (kind, ...) blocks: ("h1"|"h2"|"p", text), ("ul", [items]),
    ("table", head, rows), ("img", file, alt)."""
    s = report["settings"]
    rows = report["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    b: List[tuple] = [("h1", f"Layer-wise probe: {', '.join(models)}")]
    if s.get("note"):
        b.append(("p", s["note"]))
    if not s.get("tasks_text"):  # a probe.json of an earlier release: the task folders from its rows
        s = {**s, "tasks_text": f"{s.get('tasks')}, {len(tasks)} task(s): {', '.join(tasks)}"}
    items = [ln[2:] if ln.startswith("- ") else ln for ln in protocol_text(s)]
    items.append("**Layers**: every block of the model (fusion: every member's blocks), `mean` = the mean "
                 "of all blocks (per member), `default` = the model's HEAR embedding as "
                 "`get_scene_embeddings` (scene tasks) or `get_timestamp_embeddings` (event tasks) "
                 "returns it.")
    timing = s.get("timing") or {}
    items.append(f"**Seed** {s.get('seed', 0)} (the same features and seed give the same numbers)" + (
        "; time per model: " + "; ".join(f"{m}: features {t['features_s']:.0f} s (0 = cached), probes "
                                         f"{t['probe_s']:.0f} s" for m, t in timing.items()) if timing else "")
                 + ("" if s.get("environment") else f"; wall time {s.get('wall_s', 0):.0f} s") + ".")
    if s.get("command") or s.get("rendered_by"):
        made = [f"`{s['command']}`"] if s.get("command") else []
        if s.get("rendered_by"):
            made.append(f"this report re-drawn from its probe.json with `{s['rendered_by']}`")
        items.append("**Command**: " + "; ".join(made) + ".")
    b.append(("ul", items))
    if figures.get("scores"):
        b += [("img", figures["scores"], "score vs block"),
              ("p", "Per task, the primary metric of each block's probe (dots; band: ± std over test folds "
                    "on k-fold tasks), of the mean of the blocks (diamond) and of the default embedding "
                    "(star, error bar: fold std); dashed grey: chance, a constant guess on the test "
                    "labels. " + ("Models of different depth share a panel on the relative depth of the "
                                  "block (0 = first block, 1 = last). " if len({n for *_, n in curves(rows)}) > 1
                                  else "") + _y_range_text(y_range))]
    degenerate = [r for r in rows if r.get("degenerate")]
    for model in models:
        keys = block_keys(rows, model)
        extra = list(dict.fromkeys(r["layer"] for r in rows if r["model"] == model and r["kind"] != "block"))
        head = ["task", "metric", "chance"] + keys + extra + ["best block"]
        body = []
        for task in tasks:
            cells = {r["layer"]: r for r in rows if r["model"] == model and r["task"] == task}
            if not cells:
                continue
            any_row = next(iter(cells.values()))
            best = best_block(cells, keys)
            body.append([task, any_row["metric"] + (" (↓)" if any_row.get("lower_is_better") else ""),
                         _fmt(any_row.get("chance"))] + [_cell(cells.get(k), k == best) for k in keys + extra]
                        + [best])
        folds = sorted({r.get("folds", 1) for r in rows if r["model"] == model})
        non_finite = any("†" in c for row in body for c in row)
        b += [("h2", model), ("table", head, body)] + ([("p", NON_FINITE_NOTE)] if non_finite else []) + [
              ("p", "Mean ± std over test folds (" + ", ".join(str(f) for f in folds) + " fold(s); a task "
                    "with one test split has no ±); the best block per task in bold (ties: the shallower); "
                    "`(↓)` lower is better" + ("; `‡` degenerate features, listed below" if any(
                        r["model"] == model for r in degenerate) else "") + ".")]
    b.append(("h2", "Degenerate features"))
    if degenerate:
        b.append(("p", "Feature dimensions constant on a training split carry nothing the probe can use "
                       "(their weights stay zero) and non-finite values are replaced by the training mean "
                       "of their dimension, so such a layer is probed on what is left:"))
        b.append(("ul", [f"{r['model']}, {r['task']}, layer `{r['layer']}`: {r['degenerate']}" for r in degenerate]))
    elif all(r.get("degenerate") is not None for r in rows):
        b.append(("p", "None: no layer gave a constant dimension on a training split or a non-finite value."))
    else:
        b.append(("p", "Not checked: heareval's protocol (it standardises nothing itself), or a probe run "
                       "made before the check (its probe.json records none)."))
    b.append(("h2", "Best block per class"))
    b.append(("p", "For every class, the block whose probe gives it the highest average precision on the "
                   "test predictions (pooled over folds; ties go to the shallower block, and a class every "
                   "block scores alike is counted as a tie, not drawn; classes without a positive test "
                   "example are left out), counted over all tasks, as Whisper-AT's Figure 3."))
    hist = report.get("histogram") or {}
    if figures.get("hist"):
        b.append(("img", figures["hist"], "best block per class"))
    if hist:
        b.append(("ul", [f"{model}: " + ", ".join(f"block {k}: {h[k]}" for k in block_keys(rows, model) if k in h)
                         + f" ({sum(h.values())} classes" + (f", of which {h[TIE]} tie on every block"
                                                             if TIE in h else "") + ")"
                         for model, h in hist.items()]))
    else:
        b.append(("p", "No per-class scores in this protocol (heareval's writes none)."))
    b.append(("p", "Files: `probe.csv` / `probe.json` (scores, every metric, per-fold choices in the JSON), "
                   "`best_layers.csv` (per class), figures as PNG, SVG and PDF."))
    return b


def to_markdown(blocks: List[tuple]) -> str:
    out: List[str] = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h1":
            out += [f"# {blk[1]}", ""]
        elif kind == "h2":
            out += [f"## {blk[1]}", ""]
        elif kind == "p":
            out += [blk[1], ""]
        elif kind == "ul":
            out += [f"- {item}" for item in blk[1]] + [""]
        elif kind == "img":
            out += [f"![{blk[2]}]({blk[1]})", ""]
        elif kind == "table":
            head, body = blk[1], blk[2]
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            out += ["| " + " | ".join(row) + " |" for row in body] + [""]
    return "\n".join(out)


def _inline(text: str) -> str:
    """Markdown's inline marks used here (**bold**, `code`) as HTML, the rest escaped."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for p in parts:
        if p.startswith("`") and p.endswith("`") and len(p) > 1:
            out.append(f"<code>{html.escape(p[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(p, quote=False)))
    return "".join(out)


HTML_STYLE = """body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;line-height:1.45;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1em;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
th:first-child,td:first-child,td:nth-child(2){text-align:left}th{background:#f3f3f3}
img{max-width:100%;height:auto;display:block;margin:1em 0}code{background:#f4f4f4;padding:0 3px}
li{margin:.3em 0}"""


def to_html(blocks: List[tuple], folder: Path) -> str:
    """One self-contained HTML file: the figures inline as base64 PNG."""
    title = next((blk[1] for blk in blocks if blk[0] == "h1"), "probe report")
    style = " ".join(HTML_STYLE.split())
    out = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
           f"<style>{style}</style></head><body>"]
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{_inline(blk[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(blk[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in blk[1]) + "</ul>")
        elif kind == "img":
            data = base64.b64encode((Path(folder) / blk[1]).read_bytes()).decode("ascii")
            out.append(f"<img alt=\"{html.escape(blk[2])}\" src=\"data:image/png;base64,{data}\">")
        elif kind == "table":
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in blk[1]) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in blk[2]]
            out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(report: Dict[str, Any], out: Path, y_range: str = "metric") -> Dict[str, Path]:
    """probe.csv, probe.json, best_layers.csv, scores.*, best_layer_hist.*, report.md, report.html."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "probe.csv", "json": out / "probe.json", "classes": out / "best_layers.csv",
             "report": out / "report.md", "html": out / "report.html"}
    paths["csv"].write_text(csv_text(report["rows"]))
    paths["classes"].write_text(csv_text(report["best_layers"]))
    safe = {**report, "rows": [{k: _json_safe(v) for k, v in r.items()} for r in report["rows"]]}
    paths["json"].write_text(json.dumps(safe, indent=1, allow_nan=False))
    figures: Dict[str, Optional[str]] = {"scores": None, "hist": None}
    if report["rows"]:
        for fmt, p in plot_scores(report["rows"], out / "scores", y_range).items():
            paths[f"scores.{fmt}"] = p
        figures["scores"] = "scores.png"
    if any(block_keys(report["rows"], m) for m in report.get("histogram") or {}):
        for fmt, p in plot_histogram(report["histogram"], report["rows"], out / "best_layer_hist").items():
            paths[f"hist.{fmt}"] = p
        figures["hist"] = "best_layer_hist.png"
    blocks = report_blocks(report, figures, y_range)
    paths["report"].write_text(to_markdown(blocks))
    paths["html"].write_text(to_html(blocks, out))
    return paths


def read_reports(folders: Sequence[Path]) -> Dict[str, Any]:
    """One report out of the probe.json of earlier runs (``--from``): their rows and classes
    side by side; the runs must share the protocol and its settings, and not a model."""
    reports = []
    for folder in folders:
        path = Path(folder)
        path = path / "probe.json" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"--from {folder}: no probe.json there")
        try:
            data = json.loads(path.read_text())
            data["rows"], data["settings"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"--from {folder}: not a probe.json of hear-models probe ({e})") from None
        reports.append(data)
    keys = ("protocol", "l2_grid", "lbfgs_iterations", "max_train_frames", "seed", "grid", "grid_points")
    first = reports[0]["settings"]
    for data, folder in zip(reports[1:], folders[1:]):
        differ = [k for k in keys if data["settings"].get(k) != first.get(k)]
        if differ:
            raise ValueError(f"--from {folder}: made with other settings ({', '.join(differ)}) than "
                             f"{folders[0]}; one report states one protocol")
    seen: Dict[str, str] = {}
    for data, folder in zip(reports, folders):
        for m in dict.fromkeys(r["model"] for r in data["rows"]):
            if m in seen:
                raise ValueError(f"--from: model {m} is in both {seen[m]} and {folder}")
            seen[m] = str(folder)
    if len(reports) == 1:
        return reports[0]
    settings = dict(first)
    settings["models"] = [m for d in reports for m in d["settings"].get("models", [])]
    settings["timing"] = {k: v for d in reports for k, v in (d["settings"].get("timing") or {}).items()}
    settings["wall_s"] = sum(d["settings"].get("wall_s", 0) for d in reports)
    settings["model_details"] = [m for d in reports for m in d["settings"].get("model_details", [])]
    texts = list(dict.fromkeys(str(d["settings"].get("tasks_text") or d["settings"].get("tasks")) for d in reports))
    settings["tasks_text"] = "; ".join(texts)
    settings["command"] = " && ".join(d["settings"]["command"] for d in reports if d["settings"].get("command"))
    notes = [d["settings"]["note"] for d in reports if d["settings"].get("note")]
    settings["note"] = " ".join(notes) if notes else ""
    classes = [c for d in reports for c in d["best_layers"]]
    hist = {k: v for d in reports for k, v in (d.get("histogram") or {}).items()}
    return {"settings": settings, "rows": [r for d in reports for r in d["rows"]], "best_layers": classes,
            "histogram": hist}
