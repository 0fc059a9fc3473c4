"""Reading and resampling audio: the one loader and resampler of the package (command line,
evaluation, training data, the offline task suite's generator)."""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling (scipy ``resample_poly``, Kaiser window) along the last axis;
    float64 input stays float64 (the task generator's bytes depend on it), anything else
    comes back float32."""
    if orig_sr == target_sr:
        return audio
    from scipy.signal import resample_poly

    g = gcd(int(orig_sr), int(target_sr))
    out = resample_poly(audio, int(target_sr) // g, int(orig_sr) // g, axis=-1)
    return out.astype(np.float64 if audio.dtype == np.float64 else np.float32, copy=False)


def load_audio(path, sample_rate: int, mono: str = "mean", dtype: str = "float32") -> np.ndarray:
    """Decode a file with soundfile, to mono in [-1, 1] at ``sample_rate`` (``dtype``
    float32, or float64 for the task generator).

    Multichannel files are averaged to mono (``mono="mean"``) or refused (``mono="error"``);
    other rates are resampled.

    Returns
    -------
    audio : ndarray, shape = (n_samples,), ``dtype``
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    try:
        data, sr = sf.read(str(path), dtype=dtype, always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise ValueError(f"{path}: cannot decode audio ({e})") from None
    if data.shape[0] == 0:
        raise ValueError(f"{path}: the file holds no samples")
    if data.shape[1] > 1 and mono == "error":
        raise ValueError(f"{path}: {data.shape[1]} channels, expected mono")
    audio = data.mean(axis=1)
    return resample(audio, sr, sample_rate)
