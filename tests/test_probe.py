"""``hear-models probe``: layer plan, features cache, determinism, reports (tiny synthetic tasks,
the untrained ``conformer_tiny``: 4 blocks, 16 kHz)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import need  # noqa: E402

need("heareval")
need("sklearn")
need("matplotlib")

from hear_models.evaluation import probe as P  # noqa: E402

MODEL = "conformer_tiny"
N_BLOCKS = 4
RATE = 16000


def _write_wav(path: Path, x: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), RATE, subtype="PCM_16")


def _tone(freq: float, seconds: float, rng) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return 0.3 * np.sin(2 * np.pi * freq * t * (1 + 0.02 * rng.standard_normal())) + 0.01 * rng.standard_normal(t.size)


def _meta(name, embedding, prediction, split_mode, splits, evaluation, duration):
    m = {"task_name": name, "version": "v1", "embedding_type": embedding, "prediction_type": prediction,
         "split_mode": split_mode, "splits": splits, "sample_duration": duration, "evaluation": evaluation,
         "mode": "test", "sample_rates": [RATE]}
    if split_mode != "trainvaltest":
        m["nfolds"] = len(splits)
    return m


def make_tasks(root: Path) -> Path:
    """A 3-fold 3-class scene task (low tone, high tone, noise) and a small event task."""
    rng = np.random.default_rng(0)
    scene = root / "tones-v1-test"
    labels = ["low", "high", "noise"]
    folds = ["fold00", "fold01", "fold02"]
    (scene).mkdir(parents=True)
    (scene / "task_metadata.json").write_text(json.dumps(_meta(
        "tones", "scene", "multiclass", "new_split_kfold", folds, ["top1_acc", "mAP"], 0.5)))
    (scene / "labelvocabulary.csv").write_text("idx,label\n" + "".join(f"{i},{lab}\n" for i, lab in enumerate(labels)))
    for f in folds:
        split = {}
        for k in range(6):
            lab = labels[k % 3]
            x = {"low": lambda: _tone(300, 0.5, rng), "high": lambda: _tone(2500, 0.5, rng),
                 "noise": lambda: 0.2 * rng.standard_normal(RATE // 2)}[lab]()
            clip = f"{f}_{k}.wav"
            _write_wav(scene / str(RATE) / f / clip, x)
            split[clip] = [lab]
        (scene / f"{f}.json").write_text(json.dumps(split))
    event = root / "beeps-v1-test"
    event.mkdir()
    (event / "task_metadata.json").write_text(json.dumps(_meta(
        "beeps", "event", "multilabel", "trainvaltest", ["train", "valid", "test"],
        ["event_onset_200ms_fms", "segment_1s_er"], 1.0)))
    (event / "labelvocabulary.csv").write_text("idx,label\n0,beep\n")
    for split, n in (("train", 4), ("valid", 2), ("test", 2)):
        data = {}
        for k in range(n):
            x = 0.01 * rng.standard_normal(RATE)
            start = 0.2 + 0.1 * k
            a, b = int(start * RATE), int((start + 0.3) * RATE)
            x[a:b] += _tone(1000, (b - a) / RATE, rng)
            clip = f"{split}_{k}.wav"
            _write_wav(event / str(RATE) / split / clip, x)
            data[clip] = [{"label": "beep", "start": 1000 * start, "end": 1000 * (start + 0.3)}]
        (event / f"{split}.json").write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    return make_tasks(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def first(tasks, tmp_path_factory):
    import warnings

    out = tmp_path_factory.mktemp("probe1")
    with warnings.catch_warnings():  # a scene and an event task, features and probes: no numpy warning
        warnings.simplefilter("error", RuntimeWarning)
        assert P.main([MODEL, "--tasks", str(tasks), "--out", str(out), "--quiet"]) == 0
    return out


def _scores(out: Path):
    return json.loads((out / "probe.json").read_text())["rows"]


# -- the layer plan ------------------------------------------------------------------------
def test_layer_plan_blocks_means_default_and_selection():
    plan = P.layer_plan(["0", "1", "2"])
    assert [p.key for p in plan] == ["0", "1", "2", "mean", "default"]
    assert plan[3].blocks == (0, 1, 2) and plan[1].depth == 1
    names = ["hubert.0", "hubert.1", "wav2vec2.0", "wav2vec2.1", "crepe.1", "crepe.2"]
    assert [p.key for p in P.layer_plan(names)][6:] == ["hubert.mean", "wav2vec2.mean", "crepe.mean", "default"]
    fusion = P.layer_plan(names, [80, 80, 64, 64, 1024, 128])  # no mean of CREPE's unequal layers
    assert [p.key for p in fusion][6:] == ["hubert.mean", "wav2vec2.mean", "default"]
    assert fusion[4].depth == 0  # crepe.1: the member's first block
    assert [p.key for p in P.select_layers(plan, "0,-1,default")] == ["0", "2", "default"]
    assert [p.key for p in P.select_layers(fusion, "hubert.1,crepe.2")] == ["hubert.1", "crepe.2"]
    with pytest.raises(ValueError, match="block 3 does not exist"):
        P.select_layers(plan, "3")
    with pytest.raises(ValueError, match="no layer 'hubert.9'"):
        P.select_layers(fusion, "hubert.9")


# -- the command ---------------------------------------------------------------------------
def _png_size(path: Path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_writes_every_output_with_one_row_per_layer(first):
    for name in ("probe.csv", "probe.json", "best_layers.csv", "report.md", "report.html"):
        assert (first / name).stat().st_size > 0, name
    for fig in ("scores", "best_layer_hist"):  # print size, and vector copies beside the PNG
        assert _png_size(first / f"{fig}.png")[0] >= 1200, fig
        assert (first / f"{fig}.svg").read_text().lstrip().startswith("<?xml")
        assert (first / f"{fig}.pdf").read_bytes()[:5] == b"%PDF-"
    rows = _scores(first)
    for task, metric in (("tones-v1-test", "top1_acc"), ("beeps-v1-test", "event_onset_200ms_fms")):
        mine = [r for r in rows if r["task"] == task]
        assert [r["layer"] for r in mine] == [str(i) for i in range(N_BLOCKS)] + ["mean", "default"]
        assert {r["metric"] for r in mine} == {metric}
        assert all(r["score"] is not None for r in mine)
    # conformer_tiny's default IS the mean of its blocks (taken once, checked on the first batch)
    info = json.loads((first / "features" / MODEL / "tones-v1-test" / "features.json").read_text())
    assert info["default_is_mean"] and info["widths"] == [64] * (N_BLOCKS + 1)
    by_layer = {(r["task"], r["layer"]): r["score"] for r in rows}
    assert by_layer["tones-v1-test", "default"] == by_layer["tones-v1-test", "mean"]
    tones = [r for r in rows if r["task"] == "tones-v1-test"]
    assert all(r["folds"] == 3 and r["chance"] == pytest.approx(1 / 3) for r in tones)
    # tones and noise are told apart by a random conv front end + linear probe
    assert max(r["score"] for r in tones) > 0.6
    with open(first / "probe.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    report = (first / "report.md").read_text()
    assert "scores.png" in report and "best_layer_hist.png" in report and "**Seed** 0" in report
    # the protocol as evaluate states it (results.protocol_lines), with the linear probe's first item
    assert "- **Protocol**: linear probe" in report and "- **Tasks**: task folders in" in report
    assert f"- **Model** `{MODEL}`: hear_models.conformer" in report and "- **Run**: hear-models" in report
    assert f"**Command**: `hear-models probe {MODEL} --tasks" in report
    # mean ± fold std, the best block of the task in bold
    line = next(ln for ln in report.splitlines() if ln.startswith("| tones-v1-test"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    best = cells[-1]
    tones = {r["layer"]: r for r in rows if r["task"] == "tones-v1-test"}
    assert best == max((k for k in tones if tones[k]["kind"] == "block"), key=lambda k: tones[k]["score"])
    assert cells[3 + int(best)] == f"**{tones[best]['score']:.3f}** ± {tones[best]['std']:.3f}"
    assert "## Degenerate features" in report
    page = (first / "report.html").read_text()  # self-contained: figures inline
    assert page.count('src="data:image/png;base64,') == 2 and 'src="scores.png"' not in page
    assert f"<b>{tones[best]['score']:.3f}</b> ± {tones[best]['std']:.3f}" in page


def test_histogram_counts_every_class_once(first):
    data = json.loads((first / "probe.json").read_text())
    classes = data["best_layers"]
    # tones: 3 classes; beeps: 1 class (frame-level)
    assert sorted((c["task"], c["class"]) for c in classes) == sorted(
        [("tones-v1-test", c) for c in ("low", "high", "noise")] + [("beeps-v1-test", "beep")])
    hist = data["histogram"][MODEL]
    assert sum(hist.values()) == 4  # every class once: at its best block, or as a tie
    assert set(hist) <= {str(i) for i in range(N_BLOCKS)} | {P.TIE}
    assert hist == P.histogram(classes)[MODEL]
    assert P.histogram([{"model": "m", "best_layer": b} for b in ("0", "2", "2", P.TIE)]) == \
        {"m": {"0": 1, "2": 2, P.TIE: 1}}


def test_same_seed_same_numbers_and_cache_skips_the_model(first, tmp_path, monkeypatch):
    """A second run on the same features does not run the encoder (hidden_states would
    raise) and reproduces every number; a fresh extraction reproduces them too."""
    from hear_models.models.conformer import ConformerFrameEncoder

    def boom(*a, **k):
        raise AssertionError("hidden_states called: the features cache was not used")

    tasks = Path(json.loads((first / "probe.json").read_text())["settings"]["tasks"])
    with monkeypatch.context() as m:
        m.setattr(ConformerFrameEncoder, "hidden_states", boom)
        again = tmp_path / "again"
        assert P.main([MODEL, "--tasks", str(tasks), "--out", str(again), "--quiet",
                       "--cache-dir", str(first / "features")]) == 0
    assert _scores(again) == _scores(first)
    fresh = tmp_path / "fresh"  # recomputed features (own cache)
    assert P.main([MODEL, "--tasks", str(tasks), "--out", str(fresh), "--quiet"]) == 0
    assert _scores(fresh) == _scores(first)


def test_cache_is_refreshed_when_the_task_changes(tasks, tmp_path):
    import shutil

    copy = tmp_path / "tasks"
    shutil.copytree(tasks / "tones-v1-test", copy / "tones-v1-test")
    out = tmp_path / "p"
    key = {"model": MODEL}
    from hear_models.evaluation.embeddings import read_task
    calls = []

    def make():
        calls.append(1)
        from hear_models.evaluation.runner import load_embedder, resolve_model

        module, w, options, _ = resolve_model(MODEL, None, {})
        return P.LayerEmbedder(load_embedder(module, w, options, "cpu"))

    feats, s1 = P.extract_features(read_task(copy / "tones-v1-test"), out, key, make, progress=False)
    assert len(calls) == 1 and s1 > 0 and feats.layer_names == [str(i) for i in range(N_BLOCKS)]
    _, s2 = P.extract_features(read_task(copy / "tones-v1-test"), out, key, make, progress=False)
    assert len(calls) == 1 and s2 == 0.0
    data = json.loads((copy / "tones-v1-test" / "fold00.json").read_text())
    first_clip = next(iter(data))
    data[first_clip] = ["high" if data[first_clip] != ["high"] else "low"]
    (copy / "tones-v1-test" / "fold00.json").write_text(json.dumps(data))
    P.extract_features(read_task(copy / "tones-v1-test"), out, key, make, progress=False)
    assert len(calls) == 2


def test_layers_option_and_clear_errors(tasks, first, tmp_path, capsys):
    out = tmp_path / "some"
    assert P.main([MODEL, "--tasks", str(tasks), "--task", "tones", "--layers=-1,default", "--out", str(out),
                   "--quiet", "--cache-dir", str(first / "features")]) == 0
    rows = _scores(out)
    assert [r["layer"] for r in rows] == ["3", "default"]
    assert [r["score"] for r in rows] == [r["score"] for r in _scores(first)
                                          if r["task"] == "tones-v1-test" and r["layer"] in ("3", "default")]
    assert P.main([MODEL, "--tasks", str(tasks), "--layers", "7", "--out", str(out), "--quiet",
                   "--cache-dir", str(first / "features")]) == 2
    assert "block 7 does not exist" in capsys.readouterr().err
    assert P.main([MODEL, "--tasks", str(tasks), "--task", "nosuch", "--out", str(out), "--quiet"]) == 2
    assert "no task ['nosuch']" in capsys.readouterr().err


def test_cli_dispatches_probe(tasks, first, tmp_path):
    from hear_models import cli

    out = tmp_path / "cli"
    assert cli.main(["probe", MODEL, "--tasks", str(tasks), "--task", "tones", "--layers", "0",
                     "--out", str(out), "--quiet", "--cache-dir", str(first / "features")]) == 0
    assert (out / "report.md").exists()


def test_named_member_blocks_of_unequal_widths(tasks, tmp_path):
    """CREPE (a GURA member, real weights): six conv layers of unequal widths, no mean."""
    out = tmp_path / "crepe"
    assert P.main(["crepe_tiny", "--tasks", str(tasks), "--task", "tones", "--out", str(out), "--quiet"]) == 0
    assert [r["layer"] for r in _scores(out)] == [f"crepe.{i}" for i in range(1, 7)] + ["default"]


# -- degenerate features, reports of several models, y-ranges -------------------------------
def test_standardiser_handles_constant_and_non_finite_without_warnings():
    import warnings

    x = np.array([[1.0, 5.0, np.nan], [2.0, 5.0, 1.0], [3.0, 5.0, np.inf], [4.0, 5.0, 3.0]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        norm = P.Standardiser(x)
        z = norm(x)
        assert P._std([0.5, float("inf"), 0.7]) != P._std([0.5, float("inf"), 0.7])  # NaN: undefined
        assert P._mean([0.5, float("inf")]) == float("inf")
    assert norm.constant == 1 and norm.non_finite == 2
    assert np.isfinite(z).all() and (z[:, 1] == 0).all()
    assert z[0, 2] == 0 and z[2, 2] == 0  # non-finite: the training mean of the dimension
    assert z[:, 0].mean() == pytest.approx(0, abs=1e-6) and z[:, 0].std() == pytest.approx(1, abs=1e-5)
    assert "2 non-finite values" in P.degenerate_text(3, 1, 2, 4)
    assert P.degenerate_text(3, 3, 0, 4).startswith("every dimension constant")
    assert P.degenerate_text(3, 0, 0, 4) == ""


def test_degenerate_layers_probe_without_warnings_and_are_named(tasks, first, tmp_path, monkeypatch):
    """A constant block and a block with NaN / inf values: no numpy warning from the probe,
    and the report says which layer of which task was degenerate."""
    import warnings

    real = P.Features.matrix

    def matrix(self, split, layer):
        x = real(self, split, layer)
        if layer.key == "1":
            return np.full_like(x, 0.25)
        if layer.key == "2":
            x = x.copy()
            x[::3, 0] = np.nan
            x[1::5, 1] = np.inf
        return x

    monkeypatch.setattr(P.Features, "matrix", matrix)
    out = tmp_path / "degenerate"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert P.main([MODEL, "--tasks", str(tasks), "--task", "tones", "--out", str(out), "--quiet",
                       "--cache-dir", str(first / "features")]) == 0
    rows = {r["layer"]: r for r in _scores(out)}
    assert rows["1"]["degenerate"].startswith("every dimension constant on a training split")
    assert "non-finite values" in rows["2"]["degenerate"]
    assert rows["0"]["degenerate"] == "" and rows["3"]["degenerate"] == ""
    assert rows["1"]["score"] == pytest.approx(1 / 3)  # a constant layer: the class prior, at chance
    report = (out / "report.md").read_text()
    assert "tones-v1-test, layer `1`: every dimension constant" in report
    assert "tones-v1-test, layer `2`:" in report and " ‡" in report


def test_from_draws_several_models_in_one_report(first, tmp_path):
    """--from: earlier runs drawn again without probing, several models in one report and
    one figure (conformer: 4 blocks, CREPE: 6 layers -> the relative depth of a block)."""
    from hear_models.evaluation.probe import report as R

    crepe = tmp_path / "crepe"
    tasks = json.loads((first / "probe.json").read_text())["settings"]["tasks"]
    assert P.main(["crepe_tiny", "--tasks", tasks, "--task", "tones", "--out", str(crepe), "--quiet"]) == 0
    both = tmp_path / "both"
    assert P.main(["--from", str(first), "--from", str(crepe), "--out", str(both), "--y-range", "panel",
                   "--note", "Two models."]) == 0
    data = json.loads((both / "probe.json").read_text())
    assert data["rows"] == _scores(first) + _scores(crepe)  # numbers unchanged
    assert [(m, mem, n) for m, mem, n in R.curves(data["rows"])] == [(MODEL, "", 4), ("crepe_tiny", "crepe", 6)]
    report = (both / "report.md").read_text()
    assert report.startswith(f"# Layer-wise probe: {MODEL}, crepe_tiny\n\nTwo models.")
    assert f"## {MODEL}" in report and "## crepe_tiny" in report and "relative depth" in report
    assert "re-drawn from its probe.json with `hear-models probe --from" in report
    assert _png_size(both / "scores.png")[0] >= 1200
    assert P.main(["--from", str(first), "--from", str(first), "--out", str(tmp_path / "x")]) == 2
    assert P.main(["--from", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert P.main([MODEL, "--from", str(first), "--out", str(tmp_path / "x")]) == 2


def test_y_range_shared_per_metric_or_fixed():
    from hear_models.evaluation.probe import report as R

    def row(task, metric, score, std=None, chance=None):
        return {"task": task, "metric": metric, "score": score, "std": std, "chance": chance}

    rows = [row("a", "top1_acc", 0.9, 0.05, 0.1), row("b", "top1_acc", 0.5), row("c", "mAP", 0.3, 0.1, 0.2)]
    shared = R.y_ranges(rows, "metric")
    assert shared["a"] == shared["b"] and shared["a"][0] < 0.1 and shared["a"][1] > 0.95
    assert shared["c"] != shared["a"]
    own = R.y_ranges(rows, "panel")
    assert own["a"] != own["b"]
    assert R.y_ranges(rows, "metric,top1_acc=0:1")["b"] == (0.0, 1.0)
    for bad in ("top1_acc=1:0", "top1_acc", "nonsense=a:b"):
        with pytest.raises(ValueError, match="--y-range"):
            R.parse_y_range(bad)
