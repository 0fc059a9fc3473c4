"""Log-mel front ends: every variant the five systems use, as named presets of ONE module.

A front end maps a batch of waveforms to log-mel spectrograms::

    audio : Tensor, shape = (batch, n_samples)          float32, mono, at ``sample_rate``
    ->      Tensor, shape = (batch, n_mels, n_frames)

``LogMelConfig`` (a frozen dataclass) holds every setting; ``LogMel(config)`` is the only
implementation; ``PRESETS`` names the configurations the systems were trained with and
``get_frontend(name)`` builds one. The mel filterbanks (slaney / htk / kaldi) live in
``mel_filterbank`` so that other code can reuse them.

Timing. For a centred STFT (``center=True``) frame ``k`` is centred on input sample
``k * hop_length + offset`` where ``offset`` is 0, or 1 with PaSST-style pre-emphasis (its
output sample ``n`` belongs to input sample ``n + 1``); without centring add ``n_fft / 2``.
``LogMel.frame_center_s(k)`` returns that time in seconds and ``LogMel.n_frames(n_samples)``
the exact number of frames for a length.

Every computation is batch-item independent (the log-domain dynamic-range clamp uses the
maximum of each item, not of the batch), so batched == one-by-one.

Nothing heavy happens at import: whisper is never imported (its filter file is located with
``importlib.util.find_spec``) and torchaudio is not used at all.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LogMelConfig",
    "LogMel",
    "PRESETS",
    "get_frontend",
    "list_frontends",
    "mel_filterbank",
    "mel_center_frequencies",
    "hz_to_mel",
    "mel_to_hz",
    "whisper_mel_filters",
]

MEL_SCALES = ("slaney", "htk", "kaldi")
FILTER_NORMS = (None, "slaney")
LOG_KINDS = ("log10", "ln")
WINDOWS = ("hann", "hamming")


# --------------------------------------------------------------------------------------------
# Mel scales and filterbanks
# --------------------------------------------------------------------------------------------

# Slaney's auditory-toolbox scale (librosa's default, htk=False): linear below 1 kHz, then log.
_SLANEY_F_SP = 200.0 / 3  # Hz per mel in the linear part
_SLANEY_MIN_LOG_HZ = 1000.0  # Hz: where the log part starts
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # = 15 mel
_SLANEY_LOGSTEP = math.log(6.4) / 27.0  # ln-Hz per mel in the log part


def hz_to_mel(freq: Union[float, np.ndarray], scale: str = "htk") -> np.ndarray:
    """Convert frequencies to mels.

    Parameters
    ----------
    freq : float or np.ndarray
        Frequencies in Hz.
    scale : str
        ``"slaney"`` (librosa default: linear below 1 kHz, logarithmic above),
        ``"htk"`` (``2595 log10(1 + f / 700)``, torchaudio's default) or
        ``"kaldi"`` (``1127 ln(1 + f / 700)``, the same curve in other units).

    Returns
    -------
    np.ndarray (float64), same shape as ``freq``
    """
    f = np.asarray(freq, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if scale == "kaldi":
        return 1127.0 * np.log(1.0 + f / 700.0)
    if scale == "slaney":
        lin = f / _SLANEY_F_SP
        log = _SLANEY_MIN_LOG_MEL + np.log(np.maximum(f, 1e-300) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
        return np.where(f >= _SLANEY_MIN_LOG_HZ, log, lin)
    raise ValueError(f"unknown mel scale {scale!r}; expected one of {MEL_SCALES}")


def mel_to_hz(mel: Union[float, np.ndarray], scale: str = "htk") -> np.ndarray:
    """Inverse of :func:`hz_to_mel` (float64, Hz)."""
    m = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if scale == "kaldi":
        return 700.0 * (np.exp(m / 1127.0) - 1.0)
    if scale == "slaney":
        lin = _SLANEY_F_SP * m
        log = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (m - _SLANEY_MIN_LOG_MEL))
        return np.where(m >= _SLANEY_MIN_LOG_MEL, log, lin)
    raise ValueError(f"unknown mel scale {scale!r}; expected one of {MEL_SCALES}")


def _band_edges_hz(sample_rate: int, n_mels: int, f_min: float, f_max: Optional[float],
                   scale: str) -> np.ndarray:
    """The ``n_mels + 2`` band edges in Hz, equally spaced on the mel scale (float64)."""
    f_max = _resolve_f_max(sample_rate, f_max, scale)
    mels = np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2)
    return mel_to_hz(mels, scale)


def _resolve_f_max(sample_rate: int, f_max: Optional[float], scale: str) -> float:
    nyquist = sample_rate / 2
    if f_max is None:
        return nyquist
    if scale == "kaldi" and f_max <= 0:  # Kaldi convention: non-positive = offset from Nyquist
        return f_max + nyquist
    return float(f_max)


def mel_center_frequencies(sample_rate: int, n_mels: int, f_min: float = 0.0,
                           f_max: Optional[float] = None, scale: str = "htk") -> np.ndarray:
    """Centre frequency of each mel filter, in Hz.

    Returns
    -------
    np.ndarray, shape = (n_mels,), float64
    """
    return _band_edges_hz(sample_rate, n_mels, f_min, f_max, scale)[1:-1]


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: Optional[float] = None,
    scale: str = "htk",
    norm: Optional[str] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Triangular mel filterbank that maps a one-sided power spectrum to mel bands.

    Three constructions, each reproducing a reference implementation:

    * ``scale="slaney"``: librosa ``filters.mel(htk=False)``; triangles in Hz between band
      edges spaced equally on Slaney's scale, evaluated at ``np.fft.rfftfreq(n_fft, 1 / sr)``.
      With ``norm="slaney"`` each triangle is scaled by ``2 / (f_right - f_left)`` (equal area);
      this is how openai-whisper's ``mel_filters.npz`` was made.
    * ``scale="htk"``: torchaudio ``functional.melscale_fbanks(mel_scale="htk")``, the same
      Hz-domain triangles on the HTK scale (torchaudio evaluates them at
      ``linspace(0, sr // 2, n_fft // 2 + 1)``, identical to ``rfftfreq`` for even ``n_fft``
      and even ``sample_rate``, which we use). ``norm=None`` is torchaudio's default.
    * ``scale="kaldi"``: torchaudio ``compliance.kaldi.get_mel_banks`` with
      ``vtln_warp_factor=1``: triangles in the MEL domain (``1127 ln(1 + f / 700)``),
      evaluated at the ``n_fft // 2`` bins ``k * sr / n_fft``; the Nyquist bin gets a zero
      column (as PaSST pads it). ``f_max <= 0`` means ``nyquist + f_max``. ``norm`` must be None.

    Computed in float64 and cast to ``dtype``.

    Parameters
    ----------
    sample_rate : int
        Hz.
    n_fft : int
        FFT size in samples; the spectrum has ``n_fft // 2 + 1`` bins.
    n_mels : int
        Number of mel bands.
    f_min, f_max : float
        Band limits in Hz (``f_max=None``: Nyquist).
    scale : str
        ``"slaney"``, ``"htk"`` or ``"kaldi"``.
    norm : str or None
        ``None`` or ``"slaney"`` (area normalisation).

    Returns
    -------
    Tensor, shape = (n_mels, n_fft // 2 + 1)
    """
    if scale not in MEL_SCALES:
        raise ValueError(f"unknown mel scale {scale!r}; expected one of {MEL_SCALES}")
    if norm not in FILTER_NORMS:
        raise ValueError(f"unknown filter norm {norm!r}; expected one of {FILTER_NORMS}")
    f_max_hz = _resolve_f_max(sample_rate, f_max, scale)
    if not 0.0 <= f_min < f_max_hz <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {f_min}, {f_max_hz}")
    n_freqs = n_fft // 2 + 1

    if scale == "kaldi":
        if norm is not None:
            raise ValueError("kaldi mel banks have no normalisation option")
        mel_lo, mel_hi = hz_to_mel(f_min, "kaldi"), hz_to_mel(f_max_hz, "kaldi")
        delta = (mel_hi - mel_lo) / (n_mels + 1)
        band = np.arange(n_mels, dtype=np.float64)[:, None]
        left = mel_lo + band * delta  # (n_mels, 1) mel
        center = mel_lo + (band + 1.0) * delta
        right = mel_lo + (band + 2.0) * delta
        fft_mel = hz_to_mel(np.arange(n_fft // 2) * (sample_rate / n_fft), "kaldi")[None, :]
        up = (fft_mel - left) / (center - left)
        down = (right - fft_mel) / (right - center)
        banks = np.maximum(0.0, np.minimum(up, down))  # (n_mels, n_fft // 2)
        fb = np.concatenate([banks, np.zeros((n_mels, 1))], axis=1)  # Nyquist bin: zero
    else:
        edges = _band_edges_hz(sample_rate, n_mels, f_min, f_max_hz, scale)  # (n_mels + 2,)
        fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)  # (n_freqs,) Hz
        widths = np.diff(edges)  # (n_mels + 1,)
        ramps = edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_freqs)
        lower = -ramps[:-2] / widths[:-1, None]
        upper = ramps[2:] / widths[1:, None]
        fb = np.maximum(0.0, np.minimum(lower, upper))  # (n_mels, n_freqs)
        if norm == "slaney":
            fb = fb * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    assert fb.shape == (n_mels, n_freqs)
    return torch.from_numpy(fb).to(dtype)


def _whisper_filters_path() -> Optional[str]:
    """Path of openai-whisper's ``assets/mel_filters.npz`` without importing whisper."""
    try:
        spec = importlib.util.find_spec("whisper")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "assets", "mel_filters.npz")
        if os.path.isfile(path):
            return path
    return None


def whisper_mel_filters(n_mels: int) -> Optional[Tensor]:
    """openai-whisper's shipped filters ``mel_{n_mels}`` (float32), or None when unavailable.

    Returns
    -------
    Tensor, shape = (n_mels, 201), or None
    """
    path = _whisper_filters_path()
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as f:
        key = f"mel_{n_mels}"
        if key not in f:
            return None
        return torch.from_numpy(np.array(f[key], dtype=np.float32))


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogMelConfig:
    """Every setting of a log-mel front end.

    The pipeline, in order (each step optional where noted)::

        pre-emphasis  y[n] = x[n + 1] - c x[n]          (PaSST's conv1d: one sample shorter)
        STFT          window (win_length, centred in n_fft), hop, center + pad_mode
        drop last     frame (whisper)
        power         |X| ** power
        mel           filterbank @ spectrum
        log           log_multiplier * log_kind(max(x, log_floor) + log_offset)
        range clamp   max(x, max_of_item - dynamic_range)     (per batch item)
        normalise     (x + affine[0]) / affine[1]             (whisper, PaSST)
                      (x - minmax[0]) / (minmax[1] - minmax[0]) * 2 - 1    (ATST)
    """

    sample_rate: int  # Hz
    n_fft: int  # samples
    hop_length: int  # samples
    n_mels: int
    win_length: Optional[int] = None  # samples; None = n_fft (zero-padded to n_fft, centred)
    window: str = "hann"  # "hann" | "hamming"
    periodic_window: bool = True  # torch.hann_window(periodic=...)
    f_min: float = 0.0  # Hz
    f_max: Optional[float] = None  # Hz; None = Nyquist
    mel_scale: str = "htk"  # "slaney" | "htk" | "kaldi"
    mel_norm: Optional[str] = None  # None | "slaney"
    whisper_filters: bool = False  # load whisper's shipped npz when installed (same values)
    power: float = 2.0  # 2: power spectrum, 1: magnitude
    preemphasis: Optional[float] = None  # c in y[n] = x[n + 1] - c x[n]; None = off
    center: bool = True  # pad n_fft // 2 on both sides
    pad_mode: str = "reflect"  # torch.stft pad_mode when centred
    drop_last_frame: bool = False  # whisper drops the last STFT frame
    log_kind: str = "ln"  # "ln" | "log10"
    log_multiplier: float = 1.0  # 10 for dB
    log_floor: float = 0.0  # clamp(min=log_floor) before the log (0 = no clamp)
    log_offset: float = 0.0  # added before the log
    dynamic_range: Optional[float] = None  # in output log units, per item; None = off
    affine: Optional[Tuple[float, float]] = None  # (offset, scale): (x + offset) / scale
    minmax: Optional[Tuple[float, float]] = None  # (min, max): to [-1, 1]

    def __post_init__(self) -> None:
        win = self.n_fft if self.win_length is None else self.win_length
        if not 0 < win <= self.n_fft:
            raise ValueError(f"win_length must be in (0, n_fft], got {win}")
        if self.hop_length <= 0 or self.n_mels <= 0 or self.sample_rate <= 0:
            raise ValueError("sample_rate, hop_length and n_mels must be positive")
        if self.mel_scale not in MEL_SCALES:
            raise ValueError(f"mel_scale must be one of {MEL_SCALES}, got {self.mel_scale!r}")
        if self.mel_norm not in FILTER_NORMS:
            raise ValueError(f"mel_norm must be one of {FILTER_NORMS}, got {self.mel_norm!r}")
        if self.log_kind not in LOG_KINDS:
            raise ValueError(f"log_kind must be one of {LOG_KINDS}, got {self.log_kind!r}")
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {self.window!r}")
        if self.log_floor <= 0 and self.log_offset <= 0:
            raise ValueError("need log_floor > 0 or log_offset > 0 so that silence stays finite")
        if self.affine is not None and self.minmax is not None:
            raise ValueError("give at most one of affine and minmax")
        if self.whisper_filters and (self.mel_scale, self.mel_norm) != ("slaney", "slaney"):
            raise ValueError("whisper_filters needs mel_scale='slaney', mel_norm='slaney'")

    @property
    def win(self) -> int:
        """Window length in samples (``win_length`` or ``n_fft``)."""
        return self.n_fft if self.win_length is None else self.win_length

    def replace(self, **changes) -> "LogMelConfig":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------


class LogMel(nn.Module):
    """Log-mel spectrogram front end described by a :class:`LogMelConfig`.

    Buffers (``window``, ``mel_filters``, ``preemphasis_kernel``) are non-persistent: they
    follow ``.to(device)`` and never appear in state dicts.

    Parameters
    ----------
    config : LogMelConfig
    """

    def __init__(self, config: LogMelConfig):
        super().__init__()
        self.config = config
        c = config
        window_fn = torch.hann_window if c.window == "hann" else torch.hamming_window
        self.register_buffer("window", window_fn(c.win, periodic=c.periodic_window,
                                                 dtype=torch.float32), persistent=False)
        filters = whisper_mel_filters(c.n_mels) if c.whisper_filters else None
        if filters is None or tuple(filters.shape) != (c.n_mels, c.n_fft // 2 + 1):
            filters = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max,
                                     c.mel_scale, c.mel_norm)
        self.register_buffer("mel_filters", filters, persistent=False)  # (n_mels, n_freqs)
        if c.preemphasis is not None:
            kernel = torch.tensor([[[-float(c.preemphasis), 1.0]]])  # (out=1, in=1, 2)
            self.register_buffer("preemphasis_kernel", kernel, persistent=False)
        else:
            self.preemphasis_kernel = None

    # ---- geometry ---------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def n_mels(self) -> int:
        return self.config.n_mels

    @property
    def hop_s(self) -> float:
        """Time between frames in seconds (``hop_length / sample_rate``)."""
        return self.config.hop_length / self.config.sample_rate

    @property
    def frame_offset_samples(self) -> float:
        """Input sample on which frame 0 is centred (see :meth:`frame_center_s`)."""
        c = self.config
        offset = 0.0 if c.center else c.n_fft / 2
        if c.preemphasis is not None:
            offset += 1.0  # pre-emphasised sample n belongs to input sample n + 1
        return offset

    @property
    def min_samples(self) -> int:
        """Shortest input (in samples) that ``forward`` accepts."""
        c = self.config
        extra = 1 if c.preemphasis is not None else 0
        if c.center:
            # reflect padding needs more samples than the pad; constant padding needs one
            need = c.n_fft // 2 + 1 if c.pad_mode == "reflect" else 1
        else:
            need = c.n_fft
        need += extra
        if c.drop_last_frame:  # at least one frame must remain
            while self.n_frames(need) < 1:
                need += 1
        return need

    def n_frames(self, n_samples: int) -> int:
        """Exact number of frames ``forward`` returns for ``n_samples`` input samples."""
        c = self.config
        n = int(n_samples) - (1 if c.preemphasis is not None else 0)
        if c.center:
            frames = 1 + n // c.hop_length
        else:
            frames = 1 + (n - c.n_fft) // c.hop_length if n >= c.n_fft else 0
        if c.drop_last_frame:
            frames -= 1
        return max(frames, 0)

    def frame_center_s(self, index):
        """Time in seconds on which frame ``index`` is centred.

        ``(index * hop_length + frame_offset_samples) / sample_rate``; for a centred STFT
        without pre-emphasis this is ``index * hop_length / sample_rate``.

        Parameters
        ----------
        index : int, np.ndarray or Tensor
            Frame indices (0-based).

        Returns
        -------
        float, np.ndarray or Tensor (float64 where an array)
        """
        c = self.config
        if isinstance(index, Tensor):
            index = index.to(torch.float64)
        elif isinstance(index, np.ndarray):
            index = index.astype(np.float64)
        return (index * c.hop_length + self.frame_offset_samples) / c.sample_rate

    # ---- computation ------------------------------------------------------------------------

    def forward(self, audio: Tensor) -> Tensor:
        """Compute the normalised log-mel spectrogram.

        Parameters
        ----------
        audio : Tensor, shape = (batch, n_samples)
            Waveforms at ``config.sample_rate``. float32 (float64 is computed in float64;
            other dtypes are cast to float32).

        Returns
        -------
        Tensor, shape = (batch, n_mels, n_frames)
            ``n_frames == self.n_frames(n_samples)``.
        """
        c = self.config
        if audio.dim() != 2:
            raise ValueError(f"expected audio of shape (batch, n_samples), got {tuple(audio.shape)}")
        if audio.shape[-1] < self.min_samples:
            raise ValueError(f"audio has {audio.shape[-1]} samples; this front end needs at least "
                             f"{self.min_samples} (STFT padding of n_fft={c.n_fft})")
        dtype = torch.float64 if audio.dtype == torch.float64 else torch.float32
        x = audio.to(dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            if self.preemphasis_kernel is not None:
                x = F.conv1d(x.unsqueeze(1), self.preemphasis_kernel.to(dtype)).squeeze(1)
            spec = torch.stft(x, c.n_fft, hop_length=c.hop_length, win_length=c.win,
                              window=self.window.to(dtype), center=c.center,
                              pad_mode=c.pad_mode, normalized=False, onesided=True,
                              return_complex=True)  # (batch, n_fft // 2 + 1, frames)
            if c.drop_last_frame:
                spec = spec[..., :-1]
            if c.power == 2.0:
                spec = torch.view_as_real(spec).pow(2).sum(-1)
            elif c.power == 1.0:
                spec = spec.abs()
            else:
                spec = spec.abs().pow(c.power)
            mel = torch.matmul(self.mel_filters.to(dtype), spec)  # (batch, n_mels, frames)
            if c.log_floor > 0:
                mel = mel.clamp(min=c.log_floor)
            if c.log_offset != 0:
                mel = mel + c.log_offset
            mel = mel.log10() if c.log_kind == "log10" else mel.log()
            if c.log_multiplier != 1.0:
                mel = mel * c.log_multiplier
            if c.dynamic_range is not None:
                peak = mel.amax(dim=(-2, -1), keepdim=True)  # per batch item
                mel = torch.maximum(mel, peak - c.dynamic_range)
            if c.affine is not None:
                mel = (mel + c.affine[0]) / c.affine[1]
            elif c.minmax is not None:
                lo, hi = c.minmax
                mel = (mel - lo) / (hi - lo) * 2.0 - 1.0
        return mel

    def extra_repr(self) -> str:
        c = self.config
        return (f"sample_rate={c.sample_rate}, n_fft={c.n_fft}, win_length={c.win}, "
                f"hop_length={c.hop_length}, n_mels={c.n_mels}, mel_scale={c.mel_scale}")


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------

# openai-whisper `audio.log_mel_spectrogram`, with the range clamp per clip (whisper takes the
# max over whatever tensor it is given; per item makes batched == one-by-one).
WHISPER_80 = LogMelConfig(
    sample_rate=16000,  # Hz
    n_fft=400,  # 25 ms at 16 kHz
    hop_length=160,  # 10 ms at 16 kHz
    n_mels=80,
    window="hann", periodic_window=True,  # torch.hann_window(400)
    f_min=0.0, f_max=8000.0,  # Hz
    mel_scale="slaney", mel_norm="slaney", whisper_filters=True,  # librosa filters.mel
    power=2.0,
    center=True, pad_mode="reflect",
    drop_last_frame=True,  # stft[..., :-1]
    log_kind="log10", log_floor=1e-10,  # log10(clamp(x, 1e-10))
    dynamic_range=8.0,  # log10 units = 80 dB
    affine=(4.0, 4.0),  # (x + 4) / 4
)
WHISPER_128 = WHISPER_80.replace(n_mels=128)  # large-v3

# PaSST's AugmentMelSTFT in eval mode (MaskSpec uses it). MaskSpec's per-bin AudioSet
# standardisation is a model concern, not part of this preset.
PASST_128_32K = LogMelConfig(
    sample_rate=32000,  # Hz
    n_fft=1024,  # 32 ms at 32 kHz
    win_length=800,  # 25 ms at 32 kHz, zero-padded to n_fft (centred)
    hop_length=320,  # 10 ms at 32 kHz
    n_mels=128,
    window="hann", periodic_window=False,  # torch.hann_window(800, periodic=False)
    f_min=0.0, f_max=15000.0,  # Hz
    mel_scale="kaldi", mel_norm=None,  # torchaudio.compliance.kaldi.get_mel_banks, Nyquist col 0
    power=2.0,
    preemphasis=0.97,  # conv1d with kernel [-0.97, 1]: output one sample shorter
    center=True, pad_mode="reflect",
    log_kind="ln", log_offset=1e-5,  # log(x + 1e-5)
    affine=(4.5, 5.0),  # (x + 4.5) / 5
)

# audiossl ATST: torchaudio MelSpectrogram(16000, f_min=60, f_max=7800, hop_length=160,
# win_length=1024, n_fft=1024, n_mels=64) -> AmplitudeToDB("power", top_db=80) -> MinMax.
# torchaudio's amplitude_to_DB reshapes its input to (-1, packed_channels, freq, time) with
# packed_channels = shape[-3] and takes ONE max over the last three dims: for a 3-D
# (batch, freq, time) input that is one cut-off for the WHOLE batch (items would depend on
# each other). audiossl applies the transform per clip (shape (1, n_samples) -> (1, 64, T)),
# i.e. one cut-off per clip; we take it per batch item, which reproduces that exactly.
ATST_64_16K = LogMelConfig(
    sample_rate=16000,  # Hz
    n_fft=1024,  # 64 ms at 16 kHz
    win_length=1024,
    hop_length=160,  # 10 ms at 16 kHz
    n_mels=64,
    window="hann", periodic_window=True,
    f_min=60.0, f_max=7800.0,  # Hz
    mel_scale="htk", mel_norm=None,  # torchaudio defaults
    power=2.0,
    center=True, pad_mode="reflect",
    log_kind="log10", log_multiplier=10.0, log_floor=1e-10,  # dB, amin 1e-10, ref 1.0
    dynamic_range=80.0,  # top_db, dB
    minmax=(-79.6482, 50.6842),  # dB; global constants of audiossl's MinMax
)

# Srivastava et al. 2022 give 16 kHz, 64 bins, 64 ms window, 20 ms hop only. Our choices:
# n_fft = win = 1024, periodic hann, centred reflect STFT, power 2, htk mel 0-8000 Hz without
# filter normalisation (torchaudio defaults), natural log with +1e-6, no output scaling.
CONFORMER_64_16K = LogMelConfig(
    sample_rate=16000,  # Hz
    n_fft=1024,  # 64 ms at 16 kHz
    win_length=1024,
    hop_length=320,  # 20 ms at 16 kHz
    n_mels=64,
    window="hann", periodic_window=True,
    f_min=0.0, f_max=8000.0,  # Hz
    mel_scale="htk", mel_norm=None,
    power=2.0,
    center=True, pad_mode="reflect",
    log_kind="ln", log_offset=1e-6,  # log(x + 1e-6)
)

PRESETS: Dict[str, LogMelConfig] = {
    "WHISPER_80": WHISPER_80,
    "WHISPER_128": WHISPER_128,
    "PASST_128_32K": PASST_128_32K,
    "ATST_64_16K": ATST_64_16K,
    "CONFORMER_64_16K": CONFORMER_64_16K,
}


def list_frontends() -> list:
    """Names of the presets."""
    return sorted(PRESETS)


def get_frontend(name: Union[str, LogMelConfig]) -> LogMel:
    """Build the front end for a preset name (e.g. ``"WHISPER_80"``) or a config."""
    if isinstance(name, LogMelConfig):
        return LogMel(name)
    key = name.upper()
    if key not in PRESETS:
        raise KeyError(f"unknown front end {name!r}; known: {', '.join(sorted(PRESETS))}")
    return LogMel(PRESETS[key])
