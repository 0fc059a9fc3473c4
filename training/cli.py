"""``hear-models train``: run, resume and export trainings.

    hear-models train CONFIG [key=value ...] [--resume [auto|CKPT]]
    hear-models train CONFIG [key=value ...] --print-config
    hear-models train FINETUNE_CONFIG data.source=TASK [key=value ...] --all-folds
    hear-models train export CKPT OUT.pt [--ema]
    hear-models train plot OUT_DIR/log.jsonl OUT.png [--key train/loss]
    hear-models train configs

CONFIG is a YAML file or the name of a packaged config (``hear-models train configs``).
Overrides use dotted keys and YAML values: ``trainer.max_steps=500 optim.betas=[0.9,0.95]``.
Several GPUs: ``trainer.devices=8 trainer.strategy=ddp``; several nodes: add
``trainer.num_nodes=N`` and start the same command on every node (torchrun / SLURM
``srun``; Lightning reads MASTER_ADDR, MASTER_PORT, NODE_RANK / the SLURM variables).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "configs":
        from .config import config_summary, list_configs

        for name in list_configs():
            objective, size, text = config_summary(name)
            print(f"{name:24s} {objective:19s} {size:9s} {text}")
        return 0
    if argv and argv[0] == "plot":
        p = argparse.ArgumentParser(prog="hear-models train plot",
                                    description="Plot a logged value (and the lr) against the step (needs matplotlib).")
        p.add_argument("log")
        p.add_argument("out")
        p.add_argument("--key", default="train/loss")
        p.add_argument("--title", default=None)
        a = p.parse_args(argv[1:])
        plot_log(a.log, a.out, a.key, a.title)
        print(a.out)
        return 0
    if argv and argv[0] == "export":
        p = argparse.ArgumentParser(prog="hear-models train export",
                                    description="Write the weights file a HEAR module's load_model reads.")
        p.add_argument("checkpoint")
        p.add_argument("out")
        p.add_argument("--ema", action="store_true", help="export the EMA weights")
        p.add_argument("--description", default="", help="the file's one-line description")
        p.add_argument("--data-note", default="", help="replaces the data paths in the stored config "
                       "(say what the data was, not where it sat)")
        a = p.parse_args(argv[1:])
        from .engine import export

        sha = export(a.checkpoint, a.out, use_ema=a.ema, description=a.description, data_note=a.data_note)
        print(f"{a.out}: sha256 {sha}")
        return 0

    p = argparse.ArgumentParser(prog="hear-models train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML file or packaged config name")
    p.add_argument("overrides", nargs="*", help="key=value (dotted keys, YAML values)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from CKPT, or (no value) from the newest checkpoint in trainer.out_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--all-folds", action="store_true",
                   help="fine-tuning on a HEAR task folder: one run per heareval run (data.fold=0..k-1, in "
                   "trainer.out_dir/foldNN), then the mean and std of the test scores over the runs "
                   "(trainer.out_dir/test_scores.json), as heareval reports the task")
    a = p.parse_args(argv)
    from .config import ConfigError, load_config

    try:
        cfg = load_config(a.config, a.overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    from .engine import NonFiniteLossError, TrainingInterrupted, fit

    try:
        if a.all_folds:
            from .finetune import fit_all_folds

            try:
                fit_all_folds(a.config, a.overrides, resume=a.resume)
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            return 0
        fit(cfg, resume=a.resume)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return e.status  # 143 (SIGTERM) / 130 (SIGINT), as a shell reports a process ended by it
    print(json.dumps({"out_dir": cfg.trainer.out_dir,
                      "final_checkpoint": f"{cfg.trainer.out_dir}/checkpoints/final.ckpt"}))
    return 0


def plot_log(log: str, out: str, key: str = "train/loss", title: Optional[str] = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(log) if line.strip()]
    last = {}
    for r in rows:  # a resumed run re-logs some steps: the later record wins
        if key in r:
            last[r["step"]] = r
    steps = sorted(last)
    if not steps:
        raise SystemExit(f"{log}: no records with {key!r}")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [last[s][key] for s in steps], label=key, color="C0")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax2 = ax.twinx()
    ax2.plot(steps, [last[s]["lr"][0] for s in steps], color="C1", alpha=0.6, label="lr")
    ax2.set_ylabel("lr", color="C1")
    ax.set_title(title or log)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
