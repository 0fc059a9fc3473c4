"""precision="auto": bf16 only where the device multiplies bf16 natively and the call pays.

The capability queries are mocked (torch.cpu.get_capabilities, torch.cuda's device
properties), so both branches run on any machine: an AVX2 CPU (no native bf16) and an
AMX / avx512_bf16 CPU or a bf16 GPU (native).
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from hear_models import create_model, precision
from hear_models.cli import main
from hear_models.evaluation import results
from hear_models.evaluation.embeddings import Embedder
from hear_models.evaluation.runner import model_precision

AVX2 = {"architecture": "x86_64", "avx2": True, "avx512_f": False, "avx512_bf16": False,
        "amx_tile": False, "amx_bf16": False}
AMX = {**AVX2, "avx512_f": True, "avx512_bf16": True, "amx_tile": True, "amx_bf16": True}
AVX512_BF16 = {**AVX2, "avx512_f": True, "avx512_bf16": True}
AVX512_ONLY = {**AVX2, "avx512_f": True}  # AVX-512 without bf16: emulated like AVX2

NAME = "conformer_tiny"  # the smallest offline model


@pytest.fixture
def cpu(monkeypatch):
    """Make this CPU report the given capabilities: cpuinfo's flags, and oneDNN's bf16
    support as it answers on such a CPU (AVX-512 or later; AMX tiles granted)."""
    def set_caps(caps):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
        monkeypatch.setattr(torch.cpu, "_init_amx", lambda: True)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: caps["avx512_f"])
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    return set_caps


def _noise(n_sounds, seconds, sr):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n_sounds, int(seconds * sr), generator=g) * 0.2 - 0.1


@pytest.mark.parametrize("caps", [AVX2, AVX512_ONLY])
def test_auto_is_fp32_without_native_bf16(cpu, caps):
    cpu(caps)
    m = create_model(NAME)  # precision="auto" is the default
    assert m.precision == "auto"
    long_call = _noise(4, 10.0, m.sample_rate)  # 40 s: would pay on AMX
    assert m.precision_for(long_call) == "fp32"
    torch.manual_seed(0)
    m32 = create_model(NAME, precision="fp32")
    assert torch.equal(m.scene_embeddings(long_call), m32.scene_embeddings(long_call))
    text = m.precision_text()
    assert "auto: fp32" in text and "no native bf16 matrix units" in text


@pytest.mark.parametrize("caps,units", [(AMX, "amx_bf16 + avx512_bf16"), (AVX512_BF16, "avx512_bf16")])
def test_auto_is_bf16_with_native_bf16_for_calls_that_pay(cpu, caps, units):
    cpu(caps)
    torch.manual_seed(0)
    m = create_model(NAME)
    torch.manual_seed(0)
    m16 = create_model(NAME, precision="bf16")
    torch.manual_seed(0)
    m32 = create_model(NAME, precision="fp32")
    sr = m.sample_rate
    short = _noise(1, 5.0, sr)  # one short clip: bf16 does not pay on a CPU (docs/speed.md)
    batch = _noise(4, 5.0, sr)  # 20 s in one call
    assert m.precision_for(short) == "fp32" and m.precision_for(batch) == "bf16"
    assert torch.equal(m.scene_embeddings(short), m32.scene_embeddings(short))
    e_auto = m.scene_embeddings(batch)
    assert torch.equal(e_auto, m16.scene_embeddings(batch))  # the same autocast as explicit bf16
    assert not torch.equal(e_auto, m32.scene_embeddings(batch))
    text = m.precision_text()
    assert f"native bf16 matrix units {units}" in text
    assert f"bf16 for calls of >= {precision.CPU_BF16_MIN_CALL_SECONDS:g} s" in text


def test_amx_counts_only_when_the_kernel_grants_it(cpu, monkeypatch):
    cpu({**AMX, "avx512_bf16": False})
    monkeypatch.setattr(torch.cpu, "_init_amx", lambda: False)
    assert precision.cpu_bf16_units() == ()
    assert precision.resolve("auto", "cpu", 60.0) == "fp32"


@pytest.mark.parametrize("cap", ["AVX2", "AVX512_CORE"])
def test_onednn_capped_below_bf16_means_fp32(cpu, monkeypatch, cap):
    """ONEDNN_MAX_CPU_ISA below avx512_core_bf16: the units are there, oneDNN does not use them."""
    cpu(AMX)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    if cap == "AVX2":  # oneDNN's own answer under that cap
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert precision.resolve("auto", "cpu", 60.0) == "fp32"
    assert f"ONEDNN_MAX_CPU_ISA={cap}" in precision.cpu_description()
    cpu(AMX)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # avx512_bf16, not AMX
    assert precision.cpu_bf16_units() == ("avx512_bf16",)


def test_auto_on_cuda_follows_bf16_tensor_cores(monkeypatch):
    for major, expected in ((7, "fp32"), (8, "bf16"), (9, "bf16")):
        props = types.SimpleNamespace(major=major, minor=0, name=f"GPU sm_{major}0")
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None, p=props: p)
        assert precision.resolve("auto", "cuda:0", 1.0) == expected  # any call size on a GPU
        assert precision.native_bf16("cuda:0")[0] == (expected == "bf16")
    assert precision.resolve("auto", "mps", 60.0) == "fp32"  # not measured: fp32


def test_explicit_bf16_without_native_units_runs_with_one_warning(cpu):
    cpu(AVX2)
    torch.manual_seed(0)
    m16 = create_model(NAME, precision="bf16")
    torch.manual_seed(0)
    m32 = create_model(NAME, precision="fp32")
    audio = _noise(2, 3.0, m16.sample_rate)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e16 = m16.scene_embeddings(audio)
        m16.timestamp_embeddings(audio)
    slow = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(slow) == 1, [str(w.message) for w in caught]
    msg = str(slow[0].message)
    assert "slower" in msg and "no native bf16 matrix units" in msg and "AVX2" in msg
    assert not torch.equal(e16, m32.scene_embeddings(audio)), "bf16 was asked for: it still runs"
    assert "EMULATED" in m16.precision_text()


def test_explicit_bf16_with_native_units_does_not_warn(cpu):
    cpu(AMX)
    m16 = create_model(NAME, precision="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m16.scene_embeddings(_noise(1, 2.0, m16.sample_rate))


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="'auto', 'fp32', 'bf16'"):
        create_model(NAME, precision="fp16")


def test_choice_shown_by_embed_verbose_and_the_protocol_line(cpu, tmp_path, capsys):
    cpu(AVX2)
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000 * 2, dtype=np.float32) + 0.01, 16000)
    assert main(["embed", str(wav), "--model", NAME, "--out", str(tmp_path / "e"), "-v", "--kind", "scene"]) == 0
    err = capsys.readouterr().err
    assert "precision auto: fp32" in err and "runs in fp32" in err
    import hear_models.conformer as module

    embedder = Embedder(module, create_model(NAME), "cpu")
    text = model_precision(embedder)
    assert text.startswith("precision auto: fp32")
    settings = {"model_details": [{"name": NAME, "module": module.__name__, "weights": "",
                                   "options": {}, "description": "", "precision": text}]}
    assert text in "\n".join(results.protocol_lines(settings))
