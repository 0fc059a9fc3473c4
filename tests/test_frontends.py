"""Front ends: references (openai-whisper, PaSST, audiossl/torchaudio semantics), geometry,
batching, tones, silence."""

import math

import numpy as np
import pytest
import torch

from hear_models import frontends
from hear_models.frontends import (
    PRESETS,
    LogMel,
    get_frontend,
    mel_center_frequencies,
    mel_filterbank,
    whisper_mel_filters,
)
from tests.conftest import need  # noqa: E402

ALL = sorted(PRESETS)


def _noise(n, seed=0, scale=0.1, batch=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if batch is None else (batch, n)
    return torch.randn(shape, generator=g) * scale


@pytest.fixture(scope="module")
def fronts():
    return {name: get_frontend(name) for name in ALL}


# ---- openai-whisper -------------------------------------------------------------------------


@pytest.mark.parametrize("n_mels", [80, 128])
def test_computed_slaney_filters_equal_whisper_npz(n_mels):
    need("whisper")
    shipped = whisper_mel_filters(n_mels)
    assert shipped is not None and shipped.shape == (n_mels, 201)
    ours = mel_filterbank(16000, 400, n_mels, 0.0, 8000.0, scale="slaney", norm="slaney")
    assert ours.dtype == torch.float32 and ours.shape == shipped.shape
    assert torch.allclose(ours, shipped, rtol=0, atol=1e-6)


def test_whisper_preset_works_without_whisper_filters(monkeypatch):
    monkeypatch.setattr(frontends, "_whisper_filters_path", lambda: None)
    fe = get_frontend("WHISPER_80")
    ref = mel_filterbank(16000, 400, 80, 0.0, 8000.0, "slaney", "slaney")
    assert torch.equal(fe.mel_filters, ref)


@pytest.mark.parametrize("name,n_mels", [("WHISPER_80", 80), ("WHISPER_128", 128)])
@pytest.mark.parametrize("n", [201, 1000, 16000, 16037, 24_001, 480_000])
def test_whisper_equals_openai(name, n_mels, n, fronts):
    whisper = need("whisper")
    audio = _noise(n, seed=n)
    audio[: n // 3] *= 0.01  # a quieter part so the 8-decade clamp is exercised
    ref = whisper.log_mel_spectrogram(audio, n_mels=n_mels)
    out = fronts[name](audio[None])[0]
    assert out.shape == ref.shape == (n_mels, n // 160)
    assert (out - ref).abs().max().item() < 1e-5


def test_whisper_batch_equals_openai_per_clip(fronts):
    whisper = need("whisper")
    audio = _noise(16000 * 3 + 17, seed=3, batch=3)
    audio[1] *= 1e-3  # different peaks: openai's max over one clip == our max per item
    out = fronts["WHISPER_80"](audio)
    for i in range(3):
        ref = whisper.log_mel_spectrogram(audio[i])
        assert (out[i] - ref).abs().max().item() < 1e-5


# ---- PaSST / MaskSpec -----------------------------------------------------------------------


def _kaldi_mel(f):
    return 1127.0 * math.log(1.0 + f / 700.0)


def test_kaldi_mel_banks_hand_computed():
    sr, n_fft, n_mels, fmin, fmax = 32000, 1024, 128, 0.0, 15000.0
    fb = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, scale="kaldi").double()
    assert fb.shape == (128, 513)
    assert torch.all(fb[:, -1] == 0)  # padded Nyquist bin
    assert torch.all(fb[:, 0] == 0)  # 0 Hz is the left edge of band 0
    delta = (_kaldi_mel(fmax) - _kaldi_mel(fmin)) / (n_mels + 1)
    bin_width = sr / n_fft  # 31.25 Hz
    for band, k in [(0, 1), (0, 2), (5, 20), (64, 150), (127, 470), (127, 479), (100, 300)]:
        mel = _kaldi_mel(k * bin_width)
        left, center, right = band * delta, (band + 1) * delta, (band + 2) * delta
        expected = max(0.0, min((mel - left) / (center - left), (right - mel) / (right - center)))
        assert fb[band, k].item() == pytest.approx(expected, abs=1e-6), (band, k)
    # by hand: mel(15 kHz) = 1127 ln(22.4286) = 3505.4, delta = 27.174 mel;
    # mel(31.25 Hz) = 49.22, so band 0 there is on its falling side: (2 delta - 49.22) / delta
    assert fb[0, 1].item() == pytest.approx(0.1887, abs=1e-3)
    assert fb[127, 480:].abs().max().item() == 0.0  # above 15 kHz (bin 480 = 15 kHz)
    centres = mel_center_frequencies(sr, n_mels, fmin, fmax, scale="kaldi")
    assert centres[0] == pytest.approx(700.0 * (math.exp(delta / 1127.0) - 1.0))


def _passt_reference(audio):
    """PaSST AugmentMelSTFT.forward in eval mode, as read from kkoutini/PaSST."""
    x = torch.nn.functional.conv1d(audio.unsqueeze(1), torch.tensor([[[-0.97, 1.0]]])).squeeze(1)
    window = torch.hann_window(800, periodic=False)
    x = torch.stft(x, 1024, hop_length=320, win_length=800, center=True, normalized=False,
                   window=window, return_complex=True)
    x = torch.view_as_real(x).pow(2).sum(-1)
    basis = mel_filterbank(32000, 1024, 128, 0.0, 15000.0, scale="kaldi")
    mel = torch.matmul(basis, x)
    return ((mel + 1e-5).log() + 4.5) / 5.0


def test_passt_pipeline(fronts):
    audio = _noise(32000 + 123, seed=5, batch=2)
    out = fronts["PASST_128_32K"](audio)
    ref = _passt_reference(audio)
    assert out.shape == ref.shape == (2, 128, 1 + (32000 + 122) // 320)
    assert (out - ref).abs().max().item() < 1e-5


# ---- ATST (audiossl) ------------------------------------------------------------------------


def test_atst_pipeline(fronts):
    """torchaudio MelSpectrogram + AmplitudeToDB(power, top_db=80) on one clip of shape
    (1, n) (as audiossl applies it: one cut-off per clip) + MinMax, written out."""
    audio = _noise(16000 * 2 + 5, seed=6, batch=2)
    audio[1, :8000] *= 1e-4
    out = fronts["ATST_64_16K"](audio)
    fb = mel_filterbank(16000, 1024, 64, 60.0, 7800.0, scale="htk")  # (64, 513)
    for i in range(2):
        spec = torch.stft(audio[i : i + 1], 1024, 160, 1024, torch.hann_window(1024),
                          center=True, pad_mode="reflect", return_complex=True).abs() ** 2
        mel = torch.matmul(spec.transpose(-1, -2), fb.T).transpose(-1, -2)  # (1, 64, T)
        db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
        db = torch.maximum(db, db.amax() - 80.0)  # 3-D input (1, F, T): one max per clip
        ref = (db - (-79.6482)) / (50.6842 - (-79.6482)) * 2.0 - 1.0
        assert (out[i] - ref[0]).abs().max().item() < 1e-5
    # the clamp really acted on the quiet half of clip 1
    assert torch.isclose(out[1].min(), out[1].max() - 80.0 * 2 / (50.6842 + 79.6482), atol=1e-4)


def test_htk_filterbank_hand_computed():
    fb = mel_filterbank(16000, 1024, 64, 60.0, 7800.0, scale="htk").double()
    assert fb.shape == (64, 513)
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    step = (mel(7800.0) - mel(60.0)) / 65
    edges = [hz(mel(60.0) + i * step) for i in range(66)]
    for band, k in [(0, 5), (0, 6), (10, 30), (40, 200), (63, 490)]:
        f = k * 15.625
        lo, c, hi = edges[band], edges[band + 1], edges[band + 2]
        expected = max(0.0, min((f - lo) / (c - lo), (hi - f) / (hi - c)))
        assert fb[band, k].item() == pytest.approx(expected, abs=1e-6)


# ---- every preset ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_n_frames_matches_output(name, fronts):
    fe = fronts[name]
    c = fe.config
    lo = fe.min_samples
    lengths = {lo, lo + 1, lo + c.hop_length - 1, c.n_fft, c.n_fft + 1, c.sample_rate,
               c.sample_rate + 1, c.sample_rate - 1, 3 * c.hop_length, 3 * c.hop_length + 1,
               2 * c.sample_rate + 7, 2 * c.sample_rate + c.hop_length // 2}
    rng = np.random.default_rng(0)
    lengths |= set(int(v) for v in rng.integers(lo, 3 * c.sample_rate, size=20))
    for n in sorted(v for v in lengths if v >= lo):
        out = fe(_noise(n, seed=n)[None])
        assert out.shape == (1, c.n_mels, fe.n_frames(n)), (name, n)
    with pytest.raises(ValueError):
        fe(torch.zeros(1, lo - 1))
    with pytest.raises(ValueError):
        fe(torch.zeros(lo + 10))


@pytest.mark.parametrize("name", ALL)
def test_batched_equals_one_by_one(name, fronts):
    fe = fronts[name]
    n = fe.config.sample_rate + 321
    audio = _noise(n, seed=11, batch=4)
    audio[1] *= 1e-3
    audio[2] = 0.0
    audio[3, : n // 2] *= 1e-5
    batched = fe(audio)
    for i in range(4):
        single = fe(audio[i : i + 1])
        assert (batched[i] - single[0]).abs().max().item() < 1e-5, (name, i)


@pytest.mark.parametrize("name", ALL)
def test_pure_tone_lands_in_nearest_mel_bin(name, fronts):
    fe = fronts[name]
    c = fe.config
    centres = mel_center_frequencies(c.sample_rate, c.n_mels, c.f_min, c.f_max, c.mel_scale)
    t = torch.arange(c.sample_rate, dtype=torch.float64) / c.sample_rate
    for frac in (0.25, 0.4, 0.5, 0.75, 0.9):
        for shift in (0.0, 0.2):  # on a centre, and a fifth of the way to the next one
            band = int(frac * c.n_mels)
            f = centres[band] + shift * (centres[band + 1] - centres[band])
            nearest = int(np.argmin(np.abs(centres - f)))
            tone = (0.5 * torch.sin(2 * math.pi * f * t)).float()
            out = fe(tone[None])[0]  # (n_mels, T)
            got = int(out.mean(-1).argmax())
            # Where bands are narrower than an FFT bin (WHISPER_128 below ~1.3 kHz: 24 Hz
            # bands, 40 Hz bins) the spectrum cannot tell neighbours apart: allow one band.
            slack = 1 if centres[band + 1] - centres[band] < c.sample_rate / c.n_fft else 0
            assert abs(got - nearest) <= slack, (name, f, got, nearest)


@pytest.mark.parametrize("name", ALL)
def test_silence_is_finite(name, fronts):
    fe = fronts[name]
    out = fe(torch.zeros(2, fe.config.sample_rate))
    assert torch.isfinite(out).all()
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", ALL)
def test_frame_centres_follow_an_impulse(name, fronts):
    fe = fronts[name]
    c = fe.config
    n = c.sample_rate
    for k in (10, 37):
        pos = int(round(k * c.hop_length + fe.frame_offset_samples))
        audio = torch.zeros(1, n)
        audio[0, pos] = 1.0
        energy = fe(audio)[0].mean(0)  # (T,)
        assert int(energy.argmax()) == k, name
        assert fe.frame_center_s(k) == pytest.approx(pos / c.sample_rate)
    assert fe.frame_center_s(0) == pytest.approx(fe.frame_offset_samples / c.sample_rate)
    idx = torch.arange(5)
    assert torch.allclose(fe.frame_center_s(idx),
                          (idx * c.hop_length + fe.frame_offset_samples).double() / c.sample_rate)


@pytest.mark.parametrize("name", ALL)
def test_buffers_are_not_state(name, fronts):
    fe = fronts[name]
    assert len(fe.state_dict()) == 0
    assert fe.mel_filters.shape == (fe.config.n_mels, fe.config.n_fft // 2 + 1)
    moved = fe.to(torch.float64)  # buffers follow .to()
    assert moved.mel_filters.dtype == torch.float64
    fe.to(torch.float32)


def test_float64_input_and_config_checks(fronts):
    fe = fronts["WHISPER_80"]
    a = _noise(4000, seed=1)[None]
    out64 = fe(a.double())
    assert out64.dtype == torch.float64
    assert (out64.float() - fe(a)).abs().max().item() < 1e-5
    with pytest.raises(ValueError):
        PRESETS["WHISPER_80"].replace(mel_scale="bark")
    with pytest.raises(ValueError):
        PRESETS["WHISPER_80"].replace(win_length=401)
    with pytest.raises(KeyError):
        get_frontend("NOPE")
    assert isinstance(get_frontend(PRESETS["ATST_64_16K"]), LogMel)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ALL)
def test_cuda_matches_cpu_and_ignores_autocast(name, fronts):
    fe = fronts[name]
    audio = _noise(fe.config.sample_rate + 99, seed=21, batch=2)
    want = fe(audio)
    gpu = LogMel(fe.config).to("cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        got = gpu(audio.cuda())
    assert got.dtype == torch.float32
    assert (got.cpu() - want).abs().max().item() < 1e-4
