"""The command line: list, embed (files of any rate / channels), validate (fails on warnings)."""

import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from hear_models import list_models
from hear_models.cli import main

from .test_tagging import tiny_head  # noqa: F401  (a fixture)


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


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a model starts loading: checks must come first."""
    import hear_models.cli as cli

    monkeypatch.setattr(cli, "_load", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr("hear_models.checkpoints.load_whisper", lambda *a, **k: pytest.fail("a model was loaded"))


def _wav(path, seconds=0.5, sr=16000, freq=440.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def _error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_embed_bad_file_names_it(tmp_path, capsys, no_model):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really audio")
    good = _wav(tmp_path / "good.wav")
    assert main(["embed", str(good), str(bad), "--model", "whisper_tiny_en", "--out", str(tmp_path)]) == 2
    err = _error_line(capsys)
    assert "1 of 2 input(s) cannot be used: " in err and "broken.wav: cannot decode audio" in err
    assert "--keep-going" in err


@pytest.mark.parametrize("argv, words", [
    (["embed", "{wav}", "--model", "whisper_bse"], ["unknown model 'whisper_bse'", "did you mean whisper_base"]),
    (["validate", "whisper_bse"], ["unknown model 'whisper_bse'", "did you mean whisper_base"]),
    (["embed", "{tmp}/nothing.wav"], ["nothing.wav: no such audio file"]),
    (["embed", "{tmp}"], ["is a folder, not an audio file", "/*.wav"]),
    (["embed", "{wav}", "--out", "{wav}"], ["is a file, expected a folder"]),
    (["embed", "{wav}", "--model-options", "{{layers"], ["--model-options is not JSON"]),
    (["tag", "{wav}", "--at-time-res", "1.0"], ["--at-time-res 1: must be a positive multiple of 0.4 s", "1.2"]),
    (["tag", "{wav}", "--top-k", "0"], ["--top-k 0: must be at least 1"]),
    (["tag", "{wav}", "--threshold", "2"], ["--threshold 2.0: a probability, between 0 and 1"]),
    (["tag", "{wav}", "--head", "{tmp}/head.pt"], ["--head", "head.pt: no such file"]),
    (["tag", "{tmp}/nothing.wav"], ["nothing.wav: no such audio file"]),
    (["compare", "{tmp}/run_a", "{tmp}/run_b"], ["run_a: no such results file"]),
])
def test_user_errors_are_one_line_and_status_2_before_a_model_loads(argv, words, tmp_path, capsys, no_model):
    wav = _wav(tmp_path / "a.wav")
    argv = [a.format(wav=wav, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = _error_line(capsys)
    for w in words:
        assert w in err


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    with pytest.raises(KeyError, match="did you mean whisper_base"):
        main(["--debug", "validate", "whisper_bse"])
    monkeypatch.setenv("HEAR_MODELS_DEBUG", "1")
    with pytest.raises(ValueError, match="nothing.wav: no such audio file"):
        main(["embed", str(tmp_path / "nothing.wav")])
    monkeypatch.delenv("HEAR_MODELS_DEBUG")
    monkeypatch.setattr("hear_models.registry.list_models", lambda *a: {}["bug"])  # not a user error
    assert main(["list"]) == 1
    err = _error_line(capsys)
    assert "KeyError: 'bug' (an unexpected failure: `hear-models --debug ...` shows where" in err


def test_close_matches_in_the_python_api():
    from hear_models import create_model

    with pytest.raises(KeyError, match="did you mean whisper_base or .*models are registered: hear-models list"):
        create_model("whisper_bse")


def test_missing_optional_dependencies_name_the_command(tmp_path, monkeypatch, capsys):
    wav = _wav(tmp_path / "a.wav")
    monkeypatch.setitem(sys.modules, "whisper", None)  # import whisper -> ModuleNotFoundError
    assert main(["tag", str(wav), "--whisper", "offline:tiny.en"]) == 2
    err = _error_line(capsys)
    assert "openai-whisper is not installed" in err and "hear-models install-tools" in err and "triton" in err
    monkeypatch.setitem(sys.modules, "yaml", None)
    assert main(["train", "maskspec_tiny_pretrain", "--print-config"]) == 2
    assert "pip install 'hear-models[train]'" in _error_line(capsys)
    monkeypatch.setitem(sys.modules, "hearvalidator", None)
    monkeypatch.setitem(sys.modules, "hearvalidator.validate", None)
    assert main(["validate", "whisper_tiny_en"]) == 2
    err = _error_line(capsys)
    assert "hearvalidator is not installed" in err and "Python < 3.9" in err


def test_embed_mirrors_input_paths_keep_going_and_truncated_files(tmp_path, capsys):
    a, b = _wav(tmp_path / "in/a/x.wav", freq=300), _wav(tmp_path / "in/b/x.wav", freq=3000)
    bad = tmp_path / "in/b/broken.wav"
    bad.write_bytes(b"RIFF not really audio")
    cut = _wav(tmp_path / "in/cut.wav", seconds=2.0)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) - 2 * int(1.97 * 16000)])  # header: 2 s; 30 ms of 16-bit kept
    out = tmp_path / "emb"
    argv = ["embed", str(a), str(b), str(bad), str(cut), "--model", "whisper_tiny_en", "--out", str(out),
            "--kind", "scene", "--keep-going"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "cut.wav: truncated: its header promises 2.000 s (32000 frames), the file holds 0.030 s" in err
    assert "not embedded: 1 of 4 file(s)" in err and "broken.wav: cannot decode audio" in err
    xa, xb = np.load(out / "a/x.scene.npy"), np.load(out / "b/x.scene.npy")  # both kept
    assert not np.allclose(xa, xb)
    assert (out / "cut.scene.npy").is_file()
    assert main(argv[:-1] + ["--strict"]) == 2  # without --keep-going: nothing starts
    err = _error_line(capsys)
    assert "2 of 4 input(s) cannot be used" in err and "(--strict refuses truncated files)" in err


def test_embed_refuses_inputs_that_would_share_outputs(tmp_path, capsys, no_model):
    wav, flac = _wav(tmp_path / "x.wav"), tmp_path / "x.flac"
    sf.write(flac, sf.read(wav)[0], 16000)
    assert main(["embed", str(wav), str(flac), "--out", str(tmp_path / "emb")]) == 2
    assert "would write the same outputs" in _error_line(capsys)


def test_tag_english_only_whisper_without_flags_and_probabilities(tiny_head, tmp_path, capsys):
    """tiny.en has no language tokens: `tag` transcribes in English without --language. Each
    window lists at most --top-k labels, with probability = sigmoid(logit) >= --threshold."""
    import json

    import torch

    wav = tmp_path / "n.wav"
    sf.write(wav, np.random.default_rng(0).uniform(-0.3, 0.3, 16000 * 5).astype(np.float32), 16000)
    out = tmp_path / "tags.json"
    assert main(["tag", str(wav), "--whisper", "offline:tiny.en", "--head", str(tiny_head[0]),
                 "--at-time-res", "2.4", "--top-k", "3", "--threshold", "0.3", "--json", "--out", str(out)]) == 0
    r = json.loads(out.read_text())[str(wav)]
    assert r["segments"][0]["language"] == "en" and len(r["audio_tag"]) == 3
    labels = [x for t in r["audio_tag"] for x in t["labels"]]
    for t in r["audio_tag"]:
        assert len(t["labels"]) <= 3
    for x in labels:
        assert x["probability"] >= 0.3
        assert x["probability"] == pytest.approx(float(torch.sigmoid(torch.tensor(x["logit"]))), abs=1e-4)
    assert main(["tag", str(wav), "--whisper", "offline:tiny.en", "--head", str(tiny_head[0]),
                 "--no-text", "--top-k", "2"]) == 0
    table = capsys.readouterr().out.splitlines()[-1]
    assert table.count("sound") == 2 and "(" not in table  # "sound 3 0.62, sound 1 0.55"


def test_install_tools_recipe_is_the_scripts(capsys):
    """One recipe: scripts/install.sh runs `hear-models install-tools` and pins no tool itself;
    the command keeps the installed torch and installs each tool with --no-deps."""
    from importlib import metadata
    from pathlib import Path

    from hear_models.tools import TOOLS

    script = (Path(__file__).parents[1] / "scripts" / "install.sh").read_text()
    assert "install-tools" in script
    assert not [t.requirement for t in TOOLS if t.requirement in script]
    assert main(["install-tools", "--dry-run", "--test"]) == 0
    out = capsys.readouterr().out
    assert f"keeping torch {metadata.version('torch')}" in out
    for t in TOOLS:
        line = next(x for x in out.splitlines() if x.rstrip().endswith(t.requirement))
        assert "--no-deps" in line and "-c <torch pin>" in line
    assert "heareval==2021.1.3" in out and "scikit-learn" in out  # with the eval extra's needs


def test_package_is_typed(get_model):
    from pathlib import Path

    import hear_models
    from hear_models import create_model
    from hear_models.hear_api import HearModel

    assert (Path(hear_models.__file__).parent / "py.typed").is_file()
    assert create_model.__annotations__["return"] == "HearModel"
    assert isinstance(get_model("whisper_tiny_en"), HearModel)


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


def test_probe_checks_heareval_before_a_model_loads(tmp_path, monkeypatch, capsys):
    import importlib.util

    from hear_models.evaluation import runner

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "heareval" else real(n, *a))
    monkeypatch.setattr(runner, "load_embedder", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["probe", "whisper_tiny_en", "--tasks", "smoke", "--out", str(tmp_path)]) == 2
    err = _error_line(capsys)
    assert "heareval is not installed" in err and "hear-models install-tools" in err
    monkeypatch.setattr(importlib.util, "find_spec", real)
    assert main(["evaluate", "whisper_tiny_en", "whisper_bse", "--tasks", "smoke", "--out", str(tmp_path)]) == 2
    assert "did you mean whisper_base" in _error_line(capsys)  # the second name, before the first runs
