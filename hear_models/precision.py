"""Which precision a model runs in: bf16 only where the hardware multiplies bf16 natively.

``precision`` of every ``load_model``:

- ``"fp32"``: float32 everywhere.
- ``"bf16"``: the encoder under ``torch.autocast(bfloat16)`` (matrix products in bf16, the
  rest float32), wherever it runs. On a device without native bf16 matrix units torch
  emulates them and the model runs *slower* than fp32 (2-9x on AVX2 CPUs:
  docs/speed.md); the model then warns once.
- ``"auto"`` (the default): bf16 where it pays, fp32 otherwise. bf16 needs native bf16
  matrix units, found with torch's own capability queries (no CPU-name lists):

  * CUDA: bf16 tensor cores (``torch.cuda.get_device_properties``: compute capability
    8.0 and later, as ``torch.cuda.is_bf16_supported(including_emulation=False)``; ROCm);
    bf16 for every call (not measured by this package: GPUs run matrix products in bf16
    at several times their fp32 rate).
  * CPU: ``torch.cpu.get_capabilities()`` (cpuinfo) reports ``amx_bf16`` (AMX tiles
    usable: ``torch.cpu._init_amx()``) or ``avx512_bf16``, and oneDNN does bf16 here
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``: its effective ISA, which an
    ``ONEDNN_MAX_CPU_ISA`` cap lowers). Even then bf16 is used only for calls
    that carry at least :data:`CPU_BF16_MIN_CALL_SECONDS` of audio: on an AMX CPU one
    10 s clip ran no faster in bf16 for ATST and the Conformer (0.94x, 0.97x), while 16
    clips of 10 s ran 1.4-2.5x faster for every model (docs/speed.md; a Zen 4 with
    avx512_bf16 alike).
  * anything else (CPUs with AVX2 or plain AVX-512, Arm, MPS, ...): fp32.

The choice is made per call of the HEAR API (the whole call in one precision) and is
visible in ``HearModel.precision_text()`` (``hear-models embed -v``, the protocol line of
``hear-models evaluate`` tables) and ``HearModel.precision_for(audio)``.
"""

from __future__ import annotations

import os
from typing import Tuple, Union

import torch

PRECISIONS = ("auto", "fp32", "bf16")

# On a CPU with native bf16, ``auto`` uses bf16 for calls with at least this much audio
# (n_sounds x seconds). Measured (docs/speed.md): one 10 s clip did not pay for every model
# (Conformer 0.97x on AMX, 1.00x on a Zen 4 with avx512_bf16), 40 s (Zen 4) and 160 s (AMX)
# did for all measured; 20 s is the smallest call above the one measured not to pay.
CPU_BF16_MIN_CALL_SECONDS = 20.0

# x86 bf16 matrix units, in the order they are named
CPU_BF16_UNITS = ("amx_bf16", "avx512_bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(repr(p) for p in PRECISIONS)}")
    return precision


def _onednn_isa_cap() -> str:
    """The ISA oneDNN is limited to (``ONEDNN_MAX_CPU_ISA``; ``"ALL"``: no limit)."""
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()


def _onednn_may_use(unit: str) -> bool:
    cap = _onednn_isa_cap()
    if cap in ("ALL", "DEFAULT"):
        return True
    if unit == "amx_bf16":
        return "AMX" in cap
    return any(k in cap for k in ("BF16", "FP16", "AMX", "AVX10"))  # ISAs from avx512_core_bf16 on


def cpu_bf16() -> Tuple[Tuple[str, ...], str]:
    """(the native bf16 matrix units of this CPU that torch's bf16 kernels use, a note on
    why units the CPU has are not used, or "")."""
    caps = torch.cpu.get_capabilities()
    present = [u for u in CPU_BF16_UNITS if caps.get(u, False)]
    if not present:
        return (), ""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return (), "torch's oneDNN is off"
    # oneDNN's own answer (its effective ISA: False on AVX2-only CPUs or under an AVX2 cap)
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return (), f"oneDNN has no bf16 on this CPU (ONEDNN_MAX_CPU_ISA={_onednn_isa_cap()})"
    used = []
    for unit in present:
        # AMX tiles need the kernel's permission (XFEATURE); torch asks for it here
        if unit == "amx_bf16" and not torch.cpu._init_amx():
            continue
        if _onednn_may_use(unit):
            used.append(unit)
    why = "" if used else f"not used by oneDNN (ONEDNN_MAX_CPU_ISA={_onednn_isa_cap()}, AMX permission)"
    return tuple(used), why


def cpu_bf16_units() -> Tuple[str, ...]:
    """The native bf16 matrix units torch finds on this CPU and uses through oneDNN
    (``()`` on CPUs without them, e.g. AVX2-only or AVX-512 without avx512_bf16)."""
    return cpu_bf16()[0]


def cpu_description() -> str:
    """This CPU as torch sees it: its ISA level and which bf16 matrix units were found."""
    caps = torch.cpu.get_capabilities()
    isa = torch.backends.cpu.get_cpu_capability()
    units, why = cpu_bf16()
    extra = [k for k in ("avx512_f", "avx512_bf16", "amx_tile", "amx_bf16") if caps.get(k, False)]
    text = f"CPU {caps.get('architecture', '?')}, torch kernels {isa}"
    if extra:
        text += " (" + ", ".join(extra) + ")"
    if units:
        return text + f": native bf16 matrix units {' + '.join(units)}"
    if why:
        return text + f": bf16 units present but {why}: no native bf16"
    return text + ": no native bf16 matrix units (no AMX, no avx512_bf16)"


def native_bf16(device: Union[str, torch.device]) -> Tuple[bool, str]:
    """(whether ``device`` multiplies bf16 matrices natively, the device in words)."""
    device = torch.device(device)
    if device.type == "cuda":
        # bf16 tensor cores: compute capability 8.0 (Ampere) and later, and every ROCm GPU
        # (torch.cuda.is_bf16_supported(including_emulation=False), for this device)
        props = torch.cuda.get_device_properties(device)
        ok = bool(torch.version.hip) or props.major >= 8
        return ok, (f"CUDA {props.name} (compute capability {props.major}.{props.minor}): "
                    + ("bf16 tensor cores" if ok else "no bf16 tensor cores"))
    if device.type == "cpu":
        return bool(cpu_bf16_units()), cpu_description()
    return False, f"{device.type}: bf16 not measured by this package, fp32 under auto"


def resolve(precision: str, device: Union[str, torch.device], call_seconds: float) -> str:
    """``"fp32"`` or ``"bf16"``: what a call of ``call_seconds`` of audio runs in."""
    if precision != "auto":
        return precision
    ok, _ = native_bf16(device)
    if not ok:
        return "fp32"
    if torch.device(device).type == "cpu" and call_seconds < CPU_BF16_MIN_CALL_SECONDS:
        return "fp32"
    return "bf16"


def describe(precision: str, device: Union[str, torch.device]) -> str:
    """The precision setting and what it means on ``device``, in one line."""
    ok, where = native_bf16(device)
    if precision == "fp32":
        return f"precision fp32 (on {where})"
    if precision == "bf16":
        return (f"precision bf16 (on {where})" if ok else
                f"precision bf16, EMULATED and slower than fp32 (on {where})")
    if not ok:
        return f"precision auto: fp32 (on {where})"
    if torch.device(device).type == "cpu":
        return (f"precision auto: bf16 for calls of >= {CPU_BF16_MIN_CALL_SECONDS:g} s of audio, "
                f"fp32 below (on {where})")
    return f"precision auto: bf16 (on {where})"


def slow_bf16_warning(device: Union[str, torch.device]) -> str:
    """Why an explicit ``precision="bf16"`` will be slower on ``device``."""
    _, where = native_bf16(device)
    return (f"precision='bf16' on a device without native bf16 matrix units ({where}): torch "
            "emulates bf16 matrix products there, so embedding runs slower than in fp32 "
            "(2-9x slower on AVX2 CPUs, docs/speed.md). Use precision='auto' (the default) "
            "or 'fp32'.")
