"""benchmarks/device_check.py, the GPU check, in its reduced CPU mode: it must keep running
here so that it works the day a GPU is lent (docs/speed.md, "GPU")."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_quick_on_cpu(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--device", "cpu",
                        "--quick", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads((tmp_path / "device_check.json").read_text())
    assert {r["status"] for r in rows} == {"ok"}, [r for r in rows if r["status"] != "ok"]
    by = {(r["section"], r["item"]): r for r in rows}
    sections = {s for s, _ in by}
    assert sections == {"machine", "contract", "precision", "training"}
    # every model the quick run names was checked, with its figures
    for name in ("whisper_tiny_en", "maskspec_tiny", "atst_tiny", "conformer_tiny", "crepe_tiny",
                 "fusion_cat_xwc_standin"):
        row = by[("contract", name)]
        assert row["batched_vs_single"] < 1e-4 and row["repeat_diff"] == 0
    for name in ("whisper_tiny_en", "maskspec_tiny", "atst_tiny", "conformer_tiny", "gura_standin"):
        assert by[("precision", name)]["worst_frame_cosine"] > 0.99
    resume = [r for (s, i), r in by.items() if i.startswith("resume")][0]
    assert resume["steps_reached"] == 4 and resume["max_abs_weight_diff"] == 0.0
    assert (tmp_path / "device_check.md").read_text().startswith("| section | item | result |")


def test_device_check_refuses_cuda_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--device", "cuda"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no CUDA device" in r.stderr
