"""The HEAR contract, for every registered model (later models are covered for free).

What hear-validator checks, plus what it does not: batch size 1, batched == one-by-one,
determinism, silence, very short and very long clips, and bad input.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from hear_models import list_models
from hear_models.hear_api import HEAR_SAMPLE_RATES
from hear_models.registry import get_spec

from .conftest import assert_close_to_scale, noise

MODELS = list_models(offline=True)  # models whose weights need a hub: see test_downloading_models_have_offline_twins
# Long clips (past the window; 10 minutes): every model but those whose code path a
# registered twin covers (model -> its twin, which does run it). crepe (full) and crepe_tiny
# run the same code path with another capacity, and the _time stand-in differs from
# fusion_cat_xwc_standin only in its scene pooling; a 10-minute clip of CREPE full costs
# ~15 minutes of 2 CPU cores. The avg_* stand-ins differ from their twins only in how
# members are combined frame by frame, which the windows do not see.
LONG_CLIP_TWIN = {"crepe": "crepe_tiny", "fusion_cat_xwc_time_standin": "fusion_cat_xwc_standin",
                  "avg_xwc_standin": "fusion_cat_xwc_standin", "avg_hubert_crepe_standin": "fusion_cat_xwc_standin",
                  "avg_hubert_wav2vec2_standin": "cat_hubert_wav2vec2_standin"}
LONG_CLIP_MODELS = [m for m in MODELS if m not in LONG_CLIP_TWIN]


@pytest.mark.parametrize("name", MODELS)
def test_declared_attributes(name, get_model):
    m = get_model(name)
    assert isinstance(m, torch.nn.Module)
    assert m.sample_rate in HEAR_SAMPLE_RATES
    assert isinstance(m.scene_embedding_size, int) and isinstance(m.timestamp_embedding_size, int)


def check_timestamps(ts, seconds):
    """The validator's rules, with its warnings treated as failures."""
    length_ms = 1000 * seconds
    diff = np.diff(ts, axis=1)
    avg = diff.mean()
    assert np.abs(diff - avg).max() <= 1.0, "timestamps are not evenly spaced"
    assert diff.max() <= 50.0, "hop above 50 ms"
    assert ts.min() <= avg, "first timestamp later than one hop"
    assert ts.max() >= length_ms - avg and ts.max() >= length_ms - 50, "last frame too early"
    assert ts.max() <= length_ms, "timestamp past the end of the clip"


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("seconds", [1.07, 1.98, 4.0])
def test_timestamp_embeddings_as_validator(name, seconds, get_model):
    m = get_model(name)
    audio = noise(2, seconds, m.sample_rate)
    emb, ts = m.timestamp_embeddings(audio)
    assert emb.ndim == 3 and ts.ndim == 2 and emb.shape[:2] == ts.shape
    assert emb.shape[0] == 2 and emb.shape[2] == m.timestamp_embedding_size
    assert emb.dtype == torch.float32
    check_timestamps(ts.numpy(), seconds)
    assert torch.isfinite(emb).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_scene_embeddings_as_validator(name, get_model):
    m = get_model(name)
    emb = m.scene_embeddings(noise(4, 2.74, m.sample_rate))
    assert emb.shape == (4, m.scene_embedding_size) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_batched_equals_one_by_one_and_deterministic(name, get_model):
    m = get_model(name)
    audio = noise(3, 2.5, m.sample_rate, seed=1)
    scene = m.scene_embeddings(audio)
    emb, ts = m.timestamp_embeddings(audio)
    for i in range(3):
        one = audio[i:i + 1]  # batch size 1
        assert_close_to_scale(m.scene_embeddings(one), scene[i:i + 1])
        e1, t1 = m.timestamp_embeddings(one)
        assert_close_to_scale(e1, emb[i:i + 1])
        assert torch.equal(t1, ts[i:i + 1])
    assert torch.equal(m.scene_embeddings(audio), scene), "same input, different output"
    # a sound's embedding does not depend on its neighbours in the batch
    assert not torch.allclose(scene[0], scene[1])


@pytest.mark.parametrize("name", MODELS)
def test_silence_and_very_short_clip(name, get_model):
    m = get_model(name)
    silent = torch.zeros(2, m.sample_rate)
    assert torch.isfinite(m.scene_embeddings(silent)).all()
    short = noise(2, 0.05, m.sample_rate)
    emb, ts = m.timestamp_embeddings(short)
    assert emb.shape[1] >= 1 and torch.isfinite(emb).all()
    assert float(ts.max()) <= 50.0
    assert m.scene_embeddings(short).shape == (2, m.scene_embedding_size)


@pytest.mark.slow
@pytest.mark.parametrize("name", LONG_CLIP_MODELS)
def test_long_clip_windows_join_seamlessly(name, get_model):
    """Past the encoder's window, timestamps stay evenly spaced and the first window's
    frames are those of the first window alone (but for the ``boundary_tokens`` of a model
    whose front end reads the whole clip, as ATST-Frame's official code does)."""
    m = get_model(name)
    win = m.encoder.window_samples
    audio = noise(1, 2.2 * win / m.sample_rate, m.sample_rate, seed=3)
    emb, ts = m.timestamp_embeddings(audio)
    check_timestamps(ts.numpy(), audio.shape[1] / m.sample_rate)
    head, _ = m.timestamp_embeddings(audio[:, :win])
    keep = head.shape[1] - getattr(m.encoder, "boundary_tokens", 0)
    assert keep >= head.shape[1] - 1
    assert_close_to_scale(emb[:, :keep], head[:, :keep])


BAD_INPUTS = {
    "int16": (lambda a: (a * 32767).to(torch.int16), "dtype"),
    "stereo": (lambda a: torch.stack([a, a], 1), "shape"),
    "one-dimensional": (lambda a: a[0], "shape"),
    "nan": (lambda a: a.index_put_((torch.tensor([0]), torch.tensor([5])), torch.tensor(float("nan"))), "NaN"),
    "inf": (lambda a: a.index_put_((torch.tensor([1]), torch.tensor([7])), torch.tensor(float("inf"))), "inf"),
    "empty": (lambda a: a[:, :0], "empty"),
    "no sounds": (lambda a: a[:0], "empty"),
    "too short": (lambda a: a[:, :20], "too short"),
    "int16 scale in float": (lambda a: a * 32767, "peaks"),
    "list": (lambda a: a.tolist(), "Tensor"),
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_clear_error(name, case, get_model):
    m = get_model(name)
    make, words = BAD_INPUTS[case]
    bad = make(noise(2, 0.5, m.sample_rate).clone())
    with pytest.raises((ValueError, TypeError), match=words):
        m.scene_embeddings(bad)
    with pytest.raises((ValueError, TypeError), match=words):
        m.timestamp_embeddings(bad)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_documented_conversions(name, get_model):
    """float64 and numpy input are converted to float32 tensors (documented)."""
    m = get_model(name)
    audio = noise(2, 1.0, m.sample_rate)
    ref = m.scene_embeddings(audio)
    torch.testing.assert_close(m.scene_embeddings(audio.double()), ref)
    torch.testing.assert_close(m.scene_embeddings(audio.numpy()), ref)


MEMORY_PROBE = textwrap.dedent("""
    import json, resource, sys, torch
    from hear_models import create_model
    name, minutes, kind = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    m = create_model(name)
    sr = m.sample_rate
    g = torch.Generator().manual_seed(0)
    audio = torch.rand(1, int(minutes * 60 * sr), generator=g) * 0.2 - 0.1
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "scene":
        out = m.scene_embeddings(audio)
        frames = None
    else:
        out, ts = m.timestamp_embeddings(audio)
        frames = out.shape[1]
        d = torch.diff(ts[0].double())
        assert float((d - d.mean()).abs().max()) <= 1.0
    assert torch.isfinite(out).all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"grow_mb": (peak - before) / 1024, "frames": frames}))
""")


def _probe(name, minutes, kind):
    r = subprocess.run([sys.executable, "-c", MEMORY_PROBE, name, str(minutes), kind],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_downloading_models_fail_clearly_offline(monkeypatch, tmp_path):
    """Registered models whose weights come from a hub or a project's release cannot run on
    an offline machine (the stand-ins and tests/test_releases.py run their code here);
    there, loading one says so at once, naming what it could not download."""
    from hear_models import create_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HEAR_MODELS_DOWNLOAD_BASE", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HEAR_MODELS_CACHE", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for name in sorted(set(list_models()) - set(MODELS)):
        assert get_spec(name).downloads
        with pytest.raises(OSError, match="(?i)download|offline|hub|network"):
            create_model(name)


def test_downloading_models_have_offline_twins():
    """Every HEAR module that a downloading row uses is also registered offline, so the
    contract tests here run its code (with stand-in or packaged weights)."""
    offline_modules = {get_spec(n).module for n in MODELS}
    for name in sorted(set(list_models()) - set(MODELS)):
        assert get_spec(name).module in offline_modules, name


def test_long_clip_twins_are_registered_and_run_it():
    for name, twin in LONG_CLIP_TWIN.items():
        assert name in MODELS, name
        assert twin in LONG_CLIP_MODELS and get_spec(twin).module == get_spec(name).module, name


@pytest.mark.slow
@pytest.mark.parametrize("name", LONG_CLIP_MODELS)
def test_ten_minute_clip_bounded_memory(name, get_model):
    """A 10-minute clip: the memory the forward passes add does not grow with duration.

    The encoder sees at most ``max_batch_seconds`` (240 s) of audio per forward and the
    scene mean streams, so the peak memory added while embedding 10 minutes stays within
    64 MB of what 4 minutes (one full batch of windows) adds."""
    four = _probe(name, 4, "scene")
    ten = _probe(name, 10, "scene")
    assert ten["grow_mb"] <= four["grow_mb"] + 64, (four, ten)
    m = get_model(name)
    ts = _probe(name, 10, "timestamp")
    assert ts["frames"] == m.n_frames(10 * 60 * m.sample_rate)
