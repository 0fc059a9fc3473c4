"""Small deterministic signal helpers (numpy/scipy only)."""
from __future__ import annotations

from math import gcd
from typing import Optional

import numpy as np

from hear_models.audio import resample  # noqa: F401  (the package's one resampler)

MASTER_SR = 48000


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (pitch moves with it), by polyphase resampling."""
    if abs(factor - 1.0) < 1e-3:
        return x
    from scipy.signal import resample_poly

    up, down = 200, int(round(200 * factor))
    g = gcd(up, down)
    return resample_poly(x, up // g, down // g)


def trim(x: np.ndarray, thresh_db: float = -40.0, pad: int = 0) -> np.ndarray:
    """Cut leading/trailing parts quieter than ``thresh_db`` below the peak."""
    if len(x) == 0:
        return x
    a = np.abs(x)
    peak = a.max()
    if peak <= 0:
        return x[:0]
    idx = np.nonzero(a > peak * 10 ** (thresh_db / 20))[0]
    s, e = max(0, idx[0] - pad), min(len(x), idx[-1] + 1 + pad)
    return x[s:e]


def fade(x: np.ndarray, n_in: int = 48, n_out: int = 480) -> np.ndarray:
    x = x.copy()
    n_in, n_out = min(n_in, len(x) // 2), min(n_out, len(x) // 2)
    if n_in:
        x[:n_in] *= np.linspace(0, 1, n_in)
    if n_out:
        x[-n_out:] *= np.linspace(1, 0, n_out)
    return x


def place(buf: np.ndarray, x: np.ndarray, start: int, gain: float = 1.0) -> int:
    """Add ``x`` into ``buf`` at ``start`` (clipped to the buffer); returns samples written."""
    if start >= len(buf):
        return 0
    if start < 0:
        x, start = x[-start:], 0
    n = min(len(x), len(buf) - start)
    buf[start:start + n] += gain * x[:n]
    return n


def fit(x: np.ndarray, n: int, rng: np.random.Generator, jitter: bool = True) -> np.ndarray:
    """Exactly ``n`` samples: random crop if longer, random placement if shorter."""
    if len(x) >= n:
        s = int(rng.integers(0, len(x) - n + 1)) if jitter else 0
        return x[s:s + n].copy()
    out = np.zeros(n)
    s = int(rng.integers(0, n - len(x) + 1)) if jitter else 0
    out[s:s + len(x)] = x
    return out


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2) + 1e-20))


def noise(n: int, rng: np.random.Generator, color: str = "pink") -> np.ndarray:
    """Unit-RMS white, pink (1/f) or brown (1/f^2) noise."""
    w = rng.standard_normal(n)
    if color == "white":
        return w / rms(w)
    spec = np.fft.rfft(w)
    f = np.arange(len(spec), dtype=float)
    f[0] = 1.0
    spec /= np.sqrt(f) if color == "pink" else f
    y = np.fft.irfft(spec, n)
    return y / rms(y)


def at_snr(signal: np.ndarray, bg: np.ndarray, snr_db: float) -> np.ndarray:
    """``bg`` scaled so that signal/bg has ``snr_db`` (by RMS over active samples)."""
    act = signal[np.abs(signal) > 1e-4]
    s = rms(act) if len(act) else 1e-3
    return bg * (s / rms(bg)) * 10 ** (-snr_db / 20)


def filt(x: np.ndarray, sr: int, low: Optional[float] = None, high: Optional[float] = None,
         order: int = 2) -> np.ndarray:
    """Butterworth high-pass at ``low`` and/or low-pass at ``high`` (Hz)."""
    from scipy.signal import butter, sosfilt

    if low is not None:
        x = sosfilt(butter(order, low, "highpass", fs=sr, output="sos"), x)
    if high is not None and high < sr / 2 * 0.98:
        x = sosfilt(butter(order, high, "lowpass", fs=sr, output="sos"), x)
    return x


def normalize(x: np.ndarray, peak: float = 0.5) -> np.ndarray:
    m = np.max(np.abs(x)) if len(x) else 0.0
    return x * (peak / m) if m > 0 else x


def augment(x: np.ndarray, sr: int, rng: np.random.Generator, speed_range: float = 0.05,
            eq: bool = True) -> np.ndarray:
    """Random speed (pitch) change and a random gentle EQ."""
    x = speed(x, float(rng.uniform(1 - speed_range, 1 + speed_range)))
    if eq:
        lo = float(rng.uniform(20, 200))
        hi = float(rng.uniform(5000, 16000))
        x = filt(x, sr, low=lo, high=hi, order=1)
    return x
