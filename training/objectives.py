"""The objectives the engine knows: name -> (model config dataclass, LightningModule).

Each objective lives in its own module of ``hear_models.training`` and is imported only
when used: a dataclass for ``model:``, a :class:`~hear_models.training.engine.TrainModule`
subclass with ``build_model``, ``compute_loss`` and ``export_state``. The fine-tuning
objectives share :class:`~hear_models.training.finetune.FinetuneModule` (labels, heareval's
splits, validation score, best checkpoint, test score).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Dict, Tuple

# name -> (module, model config class, TrainModule class)
OBJECTIVES: Dict[str, Tuple[str, str, str]] = {
    "maskspec_pretrain": ("hear_models.training.maskspec", "MaskSpecPretrainConfig", "MaskSpecPretrain"),
    "maskspec_finetune": ("hear_models.training.maskspec", "MaskSpecFinetuneConfig", "MaskSpecFinetune"),
    "atst_pretrain": ("hear_models.training.atst", "ATSTPretrainConfig", "ATSTPretrain"),
    "atst_finetune": ("hear_models.training.atst", "ATSTFinetuneConfig", "ATSTFinetune"),
    "whisper_at_heads": ("hear_models.training.tagging", "TaggingConfig", "TaggingHeads"),
    "conformer_pretrain": ("hear_models.training.conformer", "ConformerPretrainConfig", "ConformerPretrain"),
    "conformer_finetune": ("hear_models.training.conformer", "ConformerFinetuneConfig", "ConformerFinetune"),
}


@dataclass
class Objective:
    name: str
    model_config: type
    module: type


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}")
    mod, cfg, cls = OBJECTIVES[name]
    m = importlib.import_module(mod)
    return Objective(name, getattr(m, cfg), getattr(m, cls))
