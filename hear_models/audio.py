"""Reading and resampling audio: the one loader and resampler of the package (command line,
evaluation, training data, the offline task suite's generator)."""

from __future__ import annotations

import struct
import warnings
from math import gcd
from pathlib import Path
from typing import Optional

import numpy as np


class TruncatedAudioWarning(UserWarning):
    """The file's header promises more frames than the file holds (an interrupted copy or
    download): only what is present is decoded."""


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


def _wav_frames(path: Path, block_align: int) -> Optional[tuple]:
    """(frames the RIFF/WAVE header promises, frames the file holds), from the ``data``
    chunk's size and the bytes after it; None if not a WAV or no sized data chunk."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if size in (0, 0xFFFFFFFF):  # written by a stream that could not seek back
                    return None
                present = path.stat().st_size - f.tell()
                return size // block_align, max(0, present) // block_align
            f.seek(size + (size & 1), 1)


def check_audio_file(path) -> Optional[str]:
    """Check that ``path`` is an audio file soundfile can open, without decoding it.

    Returns None, or a warning when the header promises more audio than the file holds.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, ValueError
        With a message naming the file and the problem.
    """
    import soundfile as sf

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not an audio file (give the files in it, "
                                f"e.g. {path}/*.wav)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise ValueError(f"{path}: cannot decode audio ({e})") from None
    if info.frames == 0:
        raise ValueError(f"{path}: the file holds no samples")
    block = info.channels * {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4,
                             "FLOAT": 4, "DOUBLE": 8}.get(info.subtype, 0)
    frames = _wav_frames(path, block) if info.format == "WAV" and block else None
    if frames is not None and frames[0] > frames[1]:
        return truncation_message(path, frames[0], frames[1], info.samplerate)
    return None


def truncation_message(path, promised: int, present: int, sr: int) -> str:
    return (f"{path}: truncated: its header promises {promised / sr:.3f} s ({promised} frames), the file "
            f"holds {present / sr:.3f} s")


def load_audio(path, sample_rate: int, mono: str = "mean", dtype: str = "float32") -> np.ndarray:
    """Decode a file with soundfile, to mono in [-1, 1] at ``sample_rate`` (``dtype``
    float32, or float64 for the task generator).

    Multichannel files are averaged to mono (``mono="mean"``) or refused (``mono="error"``);
    other rates are resampled. A file whose header promises more frames than it holds
    (cut short) is decoded as far as it goes, with a :class:`TruncatedAudioWarning`.

    Returns
    -------
    audio : ndarray, shape = (n_samples,), ``dtype``
    """
    import soundfile as sf

    path = Path(path)
    truncated = check_audio_file(path)
    try:
        with sf.SoundFile(str(path)) as f:
            promised = f.frames
            data = f.read(dtype=dtype, always_2d=True)
            sr = f.samplerate
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise ValueError(f"{path}: cannot decode audio ({e})") from None
    if data.shape[0] == 0:
        raise ValueError(f"{path}: the file holds no samples")
    if truncated is None and data.shape[0] < promised:  # formats whose header libsndfile reports as is
        truncated = truncation_message(path, promised, data.shape[0], sr)
    if truncated is not None:
        warnings.warn(f"{truncated}; only that is decoded", TruncatedAudioWarning, stacklevel=2)
    if data.shape[1] > 1 and mono == "error":
        raise ValueError(f"{path}: {data.shape[1]} channels, expected mono")
    audio = data.mean(axis=1)
    return resample(audio, sr, sample_rate)
