"""``hear-models train``: run, resume and export trainings.

    hear-models train CONFIG [key=value ...] [--resume [auto|CKPT]]
    hear-models train CONFIG [key=value ...] --print-config
    hear-models train export CKPT OUT.pt [--ema]
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
        from .config import CONFIG_DIR, list_configs

        for name in list_configs():
            print(f"{name:28s} {CONFIG_DIR / (name + '.yaml')}")
        return 0
    if argv and argv[0] == "export":
        p = argparse.ArgumentParser(prog="hear-models train export",
                                    description="Write the weights file a HEAR module's load_model reads.")
        p.add_argument("checkpoint")
        p.add_argument("out")
        p.add_argument("--ema", action="store_true", help="export the EMA weights")
        a = p.parse_args(argv[1:])
        from .engine import export

        sha = export(a.checkpoint, a.out, use_ema=a.ema)
        print(f"{a.out}: sha256 {sha}")
        return 0

    p = argparse.ArgumentParser(prog="hear-models train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML file or packaged config name")
    p.add_argument("overrides", nargs="*", help="key=value (dotted keys, YAML values)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from CKPT, or (no value) from the newest checkpoint in trainer.out_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
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
    from .engine import NonFiniteLossError, fit

    try:
        fit(cfg, resume=a.resume)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(json.dumps({"out_dir": cfg.trainer.out_dir,
                      "final_checkpoint": f"{cfg.trainer.out_dir}/checkpoints/final.ckpt"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
