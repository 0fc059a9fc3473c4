"""``hear-models probe``: which block of which model knows what (layer-wise probe reports).

    hear-models probe MODEL... --tasks DIR|smoke|mini [--task NAME ...]
        [--layers all|LIST] [--protocol linear|heareval] [--out DIR] [--cache-dir DIR]
        [--seed N] [--grid faster] [--grid-points N] [--max-train-frames N]
        [--y-range metric|panel|METRIC=LO:HI] [--note TEXT]
    hear-models probe --from DIR [--from DIR ...] --out DIR [--y-range ...] [--note TEXT]

For every block of every model (the registry's ``hidden_states`` interface, through
``HearModel.layer_scene_embeddings`` / ``layer_timestamp_embeddings``: fusion members
block by block, e.g. ``hubert.3``, ``crepe.5``), the mean of all blocks (per fusion
member: ``hubert.mean``; only over blocks of one width) and the model's default HEAR
embedding, a probe is fitted per task and scored with the task's own metrics:

- ``linear`` (default): a linear classifier as in the Whisper-AT paper's layer-wise
  analysis: features standardised on the training split, softmax (multiclass) or sigmoid
  (multilabel, events) outputs, full-batch L-BFGS from zero weights (a convex problem:
  no random initialisation), L2 weight chosen from :data:`L2_GRID` on the task's own
  validation split (k-fold: heareval's rule, fold i tests, fold i + 1 validates, the rest
  train), scored by heareval's own score functions. Event tasks are probed frame by
  frame; frame posteriors become events through heareval's own post-processing (median
  filter, minimum duration; the task's grid, chosen on validation) and are scored with
  the task's event metric.
- ``heareval``: heareval's full shallow-classifier protocol (:mod:`hear_models.evaluation.predict`) on every
  layer's embeddings, written in heareval's format from the same cached features.

Features are extracted once per clip for all layers (one pass over the blocks plus the
default embedding) into ``--cache-dir`` (default ``OUT/features``) in the evaluation
runner's row format (:func:`hear_models.evaluation.embeddings.embed_clips`), keyed by the model, its options
and the task's files; a later run, another ``--layers`` or ``--protocol`` reuses them.

Outputs in ``--out`` (:mod:`.report`): ``probe.csv`` / ``probe.json`` (score and
fold std per model x task x layer, every metric), ``best_layers.csv`` (per class, the
block whose probe ranks it best: the Whisper-AT Figure 3 histogram), the figures
``scores`` and ``best_layer_hist`` (PNG, SVG, PDF, at print size), ``report.md`` and a
self-contained ``report.html``. ``--from`` draws them again from earlier runs' probe.json
(one or several: models side by side) without probing. Deterministic: the same features
and seed give the same numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..embeddings import TaskFolder, TaskFolderError, read_task
from ..hear2021 import LOWER_IS_BETTER
from ..results import _fmt
from .report import TIE, member_of, parse_y_range, read_reports, write_report
from .layers import Layer, layer_plan, select_layers
from .features import LayerEmbedder, extract_features
from .linear import (L2_GRID, LBFGS_ITERATIONS, MAX_TRAIN_FRAMES, PROTOCOLS, TaskScorer, chance, fold_plan,
                     probe_layer, split_data)
from .heareval import heareval_layers


# -- the command ---------------------------------------------------------------------------
def probe(models: Sequence[str], tasks: str, only: Optional[Sequence[str]] = None, layers: str = "all",
          protocol: str = "linear", out: Path = Path("probe"), cache_dir: Optional[Path] = None,
          model_options: Optional[dict] = None, weights: Optional[str] = None, device: Optional[str] = None,
          seed: int = 0, grid: str = "default", grid_points: int = 8,
          max_train_frames: int = MAX_TRAIN_FRAMES, progress: bool = True, y_range: str = "metric",
          note: str = "", command: str = "") -> Dict[str, Any]:
    """Probe every layer of ``models`` on ``tasks``; writes the report into ``out`` and
    returns what ``probe.json`` holds."""
    from ..predict import grid_settings
    from ..runner import (SUITES, _version, check_heareval, ensure_suite, environment, find_tasks,
                         load_embedder, registry_description, resolve_model, tasks_text)

    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol {protocol!r}: expected one of {list(PROTOCOLS)}")
    check_heareval(hint="")  # both protocols score with heareval's own functions: checked before any model loads
    for name in models:
        resolve_model(name, weights, model_options or {})
    out = Path(out).resolve()
    cache_root = Path(cache_dir).resolve() if cache_dir else out / "features"
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    user_options = dict(model_options or {})
    rows: List[Dict[str, Any]] = []
    classes: List[Dict[str, Any]] = []
    model_details: List[Dict[str, Any]] = []
    task_folders: Dict[str, Path] = {}
    timing: Dict[str, Dict[str, float]] = {}
    t_all = time.time()
    for name in models:
        module_path, w, options, folder = resolve_model(name, weights, user_options)
        loaded: Dict[str, Any] = {}

        def make_embedder() -> LayerEmbedder:
            if "embedder" not in loaded:
                t0 = time.time()
                loaded["embedder"] = LayerEmbedder(load_embedder(module_path, w, options, device))
                say(f"[{name}] loaded in {time.time() - t0:.1f} s")
            return loaded["embedder"]

        if tasks in SUITES:  # the suite is generated for the model's rate
            folders = ensure_suite(tasks, seed, make_embedder().sample_rate, only, progress)
        else:
            folders = find_tasks(Path(tasks), only)
        timing[folder] = {"features_s": 0.0, "probe_s": 0.0}
        model_details.append({"name": folder, "module": module_path, "weights": w, "options": options,
                              "description": registry_description(name)})
        key = {"model": name, "module": module_path, "weights": w, "options": options}
        for tf in folders:
            task = read_task(tf, check_audio=False)
            feats, secs = extract_features(task, cache_root / folder / task.name, key,
                                           lambda: _checked(make_embedder(), task), progress)
            timing[folder]["features_s"] += secs
            say(f"[{name}] {task.name}: features " + (f"{secs:.1f} s" if secs else "cached"))
            plan = select_layers(layer_plan(feats.layer_names, feats.info["widths"]), layers)
            t0 = time.time()
            folds = fold_plan(task.metadata)
            if protocol == "linear":
                scorer = TaskScorer(task)
                data = {s: split_data(task, feats, s) for s in task.metadata["splits"]}
                results = {}
                it = plan
                if progress:
                    from tqdm.auto import tqdm

                    it = tqdm(plan, desc=f"probe {task.name}", unit="layer", leave=False)
                for layer in it:
                    results[layer.key] = probe_layer(task, feats, layer, folds, data, scorer, seed, max_train_frames)
                metrics = scorer.metrics
            else:
                results = heareval_layers(task, feats, plan, out / "heareval", folder, grid, grid_points,
                                          out / "logs" / f"{folder}.{task.name}.predictions.log", progress)
                metrics = list(task.metadata["evaluation"])
            timing[folder]["probe_s"] += time.time() - t0
            primary = metrics[0]
            ch = chance(task, folds, primary)
            n_blocks: Dict[str, int] = {}
            for layer in layer_plan(feats.layer_names):
                if layer.kind == "block":
                    n_blocks[member_of(layer.key)] = n_blocks.get(member_of(layer.key), 0) + 1
            for layer in plan:
                r = results[layer.key]
                row = {"model": folder, "task": task.name, "task_name": task.metadata["task_name"],
                       "layer": layer.key, "kind": layer.kind, "depth": layer.depth,
                       "metric": primary, "lower_is_better": primary in LOWER_IS_BETTER,
                       "score": r["scores"].get(primary), "std": r["stds"].get(primary),
                       "folds": len(folds), "chance": ch,
                       "l2": ";".join(f"{f['l2']:g}" for f in r["folds"] if "l2" in f),
                       "n_blocks": n_blocks.get(member_of(layer.key)), "degenerate": r.get("degenerate")}  # None: not checked (heareval's protocol)
                for m in metrics[1:]:
                    row[f"score_{m}"] = r["scores"].get(m)
                    row[f"std_{m}"] = r["stds"].get(m)
                rows.append(row)
            classes += best_layer_per_class(folder, task, plan, results)
            task_folders[task.name] = task.path
            say(f"[{name}] {task.name}: probed {len(plan)} layer(s) in {time.time() - t0:.1f} s; " +
                ", ".join(f"{layer.key} {_fmt(results[layer.key]['scores'].get(primary))}" for layer in plan))
            for layer in plan:
                if results[layer.key].get("degenerate"):
                    say(f"[{name}] {task.name}, layer {layer.key}: degenerate features: "
                        f"{results[layer.key]['degenerate']}")
    settings = {"models": list(models), "tasks": str(tasks), "only": list(only or []), "layers": layers,
                "protocol": protocol, "seed": seed, "l2_grid": list(L2_GRID), "lbfgs_iterations": LBFGS_ITERATIONS,
                "max_train_frames": max_train_frames, "grid": grid, "grid_points": grid_points,
                "model_options": user_options, "weights": weights, "timing": timing,
                "grid_settings": grid_settings(grid) if protocol == "heareval" else {},
                "tasks_text": tasks_text(tasks, seed, task_folders), "model_details": model_details,
                "heareval_version": _version("heareval"), "environment": environment(),
                "command": command or "", "note": note or "", "wall_s": round(time.time() - t_all, 1)}
    report = {"settings": settings, "rows": rows, "best_layers": classes,
              "histogram": histogram(classes)}
    write_report(report, out, y_range)
    return report


def _checked(embedder: LayerEmbedder, task: TaskFolder) -> LayerEmbedder:
    from ..embeddings import check_audio_folders

    check_audio_folders(task, embedder.sample_rate)
    return embedder


def best_layer_per_class(model: str, task: TaskFolder, plan: Sequence[Layer],
                         results: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per class of the task, the block whose probe ranks it best (per-class average
    precision on the pooled test predictions; ties: the shallower block; ``best_layer`` is
    ``TIE`` when every block scores the same). Classes without a positive test example are
    left out."""
    blocks = [layer for layer in plan if layer.kind == "block" and results[layer.key].get("class_ap") is not None]
    if not blocks:
        return []
    ap = np.stack([results[layer.key]["class_ap"] for layer in blocks])  # (blocks, classes)
    out = []
    for c, label in enumerate(task.labels):
        col = ap[:, c]
        if np.isnan(col).all():
            continue
        best = int(np.nanargmax(col))  # the first maximum: the shallower block on ties
        tie = bool(np.nanmax(col) - np.nanmin(col) <= 1e-9)
        out.append({"model": model, "task": task.name, "class": label, "best_layer": TIE if tie else blocks[best].key,
                    "best_ap": float(col[best]), "worst_ap": float(np.nanmin(col))})
    return out


def histogram(classes: List[Dict[str, Any]]) -> Dict[str, Dict[str, int]]:
    """model -> {block: number of classes whose best block it is, TIE: classes all blocks
    score alike}."""
    out: Dict[str, Dict[str, int]] = {}
    for c in classes:
        h = out.setdefault(c["model"], {})
        h[c["best_layer"]] = h.get(c["best_layer"], 0) + 1
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hear-models probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", metavar="MODEL", help="registry name or HEAR module of this package "
                   "(several: one report, one figure)")
    p.add_argument("--tasks", default=None, help="folder of HEAR task folders, or smoke | mini")
    p.add_argument("--task", action="append", default=None, metavar="NAME",
                   help="only this task (folder name or task_name; repeatable)")
    p.add_argument("--layers", default="all", help="all (default), or a comma-separated list of block "
                   "indices (negative from the end) and layer names (hubert.3, mean, default)")
    p.add_argument("--protocol", default="linear", choices=PROTOCOLS)
    p.add_argument("--out", default="probe", help="report folder (default: ./probe)")
    p.add_argument("--cache-dir", default=None, help="features cache (default: OUT/features)")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame subsample and of a generated suite")
    p.add_argument("--model-options", default="{}", help="JSON object of load_model keyword options")
    p.add_argument("--weights", default=None, help="model_file_path for load_model")
    p.add_argument("--device", default=None, help="torch device for features (default: cuda if available)")
    p.add_argument("--grid", default="default", help="heareval protocol: heareval's grid (default: default, "
                   "as hear-models evaluate; faster: a quick check whose tiny grid barely trains)")
    p.add_argument("--grid-points", type=int, default=8, help="heareval protocol: grid points (default 8)")
    p.add_argument("--max-train-frames", type=int, default=MAX_TRAIN_FRAMES,
                   help=f"linear protocol, event tasks: training frames per fit (default {MAX_TRAIN_FRAMES})")
    p.add_argument("--y-range", default="metric", metavar="SPEC",
                   help="figure y-axes: metric (default: the panels of one metric share a range), panel "
                   "(each its own), and/or METRIC=LO:HI, comma-separated (e.g. metric,top1_acc=0:1)")
    p.add_argument("--note", default=None, help="a paragraph put under the report's title (kept by --from)")
    p.add_argument("--from", dest="sources", action="append", default=None, metavar="DIR",
                   help="no probing: draw the report again from an earlier run's probe.json (new --y-range, "
                   "--note); repeatable: several runs (other models, same protocol) in one report")
    p.add_argument("--quiet", action="store_true")
    return p


def redraw(sources: Sequence[str], out: Path, y_range: str, note: Optional[str], command: str) -> Dict[str, Any]:
    """``--from``: the report of earlier runs drawn again (their numbers unchanged)."""
    report = read_reports([Path(x) for x in sources])
    report["settings"] = {**report["settings"], "rendered_by": command}
    if note is not None:
        report["settings"]["note"] = note
    write_report(report, out, y_range)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    import shlex

    from ..predict import GRIDS
    from ..runner import ToolMissing, parse_model_options

    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    command = "hear-models probe " + shlex.join(argv)
    try:
        options = parse_model_options(a.model_options)
        parse_y_range(a.y_range)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    if a.sources:
        if a.models or a.tasks:
            print("error: --from draws an earlier run's report again: give no MODEL and no --tasks",
                  file=sys.stderr)
            return 2
        try:
            report = redraw(a.sources, out, a.y_range, a.note, command)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        if not a.models or not a.tasks:
            print("error: give MODEL... and --tasks (or --from DIR to draw an earlier report again)",
                  file=sys.stderr)
            return 2
        if a.grid not in GRIDS:
            print(f"error: --grid {a.grid!r}: expected one of {list(GRIDS)}", file=sys.stderr)
            return 2
        try:
            report = probe(a.models, a.tasks, a.task, a.layers, a.protocol, out, a.cache_dir, options,
                           a.weights, a.device, a.seed, a.grid, a.grid_points, a.max_train_frames,
                           progress=not a.quiet, y_range=a.y_range, note=a.note or "", command=command)
        except TaskFolderError as e:
            print(f"error: bad task folder: {e}", file=sys.stderr)
            return 2
        except (ValueError, ToolMissing) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"report: {out / 'report.md'} and report.html ({len(report['rows'])} scores; probe.csv, probe.json, "
          f"best_layers.csv, scores.png/.svg/.pdf, best_layer_hist.png/.svg/.pdf)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
