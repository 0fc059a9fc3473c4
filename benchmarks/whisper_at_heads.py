"""Whisper-AT heads side by side: train every head type on one frozen backbone, test mAP, cost.

    .venv/bin/python benchmarks/whisper_at_heads.py --suite mini --task sound_mixtures \
        [--whisper ""] [--steps 400] [--out runs/heads] [--ship hear_models/assets/...pt]

1. the offline suite's multilabel task (generated if absent), features of the frozen
   Whisper extracted ONCE (the training cache) for train / valid / test;
2. each head type trained in the shared engine with the paper's recipe, same steps;
3. test mAP (macro, sklearn) of each, printed side by side with its size;
4. time of the head vs the encoder forward on 10 s of audio (median of repeats);
5. with --ship, the head named by --ship-head (default tl_tr_128, the packaged one) is
   copied there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import timed  # noqa: E402

HEADS = [("last_mlp", None), ("wa_mlp", None), ("wa_tr", None), ("tl_tr", None), ("tl_tr", 512), ("tl_tr", 128)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="mini")
    p.add_argument("--task", default="sound_mixtures")
    p.add_argument("--tasks-dir", default="", help="an existing suite folder (default: generated into --out)")
    p.add_argument("--whisper", default="")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--out", default="runs/whisper_at_heads")
    p.add_argument("--ship", default="", help="copy the --ship-head head file to this path")
    p.add_argument("--ship-head", default="tl_tr_128", help="which head --ship copies")
    a = p.parse_args(argv)

    from sklearn.metrics import average_precision_score

    from hear_models.evaluation.tasks import make_suite
    from hear_models.models.whisper_at_heads import create_head
    from hear_models.training.config import load_config
    from hear_models.training.engine import export, fit
    from hear_models.training.tagging import FeatureSet, extract_features

    out = Path(a.out)
    tasks = Path(a.tasks_dir) if a.tasks_dir else out / "tasks"
    if not any(tasks.glob(f"{a.task}-*")):
        make_suite(a.suite, tasks, tasks=[a.task], progress=True)
    task = next(tasks.glob(f"{a.task}-*"))
    cache = out / "cache"

    def cfg_for(kind, proj):
        name = kind + (f"_{proj}" if proj else "")
        return name, load_config("whisper_at_tl_tr", [
            f"data.source={task}", "data.split=train", f"model.whisper={a.whisper}", f"model.head={kind}",
            f"model.proj_dim={proj if proj else 'null'}", f"model.cache_dir={cache}",
            f"trainer.out_dir={out / name}", f"trainer.max_steps={a.steps}", f"data.batch_size={a.batch}",
            f"trainer.checkpoint_every={a.steps}", "trainer.progress_bar=false", "trainer.log_every=50"])

    test = FeatureSet(extract_features(str(task), "test", cfg_for("tl_tr", None)[1].model))
    x = torch.stack([test.window(i, 25, None)[0] for i in range(len(test))])
    m = torch.stack([test.window(i, 25, None)[1] for i in range(len(test))])
    rows = []
    for kind, proj in HEADS:
        name, cfg = cfg_for(kind, proj)
        t0 = time.time()
        module = fit(cfg)
        ckpt = out / name / "checkpoints" / "final.ckpt"
        head_file = out / f"{name}.pt"
        export(str(ckpt), str(head_file))
        from hear_models.tagging import load_head

        hf = load_head(head_file)
        assert hf.labels == test.vocab or set(hf.labels) == set(test.vocab)
        order = [hf.labels.index(v) for v in test.vocab]
        with torch.no_grad():
            scores = torch.sigmoid(hf.head(x, m))[:, order].numpy()
        present = test.targets.sum(0).numpy() > 0
        mAP = average_precision_score(test.targets.numpy()[:, present], scores[:, present], average="macro")
        n = sum(q.numel() for q in hf.head.parameters())
        rows.append({"head": name, "params": n, "mb_fp32": round(n * 4 / 2**20, 2), "test_mAP": round(float(mAP), 4),
                     "train_s": round(time.time() - t0, 1), "file": str(head_file)})
        print(json.dumps(rows[-1]), flush=True)

    # cost: head vs encoder forward on 10 s
    from hear_models import whisper_at

    hm = whisper_at.load_model(a.whisper)
    enc = hm.encoder
    audio = torch.rand(1, 160000) * 0.2 - 0.1
    with torch.inference_mode():
        t_enc = timed(lambda: list(enc.hidden_states(audio)), 5)[0]
        feats = torch.randn(1, enc.n_layers, 25, enc.width)
        cost = {}
        for kind, proj in HEADS:
            h = create_head(kind, enc.n_layers, enc.width, len(test.vocab), proj).eval()
            h527 = create_head(kind, enc.n_layers, enc.width, 527, proj).eval()
            cost[kind + (f"_{proj}" if proj else "")] = (timed(lambda: h(feats), 20)[0],
                                                         timed(lambda: h527(feats), 20)[0])

    print(f"\ntask {task.name}: {len(test)} test clips, {len(test.vocab)} classes; backbone "
          f"{a.whisper or 'offline:base'}; {a.steps} steps x batch {a.batch}; encoder 10 s: {t_enc * 1000:.1f} ms")
    print(f"{'head':12s} {'params':>10s} {'MB':>7s} {'test mAP':>9s} {'head ms':>8s} {'% enc':>7s} {'527-cls % enc':>14s}")
    for r in rows:
        c, c527 = cost[r["head"]]
        r["head_ms"], r["pct_encoder"], r["pct_encoder_527"] = round(c * 1000, 3), round(100 * c / t_enc, 2), round(100 * c527 / t_enc, 2)
        print(f"{r['head']:12s} {r['params']:10,d} {r['mb_fp32']:7.2f} {r['test_mAP']:9.4f} "
              f"{r['head_ms']:8.2f} {r['pct_encoder']:6.2f}% {r['pct_encoder_527']:13.2f}%")
    (out / "results.json").write_text(json.dumps({"task": task.name, "encoder_ms_10s": t_enc * 1000, "rows": rows}, indent=1))
    if a.ship:
        best = next(r for r in rows if r["head"] == a.ship_head)
        Path(a.ship).parent.mkdir(parents=True, exist_ok=True)
        Path(a.ship).write_bytes(Path(best["file"]).read_bytes())
        from hear_models.checkpoints import sha256_file

        print(f"shipped {best['head']} (test mAP {best['test_mAP']}) -> {a.ship} sha256 {sha256_file(a.ship)}")


if __name__ == "__main__":
    main()
