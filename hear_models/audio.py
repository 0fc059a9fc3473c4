"""Reading audio files for the command line and the evaluation runner."""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling (scipy ``resample_poly``, Kaiser window) along the last axis."""
    if orig_sr == target_sr:
        return audio
    from scipy.signal import resample_poly

    g = gcd(int(orig_sr), int(target_sr))
    return resample_poly(audio, target_sr // g, orig_sr // g, axis=-1).astype(np.float32)


def load_audio(path, sample_rate: int, mono: str = "mean") -> np.ndarray:
    """Decode a file with soundfile, to float32 mono in [-1, 1] at ``sample_rate``.

    Multichannel files are averaged to mono (``mono="mean"``) or refused (``mono="error"``);
    other rates are resampled.

    Returns
    -------
    audio : ndarray, shape = (n_samples,), float32
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise ValueError(f"{path}: cannot decode audio ({e})") from None
    if data.shape[0] == 0:
        raise ValueError(f"{path}: the file holds no samples")
    if data.shape[1] > 1 and mono == "error":
        raise ValueError(f"{path}: {data.shape[1]} channels, expected mono")
    audio = data.mean(axis=1)
    return resample(audio, sr, sample_rate)
