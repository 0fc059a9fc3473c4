"""Figures for the official-checkpoint work, printed (docs/weights.md, docs/models.md):

    .venv/bin/python scripts/official_checks.py            # from the repository root

1. MaskSpec, official pretraining layout (seeded random weights, no statistics inside):
   our tokens vs the official normalisation ``(mel - frame_mean) / frame_std``, relative L2
   with the default (official AudioSet statistics) and with identity statistics.
2. MaskSpec, official AudioSet fine-tuned layout: the 527 logits vs the official inference.
   ATST-Frame: parameter counts, timestamp and scene embeddings vs the official embedding.py.
3. ATST ``official_crop``: relative L2 of scene embeddings with vs without the central
   12 s crop, on a 13 s clip (packaged ``atst_tiny``).
4. Every bad-checkpoint case through the command line: the one line the user gets.
5. ``hear-models weights list``.

The references are the ones the tests use (written from the official code, in tests/).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rel_l2(a, b) -> float:
    return float((a - b).norm() / b.norm())


def maskspec_pretrained(tmp: pathlib.Path) -> None:
    from hear_models.maskspec import load_model
    from tests.test_maskspec import official_normalised_mel, official_state_dict, reference_encoder

    sd = official_state_dict(D=128, Dd=64)
    path = tmp / "checkpoint-399.pth"
    torch.save({"model": sd, "epoch": 399}, path)
    torch.manual_seed(0)
    audio = torch.rand(2, 64 * 320) * 0.2 - 0.1  # 64 mel frames: the 8 x 4 grid of the table
    ref = reference_encoder(sd, official_normalised_mel(audio))
    for stats in ("auto", "none"):
        m = load_model(str(path), mel_stats=stats, precision="fp32")
        with torch.no_grad():
            ours = m.encoder.encoder(m.encoder.frontend(audio))
        print(f"  mel_stats={stats!r:8s} relative L2 to the official features: {rel_l2(ours, ref):.3g}")


def maskspec_finetuned(tmp: pathlib.Path) -> None:
    from hear_models.maskspec import load_model
    from tests.test_maskspec_official import (finetuned_state_dict, official_normalised_mel, reference_forward,
                                              save_official)

    sd = finetuned_state_dict()
    path = tmp / "AudioSet_Pretrained_Finetuned.pth"
    save_official(path, sd)
    torch.manual_seed(1)
    audio = torch.rand(1, 3 * 32000) * 0.2 - 0.1
    padded = torch.nn.functional.pad(audio, (0, 10 * 32000 - audio.shape[1]))  # official: 10 s
    ref = reference_forward(sd, official_normalised_mel(padded))
    ref_logits = ref[-1] if isinstance(ref, tuple) else ref
    m = load_model(str(path), precision="fp32")
    scene = m.scene_embeddings(audio)
    print(f"  527 logits, 3 s clip: relative L2 to the official inference "
          f"{rel_l2(scene[:, -527:], ref_logits.reshape(1, -1)[:, -527:]):.3g}")


def atst_frame(tmp: pathlib.Path) -> None:
    from hear_models import atst_frame
    from hear_models.models.atst_frame import ATSTFrameDims, ATSTFrameEncoder, count_parameters
    from tests.conftest import noise
    from tests.test_atst_frame import random_reference, ref_embeddings, write_lightning

    with torch.device("meta"):
        counts = {v: count_parameters(ATSTFrameEncoder(ATSTFrameDims.variant(v))) for v in ("small", "base")}
    print(f"  encoder parameters: small {counts['small']:,}, base {counts['base']:,}")
    ref = random_reference()
    model = atst_frame.load_model(str(write_lightning(tmp / "atstframe_tiny.ckpt", ref)), precision="fp32")
    for n in (15520, 48000, 160000):  # clips up to 10 s: the official output exactly
        audio = noise(2, 11, 16000, seed=1)[:, :n] * torch.tensor([[0.5], [0.05]])
        with torch.no_grad():
            r_emb, _, r_scene = ref_embeddings(audio, ref)
        emb, _ = atst_frame.get_timestamp_embeddings(audio, model)
        scene = atst_frame.get_scene_embeddings(audio, model)
        print(f"  {n / 16000:5.2f} s: relative L2 to the official embedding.py, timestamps "
              f"{rel_l2(emb, r_emb):.2g}, scene {rel_l2(scene, r_scene):.2g}")


def atst_crop() -> None:
    from hear_models import create_model

    g = torch.Generator().manual_seed(0)
    n = 13 * 16000
    t = torch.arange(n) / 16000
    chirp = 0.3 * torch.sin(2 * torch.pi * (200 + 300 * t) * t) + 0.05 * torch.randn(n, generator=g)
    full = create_model("atst_tiny", precision="fp32")
    crop = create_model("atst_tiny", precision="fp32", official_crop=True)
    a, b = full.scene_embeddings(chirp[None]), crop.scene_embeddings(chirp[None])
    print(f"  13 s chirp + noise, atst_tiny: scene relative L2 with vs without the crop {rel_l2(b, a):.3g}")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def bad_checkpoints(tmp: pathlib.Path) -> None:
    from hear_models.checkpoints import packaged_weights
    from tests.test_atst import official_state

    wav = tmp / "a.wav"
    sf.write(wav, (np.random.RandomState(0).randn(32000) * 0.1).astype("float32"), 16000)
    (tmp / "notes.pt").write_text("lr: 0.001\n")
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "random.pt").write_bytes(np.random.RandomState(1).bytes(1000))
    export = packaged_weights("maskspec_tiny_mini").read_bytes()
    (tmp / "truncated.pt").write_bytes(export[: len(export) // 4])
    obj = torch.load(packaged_weights("maskspec_tiny_mini"), weights_only=True)
    sd = obj["state_dict"]
    key = next(k for k in sd if k.endswith("blocks.0.mlp.0.weight"))
    sd[key] = sd[key][:-5]
    torch.save(obj, tmp / "fc1_cut.pt")
    bad_pos = official_state(D=192, layers=2)
    bad_pos["pos_embed"] = bad_pos["pos_embed"][:, :100]
    torch.save({"state_dict": {"model.teacher.encoder." + k: v for k, v in bad_pos.items()}}, tmp / "pos100.ckpt")
    torch.save({"state_dict": {}, "payload": _Evil()}, tmp / "evil.pt")
    cases = [
        ("maskspec_tiny", tmp / "absent.pt"), ("maskspec_tiny", tmp / "notes.pt"),
        ("maskspec_tiny", tmp / "empty.pt"), ("maskspec_tiny", tmp / "random.pt"),
        ("maskspec_tiny", tmp / "truncated.pt"), ("maskspec_tiny", "packaged:atst_tiny_mini"),
        ("atst_tiny", "packaged:maskspec_tiny_mini"), ("maskspec_tiny", tmp / "fc1_cut.pt"),
        ("atst_tiny", tmp / "pos100.ckpt"), ("atst_tiny", tmp / "evil.pt"),
    ]
    exe = pathlib.Path(sys.executable).parent / "hear-models"
    for model, weights in cases:
        r = subprocess.run([str(exe), "embed", str(wav), "--model", model, "--weights", str(weights),
                            "--out", str(tmp / "emb")], capture_output=True, text=True)
        shown = str(weights).replace(str(tmp) + "/", "")
        print(f"  $ hear-models embed a.wav --model {model} --weights {shown}    (exit {r.returncode})")
        print("    " + r.stderr.strip().splitlines()[-1].replace(str(tmp) + "/", ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        print("1. MaskSpec, official pretraining layout (tiny, seeded random):")
        maskspec_pretrained(tmp)
        print("2. MaskSpec, official AudioSet fine-tuned layout (seeded random):")
        maskspec_finetuned(tmp)
        print("2b. ATST-Frame, official Lightning layout (tiny, seeded random) vs a reference written "
              "from audiossl's embedding.py:")
        atst_frame(tmp)
        print("3. ATST official_crop:")
        atst_crop()
        print("4. Bad checkpoints, as the command line reports them:")
        bad_checkpoints(tmp)
    print("5. hear-models weights list:")
    exe = pathlib.Path(sys.executable).parent / "hear-models"
    subprocess.run([str(exe), "weights", "list"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
