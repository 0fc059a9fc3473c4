"""Run heareval's shallow-classifier protocol on embedding folders, in a subprocess.

heareval's predictions runner (its code, grids and metrics) runs in a child process
started as ``hear-models heareval predictions`` (:mod:`hear_models.evaluation.heareval_runners`),
which applies the fixes heareval needs today in that process. The child's output goes to a log file; a
task that fails is reported with the tail of its log and the others still run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

GRIDS = ("default", "fast", "faster")
SCORES_FILE = "test.predicted-scores.json"
DONE_FILE = "prediction-done.json"
# our record of the settings a task's predictions were made with (heareval does not
# record the grid, so a rerun with another grid would otherwise keep stale scores)
SETTINGS_FILE = "hear_models.predictions.json"


@dataclass
class PredictionOutcome:
    task_dir: Path
    ok: bool
    seconds: float
    skipped: bool = False
    error: str = ""


def child_env(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment of the heareval child process: the parent's, unbuffered (the fixes
    themselves are applied inside the child, :func:`heareval_runners.apply_fixes`)."""
    env = dict(os.environ if base is None else base)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


GRID_KEYS = ("hidden_layers", "hidden_dim", "lr", "batch_size", "max_epochs", "patience",
             "check_val_every_n_epoch")


def grid_settings(grid: str) -> Dict[str, object]:
    """The settings of one of heareval's grids as heareval defines them (read from the
    installed heareval): how many configurations, and the values that matter most."""
    try:
        from .heareval_runners import _tensorflow_stub

        _tensorflow_stub()
        import heareval.predictions.task_predictions as tp
        from sklearn.model_selection import ParameterGrid
    except Exception:  # heareval is not installed (embeddings only)
        return {}
    g = {"default": tp.PARAM_GRID, "fast": tp.FAST_PARAM_GRID, "faster": tp.FASTER_PARAM_GRID}[grid]
    out: Dict[str, object] = {"configs": len(ParameterGrid(g))}
    out.update({k: list(g[k]) for k in GRID_KEYS if k in g})
    return out


def command(task_dirs: Sequence[Path], grid: str, grid_points: int, deterministic: bool = True,
            gpus: Optional[str] = None) -> List[str]:
    if grid not in GRIDS:
        raise ValueError(f"grid {grid!r}: expected one of {list(GRIDS)}")
    if grid_points < 1:
        raise ValueError("grid points must be >= 1")
    cmd = [sys.executable, "-m", "hear_models.evaluation.heareval_runners", "predictions",
           *[str(Path(t).resolve()) for t in task_dirs],
           "--grid", grid, "--grid-points", str(int(grid_points)),
           "--deterministic", str(bool(deterministic))]
    if gpus is not None:
        cmd += ["--gpus", gpus]
    return cmd


def _settings(grid: str, grid_points: int, deterministic: bool) -> dict:
    return {"grid": grid, "grid_points": int(grid_points), "deterministic": bool(deterministic)}


def is_current(task_dir: Path, grid: str, grid_points: int, deterministic: bool = True) -> bool:
    """Predictions exist for this task and were made with these settings."""
    task_dir = Path(task_dir)
    if not (task_dir / DONE_FILE).exists() or not (task_dir / SCORES_FILE).exists():
        return False
    try:
        recorded = json.loads((task_dir / SETTINGS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return recorded == _settings(grid, grid_points, deterministic)


def _reset(task_dir: Path) -> None:
    """Remove earlier predictions so heareval recomputes them (it skips done tasks)."""
    for name in (DONE_FILE, SCORES_FILE, SETTINGS_FILE):
        p = task_dir / name
        if p.exists():
            p.unlink()


def task_cost(task_dir: Path) -> float:
    """A rough relative cost of a task's predictions, to share tasks between jobs: heareval
    trains once per test fold, and event tasks score sed_eval at every validation."""
    try:
        meta = json.loads((Path(task_dir) / "task_metadata.json").read_text())
    except (OSError, ValueError):
        return 1.0
    folds = len(meta.get("splits", [])) if meta.get("split_mode") != "trainvaltest" else 1
    return folds * (4.0 if meta.get("embedding_type") == "event" else 1.0)


def share(task_dirs: Sequence[Path], jobs: int) -> List[List[Path]]:
    """Tasks in ``jobs`` groups of similar cost (longest first, each to the lightest group)."""
    groups: List[List[Path]] = [[] for _ in range(jobs)]
    load = [0.0] * jobs
    for t in sorted(task_dirs, key=task_cost, reverse=True):
        i = load.index(min(load))
        groups[i].append(t)
        load[i] += task_cost(t)
    return [g for g in groups if g]


def run_predictions(task_dirs: Sequence[Path], grid: str = "default", grid_points: int = 8,
                    deterministic: bool = True, gpus: Optional[str] = None,
                    log_path: Optional[Path] = None, progress: bool = True,
                    env: Optional[Dict[str, str]] = None, jobs: int = 1) -> List[PredictionOutcome]:
    """Predictions for each embedding task folder; resumable, failure-isolating.

    ``jobs`` > 1: that many heareval processes at once, each on its share of the tasks with
    ``cores // jobs`` threads (heareval seeds every task itself, so the scores do not depend
    on how tasks are shared); logs ``<log>.<k>.log``.
    """
    task_dirs = [Path(t).resolve() for t in task_dirs]
    if jobs > 1 and len(task_dirs) > 1:
        from concurrent.futures import ThreadPoolExecutor

        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        child = dict(os.environ if env is None else env, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        groups = share(task_dirs, jobs)
        logs = [Path(log_path).with_suffix(f".{k}.log") if log_path else None for k in range(len(groups))]
        with ThreadPoolExecutor(len(groups)) as ex:
            futures = [ex.submit(run_predictions, g, grid, grid_points, deterministic, gpus, lg, progress, child)
                       for g, lg in zip(groups, logs)]
            done = {o.task_dir: o for f in futures for o in f.result()}
        return [done[t] for t in task_dirs]
    outcomes: Dict[Path, PredictionOutcome] = {}
    pending = []
    for t in task_dirs:
        if is_current(t, grid, grid_points, deterministic):
            outcomes[t] = PredictionOutcome(t, True, 0.0, skipped=True)
        else:
            _reset(t)
            pending.append(t)
    log_path = Path(log_path) if log_path else None
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    started_re = re.compile(r"Computing predictions for (\S+)")
    while pending:
        cmd = command(pending, grid, grid_points, deterministic, gpus)
        current: Optional[Path] = None
        t_task = time.time()
        tail: List[str] = []
        log = open(log_path, "a") if log_path else None
        try:
            if log:
                log.write(f"$ {' '.join(cmd)}\n")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=child_env(env), bufsize=1)
            assert proc.stdout is not None
            for line in proc.stdout:
                if log:
                    log.write(line)
                tail.append(line)
                del tail[:-60]
                m = started_re.search(line)
                if m:
                    name = m.group(1)
                    for t in pending:
                        if t.name == name and t != current:
                            if current is not None:
                                _finish(current, outcomes, t_task, grid, grid_points, deterministic, progress)
                            current, t_task = t, time.time()
            rc = proc.wait()
        finally:
            if log:
                log.close()
        if current is not None and (rc == 0 or (current / DONE_FILE).exists()):
            _finish(current, outcomes, t_task, grid, grid_points, deterministic, progress)
        if rc != 0 and current is None:  # died before its first task: all would fail alike
            msg = "".join(tail[-25:])
            for t in pending:
                outcomes[t] = PredictionOutcome(t, False, 0.0, error=msg)
            if progress:
                print(f"  heareval predictions could not start (exit {rc}); log: {log_path}\n{msg}",
                      file=sys.stderr)
            break
        if rc != 0:
            failed = next((t for t in pending if t not in outcomes), None)
            if failed is None:
                break
            msg = "".join(tail[-25:])
            outcomes[failed] = PredictionOutcome(failed, False, time.time() - t_task, error=msg)
            if progress:
                print(f"  predictions FAILED for {failed.name} (exit {rc}); log: {log_path}\n{msg}",
                      file=sys.stderr)
        for t in pending:  # a task heareval skipped or finished without our noticing
            if t not in outcomes and (t / DONE_FILE).exists():
                _finish(t, outcomes, time.time(), grid, grid_points, deterministic, False)
        pending = [t for t in pending if t not in outcomes]
        if rc == 0 and pending:  # heareval returned without doing them: nothing more to try
            for t in pending:
                outcomes[t] = PredictionOutcome(t, False, 0.0, error="heareval did not predict this task")
            break
    return [outcomes[t] for t in task_dirs]


def _finish(task_dir: Path, outcomes: Dict[Path, PredictionOutcome], t0: float, grid: str,
            grid_points: int, deterministic: bool, progress: bool) -> None:
    ok = (task_dir / SCORES_FILE).exists()
    if ok:
        (task_dir / SETTINGS_FILE).write_text(json.dumps(_settings(grid, grid_points, deterministic)))
    outcomes[task_dir] = PredictionOutcome(task_dir, ok, time.time() - t0,
                                           error="" if ok else f"no {SCORES_FILE} written")
    if progress:
        print(f"  predictions {task_dir.name}: {'done' if ok else 'FAILED'} in {time.time() - t0:.1f} s",
              file=sys.stderr, flush=True)
