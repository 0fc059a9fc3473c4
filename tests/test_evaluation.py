"""hear-models evaluate: heareval-format embeddings, heareval's predictions with our
run-time fixes, result tables, task-folder checks, resuming, suites by name.

Uses two smoke tasks (a scene and an event task) and Whisper tiny.en to stay short.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import copy_tasks, need  # noqa: E402

need("heareval")
need("pytorch_lightning")

from hear_models.evaluation import embeddings as E  # noqa: E402
from hear_models.evaluation import hear2021, predict, results, runner  # noqa: E402

SCENE = "spoken_keywords-v1-smoke"
EVENT = "office_events-v1-smoke"
PY = sys.executable


@pytest.fixture(scope="module")
def suite(smoke_suite, tmp_path_factory):
    return copy_tasks(smoke_suite, tmp_path_factory.mktemp("tasks"), ["spoken_keywords", "office_events"])


@pytest.fixture(scope="module")
def embedder():
    module = importlib.import_module("hear_models.whisper_at")
    return E.Embedder(module, module.load_model("offline:tiny.en"), device="cpu")


@pytest.fixture(scope="module")
def ours(suite, embedder, tmp_path_factory):
    root = tmp_path_factory.mktemp("ours") / "hear_models.whisper_at"
    for name in (SCENE, EVENT):
        E.embed_task(embedder, E.read_task(suite / name, 16000), root / name, progress=False)
    return root


@pytest.fixture(scope="module")
def theirs(suite, tmp_path_factory):
    """What ``python -m heareval.embeddings.runner`` writes for the same module and tasks,
    run as a user runs it: ``--model "$(hear-models weights path whisper_tiny_en)"`` and
    the default ``--task all`` on the folder ``tasks make`` wrote (nothing but task folders)."""
    work = tmp_path_factory.mktemp("heareval")
    hm = [PY, "-m", "hear_models.cli"]
    path = subprocess.run(hm + ["weights", "path", "whisper_tiny_en"], capture_output=True, text=True,
                          timeout=600, check=True).stdout.strip()
    assert Path(path).is_file()
    proc = subprocess.run([PY, "-m", "heareval.embeddings.runner", "hear_models.whisper_at",
                           "--model", path, "--tasks-dir", str(suite),
                           "--embeddings-dir", str(work / "emb")],
                          cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "emb" / "hear_models.whisper_at"


@pytest.mark.slow
def test_heareval_predictions_command_on_heareval_embeddings(theirs, tmp_path):
    """``hear-models heareval predictions`` on heareval's own embedding folders (a scene and
    an event task), no environment variable set: heareval's scores files appear."""
    dirs = []
    for name in (SCENE, EVENT):
        dirs.append(tmp_path / name)
        shutil.copytree(theirs / name, dirs[-1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_FORCE")}
    proc = subprocess.run([PY, "-m", "hear_models.cli", "heareval", "predictions", *map(str, dirs),
                           "--grid", "faster", "--grid-points", "1"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Weights only load failed" not in proc.stdout + proc.stderr
    for d in dirs:
        scores = json.loads((d / predict.SCORES_FILE).read_text())
        meta = json.loads((d / "task_metadata.json").read_text())
        assert np.isfinite(scores["test"][f"test_{meta['evaluation'][0]}"]), d.name


# -- 1. embeddings equal heareval's -------------------------------------------------------
@pytest.mark.parametrize("task", [SCENE, EVENT])
def test_embeddings_equal_heareval_runner(task, ours, theirs):
    a, b = ours / task, theirs / task
    assert (a / E.DONE_MARKER).exists() and (b / E.DONE_MARKER).exists()
    meta = json.loads((b / "task_metadata.json").read_text())
    for name in ["task_metadata.json", "labelvocabulary.csv"] + [f"{s}.json" for s in meta["splits"]]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for split in meta["splits"]:
        dims = json.loads((b / f"{split}.embedding-dimensions.json").read_text())
        assert json.loads((a / f"{split}.embedding-dimensions.json").read_text()) == dims
        # raw float32 rows, no .npy header: the file is exactly rows x dim x 4 bytes
        assert (a / f"{split}.embeddings.npy").stat().st_size == dims[0] * dims[1] * 4
        x = np.memmap(a / f"{split}.embeddings.npy", dtype=np.float32, mode="r", shape=tuple(dims))
        y = np.memmap(b / f"{split}.embeddings.npy", dtype=np.float32, mode="r", shape=tuple(dims))
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
        assert (a / f"{split}.target-labels.pkl").read_bytes() == (b / f"{split}.target-labels.pkl").read_bytes()
        if meta["embedding_type"] == "event":
            fa = json.loads((a / f"{split}.filename-timestamps.json").read_text())
            fb = json.loads((b / f"{split}.filename-timestamps.json").read_text())
            # the slug is heareval's per-clip path: equal below the embeddings folder
            rel = lambda rows, root: [(str(Path(f).relative_to(root)), t) for f, t in rows]  # noqa: E731
            assert rel(fa, a) == rel(fb, b)
            assert len(fa) == dims[0]
        else:
            assert not (a / f"{split}.filename-timestamps.json").exists()


# -- 2. heareval's predictions, and the event-task fix -------------------------------------
def _small_event_task(suite: Path, dst: Path) -> Path:
    """The smoke event task cut to a few clips per split, so training is quick."""
    shutil.copytree(suite / EVENT, dst)
    for split, keep in (("train", 8), ("valid", 3), ("test", 3)):
        data = json.loads((dst / f"{split}.json").read_text())
        (dst / f"{split}.json").write_text(json.dumps(dict(list(data.items())[:keep])))
    return dst


@pytest.fixture(scope="module")
def event_embeddings(suite, embedder, tmp_path_factory):
    work = tmp_path_factory.mktemp("event")
    task = _small_event_task(suite, work / "tasks" / EVENT)
    out = work / "emb" / EVENT
    E.embed_task(embedder, E.read_task(task, 16000), out, progress=False)
    return out


@pytest.mark.slow
def test_event_task_evaluates_end_to_end_with_the_fix(event_embeddings, tmp_path):
    emb = tmp_path / EVENT
    shutil.copytree(event_embeddings, emb)
    [o] = predict.run_predictions([emb], grid="faster", grid_points=1, log_path=tmp_path / "log",
                                  progress=False)
    assert o.ok, o.error
    scores = json.loads((emb / predict.SCORES_FILE).read_text())
    for metric in ("event_onset_200ms_fms", "segment_1s_er"):
        assert np.isfinite(scores["test"][f"test_{metric}"])
    rows = results.task_rows("m", emb)
    assert [r["metric"] for r in rows] == ["event_onset_200ms_fms", "segment_1s_er"]
    assert all(r["status"] == "ok" for r in rows) and rows[1]["lower_is_better"]
    # the log shows the fixes were applied in the child process
    assert "'fit_loop_current_epoch': True" in (tmp_path / "log").read_text()
    # rerun with the same settings: skipped; with another grid: recomputed
    [again] = predict.run_predictions([emb], grid="faster", grid_points=1, progress=False)
    assert again.ok and again.skipped
    assert not predict.is_current(emb, "faster", 2)


@pytest.mark.slow
def test_event_task_fails_without_the_fix(event_embeddings, tmp_path):
    """heareval as published on PL >= 1.8: KeyError at test time (hear-eval-kit #432)."""
    emb = tmp_path / EVENT
    shutil.copytree(event_embeddings, emb)
    env = dict(os.environ, HEAR_MODELS_NO_EPOCH_FIX="1")
    [o] = predict.run_predictions([emb], grid="faster", grid_points=1, progress=False, env=env)
    assert not o.ok
    assert "KeyError" in o.error and "epoch_best_postprocessing" in o.error
    assert not (emb / predict.SCORES_FILE).exists()


def test_fit_loop_fix_sets_the_epoch_lightning_reads():
    from pytorch_lightning.loops.fit_loop import FitLoop

    from hear_models.evaluation.heareval_runners import fix_fit_loop_current_epoch

    fix_fit_loop_current_epoch()
    loop = FitLoop(max_epochs=10)
    loop.current_epoch = 7
    assert loop.epoch_progress.current.completed == 7 and loop.current_epoch == 7
    assert fix_fit_loop_current_epoch() is False  # idempotent


def test_heareval_checkpoints_load_with_weights_only():
    """heareval's predictor checkpoints load under torch's weights_only default once its grid's
    callables are allow-listed; an arbitrary class still does not."""
    import torch

    from hear_models.evaluation.heareval_runners import allow_heareval_checkpoints

    allow_heareval_checkpoints()
    # what Lightning 1.9 writes for heareval's predictor: its grid point among the hparams
    ckpt = {"epoch": 3, "hyper_parameters": {"embedding_norm": torch.nn.Identity,
                                             "hidden_norm": torch.nn.BatchNorm1d,
                                             "initialization": torch.nn.init.xavier_uniform_,
                                             "optim": torch.optim.Adam}}
    import io

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    buf.seek(0)
    assert torch.load(buf)["epoch"] == 3  # weights_only=True, torch's default
    buf = io.BytesIO()
    torch.save({"x": subprocess.Popen}, buf)
    buf.seek(0)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(buf)


def test_child_command_and_env():
    env = predict.child_env({"PATH": "/bin"})
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in env  # the fix lives in the child's code
    cmd = predict.command([Path("x")], "faster", 1)
    assert cmd[1:4] == ["-m", "hear_models.evaluation.heareval_runners", "predictions"]
    assert cmd[-6:] == ["--grid", "faster", "--grid-points", "1", "--deterministic", "True"]
    with pytest.raises(ValueError):
        predict.command([Path("x")], "fastest", 1)


# -- 3. bad task folders are refused, naming the file -----------------------------------
def _break(kind: str, t: Path) -> str:
    """Damage a copy of a scene task; returns the path the error must name."""
    if kind == "missing split file":
        (t / "valid.json").unlink()
        return str(t / "valid.json")
    if kind == "missing rate folder":
        (t / "16000").rename(t / "22050")
        return str(t / "16000")
    if kind == "audio at the wrong rate":
        import soundfile as sf

        clip = sorted((t / "16000" / "test").iterdir())[0]
        sf.write(str(clip), np.zeros(22050, dtype=np.float32), 22050)
        return str(clip)
    if kind == "label outside the vocabulary":
        data = json.loads((t / "train.json").read_text())
        data[next(iter(data))] = ["not_a_label"]
        (t / "train.json").write_text(json.dumps(data))
        return str(t / "train.json")
    if kind == "two labels in a multiclass task":
        data = json.loads((t / "test.json").read_text())
        data[next(iter(data))] = ["down", "go"]
        (t / "test.json").write_text(json.dumps(data))
        return str(t / "test.json")
    if kind == "missing audio file":
        clip = sorted((t / "16000" / "valid").iterdir())[0]
        clip.unlink()
        return str(clip)
    if kind == "metadata without a field heareval reads":
        meta = json.loads((t / "task_metadata.json").read_text())
        del meta["split_mode"]
        (t / "task_metadata.json").write_text(json.dumps(meta))
        return str(t / "task_metadata.json")
    if kind == "unknown metric":
        meta = json.loads((t / "task_metadata.json").read_text())
        meta["evaluation"] = ["top5_acc"]
        (t / "task_metadata.json").write_text(json.dumps(meta))
        return str(t / "task_metadata.json")
    if kind == "vocabulary with a gap":
        (t / "labelvocabulary.csv").write_text("idx,label\n0,down\n2,go\n")
        return str(t / "labelvocabulary.csv")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "missing split file", "missing rate folder", "audio at the wrong rate",
    "label outside the vocabulary", "two labels in a multiclass task", "missing audio file",
    "metadata without a field heareval reads", "unknown metric", "vocabulary with a gap"])
def test_bad_task_folder_error_names_the_file(kind, suite, tmp_path):
    t = tmp_path / SCENE
    shutil.copytree(suite / SCENE, t)
    E.read_task(t, 16000)  # intact: fine
    named = _break(kind, t)
    with pytest.raises(E.TaskFolderError) as err:
        E.read_task(t, 16000)
    assert named in str(err.value)


def test_cli_reports_a_bad_task_folder(suite, tmp_path, capsys):
    tasks = tmp_path / "tasks"
    shutil.copytree(suite / SCENE, tasks / SCENE)
    (tasks / SCENE / "test.json").unlink()
    rc = runner.main(["whisper_tiny_en", "--tasks", str(tasks), "--out", str(tmp_path / "out"),
                      "--embeddings-only", "--quiet"])
    assert rc == 2
    assert str(tasks / SCENE / "test.json") in capsys.readouterr().err
    assert not (tmp_path / "out" / "embeddings").exists()  # refused before any compute


def test_bad_task_folder_refused_before_the_model_loads(suite, tmp_path, capsys, monkeypatch):
    """Fail-fast by default, before any model loads; --keep-going evaluates the good tasks and
    lists the bad ones with their reasons."""
    tasks = tmp_path / "tasks"
    shutil.copytree(suite / SCENE, tasks / SCENE)
    shutil.copytree(suite / SCENE, tasks / "broken-v1-smoke")
    (tasks / "broken-v1-smoke" / "valid.json").unlink()
    loaded = []
    real = runner.load_embedder
    monkeypatch.setattr(runner, "load_embedder", lambda *a, **k: loaded.append(1) or real(*a, **k))
    args = ["whisper_tiny_en", "--tasks", str(tasks), "--out", str(tmp_path / "out"), "--embeddings-only",
            "--quiet"]
    assert runner.main(args) == 2 and loaded == []
    assert "--keep-going" in capsys.readouterr().err
    assert runner.main(args + ["--keep-going"]) == 1 and loaded == [1]
    err = capsys.readouterr().err
    assert "left out (bad task folder): broken-v1-smoke:" in err and "valid.json" in err
    assert (tmp_path / "out" / "embeddings" / "whisper_tiny_en" / SCENE / E.DONE_MARKER).exists()
    settings = json.loads((tmp_path / "out" / "results.json").read_text())["settings"]
    assert list(settings["bad_tasks"]) == ["broken-v1-smoke"]


def test_missing_heareval_is_reported_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "heareval" else real(n, *a))
    monkeypatch.setattr(runner, "load_embedder", lambda *a, **k: pytest.fail("model loaded"))
    assert runner.main(["whisper_tiny_en", "--tasks", "smoke", "--out", str(tmp_path)]) == 2
    assert "heareval is not installed" in capsys.readouterr().err


def test_rate_folder_choice(suite, tmp_path):
    t = tmp_path / SCENE
    shutil.copytree(suite / SCENE, t)
    shutil.copytree(t / "16000", t / "48000")  # a second rate folder, as HEAR's release has
    task = E.read_task(t, 16000, check_audio=True)
    assert task.sample_rates() == [16000, 48000]
    with pytest.raises(E.TaskFolderError, match=r"offers \[16000, 48000\]"):
        E.read_task(t, 22050)
    with pytest.raises(E.TaskFolderError, match="Hz in the 48000 Hz folder"):
        E.read_task(t, 48000)  # the copied files are 16 kHz


# -- 4. resuming, suites by name, the CLI end to end ------------------------------------
def test_resume_skips_finished_tasks_and_redoes_unfinished(suite, tmp_path, capsys):
    tasks = tmp_path / "tasks"
    shutil.copytree(suite / SCENE, tasks / SCENE)
    out = tmp_path / "out"
    kw = dict(models=["whisper_tiny_en"], tasks=str(tasks), out=out, predict=False)
    runner.evaluate(**kw)
    emb = out / "embeddings" / "whisper_tiny_en" / SCENE
    stamp = (emb / "test.embeddings.npy").stat().st_mtime_ns
    capsys.readouterr()
    runner.evaluate(**kw)
    assert "done before, skipped" in capsys.readouterr().err
    assert (emb / "test.embeddings.npy").stat().st_mtime_ns == stamp
    # an interrupted task (no done marker, a stray partial file) is recomputed from scratch
    (emb / E.DONE_MARKER).unlink()
    (emb / ".test.rows.tmp").write_bytes(b"junk")
    runner.evaluate(**kw)
    assert (emb / E.DONE_MARKER).exists() and not (emb / ".test.rows.tmp").exists()
    assert (emb / "test.embeddings.npy").stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_suite_by_name_generates_once_then_evaluates(smoke_suite, tmp_path, monkeypatch, capsys):
    # smoke_suite: the task sources are installed (else skipped here, failed in CI)
    monkeypatch.setenv("HEAR_MODELS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = ["whisper_tiny_en", "--tasks", "smoke", "--task", "spoken_keywords", "--grid", "faster",
            "--grid-points", "1", "--out", str(out), "--quiet"]
    assert runner.main(args) == 0
    printed = capsys.readouterr().out
    cached = tmp_path / "cache" / "tasks" / "smoke-seed0" / SCENE
    assert (cached / "task_metadata.json").exists()
    assert f"| whisper_tiny_en | {SCENE} | speech_commands (analogue) | top1_acc * |" in printed
    data = json.loads((out / "results.json").read_text())
    [row] = data["rows"]
    assert row["status"] == "ok" and 0.0 <= row["score"] <= 1.0
    assert row["published"] == {}  # no leaderboard beside an offline analogue
    md = (out / "results.md").read_text()
    assert md.startswith("# hear-models evaluate") and "grid `faster`" in md and "1 grid point(s)" in md
    assert "offline `smoke` suite (seed 0;" in md and f"1 task(s): {SCENE}" in md
    assert "top1_acc" in (out / "results.csv").read_text()
    # second run: nothing generated, embeddings and predictions reused, same score
    import hear_models.evaluation.tasks as tasks_mod

    monkeypatch.setattr(tasks_mod, "make_suite", lambda *a, **k: pytest.fail("regenerated"))
    assert runner.main(args) == 0
    assert json.loads((out / "results.json").read_text())["rows"][0]["score"] == row["score"]


# -- 5. results tables: every split mode, metric, the leaderboard only for real tasks ----
def _fake_emb(dir_: Path, meta: dict, scores: dict, labels: dict, vocab, clips_per_split=None) -> Path:
    """An embedding folder as heareval leaves it, with ``clips_per_split`` clips listed per split."""
    dir_.mkdir(parents=True)
    (dir_ / "task_metadata.json").write_text(json.dumps(meta))
    (dir_ / "labelvocabulary.csv").write_text("idx,label\n" + "".join(f"{i},{v}\n" for i, v in enumerate(vocab)))
    (dir_ / predict.SCORES_FILE).write_text(json.dumps(scores))
    for split, labs in labels.items():
        with open(dir_ / f"{split}.target-labels.pkl", "wb") as f:
            pickle.dump(labs, f)
    for split, n in (clips_per_split or {}).items():
        (dir_ / f"{split}.json").write_text(json.dumps({f"{split}_{i}.wav": [vocab[0]] for i in range(n)}))
    return dir_


def _esc50(tmp_path: Path, name: str, per_fold: int, **meta_changes) -> Path:
    esc = dict(hear2021.TASKS["esc50-v2.0.0-full"], splits=[f"fold{i:02d}" for i in range(5)], **meta_changes)
    folds = {f"fold{i:02d}": {"test_top1_acc": 0.5 + i / 100, "test_mAP": 0.6, "test_d_prime": float("inf"),
                              "test_aucroc": 0.9} for i in range(5)}
    agg = {"test_top1_acc_mean": 0.52, "test_top1_acc_std": 0.016, "test_mAP_mean": 0.6, "test_mAP_std": 0.0,
           "test_d_prime_mean": float("inf"), "test_d_prime_std": float("nan"),
           "test_aucroc_mean": 0.9, "test_aucroc_std": 0.0}
    labels = {f"fold{i:02d}": [["dog"], ["dog"], ["cat"], ["rain"]] for i in range(5)}
    return _fake_emb(tmp_path / name, esc, {**folds, "aggregated_scores": agg}, labels, ["cat", "dog", "rain"],
                     {f"fold{i:02d}": per_fold for i in range(5)})


def test_results_for_real_hear_folders(tmp_path):
    e = _esc50(tmp_path, "esc50-v2.0.0-full", 400)  # the release: 2000 clips in 5 folds
    rows = results.task_rows("m", e)
    top1, m_ap, dprime, auc = rows
    assert (top1["score"], top1["std"], top1["folds"], top1["primary"]) == (0.52, 0.016, 5, True)
    assert top1["real_hear_task"] and top1["hear_task"] == "esc50"
    assert top1["chance"] == 0.5 and auc["chance"] == 0.5  # majority class "dog": 2 of 4
    assert abs(m_ap["chance"] - 1 / 3) < 1e-9
    # the whole published leaderboard for the primary metric, nothing for the others
    assert len(top1["published"]) >= 30
    assert top1["published"]["GURA Fuse Cat H+w+C"] == pytest.approx(0.734, abs=1e-3)
    assert top1["published"]["CP-JKU PaSST base"] == pytest.approx(0.947, abs=1e-3)
    assert m_ap["published"] == {}
    assert dprime["status"] == "not finite"

    dcase = dict(hear2021.TASKS["dcase2016_task2-hear2021-full"], splits=["train", "valid", "test"])
    d = _fake_emb(tmp_path / "dcase2016_task2-hear2021-full", dcase,
                  {"test": {"test_event_onset_200ms_fms": 0.41, "test_segment_1s_er": 0.7}}, {}, ["a"],
                  {"train": 48, "valid": 12, "test": 12})
    onset, er = results.task_rows("m", d)
    assert onset["score"] == 0.41 and onset["chance"] is None
    assert onset["published"]["GURA Fuse Cat H+w+C"] == pytest.approx(0.826, abs=1e-3)
    assert er["lower_is_better"] and er["score"] == 0.7

    rows_all = rows + [onset, er]
    table = results.markdown(rows_all)  # default columns: best system, then the seed systems
    best = max(top1["published"].items(), key=lambda kv: kv[1])
    assert (f"| m | esc50-v2.0.0-full | esc50 | top1_acc * | 0.520 | 0.016 (5) | 0.500 | "
            f"{best[1]:.3f} ({best[0]}) | 0.734 | 0.947 |") in table
    assert "segment_1s_er (↓)" in table
    # non-finite values say what they are; no bare nan
    assert "| ∞ † | undefined † (5) |" in table and "AUC = 1" in table
    assert "nan" not in table.lower().replace("nanmean", "")
    only = results.markdown(rows_all, leaderboard="CP-JKU PaSST base")
    assert only.splitlines()[0].endswith("| chance | CP-JKU PaSST base |")
    with pytest.raises(ValueError, match="did you mean"):
        results.leaderboard_columns("PaSST bse")
    paths = results.write_results(rows_all, tmp_path / "out", {"grid": "default", "grid_points": 1})
    data = json.loads(paths["json"].read_text())  # strict JSON despite nan / inf
    assert data["rows"][0]["published"]["CP-JKU PaSST base"] == pytest.approx(0.947, abs=1e-3)
    body = [ln for ln in paths["csv"].read_text().splitlines() if not ln.startswith("#")]
    assert len(body) == len(rows_all) + 1 and "published HEAR 2021 #1 system" in body[0]


def test_published_scores_need_the_release_s_content(tmp_path):
    """A folder laid out like esc50-v2.0.0-full, but not holding the release's 2000 clips, or
    written by the offline generator, gets no published column, and the table says why."""
    small = _esc50(tmp_path, "esc50-v2.0.0-full", 8)
    offline = _esc50(tmp_path, "esc50-offline", 400, hear_analogue="esc50", generator={"suite": "smoke"})
    changed = _esc50(tmp_path, "esc50-changed", 400, nfolds=4)
    for folder in (small, offline, changed):
        rows = results.task_rows("m", folder)
        assert not rows[0]["real_hear_task"] and rows[0]["published"] == {}, folder.name
    table = results.markdown(results.task_rows("m", small) + results.task_rows("m", changed))
    assert "HEAR 2021" not in table.splitlines()[0]
    assert "holds 40 clips; the release has 2000" in table
    assert "metadata differs (nfolds)" in table


def test_leaderboard_is_the_whole_published_one():
    rows = hear2021.leaderboard()
    assert len(hear2021.systems()) == 34
    assert {(r["task_name"], r["mode"]) for r in rows} == set(hear2021.NUM_CLIPS)
    assert all(r["source"].startswith("hearbenchmark.com docs/leaderboard.csv @3af3234") for r in rows)
    assert hear2021.published("nsynth_pitch", "5h")["GURA Avg Hubert+Crepe"][0] == pytest.approx(0.878, abs=1e-3)
    assert set(results.leaderboard_columns("all")) == set(hear2021.systems())
    assert results.leaderboard_columns("top3,seeds") == ["#1", "#2", "#3", *hear2021.SEED_SYSTEMS]


def test_protocol_and_headline():
    settings = {"grid": "default", "grid_points": 1, "heareval_version": "2021.1.3",
                "grid_settings": {"configs": 16, "max_epochs": [500]},
                "tasks_text": "offline `smoke` suite (seed 0), 2 task(s): a-v1-smoke, b-v2-smoke",
                "model_details": [{"name": "whisper_base", "module": "hear_models.whisper_at", "weights": "",
                                   "options": {}, "description": "Whisper base"}],
                "environment": {"hear-models": "0.1.0"}, "wall_s": 600}
    lines = results.protocol_lines(settings)
    text = "\n".join(lines)
    for part in ("grid `default` (configs 16, max_epochs [500])", "1 grid point(s)", "b-v2-smoke",
                 "`whisper_base`", "weights ''", "hear-models 0.1.0", "10.0 min"):
        assert part in text, part
    row = {"model": "m", "primary": True, "score": 0.4, "std": 0.1, "chance": 0.2, "task": "t",
           "task_name": "t", "metric": "top1_acc"}
    assert results.above_chance(row)  # 0.4 > 0.2 + 0.1
    assert not results.above_chance(dict(row, std=0.25))
    assert not results.above_chance(dict(row, score=0.24, std=0.0))  # within 0.05 of chance
    assert results.above_chance(dict(row, chance=None)) is None
    head = results.headline([row, dict(row, task="u", score=0.21)], settings)
    assert "1 of 2 scene tasks clearly above chance" in head and "10.0 min" in head


def test_missing_scores_are_reported_not_hidden(tmp_path):
    meta = dict(hear2021.TASKS["speech_commands-v0.0.2-5h"], splits=["train", "valid", "test"])
    d = _fake_emb(tmp_path / "sc", meta, {}, {}, ["yes"])
    (d / predict.SCORES_FILE).unlink()
    [row] = results.task_rows("m", d)
    assert row["status"] == "missing" and row["score"] is None
    assert "MISSING" in results.markdown([row])


# -- 6. the offline suite mirrors the real HEAR 2021 metadata ---------------------------
def test_metrics_and_split_modes_are_heareval_s():
    from heareval.score import available_scores

    assert set(hear2021.METRICS) == set(available_scores)
    for t in hear2021.TASKS.values():
        assert set(t["evaluation"]) <= set(hear2021.METRICS)
        assert t["split_mode"] in hear2021.SPLIT_MODES
    assert {t["split_mode"] for t in hear2021.TASKS.values()} == set(hear2021.SPLIT_MODES)


def test_offline_suite_metadata_mirrors_its_hear_analogue(suite):
    import hear_models.evaluation.tasks as tasks_mod
    compared = set()
    for t in tasks_mod.task_defs():
        ref = hear2021.reference(t.hear_task)
        assert ref is not None, f"{t.name}: analogue {t.hear_task!r} is not a HEAR 2021 task"
        for key in ("embedding_type", "prediction_type", "split_mode", "evaluation"):
            assert getattr(t, key) == ref[key] or list(getattr(t, key)) == ref[key], (t.name, key)
        assert t.nfolds == ref.get("nfolds"), (t.name, "nfolds")
        assert (t.evaluation_params or None) == ref.get("evaluation_params"), (t.name, "evaluation_params")
        assert t.extra.get("use_scoring_for_early_stopping") == ref.get("use_scoring_for_early_stopping"), t.name
        compared.add(ref["split_mode"])
    assert compared == set(hear2021.SPLIT_MODES)
    # written metadata: every field heareval reads, with values it accepts
    for folder in (SCENE, EVENT):
        meta_path = suite / folder / "task_metadata.json"
        meta = json.loads(meta_path.read_text())
        assert set(hear2021.HEAREVAL_REQUIRED_FIELDS) <= set(meta)
        E.check_metadata(meta, meta_path)
        ref = hear2021.reference(meta["hear_analogue"])
        for key in ("embedding_type", "prediction_type", "split_mode", "evaluation"):
            assert meta[key] == ref[key]
        assert meta.get("use_scoring_for_early_stopping") == ref.get("use_scoring_for_early_stopping")


def test_heareval_batch_size_and_folder_names():
    assert E.heareval_batch_size({"sample_duration": 1.0}, 16000) == 84
    assert E.heareval_batch_size({"sample_duration": 120.0}, 48000) == 1
    assert E.heareval_batch_size({"sample_duration": None}, 16000) == 1
    assert E.options_suffix({}) == ""
    assert E.options_suffix({"layers": "last", "combine": "mean"}) == "-layers=last-combine=mean"
    assert runner.resolve_model("whisper_tiny_en", None, {})[3] == "whisper_tiny_en"
    assert runner.resolve_model("hear_models.whisper_at", "x/y.pt", {"layers": 3})[3] == \
        "hear_models.whisper_at-layers=3-weights=y-pt"
    assert runner.resolve_model("whisper_tiny_en", "offline:base", {})[3] == "whisper_tiny_en-weights=offline-base"
    assert runner.resolve_model("conformer_tiny", "", {})[3] == "conformer_tiny-weights=none"  # random init


def test_predictions_that_cannot_start_fail_every_task_once(tmp_path):
    missing = [tmp_path / "no_such_task_a", tmp_path / "no_such_task_b"]
    outcomes = predict.run_predictions(missing, grid="faster", grid_points=1, progress=False,
                                       log_path=tmp_path / "log")
    assert [o.ok for o in outcomes] == [False, False]
    assert "should be a directory" in outcomes[0].error
    assert (tmp_path / "log").read_text().count("$ ") == 1  # one child, not one per task


def test_suite_by_name_ignores_older_task_versions_in_the_cache(smoke_suite, tmp_path, monkeypatch):
    """A cache filled by an older release keeps e.g. djembe_strokes-v1-smoke beside the
    current version: a suite name means the current versions only."""
    monkeypatch.setenv("HEAR_MODELS_CACHE", str(tmp_path / "cache"))
    from hear_models.evaluation.tasks import task_defs

    [djembe] = [t for t in task_defs() if t.name == "djembe_strokes"]
    stale = tmp_path / "cache" / "tasks" / "smoke-seed0" / "djembe_strokes-v0-smoke"
    stale.mkdir(parents=True)
    (stale / "task_metadata.json").write_text(json.dumps({"task_name": "djembe_strokes"}))
    folders = runner.ensure_suite("smoke", 0, 16000, only=["djembe_strokes"], progress=False)
    assert [f.name for f in folders] == [djembe.folder("smoke")] != ["djembe_strokes-v0-smoke"]
    assert (folders[0] / "task_metadata.json").is_file()


def _result_row(model, task, score, std=None, lower=False, primary=True, status="ok"):
    return {"model": model, "task": task, "task_name": task.split("-")[0], "metric": "top1_acc",
            "primary": primary, "lower_is_better": lower, "score": score, "std": std, "folds": 5 if std else 1,
            "chance": 0.1, "status": status}


def test_compare_counts_wins_on_shared_task_versions(tmp_path):
    """`hear-models compare`: a run split over two files is one run; tasks match by folder
    (version included); the count says how many tasks beat the baseline, and by a fold std."""
    from hear_models.evaluation import results

    def write(name, rows):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"settings": {}, "rows": rows}))
        return str(tmp_path / name)

    base = write("base", [_result_row("m", "a-v1-mini", 0.50, 0.05), _result_row("m", "b-v1-mini", 0.70),
                          _result_row("m", "c-v2-mini", 0.30, 0.01),
                          _result_row("m", "a-v1-mini", 0.9, primary=False)])
    new1 = write("new1", [_result_row("m2", "a-v1-mini", 0.52, 0.05), _result_row("m2", "c-v1-mini", 0.9, 0.01)])
    new2 = write("new2", [_result_row("m2", "b-v1-mini", 0.80), _result_row("m2", "c-v2-mini", 0.20, 0.01)])
    out = tmp_path / "cmp.md"
    assert results.main([base, f"pre={new1},{new2}", "--out", str(out)]) == 0
    table = out.read_text()
    lines = table.splitlines()
    assert lines[0] == "| task | metric | chance | base | pre |"
    assert [ln.split(" | ")[0] for ln in lines[2:5]] == ["| a-v1-mini", "| b-v1-mini", "| c-v2-mini"]
    assert "**0.520** ± 0.050" in lines[2] and "| **0.300** ± 0.010 | 0.200" in lines[4]
    # a: +0.02 < fold std (tie); b: +0.10, no folds (win); c: -0.10 > 0.01 (loss)
    assert lines[-1] == ("**Against base** (primary metric, 3 shared tasks; wins / ties / losses by more than "
                         "the larger fold std of the two, any difference on single-split tasks): pre 1 / 1 / 1.")
    assert "c-v1-mini (only in pre)" in table  # a task of one run only is named, not dropped silently

    with pytest.raises(ValueError, match="share no task"):
        results.compare(results.read_results([Path(new1)]), {"x": results.read_results([Path(new2) / "results.json"])})
    mixed = write("mixed", [_result_row("m", "a-v1-mini", 0.5), _result_row("z", "b-v1-mini", 0.5)])
    with pytest.raises(ValueError, match="holds 2 models"):
        results.read_results([Path(mixed)])


def test_compare_every_metric_and_clear_errors(tmp_path, capsys):
    """--metrics all: every metric the runs share (the primary marked); a missing or wrong
    path is one line on stderr and exit status 2, no traceback."""
    from hear_models.evaluation import results

    def write(name, rows):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"settings": {}, "rows": rows}))
        return str(tmp_path / name)

    def rows(model, acc, ap):
        return [_result_row(model, "a-v1-mini", acc, 0.01),
                dict(_result_row(model, "a-v1-mini", ap, 0.02, primary=False), metric="mAP"),
                dict(_result_row(model, "a-v1-mini", 0.9, primary=False), metric="aucroc", status="no score")]

    a, b = write("a", rows("m", 0.5, 0.6)), write("b", rows("m2", 0.4, 0.7))
    assert results.main([a, b]) == 0
    table = capsys.readouterr().out
    assert "mAP" not in table and "b 0 / 0 / 1" in table
    assert results.main([a, b, "--metrics", "all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| a-v1-mini | top1_acc * |") and "**0.500** ± 0.010 | 0.400 ± 0.010" in lines[2]
    assert lines[3].startswith("| a-v1-mini | mAP |") and "0.600 ± 0.020 | **0.700** ± 0.020" in lines[3]
    assert not any("aucroc" in ln for ln in lines)  # no score: not shown
    for args, message in (([a, str(tmp_path / "nope")], "nope: no such results file"),
                          ([a, f"x={b}", f"x={a}"], "two runs have the same label")):
        assert results.main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "probe.json").write_text("{}")
    assert results.main([a, str(tmp_path / "probe")]) == 2
    assert "a probe report" in capsys.readouterr().err
