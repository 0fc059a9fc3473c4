"""Tests of the offline HEAR task suite generator (hear_models.evaluation.tasks).

The smoke suite is generated once per session (about 30 s on 2 cores; the session
fixture ``smoke_suite`` of conftest.py, shared with the other test files). Tests are
skipped, with the reason, where the Debian task sources are not installed
(scripts/install_task_sources.sh); in CI they fail.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import need, skip_or_fail  # noqa: E402

sf = need("soundfile")

from hear_models.evaluation import tasks as T  # noqa: E402
from hear_models.evaluation.tasks import _sources  # noqa: E402

KNOWN_METRICS = {"top1_acc", "pitch_acc", "chroma_acc", "mAP", "d_prime", "aucroc",
                 "event_onset_200ms_fms", "event_onset_50ms_fms",
                 "event_onset_offset_50ms_20perc_fms", "segment_1s_er"}
# the HEAR 2021 tasks these stand for, and what their task_metadata.json says
HEAR = {
    "speech_commands": ("scene", "multiclass", "trainvaltest", None, ["top1_acc"]),
    "nsynth_pitch": ("scene", "multiclass", "trainvaltest", None, ["pitch_acc", "chroma_acc"]),
    "dcase2016_task2": ("event", "multilabel", "trainvaltest", None,
                        ["event_onset_200ms_fms", "segment_1s_er"]),
    "maestro": ("event", "multilabel", "new_split_kfold", 5,
                ["event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"]),
    "esc50": ("scene", "multiclass", "presplit_kfold", 5, None),
    "beijing_opera": ("scene", "multiclass", "new_split_kfold", 5, None),
    "mridangam_stroke": ("scene", "multiclass", "new_split_kfold", 5, None),
    "mridangam_tonic": ("scene", "multiclass", "new_split_kfold", 5, None),
    "gunshot_triangulation": ("scene", "multiclass", "new_split_kfold", 7, None),
    "libricount": ("scene", "multiclass", "new_split_kfold", 5, None),
    "tfds_crema_d": ("scene", "multiclass", "new_split_kfold", 5, None),
    "tfds_gtzan": ("scene", "multiclass", "new_split_kfold", 10, None),
    "tfds_gtzan_music_speech": ("scene", "multiclass", "new_split_kfold", 10, None),
    "vox_lingua_top10": ("scene", "multiclass", "new_split_kfold", 5, None),
    "fsd50k": ("scene", "multilabel", "trainvaltest", None, ["mAP", "d_prime", "aucroc"]),
}


def _sources_or_skip():
    try:
        _sources.check_all()
        _sources.animal_files()
    except _sources.MissingSource as e:
        skip_or_fail(str(e))


@pytest.fixture(scope="session")
def smoke(smoke_suite):
    return smoke_suite


def _task_dirs(root: Path):
    return sorted(p for p in root.iterdir() if p.is_dir())


def _vocab(d: Path):
    with open(d / "labelvocabulary.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["idx", "label"]
    assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))
    return [r[1] for r in rows[1:]]


def test_list_tasks_cover_hear_kinds():
    rows = T.list_tasks("smoke")
    assert len(rows) >= 14
    assert len({r["name"] for r in rows}) == len(rows)
    kinds = {r["hear_task"] for r in rows}
    assert set(HEAR) <= kinds
    assert sum(r["embedding_type"] == "event" for r in rows) >= 2
    assert any(r["prediction_type"] == "multilabel" and r["embedding_type"] == "scene"
               for r in rows)
    for r in rows:
        assert set(r["evaluation"]) <= KNOWN_METRICS


def test_bad_suite_name(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown task suite 'huge'.*smoke, small, mini"):
        T.make_suite("huge", tmp_path)
    assert T.main(["make", "--suite", "huge", "--out", str(tmp_path)]) == 2
    assert "unknown task suite" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown task"):
        T.make_suite("smoke", tmp_path, tasks=["nope"])


def test_missing_source_names_package_and_script(monkeypatch, tmp_path):
    monkeypatch.setattr(_sources, "KTUBERLING_DIR", tmp_path / "absent")
    with pytest.raises(_sources.MissingSource) as e:
        _sources.check_all()
    msg = str(e.value)
    if "ktuberling" in msg:
        assert "ktuberling-data" in msg and "install_task_sources.sh" in msg
    else:  # another source is absent on this machine; still a clear message
        assert "install_task_sources.sh" in msg
    monkeypatch.setattr(_sources.shutil, "which", lambda name: None)
    with pytest.raises(_sources.MissingSource, match="espeak-ng.*install_task_sources.sh"):
        _sources.check_all()


def _manifest(task_dir: Path) -> dict:
    return {ln.split("  ", 1)[1]: ln.split("  ", 1)[0]
            for ln in (task_dir / T.MANIFEST_FILE).read_text().splitlines()}


def test_suite_files(smoke):
    # nothing but task folders at the top: heareval's --task all takes every entry for a task
    assert all(p.is_dir() and (p / "task_metadata.json").is_file() for p in smoke.iterdir())
    assert len(_task_dirs(smoke)) == len(T.list_tasks())
    for d in _task_dirs(smoke):
        meta = json.loads((d / T.SUITE_FILE).read_text())
        assert meta["suite"] == "smoke" and meta["seed"] == 0 and meta["sample_rates"] == [16000]
        assert "espeak-ng" in meta["tool_versions"] and meta["task"]["folder"] == d.name
        lines = (d / T.MANIFEST_FILE).read_text().splitlines()
        paths = [ln.split("  ", 1)[1] for ln in lines]
        assert paths == sorted(paths)
        files = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
        assert paths == [f for f in files if f != T.MANIFEST_FILE]
        assert T.verify_task_manifest(d) == []


def test_manifest_finds_a_changed_file(smoke, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(_task_dirs(smoke)[0], d)
    victim = sorted(d.rglob("*.wav"))[0]
    victim.write_bytes(victim.read_bytes()[:-2])
    assert T.verify_task_manifest(d) == [victim.relative_to(d).as_posix()]


def test_legacy_root_files_are_removed(tmp_path):
    (tmp_path / "suite.json").write_text('{"suite": "smoke", "format_version": 1}')
    (tmp_path / "MANIFEST.sha256").write_text("")
    (tmp_path / "notes.json").write_text("{}")  # not ours: kept
    T.remove_legacy_root_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json"]


def test_layout_and_metadata(smoke):
    by_name = {r["name"]: r for r in T.list_tasks("smoke")}
    for d in _task_dirs(smoke):
        meta = json.loads((d / "task_metadata.json").read_text())
        name = meta["task_name"]
        assert d.name == f"{name}-{meta['version']}-smoke"
        for k in ("task_name", "version", "embedding_type", "prediction_type", "split_mode",
                  "splits", "sample_duration", "evaluation", "mode", "sample_rates"):
            assert k in meta, (name, k)
        assert meta["mode"] == "smoke" and meta["sample_rates"] == [16000]
        assert set(meta["evaluation"]) <= KNOWN_METRICS
        emb, pred, mode, nfolds, metrics = HEAR[by_name[name]["hear_task"]]
        assert (meta["embedding_type"], meta["prediction_type"], meta["split_mode"]) == (
            emb, pred, mode), name
        if mode == "trainvaltest":
            assert meta["splits"] == ["train", "valid", "test"]
            assert "nfolds" not in meta
        else:
            assert meta["nfolds"] == nfolds
            assert meta["splits"] == [f"fold{i:02d}" for i in range(nfolds)]
        if metrics is not None:
            assert meta["evaluation"][:len(metrics)] == metrics, name
        if emb == "event":
            assert "event_postprocessing_grid" in meta.get("evaluation_params", {}) or \
                name == "office_events"
        vocab = _vocab(d)
        assert len(vocab) == len(set(vocab)) >= 2
        dur = meta["sample_duration"]
        seen = set()
        for split in meta["splits"]:
            data = json.loads((d / f"{split}.json").read_text())
            assert data, (name, split)
            wavs = sorted(p.name for p in (d / "16000" / split).iterdir())
            assert wavs == sorted(data), (name, split)
            for clip, labels in data.items():
                if emb == "scene":
                    assert isinstance(labels, list) and labels
                    if pred == "multiclass":
                        assert len(labels) == 1, (name, clip)
                    assert set(labels) <= set(vocab), (name, clip)
                    seen.update(labels)
                else:
                    for ev in labels:
                        assert ev["label"] in vocab
                        assert 0 <= ev["start"] < ev["end"] <= dur * 1000, (name, clip, ev)
                        seen.add(ev["label"])
            for clip in sorted(data)[:3] + sorted(data)[-2:]:
                info = sf.info(str(d / "16000" / split / clip))
                assert info.samplerate == 16000 and info.channels == 1
                assert info.subtype == "PCM_16"
                assert info.frames == int(round(dur * 16000)), (name, clip)
        # every class occurs somewhere (pitch vocab is a contiguous range)
        if name != "instrument_pitch":
            assert seen == set(vocab), name


def test_audio_not_silent_and_not_clipped(smoke):
    for d in _task_dirs(smoke):
        meta = json.loads((d / "task_metadata.json").read_text())
        split = meta["splits"][-1]
        for p in sorted((d / "16000" / split).iterdir())[:4]:
            x, _ = sf.read(str(p), dtype="float32")
            assert np.max(np.abs(x)) > 1e-3, p
            assert np.mean(np.abs(x) > 0.999) < 1e-3, p


def test_splits_disjoint_by_group(smoke):
    for d in _task_dirs(smoke):
        meta = json.loads((d / "task_metadata.json").read_text())
        g = json.loads((d / "groups.json").read_text())
        assert set(g["splits"]) == set(meta["splits"])
        for split in meta["splits"]:
            data = json.loads((d / f"{split}.json").read_text())
            assert set(g["splits"][split]) == set(data)
        name = meta["task_name"]
        if name in ("office_events", "sound_mixtures"):
            # items of classes with >= 3 items are disjoint; shared ones are listed
            # in the task card (camera: 2 items; short animal recordings)
            continue
        if name == "animal_sounds":
            owner = {}
            for split, m in g["splits"].items():
                for grp in m.values():
                    if not grp.endswith("-whole"):
                        assert owner.setdefault(grp, split) == split, (name, grp)
            continue
        owner = {}
        for split, m in g["splits"].items():
            for grp in m.values():
                # talker_count: every talker of a mixture belongs to one fold only
                for key in (grp.split("&") if name == "talker_count" else [grp]):
                    assert owner.setdefault(key, split) == split, (name, key, split)


def test_item_disjoint_event_and_mixture_tasks(smoke):
    shared_ok = {"freedesktop:camera-shutter", "freedesktop:screen-capture"}
    for name in ("office_events", "sound_mixtures"):
        d = next(p for p in _task_dirs(smoke) if p.name.startswith(name + "-"))
        g = json.loads((d / "groups.json").read_text())
        owner = {}
        for split, m in g["splits"].items():
            for grp in m.values():
                for item in grp.split("|"):
                    if item in shared_ok or item.endswith("[all]"):
                        continue
                    assert owner.setdefault(item, split) == split, (name, item)


def _voice(ident: str) -> str:
    """Voice of a TTS speaker ident: flite voice, or the espeak variant after '+'."""
    if ident.startswith("flite-"):
        return "flite:" + ident.split("-")[1]
    assert ident.startswith("espeak-") and "+" in ident, ident
    return "espeak:" + ident.split("+", 1)[1].rsplit("-p", 1)[0]


@pytest.mark.parametrize("task", ["spoken_keywords", "speech_emotion", "talker_count",
                                  "music_speech"])
def test_tts_voices_disjoint_between_splits(smoke, task):
    d = next(p for p in _task_dirs(smoke) if p.name.startswith(task + "-"))
    g = json.loads((d / "groups.json").read_text())["splits"]
    owner = {}
    for split, m in g.items():
        for grp in m.values():
            for ident in grp.split("&"):
                if not ident.startswith(("espeak-", "flite-")):
                    continue   # music pieces, empty mixtures
                assert owner.setdefault(_voice(ident), split) == split, (task, ident)
    assert len(set(owner.values())) == len(g)


def test_deterministic_and_rate_independent(smoke, tmp_path):
    tasks = ["djembe_strokes", "drum_kit_pieces"]
    out = T.make_suite("smoke", tmp_path / "a", seed=0, rates=(16000, 22050), progress=False,
                       tasks=tasks, workers=1)
    for name in ("djembe_strokes-v2-smoke", "drum_kit_pieces-v1-smoke"):
        ref, new = _manifest(smoke / name), _manifest(out / name)
        same = [p for p in new if p.startswith("16000/") or p.endswith(("labelvocabulary.csv", ".json"))
                and not p.endswith(("task_metadata.json", T.SUITE_FILE))]
        assert len(same) > 3
        for p in same:
            assert new[p] == ref[p], (name, p)
    d = out / "djembe_strokes-v2-smoke"
    for p in sorted((d / "22050" / "fold00").iterdir())[:3]:
        info = sf.info(str(p))
        assert info.samplerate == 22050 and info.frames == int(round(0.8 * 22050))
    # a different seed gives different audio
    out2 = T.make_suite("smoke", tmp_path / "b", seed=1, progress=False,
                        tasks=["djembe_strokes"], workers=1)
    d = "djembe_strokes-v2-smoke"
    assert _manifest(out2 / d) != _manifest(out / d)


def test_generate_twice_identical_manifest(tmp_path):
    _sources_or_skip()
    a = T.make_suite("smoke", tmp_path / "a", tasks=["impulse_position", "piano_onsets"],
                     progress=False)
    b = T.make_suite("smoke", tmp_path / "b", tasks=["impulse_position", "piano_onsets"],
                     progress=False, workers=1)
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for d in a.iterdir():
        assert (d / T.MANIFEST_FILE).read_bytes() == (b / d.name / T.MANIFEST_FILE).read_bytes()


def test_pitch_vocabulary_is_contiguous(smoke):
    d = next(p for p in _task_dirs(smoke) if p.name.startswith("instrument_pitch-"))
    meta = json.loads((d / "task_metadata.json").read_text())
    vocab = [int(v) for v in _vocab(d)]
    assert vocab == list(range(meta["pitch_range_min"], meta["pitch_range_max"] + 1))
    # chroma_acc in heareval compares class indices modulo 12
    assert all((v - vocab[0]) % 12 == i % 12 for i, v in enumerate(vocab))


def test_piano_notes_of_one_pitch_do_not_overlap(smoke):
    d = next(p for p in _task_dirs(smoke) if p.name.startswith("piano_onsets-"))
    meta = json.loads((d / "task_metadata.json").read_text())
    assert meta["evaluation_params"]["event_postprocessing_grid"] == {
        "median_filter_ms": [150], "min_duration": [50]}
    for split in meta["splits"]:
        for clip, evs in json.loads((d / f"{split}.json").read_text()).items():
            last = {}
            for ev in sorted(evs, key=lambda e: e["start"]):
                assert ev["start"] >= last.get(ev["label"], -1.0), (clip, ev)
                last[ev["label"]] = ev["end"]


def test_probe_learns_a_scene_task(smoke):
    need("sklearn")
    from hear_models.evaluation.tasks._difficulty import difficulty_task

    d = next(p for p in _task_dirs(smoke) if p.name.startswith("drum_kit_pieces-"))
    row = difficulty_task(d)
    assert row["metric"] == "top1_acc" and row["score"] > 2 * row["chance"]
