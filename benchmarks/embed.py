"""Embedding speed, side by side with the reference implementation, in one run.

    .venv/bin/python benchmarks/embed.py [--models whisper_base whisper_tiny_en] [--repeats 3]

For Whisper: our unpadded encoder (HEAR timestamp embeddings, mean of blocks) against
openai-whisper's own pipeline as users run it: `log_mel_spectrogram` of the clip padded to
30 s windows and `AudioEncoder.forward` on each full 3000-frame window. Prints seconds per
clip (the median of --repeats), audio seconds per wall second, and the ratio.
Timings are noisy on shared machines: compare figures of the same run only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def openai_padded(encoder, audio):
    """openai-whisper's way: every 30 s window padded to 3000 mel frames."""
    import whisper

    out = []
    for start in range(0, audio.shape[1], whisper.audio.N_SAMPLES):
        chunk = whisper.pad_or_trim(audio[:, start:start + whisper.audio.N_SAMPLES])
        mel = whisper.log_mel_spectrogram(chunk, n_mels=encoder.conv1.in_channels)
        out.append(encoder(mel))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["whisper_base", "whisper_tiny_en"])
    p.add_argument("--seconds", nargs="+", type=float, default=[10.0, 60.0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="also: bf16 autocast vs fp32, speed and cosine")
    a = p.parse_args(argv)
    from hear_models import create_model

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}")
    print(f"{'model':18s} {'clip':>6s} {'ours s':>8s} {'ref s':>8s} {'ours x RT':>10s} {'ref x RT':>9s} {'speed-up':>8s}")
    for name in a.models:
        m = create_model(name)
        for sec in a.seconds:
            g = torch.Generator().manual_seed(0)
            audio = torch.rand(a.batch, int(sec * m.sample_rate), generator=g) * 0.2 - 0.1
            ours = timed(lambda: m.timestamp_embeddings(audio), a.repeats)
            with torch.inference_mode():
                ref = timed(lambda: openai_padded(m.encoder.encoder, audio), a.repeats)
            rt = sec * a.batch
            print(f"{name:18s} {sec:5.0f}s {ours:8.3f} {ref:8.3f} {rt / ours:10.1f} {rt / ref:9.1f} {ref / ours:7.2f}x")
    if a.bf16:
        print(f"\n{'model':18s} {'clip':>6s} {'fp32 s':>8s} {'bf16 s':>8s} {'speed-up':>8s} {'min cos':>8s} {'scene cos':>9s}")
        for name in a.models:
            m32, m16 = create_model(name), create_model(name, precision="bf16")
            for sec in a.seconds:
                g = torch.Generator().manual_seed(0)
                audio = torch.rand(a.batch, int(sec * m32.sample_rate), generator=g) * 0.2 - 0.1
                t32 = timed(lambda: m32.timestamp_embeddings(audio), a.repeats)
                t16 = timed(lambda: m16.timestamp_embeddings(audio), a.repeats)
                e32, e16 = m32.timestamp_embeddings(audio)[0], m16.timestamp_embeddings(audio)[0]
                cos = torch.nn.functional.cosine_similarity(e32, e16, dim=-1).min()
                scos = torch.nn.functional.cosine_similarity(e32.mean(1), e16.mean(1), dim=-1).min()
                print(f"{name:18s} {sec:5.0f}s {t32:8.3f} {t16:8.3f} {t32 / t16:7.2f}x {cos:8.4f} {scos:9.5f}")


if __name__ == "__main__":
    main()
