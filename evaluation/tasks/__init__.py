"""The offline HEAR task suite: task folders in the hear-preprocess layout.

``make_suite("smoke", "tasks/")`` writes one folder per task,
``tasks/<task_name>-<version>-<suite>/`` with ``task_metadata.json``,
``labelvocabulary.csv``, ``<split>.json`` and ``<rate>/<split>/<clip>.wav``
(16-bit PCM, as hear-preprocess writes), plus three sidecars heareval does not read:
``groups.json`` (the grouping key of every clip), ``suite.json`` (suite, seed, rates, tool
versions, this task's counts) and ``MANIFEST.sha256`` (sha256 of every other file of the
folder).  Nothing is written at the top of ``out`` but the task folders: heareval's
``--task all`` takes every entry there for a task.

Sounds come from Debian packages (``scripts/install_task_sources.sh``) and one
PyPI wheel; see ``docs/tasks.md`` for a card per task.  Nothing heavy happens
at import time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

SUITES = ("smoke", "small", "mini")
HEAR_RATES = (16000, 22050, 32000, 44100, 48000)
SUITE_FORMAT_VERSION = 1

__all__ = ["make_suite", "list_tasks", "task_defs", "verify_task_manifest", "SUITES", "main"]


def task_defs():
    """All task definitions, in a stable order."""
    from ._defs import TASKS

    return list(TASKS)


def list_tasks(suite: Optional[str] = None) -> List[Dict[str, object]]:
    """One dict per task: name, HEAR analogue, kind, metrics, split mode, size."""
    out = []
    for t in task_defs():
        row = {
            "name": t.name,
            "hear_task": t.hear_task,
            "embedding_type": t.embedding_type,
            "prediction_type": t.prediction_type,
            "split_mode": t.split_mode,
            "nfolds": t.nfolds,
            "sample_duration": t.sample_duration,
            "evaluation": list(t.evaluation),
            "group_key": t.group_key,
            "sources": list(t.sources),
        }
        if suite is not None:
            _check_suite(suite)
            row["size"] = dict(t.sizes[suite])
        out.append(row)
    return out


def _check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise ValueError(f"unknown task suite {suite!r}; choose one of: {', '.join(SUITES)}")


def _worker(args):
    from ._build import write_task

    task, suite, out, seed, rates = args
    t0 = time.time()
    info = write_task(task, suite, Path(out), seed, rates)
    info["seconds"] = round(time.time() - t0, 2)
    return info


def _sha256(path: Path) -> str:
    from hear_models.checkpoints import sha256_file

    return sha256_file(path)


SUITE_FILE = "suite.json"        # inside each task folder
MANIFEST_FILE = "MANIFEST.sha256"  # inside each task folder: every other file of it
TASK_INFO_KEYS = ("task", "folder", "clips", "splits", "labels")


def write_task_sidecars(task_dir: Path, info: dict) -> None:
    """``suite.json`` and ``MANIFEST.sha256`` inside one task folder (paths relative to it,
    sorted; the manifest lists every file but itself, ``suite.json`` included)."""
    task_dir = Path(task_dir)
    with open(task_dir / SUITE_FILE, "w") as f:
        json.dump(info, f, indent=1)
    files = []
    for root, dirs, fnames in os.walk(task_dir):
        dirs.sort()
        files += [Path(root) / fn for fn in fnames]
    rel = sorted(p.relative_to(task_dir).as_posix() for p in files)
    lines = [f"{_sha256(task_dir / r)}  {r}\n" for r in rel if r != MANIFEST_FILE]
    (task_dir / MANIFEST_FILE).write_text("".join(lines))


def remove_legacy_root_files(out: Path) -> None:
    """Earlier versions wrote ``suite.json`` / ``MANIFEST.sha256`` beside the task folders,
    where heareval's ``--task all`` took them for tasks; remove ours if found there."""
    for name in (SUITE_FILE, MANIFEST_FILE):
        p = Path(out) / name
        if p.is_file() and (name == MANIFEST_FILE or '"format_version"' in p.read_text()):
            p.unlink()


def verify_task_manifest(task_dir: Path) -> List[str]:
    """Files of a generated task folder that differ from its manifest (missing or changed)."""
    task_dir = Path(task_dir)
    bad = []
    for ln in (task_dir / MANIFEST_FILE).read_text().splitlines():
        digest, rel = ln.split("  ", 1)
        p = task_dir / rel
        if not p.is_file() or _sha256(p) != digest:
            bad.append(rel)
    return bad


def make_suite(suite: str, out: Union[str, Path], seed: int = 0,
               rates: Sequence[int] = (16000,), progress: bool = True,
               tasks: Optional[Sequence[str]] = None, workers: Optional[int] = None) -> Path:
    """Generate the ``smoke`` or ``mini`` suite into ``out``; returns ``out``.

    ``tasks`` restricts generation to some task names (the manifest then covers
    those only).  Same seed, rates and tool versions give the same bytes.
    """
    _check_suite(suite)
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rates = [int(r) for r in rates]
    if not rates:
        raise ValueError("at least one sample rate is needed")
    for r in rates:
        if r < 8000 or r > 48000:
            raise ValueError(f"unsupported sample rate {r} (use rates up to 48000, e.g. "
                             f"{', '.join(map(str, HEAR_RATES))})")
    rates = sorted(set(rates))
    defs = task_defs()
    names = [t.name for t in defs]
    if tasks is not None:
        unknown = [t for t in tasks if t not in names]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(names)}")
        defs = [t for t in defs if t.name in set(tasks)]
    from ._sources import check_all, tool_versions

    check_all()
    if any("animals" in t.sources for t in defs):
        from ._sources import animal_files

        animal_files()  # fetch/verify once, before the workers start
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_legacy_root_files(out)
    jobs = [(t, suite, str(out), int(seed), rates) for t in sorted(defs, key=lambda t: -t.cost)]
    if workers is None:
        workers = min(len(jobs), os.cpu_count() or 1, 4)
    results = []
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc=f"tasks ({suite})", unit="task")
        except ImportError:  # pragma: no cover
            bar = None
    t0 = time.time()
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn" if sys.platform == "darwin" else "fork")
        with ctx.Pool(workers) as pool:
            for info in pool.imap_unordered(_worker, jobs):
                results.append(info)
                if bar is not None:
                    bar.set_postfix_str(f"{info['task']} {info['seconds']}s")
                    bar.update(1)
    else:
        for job in jobs:
            info = _worker(job)
            results.append(info)
            if bar is not None:
                bar.set_postfix_str(f"{info['task']} {info['seconds']}s")
                bar.update(1)
    if bar is not None:
        bar.close()
    results.sort(key=lambda r: r["task"])
    common = {"suite": suite, "seed": int(seed), "sample_rates": rates,
              "format_version": SUITE_FORMAT_VERSION, "tool_versions": tool_versions()}
    for r in results:
        write_task_sidecars(out / r["folder"], {**common, "task": {k: r[k] for k in TASK_INFO_KEYS}})
    if progress:
        total = sum(r["clips"] for r in results)
        print(f"{suite}: {len(results)} tasks, {total} clips, rates {rates}, "
              f"{time.time() - t0:.1f}s -> {out}", file=sys.stderr)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m hear_models.evaluation.tasks make --suite smoke --out DIR``."""
    p = argparse.ArgumentParser(prog="hear-models tasks",
                                description="Offline HEAR task suite (hear-preprocess layout).")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="generate a suite")
    m.add_argument("--suite", required=True, help="smoke | small | mini")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--rates", default="16000", help="comma-separated, e.g. 16000,32000")
    m.add_argument("--task", action="append", default=None, help="only this task (repeatable)")
    m.add_argument("--workers", type=int, default=None)
    m.add_argument("--quiet", action="store_true")
    ls = sub.add_parser("list", help="list the tasks")
    ls.add_argument("--suite", default=None)
    pr = sub.add_parser("difficulty", aliases=["probe"],
                        help="model-free difficulty of generated scene tasks (log-mel statistics "
                        "+ logistic regression; needs scikit-learn)")
    pr.add_argument("dir", help="a suite folder or one task folder")
    a = p.parse_args(argv)
    from ._sources import MissingSource

    try:
        if a.cmd == "list":
            for row in list_tasks(a.suite):
                print(f"{row['name']:24s} {row['hear_task']:24s} {row['embedding_type']:5s} "
                      f"{row['prediction_type']:10s} {row['split_mode']:15s} "
                      f"{','.join(row['evaluation'])}"
                      + (f"  {row['size']}" if 'size' in row else ""))
            return 0
        if a.cmd in ("difficulty", "probe"):
            from ._difficulty import difficulty_suite

            for row in difficulty_suite(Path(a.dir)):
                if "skipped" in row:
                    print(f"{row['task']:24s} skipped ({row['skipped']})")
                else:
                    print(f"{row['task']:24s} {row['metric']:12s} {row['score']:.3f} "
                          f"(chance {row['chance']:.3f}, {row['clips']} clips)")
            return 0
        rates = [int(r) for r in str(a.rates).split(",") if r.strip()]
        make_suite(a.suite, a.out, seed=a.seed, rates=rates, progress=not a.quiet,
                   tasks=a.task, workers=a.workers)
        return 0
    except (ValueError, MissingSource) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
