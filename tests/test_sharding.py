"""Sharded embedding extraction: 2 CPU processes give the files of a single-process run.

Runs the real CLI in subprocesses (one thread each, so floats are bit-for-bit comparable):
a single-process run, then shard 1 of 2 alone (``--shard 1/2``: an interrupted sharded
run), then torchrun with 2 processes, which must resume (skip shard 1, compute shard 0),
merge, and write files equal byte for byte to the single-process run's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hear_models.evaluation import embeddings as E

PY = sys.executable
TASKS = ("spoken_keywords-v1-smoke", "office_events-v1-smoke")
MODEL = "whisper_tiny_en"


@pytest.fixture(scope="module")
def tasks(smoke_suite, tmp_path_factory):
    """Two smoke tasks (scene, event) cut to 6/3/3 clips, in batches of 2 clips."""
    src = smoke_suite
    out = tmp_path_factory.mktemp("tasks")
    for name in TASKS:
        shutil.copytree(src / name, out / name)
        meta = json.loads((out / name / "task_metadata.json").read_text())
        meta["sample_duration"] = 40.0  # heareval's batch size: int(0.7 * 120 / 40) = 2 clips
        (out / name / "task_metadata.json").write_text(json.dumps(meta))
        for split, keep in (("train", 6), ("valid", 3), ("test", 3)):
            data = json.loads((out / name / f"{split}.json").read_text())
            (out / name / f"{split}.json").write_text(json.dumps(dict(list(data.items())[:keep])))
    return out


def _run(args, emb, launcher=(), quiet=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [PY, *launcher, "-m", "hear_models.evaluation.runner", MODEL, "--tasks", str(emb.parent / "tasks"),
           "--embeddings-only", "--embeddings-dir", str(emb), "--out", str(emb.parent / "out"),
           *(["--quiet"] if quiet else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _files(task_dir: Path, root: Path):
    """Every file of a task folder but the timing profile; absolute paths made relative."""
    out = {}
    for f in sorted(task_dir.iterdir()):
        if f.name != "profile.embeddings.json":
            out[f.name] = f.read_bytes().replace(str(root).encode(), b"ROOT")
    return out


@pytest.fixture(scope="module")
def runs(tasks, tmp_path_factory):
    work = {}
    for kind in ("single", "sharded"):
        w = tmp_path_factory.mktemp(kind)
        (w / "tasks").symlink_to(tasks)
        work[kind] = w / "emb"
    _run([], work["single"])
    interrupted = _run(["--shard", "1/2"], work["sharded"])
    torchrun = _run([], work["sharded"], launcher=("-m", "torch.distributed.run", "--standalone",
                                                   "--nproc_per_node", "2"), quiet=False)
    return work, interrupted, torchrun


@pytest.mark.slow
def test_a_lone_shard_writes_its_part_only(runs):
    work, interrupted, _ = runs
    # (checked after the fact: the lone shard left no task folder, or torchrun resumed it)
    assert "shard 1/2" not in interrupted.stdout
    for name in TASKS:
        assert (work["sharded"] / MODEL / name / E.DONE_MARKER).exists()
        assert not E.shard_dir(work["sharded"] / MODEL / name, 2).exists()  # merged, cleaned


def test_torchrun_resumes_the_done_shard(runs):
    _, _, torchrun = runs
    log = torchrun.stdout + torchrun.stderr
    assert log.count("shard 1/2: done before, skipped") == len(TASKS), log[-3000:]


@pytest.mark.parametrize("name", TASKS)
def test_sharded_files_equal_single_process(runs, name):
    work, _, _ = runs
    single = work["single"] / MODEL / name
    sharded = work["sharded"] / MODEL / name
    a, b = _files(single, work["single"]), _files(sharded, work["sharded"])
    assert sorted(a) == sorted(b)
    assert any(k.endswith(".embeddings.npy") for k in a)
    for k in a:
        assert a[k] == b[k], f"{name}/{k} differs"
    profile = json.loads((sharded / "profile.embeddings.json").read_text())
    assert profile["shards"] == 2


def test_merge_waits_for_every_shard(tasks, tmp_path):
    from hear_models import registry
    from hear_models.evaluation.runner import load_embedder

    task = E.read_task(tasks / TASKS[0], 16000)
    r = registry.resolve(MODEL)
    module, weights, options = r.module, r.weights, r.options
    embedder = load_embedder(module, weights, options, "cpu")
    out = tmp_path / TASKS[0]
    assert E.embed_task_shard(embedder, task, out, 0, 3, progress=False) is not None
    assert E.embed_task_shard(embedder, task, out, 0, 3, progress=False) is None  # resumable
    assert not E.merge_shards(task, out, 3) and not out.exists()
    with pytest.raises(ValueError):
        E.embed_task_shard(embedder, task, out, 3, 3, progress=False)
