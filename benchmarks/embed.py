"""Embedding speed and memory of every model, side by side with its reference, in one run.

    .venv/bin/python benchmarks/embed.py speed [--models ...] [--seconds 10 60] [--batch 1 16]
    .venv/bin/python benchmarks/embed.py bf16  [--models ...] [--seconds 10]
    .venv/bin/python benchmarks/embed.py long  [--models whisper_tiny_en] [--minutes 1 10 60]
    .venv/bin/python benchmarks/embed.py heads [--size large]

speed: for each model at its default size, audio seconds embedded per wall second (x RT)
  and peak memory above the loaded model (MB, resident set sampled every 2 ms), for each
  clip length and batch, ours beside the reference implementation of the same model and
  weights (same audio, same run, interleaved), the ratio ref time / our time, and the
  FLOP rate each achieves against this machine's measured peak matrix-multiply rate
  (fp32 and bf16, printed first with the CPU, its ISA and bf16 matrix units). References:
    whisper_base, whisper_tiny_en  openai-whisper's AudioEncoder on every 30 s window padded
                                   to 3000 mel frames (as whisper.transcribe runs it);
    whisper_at_base                the ``whisper-at`` package (0.5): its encoder on padded
                                   30 s windows + its TL-Tr head, one sound at a time (its
                                   pooling keeps only the first sound of a batch); ours:
                                   unpadded encoder + the same head in one batch;
    maskspec_base, atst_base,      the hear21passt way of making timestamps: one window of
    conformer_L                    160 ms centred on each timestamp, the whole batch pushed
                                   one timestamp position at a time;
    gura_fusion_cat_xwc            transformers' own HuBERT / wav2vec 2.0 on the whole clip
                                   and CREPE one sound at a time (torchcrepe's network and
                                   loop), fused as the official module does.
  Weights: Whisper and CREPE are the real ones; MaskSpec Base, ATST Base, Conformer cf_L
  and GURA's HuBERT xLarge / wav2vec 2.0 Large are the real architectures with seeded
  RANDOM weights (their trained weights cannot be fetched offline; speed does not depend
  on the values).
bf16: fp32 vs ``precision="bf16"`` vs ``precision="auto"`` (and what auto chose for the
  call), the bf16 speed-up, % of peak (fp32 runs: of the fp32 peak; bf16 runs, which mix
  fp32 and bf16 products: of the higher of the two peaks), and the cosine similarity of
  bf16 embeddings to fp32 (worst frame, mean frame, worst scene), on noise and a chirp. On
  a CPU without native bf16 matrix units (the machine line says which were found) bf16 is
  emulated and slower.
long: 1-hour (etc.) clips, each in a fresh process: wall time, x RT, peak memory, and the
  memory left after subtracting the input audio and the returned embeddings.
heads: Whisper-AT TL-Tr / TL-Tr-512 head time and FLOPs against the encoder's on 10 s
  (``--size large``: randomly initialised large-v2 encoder, 32 x 1280).

Timings are noisy on shared machines: compare figures of the same run only; the load
average is printed with every table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PeakRSS, count_flops, load_average, measure, peak_matmul_rate, rss_bytes, timed  # noqa: E402

SPEED_MODELS = ["whisper_at_base", "whisper_base", "maskspec_base", "atst_base", "conformer_L",
                "gura_fusion_cat_xwc"]


# -- models at their default sizes ----------------------------------------------------------
def build(name: str, precision: str = "fp32", **options):
    """Our HearModel for a benchmark name (see the module docstring); ``options``: the
    adapter's keywords (e.g. ``max_batch_seconds``)."""
    from hear_models import atst, conformer, create_model, maskspec

    if name in ("whisper_base", "whisper_tiny_en"):
        return create_model(name, precision=precision, **options)
    if name == "whisper_at_base":
        from hear_models.hear_api import HearModel
        from hear_models.models.whisper import WhisperEncoder
        from hear_models.models.whisper_at_heads import create_head

        enc = create_model("whisper_base").encoder.encoder
        torch.manual_seed(0)
        head = create_head("tl_tr", len(enc.blocks), enc.ln_post.normalized_shape[0], 527).eval()
        we = WhisperEncoder(enc, head=head).requires_grad_(False)
        return HearModel(we, name="whisper_at_base", precision=precision, **options).eval()
    if name == "maskspec_base":
        return maskspec.load_model("", variant="base", precision=precision, **options)
    if name == "atst_base":
        return atst.load_model("", variant="base", precision=precision, **options)
    if name == "conformer_L":
        return conformer.load_model("", variant="L", precision=precision, **options)
    if name == "gura_fusion_cat_xwc":
        return build_gura(precision, **options)
    return create_model(name, precision=precision, **options)


def build_gura(precision: str = "fp32", **options):
    """fusion_cat_xwc at full size: HuBERT xLarge + wav2vec 2.0 Large (RANDOM, the official
    configurations) + CREPE full (real weights)."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    from hear_models.gura import GuraHearModel
    from hear_models.layers.crepe import load_crepe
    from hear_models.models.gura import VARIANTS, GuraEncoder, SpeechMember

    common = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, num_attention_heads=16)
    torch.manual_seed(0)
    hubert = HubertModel(HubertConfig(hidden_size=1280, num_hidden_layers=48, intermediate_size=5120, **common))
    w2v = Wav2Vec2Model(Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, intermediate_size=4096, **common))
    speech = {"hubert": SpeechMember(hubert.eval().requires_grad_(False)),
              "wav2vec2": SpeechMember(w2v.eval().requires_grad_(False))}
    enc = GuraEncoder(VARIANTS["fusion_cat_xwc"], speech, load_crepe("full"))
    return GuraHearModel(enc, name="gura_fusion_cat_xwc", precision=precision, **options).eval()


# -- the references -------------------------------------------------------------------------
def ref_openai_padded(hm):
    """openai-whisper: every 30 s window padded to 3000 mel frames, AudioEncoder.forward."""
    import whisper

    encoder = hm.encoder.encoder

    def run(audio):
        out = []
        for start in range(0, audio.shape[1], whisper.audio.N_SAMPLES):
            chunk = whisper.pad_or_trim(audio[:, start:start + whisper.audio.N_SAMPLES])
            out.append(encoder(whisper.log_mel_spectrogram(chunk, n_mels=encoder.conv1.in_channels)))
        return out
    return run


def ref_whisper_at_package(hm):
    """The whisper-at package: its AudioEncoder (padded 30 s windows, every block pooled by
    20 frames) + its ATModel, one sound at a time, same weights as ours."""
    import whisper
    import whisper_at.model as wam

    ours = hm.encoder.encoder
    n_state, n_layer = ours.ln_post.normalized_shape[0], len(ours.blocks)
    enc = wam.AudioEncoder(ours.conv1.in_channels, 1500, n_state, ours.blocks[0].attn.n_head, n_layer)
    enc.load_state_dict(ours.state_dict())
    at = wam.ATModel(n_layer=n_layer, rep_dim=n_state, mode="tl_tr_1_8")
    head = hm.encoder.head
    at.load_state_dict({k: v for k, v in head.state_dict().items() if k in at.state_dict()}, strict=False)
    enc.eval(), at.eval()

    def run(audio):
        out = []
        for sound in audio:
            reps = []
            for start in range(0, audio.shape[1], whisper.audio.N_SAMPLES):
                chunk = whisper.pad_or_trim(sound[start:start + whisper.audio.N_SAMPLES])
                reps.append(enc(whisper.log_mel_spectrogram(chunk, n_mels=enc.conv1.in_channels)[None])[1])
            out.append(at(torch.cat(reps, 1), time_resolution=10))
        return out
    return run


def ref_window_loop(hm, window_ms: float = 160.0):
    """hear21passt's timestamp loop: a window centred on each timestamp (reflect-padded), the
    batch pushed through the encoder one timestamp position at a time, frames averaged."""
    enc = hm.encoder
    win = max(int(round(window_ms * hm.sample_rate / 1000)), enc.min_samples)
    half = win // 2

    def run(audio):
        n = audio.shape[1]
        centres = (hm.timestamps_ms(n).double() * hm.sample_rate / 1000).round().long().tolist()
        padded = F.pad(audio[:, None], (half, half), mode="reflect")[:, 0]
        with hm._autocast(audio):
            return torch.stack([enc(padded[:, c:c + win]).float().mean(1) for c in centres], 1)
    return run


def ref_gura_official(hm):
    """The official GURA module: transformers' models on the whole clip (all hidden states,
    mean), CREPE per sound with torchcrepe's loop and network, then its fusion."""
    from crepe_throughput import TorchcrepeNet, official_loop

    from hear_models.layers.crepe import crepe_weights_path
    from hear_models.models.gura import CREPE_HOP, _official_resize, speech_frames

    enc = hm.encoder
    net = TorchcrepeNet(enc.crepe.capacity)
    net.load_state_dict(torch.load(crepe_weights_path(enc.crepe.capacity), map_location="cpu", weights_only=True))
    net.eval()

    def run(audio):
        w = enc.widths["wav2vec2"]
        outs = {k: m(audio) for k, m in enc.speech.items()}
        outs["crepe"] = _official_resize(official_loop(net, audio, CREPE_HOP), w, speech_frames(audio.shape[1]))
        return torch.stack([_official_resize(outs[k], w) for k in enc.members], -1).flatten(2)
    return run


def implementations(name: str, hm) -> Tuple[Callable, Dict[str, Callable]]:
    """(ours, {reference name: reference}) as callables of audio."""
    if name == "whisper_at_base":
        return hm.scene_embeddings, {"openai-whisper padded": ref_openai_padded(hm),
                                     "whisper-at package": ref_whisper_at_package(hm)}
    if name.startswith("whisper"):
        return (lambda a: hm.timestamp_embeddings(a)), {"openai-whisper padded": ref_openai_padded(hm)}
    if name.startswith("gura"):
        return (lambda a: hm.timestamp_embeddings(a)), {"official GURA module": ref_gura_official(hm)}
    return (lambda a: hm.timestamp_embeddings(a)), {"hear21passt window loop": ref_window_loop(hm)}


def test_audio(batch: int, seconds: float, sr: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, int(seconds * sr), generator=g) * 0.2 - 0.1


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine_line():
    """Measure the fp32 / bf16 matmul peaks, print them with the CPU, its ISA and bf16 matrix
    units (torch's own queries: hear_models.precision), torch, threads and load; return them."""
    from hear_models.precision import cpu_description

    (peak32, how32), (peak16, how16) = peak_matmul_rate(torch.float32), peak_matmul_rate(torch.bfloat16)
    print(f"{cpu_name()}; {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"measured peak matmul: fp32 {gflops(peak32)} GFLOP/s ({how32}), bf16 {gflops(peak16)} GFLOP/s "
          f"({how16}); load {load_average()}")
    return peak32, peak16


def gflops(rate: float) -> str:
    """A rate in GFLOP/s with 3 significant digits (an emulated bf16 product runs below 1)."""
    return f"{rate / 1e9:.3g}"


def pct(rate: float, peak: float) -> Optional[float]:
    """``rate`` in % of a measured peak; None without one."""
    return round(100 * rate / peak, 1) if peak > 0 else None


def pct_text(value: Optional[float], width: int = 5) -> str:
    return f"{value:{width}.1f}%" if value is not None else f"{'n/a':>{width + 1}s}"


# -- speed ------------------------------------------------------------------------------------
def cmd_speed(a):
    peak32, peak16 = machine_line()
    print(f"{'model':20s} {'impl':24s} {'clip':>5s} {'batch':>5s} {'s':>8s} {'x RT':>7s} {'peak MB':>8s} "
          f"{'GFLOP/s':>8s} {'% peak':>7s} {'ref/ours':>8s}", flush=True)
    rows = []
    for name in a.models:
        hm = build(name, **({"max_batch_seconds": a.max_batch_seconds} if a.max_batch_seconds else {}))
        ours, refs = implementations(name, hm)
        for sec in a.seconds:
            for batch in a.batch:
                cell = f"{name}:{sec:g}:{batch}"
                if cell in a.skip:
                    continue
                audio = test_audio(batch, sec, hm.sample_rate)
                small = test_audio(1, 1.0, hm.sample_rate)
                impls = [("ours", ours)] + ([] if cell in a.ours_only else list(refs.items()))
                times: Dict[str, List[float]] = {impl: [] for impl, _ in impls}
                mem: Dict[str, float] = {}
                with torch.inference_mode():
                    flops = {impl: count_flops(lambda: fn(audio[:1])) * batch for impl, fn in impls}
                    for impl, fn in impls:
                        fn(small)  # warm-up
                    for _ in range(a.repeats):  # interleaved: ours, refs, ours, refs, ...
                        for impl, fn in impls:
                            t, mb, _ = measure(fn=lambda: fn(audio), repeats=1, warmup=lambda: None)
                            times[impl].append(t)
                            mem[impl] = max(mem.get(impl, 0.0), mb)
                results = {impl: sorted(ts)[len(ts) // 2] for impl, ts in times.items()}
                for impl, _ in impls:
                    t, mb, rate = results[impl], mem[impl], flops[impl] / results[impl]
                    row = dict(model=name, impl=impl, seconds=sec, batch=batch, wall_s=round(t, 3),
                               x_rt=round(sec * batch / t, 2), peak_mb=round(mb), gflops=round(rate / 1e9, 1),
                               pct_peak=pct(rate, peak32),
                               ratio=round(t / results["ours"], 2) if impl != "ours" else None)
                    rows.append(row)
                    print(f"{name:20s} {impl:24s} {sec:4.0f}s {batch:5d} {t:8.2f} {row['x_rt']:7.1f} "
                          f"{mb:8.0f} {rate / 1e9:8.1f} {pct_text(row['pct_peak'], 6)} "
                          f"{'' if impl == 'ours' else format(t / results['ours'], '7.2f') + 'x'}", flush=True)
        del hm
    print(f"load after: {load_average()}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"peak_fp32_gflops": peak32 / 1e9, "peak_bf16_gflops": peak16 / 1e9, "rows": rows}, f, indent=1)


# -- bf16 -------------------------------------------------------------------------------------
def agreement_audio(sr: int, seconds: float) -> torch.Tensor:
    """Two noise clips and a chirp with a little noise."""
    n = int(seconds * sr)
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(2, n, generator=g) * 0.2 - 0.1
    t = torch.arange(n) / sr
    chirp = 0.3 * torch.sin(2 * math.pi * (200 + 300 * t) * t) + 0.01 * torch.randn(n, generator=g)
    return torch.cat([noise, chirp[None]])


def bf16_agreement(m32, m16, audio) -> Dict[str, float]:
    e32, e16 = m32.timestamp_embeddings(audio)[0], m16.timestamp_embeddings(audio)[0]
    frame = F.cosine_similarity(e32.double(), e16.double(), dim=-1)
    scene = F.cosine_similarity(m32.scene_embeddings(audio).double(), m16.scene_embeddings(audio).double(), dim=-1)
    return {"frame_min": float(frame.min()), "frame_mean": float(frame.mean()),
            "frames_below_0.999": float((frame < 0.999).double().mean()), "scene_min": float(scene.min())}


def cmd_bf16(a):
    peak32, peak16 = machine_line()
    print(f"{'model':20s} {'clip':>5s} {'batch':>5s} {'fp32 s':>8s} {'bf16 s':>8s} {'auto s':>8s} {'auto':>5s} "
          f"{'speed-up':>8s} {'% pk32':>6s} {'% pk16':>6s} {'frame min':>9s} {'mean':>8s} {'<0.999':>7s} "
          f"{'scene min':>9s}", flush=True)
    for name in a.models:
        m32, m16, mauto = build(name), build(name, "bf16"), build(name, "auto")
        with warnings.catch_warnings():  # bf16 on a CPU without bf16 units: measured, not warned
            warnings.simplefilter("ignore", RuntimeWarning)
            agree = bf16_agreement(m32, m16, agreement_audio(m32.sample_rate, a.agree_seconds))
            for sec in a.seconds:
                for batch in a.batch:
                    audio = test_audio(batch, sec, m32.sample_rate)
                    small = test_audio(1, 1.0, m32.sample_rate)
                    with torch.inference_mode():
                        flops = count_flops(lambda: m32.timestamp_embeddings(audio[:1])) * batch
                        for m in (m32, m16, mauto):
                            m.timestamp_embeddings(small)
                        ts: Dict[str, List[float]] = {"fp32": [], "bf16": [], "auto": []}
                        for _ in range(a.repeats):  # interleaved
                            for key, m in (("fp32", m32), ("bf16", m16), ("auto", mauto)):
                                ts[key].append(timed(lambda: m.timestamp_embeddings(audio), 1,
                                                     warmup=lambda: None)[0])
                    t32, t16, tauto = (sorted(v)[len(v) // 2] for v in ts.values())
                    print(f"{name:20s} {sec:4.0f}s {batch:5d} {t32:8.2f} {t16:8.2f} {tauto:8.2f} "
                          f"{mauto.precision_for(audio):>5s} {t32 / t16:7.2f}x "
                          f"{pct_text(pct(flops / t32, peak32))} {pct_text(pct(flops / t16, max(peak16, peak32)))} "
                          f"{agree['frame_min']:9.5f} {agree['frame_mean']:8.5f} "
                          f"{100 * agree['frames_below_0.999']:6.2f}% {agree['scene_min']:9.6f}", flush=True)
        del m32, m16, mauto
    from hear_models.precision import describe

    print(describe("auto", "cpu"))
    print(f"load after: {load_average()}")


# -- long audio ---------------------------------------------------------------------------------
def long_child(name: str, minutes: float, kind: str) -> dict:
    """One clip of ``minutes`` in this (fresh) process: time and memory."""
    hm = build(name)
    base = rss_bytes()
    n = int(minutes * 60 * hm.sample_rate)
    audio = torch.empty(1, n)
    g = torch.Generator().manual_seed(0)
    for s in range(0, n, 1 << 22):  # filled in pieces: no temporary copy of the whole clip
        audio[:, s:s + (1 << 22)] = torch.rand(1, min(1 << 22, n - s), generator=g) * 0.2 - 0.1
    with torch.inference_mode():
        hm.timestamp_embeddings(audio[:, :hm.sample_rate])  # warm-up
        after_audio = rss_bytes()
        with PeakRSS() as mem:
            t = time.perf_counter()
            out = hm.scene_embeddings(audio) if kind == "scene" else hm.timestamp_embeddings(audio)
            t = time.perf_counter() - t
    out_bytes = out.numel() * 4 if kind == "scene" else out[0].numel() * 4 + out[1].numel() * 4
    return {"model": name, "minutes": minutes, "kind": kind, "wall_s": t, "x_rt": minutes * 60 / t,
            "audio_mb": n * 4 / 2**20, "output_mb": out_bytes / 2**20,
            "peak_above_model_mb": (after_audio - base + mem.peak) / 2**20,
            "working_mb": (mem.peak - out_bytes) / 2**20}


def cmd_long(a):
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; each clip in a fresh process; "
          f"load {load_average()}")
    print(f"{'model':18s} {'kind':9s} {'min':>4s} {'s':>8s} {'x RT':>6s} {'s/min':>6s} {'audio MB':>8s} "
          f"{'out MB':>8s} {'peak MB':>8s} {'working MB':>10s}", flush=True)
    for name in a.models:
        for kind in a.kinds:
            for minutes in a.minutes:
                proc = subprocess.run([sys.executable, __file__, "_long_child", name, str(minutes), kind],
                                      capture_output=True, text=True)
                if proc.returncode:
                    print(proc.stderr[-2000:])
                    raise SystemExit(proc.returncode)
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"{name:18s} {kind:9s} {minutes:4g} {r['wall_s']:8.1f} {r['x_rt']:6.1f} "
                      f"{r['wall_s'] / minutes:6.2f} {r['audio_mb']:8.0f} {r['output_mb']:8.0f} "
                      f"{r['peak_above_model_mb']:8.0f} {r['working_mb']:10.0f}", flush=True)
    print(f"load after: {load_average()}")


# -- Whisper-AT heads vs encoder --------------------------------------------------------------
WHISPER_SIZES = {"tiny": (384, 6, 4), "base": (512, 8, 6), "small": (768, 12, 12), "medium": (1024, 16, 24),
                 "large": (1280, 20, 32)}


def cmd_heads(a):
    from whisper.model import AudioEncoder

    from hear_models.models.whisper import WhisperEncoder
    from hear_models.models.whisper_at_heads import create_head, pool_time

    width, heads, layers = WHISPER_SIZES[a.size]
    torch.manual_seed(0)
    enc = WhisperEncoder(AudioEncoder(80, 1500, width, heads, layers)).eval().requires_grad_(False)
    audio = test_audio(1, 10.0, 16000)
    with torch.inference_mode():
        run_enc = lambda: [pool_time(h[:, None])[:, 0] for h in enc.hidden_states(audio)]  # noqa: E731
        t_enc, pooled = timed(run_enc, a.repeats)
        f_enc = count_flops(run_enc)
        x = torch.stack(pooled, 1)  # (1, layers, 25, width)
        print(f"Whisper {a.size} encoder ({layers} x {width}, RANDOM weights) on 10 s unpadded: "
              f"{t_enc * 1000:.0f} ms, {f_enc / 1e9:.1f} GFLOP; load {load_average()}")
        print(f"{'head':12s} {'params':>10s} {'ms':>8s} {'% enc time':>10s} {'GFLOP':>8s} {'% enc FLOPs':>11s}")
        for kind, proj in (("tl_tr", None), ("tl_tr", 512), ("tl_tr", 128)):
            head = create_head(kind, layers, width, 527, proj).eval()
            t_head, _ = timed(lambda: head(x), 20)
            f_head = count_flops(lambda: head(x))
            n = sum(p.numel() for p in head.parameters())
            label = kind + (f"_{proj}" if proj else "")
            print(f"{label:12s} {n:10,d} {t_head * 1000:8.2f} {100 * t_head / t_enc:9.2f}% "
                  f"{f_head / 1e9:8.3f} {100 * f_head / f_enc:10.3f}%")
    print(f"load after: {load_average()}")


def main(argv=None):
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and argv is None:
        # glibc keeps freed heap memory resident, so a warm-up would hide the peak of the
        # measured call: with a fixed mmap threshold, freed tensors leave the resident set
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_long_child":
        print(json.dumps(long_child(argv[1], float(argv[2]), argv[3])))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--models", nargs="+", default=SPEED_MODELS)
    s.add_argument("--seconds", nargs="+", type=float, default=[10.0, 60.0])
    s.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    s.add_argument("--repeats", type=int, default=1)
    s.add_argument("--skip", nargs="*", default=[], metavar="MODEL:SECONDS:BATCH")
    s.add_argument("--ours-only", nargs="*", default=[], metavar="MODEL:SECONDS:BATCH",
                   help="cells where only ours runs (a reference that cannot fit in memory)")
    s.add_argument("--max-batch-seconds", type=float, default=None,
                   help="our adapter's max_batch_seconds (default: each model's own)")
    s.add_argument("--json", default="")
    s.set_defaults(func=cmd_speed)
    s = sub.add_parser("bf16")
    s.add_argument("--models", nargs="+", default=["whisper_tiny_en", "whisper_base", "maskspec_base",
                                                   "atst_base", "conformer_L", "crepe"])
    s.add_argument("--seconds", nargs="+", type=float, default=[10.0])
    s.add_argument("--batch", nargs="+", type=int, default=[1])
    s.add_argument("--agree-seconds", type=float, default=6.0)
    s.add_argument("--repeats", type=int, default=3)
    s.set_defaults(func=cmd_bf16)
    s = sub.add_parser("long")
    s.add_argument("--models", nargs="+", default=["whisper_tiny_en"])
    s.add_argument("--minutes", nargs="+", type=float, default=[1, 10, 60])
    s.add_argument("--kinds", nargs="+", default=["scene", "timestamp"], choices=["scene", "timestamp"])
    s.set_defaults(func=cmd_long)
    s = sub.add_parser("heads")
    s.add_argument("--size", default="large", choices=sorted(WHISPER_SIZES))
    s.add_argument("--repeats", type=int, default=3)
    s.set_defaults(func=cmd_heads)
    a = p.parse_args(argv)
    a.func(a)


if __name__ == "__main__":
    main()
