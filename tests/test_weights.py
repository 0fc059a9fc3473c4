"""``hear-models weights path NAME``: a real local file for tools that take a weights file
(heareval's ``--model`` is a ``click.Path(exists=True)``), loading to the same model."""

from __future__ import annotations

import json

import pytest
import torch

from hear_models import cli, registry, weights
from hear_models.checkpoints import sha256_file


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEAR_MODELS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_whisper_file_loads_to_identical_embeddings_and_is_verified(cache):
    from hear_models import whisper_at

    path = weights.weights_path("whisper_tiny_en")
    assert path.parent == cache / "weights" and path.suffix == ".pt"
    record = path.with_name(path.name + ".sha256")
    assert record.read_text().split()[0] == sha256_file(path)
    x = torch.randn(2, 16000 * 2, generator=torch.Generator().manual_seed(0)) * 0.1
    a = whisper_at.get_timestamp_embeddings(x, whisper_at.load_model("offline:tiny.en"))[0]
    b = whisper_at.get_timestamp_embeddings(x, whisper_at.load_model(str(path)))[0]
    assert torch.equal(a, b)
    # a file that no longer matches its recorded sha256 is made again, not used
    digest = sha256_file(path)
    path.write_bytes(path.read_bytes()[:1000])
    assert weights.weights_path("whisper_tiny_en") == path and sha256_file(path) == digest


def test_packaged_and_gura_files(cache):
    from hear_models import gura

    assert weights.weights_path("conformer_tiny").name == "conformer_tiny_mini.pt"
    path = weights.weights_path("crepe_tiny")
    info = json.loads(path.read_text())
    assert info["weights"] == registry.get_spec("crepe_tiny").weights and "sha256" in info["members"]["crepe"]
    x = torch.randn(1, 16000, generator=torch.Generator().manual_seed(1)) * 0.1
    a = gura.get_scene_embeddings(x, gura.load_model(registry.get_spec("crepe_tiny").weights))
    b = gura.get_scene_embeddings(x, gura.load_model(str(path)))
    assert torch.equal(a, b)
    bad = cache / "other.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a GURA weights file"):
        gura.load_model(str(bad))


def test_options_a_variant_needs_are_given_for_heareval():
    assert json.loads(weights.heareval_options("maskspec_tiny")) == registry.get_spec("maskspec_tiny").options
    assert weights.heareval_options("whisper_base") == "{}"


def test_command_line(cache, capsys):
    assert cli.main(["weights", "path", "atst_tiny"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("atst_tiny_mini.pt") and '--model-options \'{"variant": "tiny"}\'' in err
    assert cli.main(["weights", "path", "whisper_bse"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'whisper_bse'" in err and "whisper_base" in err
