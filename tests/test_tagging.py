"""Whisper-AT heads in use: head files, the scene embedding with a head, `tag` (one pass)."""

import shutil
import subprocess

import numpy as np
import pytest
import torch

from hear_models import whisper_at
from hear_models.cli import main
from hear_models.models.whisper_at_heads import create_head, pool_time
from hear_models.tagging import load_head, save_head, transcribe_and_tag

from .conftest import noise, skip_or_fail


@pytest.fixture(scope="module")
def tiny_head(tmp_path_factory):
    """A TL-Tr-64 head for tiny.en (4 blocks x 384) with 7 named classes, seeded."""
    torch.manual_seed(0)
    head = create_head("tl_tr", 4, 384, 7, proj_dim=64)
    path = tmp_path_factory.mktemp("head") / "head.pt"
    save_head(path, head, [f"sound {i}" for i in range(7)], kind="tl_tr", proj_dim=64, backbone="offline:tiny.en")
    return path, head


def test_head_file_round_trip(tiny_head):
    path, head = tiny_head
    hf = load_head(path)
    assert hf.labels == [f"sound {i}" for i in range(7)] and hf.meta["kind"] == "tl_tr"
    for (k, a), (k2, b) in zip(head.state_dict().items(), hf.head.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_scene_embedding_with_head(tiny_head):
    path, head = tiny_head
    m = whisper_at.load_model("offline:tiny.en", head=str(path), head_output="both", precision="fp32")
    assert m.scene_embedding_size == 384 + 64 + 7 and m.timestamp_embedding_size == 384
    audio = noise(2, 10.0, 16000, seed=4) * 0.3
    scene = m.scene_embeddings(audio)
    frames, _ = m.timestamp_embeddings(audio)
    torch.testing.assert_close(scene[:, :384], frames.mean(1), atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # 10 s = one decision window of 25 pooled frames
        pooled = pool_time(torch.stack(list(m.encoder.hidden_states(audio)), 1))
        assert pooled.shape == (2, 4, 25, 384)
        head.eval()
        rep = head.representation(pooled)
        torch.testing.assert_close(scene[:, 384:448], rep, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(scene[:, 448:], head.mlp_layer(rep), atol=1e-4, rtol=1e-4)


def test_head_that_does_not_fit_the_backbone(tiny_head):
    path, _ = tiny_head
    with pytest.raises(ValueError, match="384"):
        whisper_at.load_model("", head=str(path))  # base: 6 x 512


def _speech(tmp_path):
    if shutil.which("espeak-ng") is None:
        skip_or_fail("espeak-ng missing: bash scripts/install_task_sources.sh")
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav),
                    "the quick brown fox jumps over the lazy dog"], check=True)
    from hear_models.audio import load_audio

    return torch.from_numpy(load_audio(wav, 16000))


def test_tag_one_pass_equals_separate_passes(tiny_head, tmp_path):
    """Text from our single pass equals openai-whisper's own decoding of the padded window,
    and the tags equal the head applied to openai's own encoder block outputs."""
    import whisper

    from hear_models.checkpoints import load_whisper

    path, _ = tiny_head
    model = load_whisper("offline:tiny.en")
    speech = _speech(tmp_path)
    audio = torch.cat([speech, torch.zeros(16000 * 12 - speech.shape[0])]) if speech.shape[0] < 16000 * 12 else speech
    hf = load_head(path)
    r = transcribe_and_tag(model, audio, hf, at_time_res=10, top_k=3, language="en")
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio))
    ref = whisper.decode(model, mel, whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False))
    assert r["text"] == ref.text.strip() and "fox" in r["text"].lower()
    outs = []
    hooks = [b.register_forward_hook(lambda mod, i, o: outs.append(o)) for b in model.encoder.blocks]
    with torch.inference_mode():
        model.encoder(mel[None])
    for h in hooks:
        h.remove()
    frames = (audio.shape[0] // 160 + 1) // 2
    pooled = pool_time(torch.stack([o[:, :frames] for o in outs], 1))  # (1, 4, 30, 384)
    with torch.inference_mode():
        first = hf.head(pooled[:, :, :25])
    assert len(r["audio_tag"]) == 2 and r["audio_tag"][1]["end"] == pytest.approx(audio.shape[0] / 16000)
    top = torch.topk(first[0], 3)
    assert [x["label"] for x in r["audio_tag"][0]["labels"]] == [hf.labels[i] for i in top.indices.tolist()]
    np.testing.assert_allclose([x["logit"] for x in r["audio_tag"][0]["labels"]], top.values.tolist(), atol=1e-3)


def test_tag_cli_without_head_says_so(tmp_path, capsys):
    import soundfile as sf

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000)
    assert main(["tag", str(wav), "--whisper", "offline:tiny.en", "--no-text"]) == 0
    assert "need a trained Whisper-AT head" in capsys.readouterr().err


def test_bad_at_time_res(tiny_head):
    from hear_models.checkpoints import load_whisper

    with pytest.raises(ValueError, match="0.4"):
        transcribe_and_tag(load_whisper("offline:tiny.en"), torch.zeros(16000), load_head(tiny_head[0]), at_time_res=0.5)


def test_packaged_head_tags_speech_out_of_the_box(tmp_path, capsys):
    """No --head on the offline base: the packaged TL-Tr-128 head is used and hears speech."""
    import json

    import soundfile as sf

    from hear_models.tagging import builtin_head

    audio = _speech(tmp_path)
    wav = tmp_path / "s.wav"
    sf.write(wav, audio.numpy(), 16000)
    out = tmp_path / "tags.json"
    assert main(["tag", str(wav), "--no-text", "--top-k", "3", "--json", "--out", str(out)]) == 0
    assert "packaged head" in capsys.readouterr().err
    tags = json.loads(out.read_text())[str(wav)]["audio_tag"]
    assert tags and tags[0]["labels"][0]["label"] == "speech"
    hf = load_head(builtin_head(""))
    assert hf.meta["kind"] == "tl_tr" and len(hf.labels) == 10 and "speech" in hf.labels
    assert sum(p.numel() for p in hf.head.parameters()) == 464_522


def test_packaged_head_is_checked_and_optional(tmp_path, monkeypatch, capsys):
    import soundfile as sf

    from hear_models import tagging
    from hear_models.checkpoints import ChecksumError

    assert tagging.builtin_head("offline:tiny.en") is None  # no head trained for tiny.en
    with pytest.raises(ValueError, match="no packaged head"):
        whisper_at.load_model("offline:tiny.en", head="builtin")
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000)
    assert main(["tag", str(wav), "--head", "none", "--no-text"]) == 0
    assert "transcribing only" in capsys.readouterr().err
    from hear_models import checkpoints

    name = tagging.BUILTIN_HEADS[""]
    monkeypatch.setitem(checkpoints.PACKAGED, name, (checkpoints.PACKAGED[name][0], "0" * 64))
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        tagging.builtin_head("")


def test_hear_module_with_packaged_head():
    m = whisper_at.load_model("", head="builtin")
    assert m.scene_embedding_size == 512 + 10
    scene = m.scene_embeddings(noise(1, 2.0, 16000, seed=1) * 0.1)
    assert scene.shape == (1, 522) and torch.isfinite(scene).all()
