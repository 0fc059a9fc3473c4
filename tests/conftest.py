"""Shared fixtures and helpers.

Skips: a test may skip only for what cannot run on this machine (CUDA; a reference package
that has no build for it). Where CI runs (``CI`` set, as ``.ci/run`` does), a missing
reference package or missing task-suite sources FAIL instead of skipping: :func:`need`
and :func:`skip_or_fail`.
"""

import functools
import importlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from hear_models import create_model

IN_CI = bool(os.environ.get("CI"))


def need(module: str, reason: str = ""):
    """``pytest.importorskip`` here; in CI, the import itself (a missing reference fails)."""
    if IN_CI:
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason or None)


def skip_or_fail(reason: str):
    """Skip here, fail in CI: what CI installs must be there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI installs it: scripts/install.sh test)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def smoke_suite(tmp_path_factory) -> Path:
    """The whole offline smoke suite at 16 kHz, generated once per test session (read-only:
    copy a task with :func:`copy_tasks` before changing it)."""
    from hear_models.evaluation.tasks import _sources, make_suite

    out = tmp_path_factory.mktemp("smoke_suite")
    try:
        make_suite("smoke", out, seed=0, rates=(16000,), progress=False)
    except _sources.MissingSource as e:  # the Debian sources (scripts/install_task_sources.sh)
        skip_or_fail(f"offline task suite sources missing: {e}")
    return out


def copy_tasks(suite: Path, dst: Path, names) -> Path:
    """Copy the smoke tasks ``names`` (task names, e.g. "spoken_keywords") into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        [src] = [p for p in suite.iterdir() if p.name.startswith(name + "-")]
        shutil.copytree(src, dst / src.name)
    return dst


@functools.lru_cache(maxsize=None)
def _model(name):
    torch.manual_seed(0)
    # fp32, not the default "auto": these tests assert float32 numerics (batched equals one
    # by one, windows join, parity with references), and auto would run long calls in bf16
    # on CPUs with AMX / avx512_bf16 (tests/test_precision.py covers auto on both kinds)
    return create_model(name, precision="fp32")


@pytest.fixture(scope="session")
def get_model():
    """Models are loaded once per test session and shared (they are in eval mode)."""
    return _model


def noise(n_sounds, seconds, sr, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n_sounds, int(seconds * sr), generator=g) * 2 - 1


def assert_close_to_scale(actual, expected, tol=1e-5):
    """Equal up to float32 rounding at the tensor's own scale, sound by sound.

    Relative L2 error of each sound <= ``tol``, and every element within 10 x tol x max|expected|.
    Matrix-multiply kernels block differently for other batch sizes, so a sound's floats
    move by a few ulps when its neighbours change; Whisper's outlier channels (values up
    to ~450) turn that into ~1e-3 absolute, which a plain absolute 1e-5 cannot express.
    """
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    for i in range(actual.shape[0]):
        diff = (actual[i] - expected[i]).double()
        rel = float(diff.norm() / expected[i].double().norm().clamp_min(1e-30))
        scale = max(float(expected[i].abs().max()), 1.0)
        worst = float(diff.abs().max())
        assert rel <= tol and worst <= 10 * tol * scale, (
            f"sound {i}: relative L2 {rel:.3g}, max abs {worst:.3g} at scale {scale:.3g}")
