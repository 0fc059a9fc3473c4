import functools

import pytest
import torch

from hear_models import create_model


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
