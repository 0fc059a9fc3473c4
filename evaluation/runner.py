"""``hear-models evaluate``: HEAR's shallow-classifier protocol in one command.

    hear-models evaluate MODEL... --tasks DIR|smoke|small|mini [--task NAME ...]
        [--model-options JSON] [--weights PATH] [--grid default|fast|faster]
        [--grid-points N] [--out DIR] [--embeddings-dir DIR] [--device DEV]

MODEL is a registry name (``hear-models list``) or any importable HEAR module.
``--tasks`` is a folder of HEAR task folders (hear-preprocess layout, e.g. the
hear-2021.0.6 release from Zenodo, unpacked) or the name of an offline suite (``smoke``,
``mini``; a folder of that name is passed as ``./smoke``), which is generated once into
``$HEAR_MODELS_CACHE/tasks/<suite>-seed<N>`` (default ``~/.cache/hear_models``).

For each model: every task folder is checked (errors name the file) before anything is
computed; embeddings are written by our extractor in heareval's on-disk format under
``<embeddings-dir>/<model>[-options]/<task>/`` (tasks with heareval's done marker are
skipped, so an interrupted run resumes); then heareval's own predictions runner trains
and scores the shallow classifiers in a subprocess with its fixes
(``hear-models heareval predictions``, :mod:`hear_models.evaluation.heareval_runners`). Finally ``results.md|csv|json`` are
written to ``--out`` and the Markdown table is printed.

Sharded extraction (many processes, GPUs or nodes sharing one filesystem)::

    torchrun --nproc_per_node 4 [--nnodes N ...] -m hear_models.evaluation.runner MODEL --tasks DIR ...
    hear-models evaluate MODEL --tasks DIR --shard K/N ...      # any scheduler, e.g. a job array

Each process embeds every N-th heareval batch of every task (rank / world size from
torchrun's environment, or ``--shard``); a shard writes its own done marker, so a rerun
only computes missing shards. With torchrun, rank 0 waits for all shards, merges them into
heareval's folders (files equal to a single-process run) and runs the predictions; with
``--shard``, the last shard to finish merges, and predictions wait for a plain run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..checkpoints import cache_dir
from .embeddings import (Embedder, TaskFolderError, embed_task, embed_task_shard, is_done, merge_shards,
                         options_suffix, read_task)
from .predict import GRIDS, grid_settings, run_predictions
from .hear2021 import SEED_SYSTEMS as _SEEDS
from .results import headline, leaderboard_columns, markdown, task_rows, write_results

SUITES = ("smoke", "small", "mini")


class SuiteUnavailable(RuntimeError):
    """The offline suite cannot be generated here (its Debian / PyPI sources are missing)."""


# -- task folders ----------------------------------------------------------------------
def suite_dir(suite: str, seed: int, sample_rate: int) -> Path:
    """Where an offline suite is cached for a model's sample rate."""
    name = f"{suite}-seed{seed}" + ("" if sample_rate == 16000 else f"-{sample_rate}")
    return cache_dir() / "tasks" / name


def ensure_suite(suite: str, seed: int, sample_rate: int, only: Optional[Sequence[str]] = None,
                 progress: bool = True) -> List[Path]:
    """Generate the offline suite's tasks (all, or ``only``) into the cache unless there,
    and return their folders: those of the current task versions only (a cache filled by an
    older release may also hold earlier versions, e.g. ``djembe_strokes-v1-smoke``).

    Each task folder is moved into the cache whole once generated, so a folder present
    is complete; an interrupted generation leaves nothing half-written behind.
    """
    from .tasks import make_suite, remove_legacy_root_files, task_defs

    out = suite_dir(suite, seed, sample_rate)
    defs = task_defs()
    if only:
        picked = [t for t in defs if t.name in only or t.folder(suite) in only]
        unknown = [n for n in only if n not in {t.name for t in defs} | {t.folder(suite) for t in defs}]
        if unknown:
            raise TaskFolderError(f"suite {suite!r} has no task {unknown}; it has {[t.name for t in defs]}")
        defs = picked
    current = [out / t.folder(suite) for t in defs]
    remove_legacy_root_files(out)  # an older release's cache
    missing = [t for t in defs if not (out / t.folder(suite) / "task_metadata.json").is_file()]
    if not missing:
        return current
    out.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    if progress:
        print(f"generating {len(missing)} task(s) of the {suite} suite (seed {seed}, {sample_rate} Hz) "
              f"into {out}", file=sys.stderr, flush=True)
    try:
        try:
            make_suite(suite, tmp, seed=seed, rates=[sample_rate], progress=progress,
                       tasks=[t.name for t in missing])
        except Exception as e:
            if type(e).__name__ == "MissingSource":  # hear_models.evaluation.tasks._sources
                raise SuiteUnavailable(f"cannot generate the {suite} suite: {e}") from None
            raise
        for t in missing:
            dst = out / t.folder(suite)
            if dst.exists():
                shutil.rmtree(dst)
            os.replace(tmp / t.folder(suite), dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return current


def find_tasks(tasks_dir: Path, only: Optional[Sequence[str]] = None) -> List[Path]:
    """Task folders (those with task_metadata.json) in ``tasks_dir``, filtered by ``only``
    (folder names or task_name values)."""
    tasks_dir = Path(tasks_dir)
    if not tasks_dir.is_dir():
        raise TaskFolderError(f"{tasks_dir}: no such folder of tasks (and not a suite name: "
                              f"{', '.join(SUITES)})")
    if (tasks_dir / "task_metadata.json").exists():  # one task folder given
        folders = [tasks_dir]
    else:
        folders = sorted(p for p in tasks_dir.iterdir() if (p / "task_metadata.json").is_file())
    if not folders:
        raise TaskFolderError(f"{tasks_dir}: holds no task folder (no */task_metadata.json)")
    if only:
        names = {}
        for p in folders:
            names[p.name] = p
            try:
                names.setdefault(json.loads((p / "task_metadata.json").read_text())["task_name"], p)
            except (json.JSONDecodeError, KeyError):
                pass
        unknown = [n for n in only if n not in names]
        if unknown:
            raise TaskFolderError(f"{tasks_dir}: no task {unknown}; it holds {[p.name for p in folders]}")
        picked = []
        for n in only:
            if names[n] not in picked:
                picked.append(names[n])
        folders = picked
    return folders


# -- models ----------------------------------------------------------------------------
def resolve_model(name: str, weights: Optional[str], user_options: dict) -> Tuple[str, str, dict, str]:
    """-> (module path, weights, load_model options, embeddings folder name)."""
    from hear_models import registry

    r = registry.resolve(name, weights, **user_options)
    folder = name + options_suffix(user_options)
    if weights is not None:  # heareval's name ignores the weights: two checkpoints would collide
        folder += options_suffix({"weights": Path(weights).name or str(weights) or "none"})  # '': no weights
    return r.module, r.weights, r.options, folder


def load_embedder(module_path: str, weights: str, options: dict, device: Optional[str]) -> Embedder:
    from hear_models import registry

    try:
        module, model = registry.load(module_path, weights, **options)
    except (ImportError, KeyError) as e:
        raise SystemExit(f"error: {e.args[0] if e.args else e}") from None
    return Embedder(module, model, device)


# -- the command -----------------------------------------------------------------------
def launcher_shard() -> Tuple[int, int, bool]:
    """(rank, world size, launched) from torchrun's environment; (0, 1, False) without one."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), True
    return 0, 1, False


def parse_shard(text: str) -> Tuple[int, int]:
    """``"K/N"`` -> (K, N), 0 <= K < N."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected K/N, e.g. 0/4") from None
    if not 0 <= k < n:
        raise ValueError(f"--shard {text!r}: expected 0 <= K < N")
    return k, n


def _wait_merged(pairs, n_shards: int, say, poll: float = 2.0) -> None:
    """Rank 0 of a launched run: merge every task as soon as all its shards are done."""
    pending = list(pairs)
    while pending:
        pending = [(t, d) for t, d in pending if not merge_shards(t, d, n_shards, exclusive=False)]
        if pending:
            time.sleep(poll)
    say(f"merged {len(pairs)} task(s) from {n_shards} shards")


def evaluate(models: Sequence[str], tasks: str, only: Optional[Sequence[str]] = None,
             model_options: Optional[dict] = None, weights: Optional[str] = None,
             grid: str = "default", grid_points: int = 8, out: Path = Path("hear_eval"),
             embeddings_dir: Optional[Path] = None, device: Optional[str] = None,
             seed: int = 0, predict: bool = True, progress: bool = True,
             shard: Optional[Tuple[int, int]] = None, keep_going: bool = False,
             leaderboard: str = "best,seeds", jobs: int = 1) -> Tuple[List[dict], int]:
    """Evaluate models on tasks; returns (result rows, number of failed tasks).

    ``shard=(k, n)``: compute only shard k of n of the embeddings (see the module
    docstring); ``None``: torchrun's rank and world size if launched by it, else all.
    Task folders given as a folder are checked before any model loads, and heareval's
    install before anything is embedded. ``keep_going``: bad task folders are left out and
    listed (``settings["bad_tasks"]``) instead of stopping the run.
    """
    rank, world, launched = launcher_shard() if shard is None else (*shard, False)
    if launched and device is None:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    out = Path(out).resolve()
    emb_root = Path(embeddings_dir).resolve() if embeddings_dir else out / "embeddings"
    user_options = dict(model_options or {})
    rows: List[dict] = []
    failures = 0
    t_all = time.time()
    merger = world == 1 or (launched and rank == 0)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    bad: Dict[str, str] = {}  # task folder -> why it was left out (keep_going)
    given: Optional[List[Path]] = None
    if predict:
        check_heareval()  # before any model loads or anything is embedded
    for name in models:  # a typo in the last model's name is found before the first one runs
        resolve_model(name, weights, user_options)
    if tasks not in SUITES:  # every folder checked before a model loads (the rate comes later)
        given = []
        for f in find_tasks(Path(tasks), only):
            try:
                read_task(f)
                given.append(f)
            except TaskFolderError as e:
                if not keep_going:
                    raise
                bad[f.name] = str(e)
        if not given:
            raise TaskFolderError(f"{tasks}: no usable task folder ({len(bad)} bad)")
    model_details = []
    task_folders: Dict[str, Path] = {}
    for name in models:
        module_path, w, options, folder = resolve_model(name, weights, user_options)
        t0 = time.time()
        embedder = load_embedder(module_path, w, options, device)
        rate = embedder.sample_rate
        model_details.append({"name": folder, "module": module_path, "weights": w, "options": options,
                              "description": str(getattr(embedder.model, "description", "") or
                                                 (registry_description(name))),
                              "precision": model_precision(embedder)})
        say(f"[{name}] {module_path} loaded in {time.time() - t0:.1f} s ({rate} Hz, device {embedder.device})")
        folders = ensure_suite(tasks, seed, rate, only, progress) if given is None else given
        checked = []
        for f in folders:  # the audio at this model's rate, before any compute
            try:
                checked.append(read_task(f, rate))
            except TaskFolderError as e:
                if not keep_going:
                    raise
                bad[f.name] = str(e)
        task_folders.update({t.name: t.path for t in checked})
        seconds: Dict[str, Dict[str, float]] = {}
        emb_dirs = []
        for task in checked:
            emb_dir = emb_root / folder / task.name
            emb_dirs.append(emb_dir)
            if is_done(emb_dir):
                say(f"[{name}] embeddings {task.name}: done before, skipped")
                continue
            if world == 1:
                s = embed_task(embedder, task, emb_dir, progress=progress)
            else:
                s = embed_task_shard(embedder, task, emb_dir, rank, world, progress=progress)
                if s is None:
                    say(f"[{name}] embeddings {task.name} shard {rank}/{world}: done before, skipped")
                    s = 0.0
                if not launched:  # the last shard to finish merges
                    merge_shards(task, emb_dir, world)
            seconds[task.name] = {"embed": s}
            say(f"[{name}] embeddings {task.name}{'' if world == 1 else f' shard {rank}/{world}'}: {s:.1f} s")
        del embedder
        gc.collect()
        if world > 1:
            if launched and rank == 0:
                _wait_merged(list(zip(checked, emb_dirs)), world, say)
            else:
                continue  # other ranks / --shard runs: no predictions, no results
        if predict:
            say(f"[{name}] heareval predictions: grid {grid}, {grid_points} grid point(s), "
                f"{len(emb_dirs)} task(s); log {out / 'logs' / (folder + '.predictions.log')}")
            outcomes = run_predictions(emb_dirs, grid=grid, grid_points=grid_points,
                                       log_path=out / "logs" / f"{folder}.predictions.log",
                                       progress=progress, jobs=jobs)
            for o in outcomes:
                seconds.setdefault(o.task_dir.name, {})["predict"] = o.seconds
                failures += not o.ok
        for emb_dir in emb_dirs:
            rows += task_rows(folder, emb_dir, seconds.get(emb_dir.name))
    settings = {"models": list(models), "tasks": str(tasks), "only": list(only or []),
                "model_options": user_options, "weights": weights, "grid": grid,
                "grid_points": grid_points, "grid_settings": grid_settings(grid), "seed": seed,
                "prediction_jobs": jobs,
                "tasks_text": tasks_text(tasks, seed, task_folders), "task_folders": sorted(task_folders),
                "bad_tasks": bad, "model_details": model_details, "heareval_version": _version("heareval"),
                "environment": environment(), "leaderboard": leaderboard,
                "wall_s": round(time.time() - t_all, 1)}
    if merger:
        write_results(rows, out, settings, leaderboard)
    return rows, failures


def check_heareval(hint: str = "; --embeddings-only works without it") -> None:
    """heareval and the pytorch-lightning it needs are installed (checked before any model
    loads, so a missing tool does not cost an embedding run)."""
    import importlib.util

    from hear_models.tools import missing_dependency_message

    if importlib.util.find_spec("heareval") is None:
        raise ToolMissing(missing_dependency_message("heareval") + hint)
    pl = _version("pytorch-lightning")
    if pl is None:
        raise ToolMissing("pytorch-lightning is not installed; heareval needs pytorch-lightning<2: "
                          "pip install 'pytorch-lightning==1.9.5'")
    if int(pl.split(".")[0]) >= 2:
        raise ToolMissing(f"pytorch-lightning {pl} is installed; heareval 2021.1.3 needs "
                          "pytorch-lightning<2 (1.9.5 works): pip install 'pytorch-lightning==1.9.5'")


class ToolMissing(RuntimeError):
    """A tool the evaluation needs (heareval, its pytorch-lightning) is missing."""


def _version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def model_precision(embedder: Embedder) -> str:
    """The precision the model runs in on the run's device, in words ("" for HEAR modules
    of other packages)."""
    text = getattr(embedder.model, "precision_text", None)
    return text(embedder.device) if callable(text) else ""


def registry_description(name: str) -> str:
    from hear_models import registry

    try:
        return registry.get_spec(name).description
    except KeyError:
        return ""


def tasks_text(tasks: str, seed: int, folders: Dict[str, Path]) -> str:
    """The task set in words: which suite (and seed) or folder, and the task versions."""
    names = ", ".join(sorted(folders))
    if tasks in SUITES:
        return (f"offline `{tasks}` suite (seed {seed}; generated from Debian/PyPI audio, "
                f"docs/tasks.md), {len(folders)} task(s): {names}")
    return f"task folders in `{tasks}`, {len(folders)} task(s): {names}"


def environment() -> Dict[str, str]:
    """Versions and machine, for the protocol line."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hear-models": _version("hear-models") or "?", "torch": torch.__version__,
            "CPU": cpu, "threads": str(torch.get_num_threads())}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hear-models evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL", help="registry name or HEAR module")
    p.add_argument("--tasks", required=True, help="folder of HEAR task folders, or smoke | small | mini "
                   "(the offline suite, generated into the cache; a folder named so: ./smoke)")
    p.add_argument("--task", action="append", default=None, metavar="NAME",
                   help="only this task (folder name or task_name; repeatable)")
    p.add_argument("--model-options", default="{}", help="JSON object of load_model keyword options")
    p.add_argument("--weights", default=None, help="model_file_path for load_model (default: the "
                   "registry's, or '' for a module)")
    p.add_argument("--grid", default="default", choices=GRIDS, help="heareval's grid (default: default)")
    p.add_argument("--grid-points", type=int, default=8, help="grid points tried (heareval default 8)")
    p.add_argument("--out", default="hear_eval", help="results, logs and (by default) embeddings")
    p.add_argument("--embeddings-dir", default=None, help="default: OUT/embeddings")
    p.add_argument("--device", default=None, help="torch device for embeddings (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="seed of a generated suite")
    p.add_argument("--embeddings-only", action="store_true", help="stop after the embeddings")
    p.add_argument("--shard", default=None, metavar="K/N", help="compute only shard K of N of the "
                   "embeddings (0-based; the last to finish merges); under torchrun the rank is used")
    p.add_argument("--jobs", type=int, default=1, help="heareval prediction processes at once (each on "
                   "its share of the tasks; heareval is mostly single-threaded: 2 on 2 cores)")
    p.add_argument("--keep-going", action="store_true", help="leave bad task folders out (listed at the "
                   "end, exit status 1) instead of stopping before anything is computed")
    p.add_argument("--leaderboard", default="best,seeds", metavar="WHICH",
                   help="published HEAR 2021 columns beside REAL HEAR tasks: best (best system per task), "
                   "top3, seeds (" + ", ".join(_SEEDS) + "), all, none, or system names, comma-separated "
                   "(default: best,seeds)")
    p.add_argument("--quiet", action="store_true")
    return p


def parse_model_options(text: str) -> dict:
    """``--model-options``: a JSON object, or ValueError saying what is wrong."""
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-options is not JSON ({e})") from None
    if not isinstance(options, dict):
        raise ValueError("--model-options must be a JSON object")
    return options


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        options = parse_model_options(a.model_options)
        if a.grid_points < 1:
            raise ValueError("--grid-points must be >= 1")
        if a.jobs < 1:
            raise ValueError("--jobs must be >= 1")
        shard = parse_shard(a.shard) if a.shard else None
        leaderboard_columns(a.leaderboard)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    try:
        rows, failures = evaluate(a.models, a.tasks, a.task, options, a.weights, a.grid, a.grid_points,
                                  Path(a.out), a.embeddings_dir, a.device, a.seed,
                                  predict=not a.embeddings_only, progress=not a.quiet, shard=shard,
                                  keep_going=a.keep_going, leaderboard=a.leaderboard, jobs=a.jobs)
    except TaskFolderError as e:
        print(f"error: bad task folder: {e}" + ("" if a.keep_going else
              " (--keep-going evaluates the other tasks)"), file=sys.stderr)
        return 2
    except (SuiteUnavailable, ToolMissing) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not rows:  # a shard of a sharded run: rank 0 / a plain run writes the results
        return 0
    out = Path(a.out)
    data = json.loads((out / "results.json").read_text())
    settings = data["settings"]
    print(markdown(rows, settings, a.leaderboard))
    print(headline(rows, settings, out), file=sys.stderr)
    bad = settings.get("bad_tasks") or {}
    for name, why in bad.items():
        print(f"left out (bad task folder): {name}: {why}", file=sys.stderr)
    if failures:
        print(f"{failures} task(s) failed; see {out / 'logs'}", file=sys.stderr)
    return 1 if failures or bad else 0


if __name__ == "__main__":
    sys.exit(main())
