"""The command line: list, embed (files of any rate / channels), validate (fails on warnings)."""

import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from hear_models import list_models
from hear_models.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert name in out


def test_embed_resamples_and_mixes_down(tmp_path, get_model):
    sr = 44100
    t = np.arange(int(1.5 * sr)) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 660 * t)], 1) * 0.3
    wav = tmp_path / "tone.wav"
    sf.write(wav, stereo, sr)
    out = tmp_path / "emb"
    assert main(["embed", str(wav), "--model", "whisper_tiny_en", "--out", str(out)]) == 0
    scene = np.load(out / "tone.scene.npy")
    frames = np.load(out / "tone.timestamp.npy")
    ts = np.load(out / "tone.timestamps_ms.npy")
    m = get_model("whisper_tiny_en")
    assert scene.shape == (m.scene_embedding_size,)
    assert frames.shape == (m.n_frames(24000), m.timestamp_embedding_size) and ts.shape == frames.shape[:1]
    np.testing.assert_allclose(frames.mean(0), scene, rtol=1e-4, atol=1e-4)


def test_embed_bad_file_names_it(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really audio")
    with pytest.raises(ValueError, match="broken.wav"):
        main(["embed", str(bad), "--model", "whisper_tiny_en", "--out", str(tmp_path)])


BAD_HOP_MODULE = textwrap.dedent('''
    import torch
    class M(torch.nn.Module):
        sample_rate = 16000
        scene_embedding_size = 4
        timestamp_embedding_size = 4
    def load_model(model_file_path=""):
        return M()
    def get_timestamp_embeddings(audio, model):
        n = int(audio.shape[1] / 16000 / 0.06) + 1   # a 60 ms hop: the validator warns
        ts = torch.arange(n, dtype=torch.float32) * 60
        return torch.zeros(audio.shape[0], n, 4), ts.expand(audio.shape[0], n)
    def get_scene_embeddings(audio, model):
        return torch.zeros(audio.shape[0], 4)
''')


def test_validate_fails_on_a_validator_warning(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad_hop_module.py").write_text(BAD_HOP_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["validate", "bad_hop_module"]) == 1
    assert "50ms" in capsys.readouterr().err
    sys.modules.pop("bad_hop_module", None)


def test_validate_passes_offline_model(capsys):
    assert main(["validate", "whisper_tiny_en"]) == 0
