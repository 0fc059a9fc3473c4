"""Training configuration: dataclasses loaded from YAML, overridden with ``key=value``.

A run is described by one :class:`TrainConfig`::

    objective: maskspec_pretrain        # picks the model dataclass (see OBJECTIVES)
    model: {...}                        # the objective's own dataclass
    data: {...}                         # DataConfig
    optim: {...}                        # OptimConfig
    trainer: {...}                      # TrainerConfig

Command-line overrides use dotted keys and YAML values: ``trainer.max_steps=2000``,
``optim.betas=[0.9,0.95]``, ``data.source=/data/clips``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class DataConfig:
    """Where the audio comes from and how a batch is made."""

    # An audio folder, a manifest (.csv / .jsonl: path, optional labels, optional duration),
    # or a HEAR task folder (the one holding task_metadata.json) with ``split``.
    source: str = ""
    split: str = "train"  # HEAR task folders: one split or several, comma-separated
    val_source: str = ""  # optional validation data (same kinds); "" = none
    val_split: str = "valid"
    sample_rate: int = 0  # Hz; 0 = the model's rate (files are resampled to it)
    crop_seconds: float = 10.0  # random crop (training) / start crop (validation); <= 0: whole clips
    random_crop: bool = True
    batch_size: int = 32  # per device
    num_workers: int = 2  # DataLoader worker processes
    limit: int = 0  # use at most this many clips (0 = all)
    shuffle: bool = True
    mixup: float = 0.0  # probability that a batch is mixed (objectives with labels)
    mixup_alpha: float = 0.3  # lambda ~ Beta(alpha, alpha), max(lambda, 1 - lambda)
    # Fine-tuning on a HEAR task folder (training/finetune.py):
    fold: int = -1  # >= 0: heareval's run i (k-fold: fold i tests, i + 1 validates, the rest train)
    test_split: str = "auto"  # scored at the end; "auto": heareval's test split of this run; "" = none


@dataclass
class OptimConfig:
    """AdamW (or SGD) with warm-up and a per-step schedule."""

    name: str = "adamw"  # adamw | sgd (SGD with momentum; no betas / eps)
    momentum: float = 0.9  # sgd only

    lr: float = 0.0  # absolute peak lr; 0 = base_lr * global_batch / 256
    base_lr: float = 1e-3
    betas: Tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.05
    warmup_steps: int = 0
    warmup_fraction: float = 0.0  # of max_steps, used when warmup_steps == 0
    schedule: str = "cosine"  # cosine | linear | constant
    min_lr: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    layer_decay: float = 1.0  # layer-wise lr decay (fine-tuning)


@dataclass
class TrainerConfig:
    """What Lightning is asked to do (devices, precision, steps) and our own bookkeeping."""

    max_steps: int = 1000
    precision: str = "32-true"  # "bf16-mixed", "16-mixed", ...
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: Any = "auto"  # an int, a list of ids, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp" for several GPUs / nodes
    accumulate_grad_batches: int = 1
    seed: int = 0
    deterministic: bool = False
    out_dir: str = "runs/train"
    checkpoint_every: int = 500  # steps
    keep_checkpoints: int = 3
    log_every: int = 10  # steps between JSON-lines records
    val_every: int = 0  # steps; 0 = no validation
    progress_bar: bool = True
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of the weights


@dataclass
class TrainConfig:
    objective: str
    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict:
        return to_dict(self)


# -- conversion ---------------------------------------------------------------------------
class ConfigError(ValueError):
    pass


def to_dict(obj) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _coerce(value, tp, where: str):
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin in (tuple, Tuple):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin in (list, List, Sequence):
        (arg,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, arg, where) for v in value]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from a mapping, checking names and types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {sorted(unknown)}; "
                          f"known: {', '.join(sorted(names))}")
    kw = {k: _coerce(v, hints[k], f"{where}.{k}".lstrip(".")) for k, v in data.items()}
    try:
        return cls(**kw)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def parse_override(item: str) -> Tuple[List[str], Any]:
    import yaml

    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value (e.g. trainer.max_steps=100)")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for p in path[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[path[-1]] = value
    return data


def resolve_config_path(name: str) -> Path:
    """A file path, or the name of a packaged config (``maskspec_tiny_pretrain``)."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if cand.is_file():
            return cand
    raise ConfigError(f"no config {name!r}: not a file, and not one of {', '.join(list_configs())}")


def list_configs() -> List[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_summary(name: str) -> Tuple[str, str, str]:
    """(objective, size, first comment line) of a packaged config, for ``train configs``:
    the first line says what the recipe is and what the paper trained on."""
    import yaml

    path = resolve_config_path(name)
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    model = data.get("model") or {}
    size = str(model.get("variant") or model.get("head") or "")
    if model.get("whisper") is not None:
        size = f"{model.get('head')}{'-' + str(model['proj_dim']) if model.get('proj_dim') else ''}"
    first = next((line[1:].strip() for line in text.splitlines() if line.startswith("#")), "")
    return str(data.get("objective", "?")), size, first


def build_config(data: dict) -> TrainConfig:
    from .objectives import get_objective

    data = dict(data)
    if "objective" not in data:
        raise ConfigError("the config names no objective (e.g. objective: maskspec_pretrain)")
    obj = get_objective(data["objective"])
    model = from_dict(obj.model_config, data.get("model") or {}, "model")
    return TrainConfig(
        objective=data["objective"],
        model=model,
        data=from_dict(DataConfig, data.get("data") or {}, "data"),
        optim=from_dict(OptimConfig, data.get("optim") or {}, "optim"),
        trainer=from_dict(TrainerConfig, data.get("trainer") or {}, "trainer"),
    ) if not (set(data) - {"objective", "model", "data", "optim", "trainer"}) else _extra(data)


def _extra(data):
    raise ConfigError(f"unknown section(s) {sorted(set(data) - {'objective', 'model', 'data', 'optim', 'trainer'})}")


def load_config(name_or_path: str, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (file or packaged name) and apply ``key=value`` overrides."""
    import yaml

    path = resolve_config_path(name_or_path)
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top")
    return build_config(apply_overrides(data, overrides))
