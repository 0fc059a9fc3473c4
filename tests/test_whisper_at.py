"""Whisper-AT's backbone: our unpadded encoder equals openai-whisper's on the same frames."""

import copy

import pytest
import torch

from hear_models import whisper_at
from hear_models.models.whisper import WhisperEncoder

from .conftest import noise


def openai_unpadded(encoder, mel):
    """openai-whisper's own AudioEncoder.forward with its positional embedding sliced to
    the clip (what Whisper-AT does), plus every block's output captured by hooks."""
    enc = copy.deepcopy(encoder)
    n = (mel.shape[-1] + 1) // 2
    enc.register_buffer("positional_embedding", encoder.positional_embedding[:n].clone())
    outs = []
    hooks = [b.register_forward_hook(lambda mod, i, o: outs.append(o)) for b in enc.blocks]
    final = enc(mel)
    for h in hooks:
        h.remove()
    return final, outs


@pytest.mark.parametrize("seconds", [1.0, 10.0, 30.0])
def test_encoder_equals_openai_whisper_unpadded(seconds, get_model):
    import whisper

    hear = get_model("whisper_base")
    ours: WhisperEncoder = hear.encoder
    audio = noise(2, seconds, 16000, seed=7) * 0.5
    mel = torch.stack([whisper.log_mel_spectrogram(a) for a in audio])
    with torch.inference_mode():
        final, blocks = openai_unpadded(ours.encoder, mel)
        mine = list(ours.hidden_states_from_mel(mel))  # the same frames
    assert len(mine) == len(blocks) == 6
    for a, b in zip(mine, blocks):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.encoder.ln_post(mine[-1]), final, atol=1e-4, rtol=1e-4)
    # end to end from audio (our front end differs from whisper's by < 1e-5): the default
    # embedding is the mean of the block outputs
    emb, _ = hear.timestamp_embeddings(audio)
    ref = torch.stack(blocks).mean(0)
    assert float((emb - ref).norm() / ref.norm()) < 1e-5


def test_base_encoder_size(get_model):
    enc = get_model("whisper_base").encoder.encoder
    n = sum(p.numel() for p in enc.parameters())
    assert n == 19_822_592  # Whisper base encoder: 2 convs + 6 blocks of width 512 + ln_post
    assert len(enc.blocks) == 6 and enc.ln_post.normalized_shape == (512,)


@pytest.mark.parametrize("layers,combine,width", [
    ("last", "mean", 512), (2, "mean", 512), ([0, 5], "concat", 1024), ("1,3", "mean", 512),
    ("final", "mean", 512), ("all", "concat", 6 * 512),
])
def test_layer_options(layers, combine, width, get_model):
    base = get_model("whisper_base")
    enc = WhisperEncoder(base.encoder.encoder, layers=layers, combine=combine)
    from hear_models.hear_api import HearModel

    m = HearModel(enc)
    audio = noise(1, 1.0, 16000)
    emb, _ = m.timestamp_embeddings(audio)
    assert emb.shape[-1] == width == m.timestamp_embedding_size == m.scene_embedding_size
    with torch.inference_mode():
        hidden = list(enc.hidden_states(audio))
    if layers == 2:
        torch.testing.assert_close(emb, hidden[2])
    if layers == "final":
        torch.testing.assert_close(emb, enc.encoder.ln_post(hidden[-1]))


@pytest.mark.parametrize("bad", ["first", 6, -7, [], "1,x"])
def test_bad_layer_option(bad, get_model):
    with pytest.raises(ValueError, match="layers"):
        WhisperEncoder(get_model("whisper_base").encoder.encoder, layers=bad)


def test_timestamps_are_frame_centres(get_model):
    """Frame i is centred on mel frame 2i, i.e. at 20 i ms."""
    m = get_model("whisper_tiny_en")
    _, ts = m.timestamp_embeddings(noise(1, 1.07, 16000))
    assert ts.shape[1] == 54
    torch.testing.assert_close(ts[0], torch.arange(54, dtype=torch.float32) * 20)
