"""MaskSpec objectives: masked-spectrogram pretraining and supervised fine-tuning.

Pretraining (the paper's recipe; ``configs/maskspec_*_pretrain.yaml``): AdamW (0.9, 0.95),
weight decay 0.05, lr = 1e-3 x global batch / 256, cosine with warm-up, 75 % of the
patches masked per sample, MSE on masked patches with per-patch normalised targets.

Fine-tuning (``configs/maskspec_finetune.yaml``): LayerNorm + Linear on the mean of the
patch tokens, mixup, layer-wise lr decay (0.75), drop-path 0.1; multiclass (cross-entropy
on soft targets) or multilabel (binary cross-entropy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from hear_models.models.maskspec import (MEL_HOP, SAMPLE_RATE, MaskSpecClassifier, MaskSpecDims,
                                         MaskSpecMAE, load_encoder, patch_padding)

from .engine import TrainModule, load_init
from .finetune import FinetuneConfig, FinetuneModule


@dataclass
class MaskSpecModelConfig:
    variant: str = "tiny"  # tiny | small | base
    # sizes that override the variant's (0 = the variant's); for tests and experiments
    width: int = 0
    layers: int = 0
    heads: int = 0
    decoder_width: int = 0
    decoder_layers: int = 0
    decoder_heads: int = 0
    drop_path: float = 0.0
    init: str = ""  # weights to start the encoder from (export, official checkpoint); "" = random

    def dims(self) -> MaskSpecDims:
        over = {k: getattr(self, k) for k in ("width", "layers", "heads", "decoder_width",
                                              "decoder_layers", "decoder_heads") if getattr(self, k)}
        return MaskSpecDims.variant(self.variant, drop_path=self.drop_path, **over)


@dataclass
class MaskSpecPretrainConfig(MaskSpecModelConfig):
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True


@dataclass
class MaskSpecFinetuneConfig(MaskSpecModelConfig, FinetuneConfig):
    drop_path: float = 0.1
    label_smoothing: float = 0.0  # multiclass only


def _load_encoder_init(model, path: str) -> None:
    """Copy encoder + front-end weights from a weights file into ``model`` (sizes must match)."""
    load_init(path, load_encoder, [model.encoder], [model.frontend])


def layer_id(name: str, n_layers: int) -> int:
    """Depth of a parameter for layer-wise lr decay: 0 = embeddings, i + 1 = block i,
    n_layers + 1 = everything after the blocks (norms, head)."""
    if name.startswith("encoder."):
        rest = name[len("encoder."):]
        if rest.startswith(("cls_token", "patch_embed")):
            return 0
        if rest.startswith("blocks."):
            return int(rest.split(".")[1]) + 1
    return n_layers + 1


def param_groups_lrd(model: nn.Module, weight_decay: float, layer_decay: float,
                     n_layers: int) -> List[dict]:
    """Parameter groups with layer-wise lr decay: scale ``layer_decay ** (n_layers + 1 - id)``;
    no weight decay on biases, norms and tokens. Each group has ``lr_scale``."""
    groups: Dict[Tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim == 1 or name.endswith(("cls_token", "mask_token"))
        lid = layer_id(name, n_layers)
        key = (lid, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_scale": layer_decay ** (n_layers + 1 - lid), "names": []}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


class _MaskSpecBase(TrainModule):
    sample_rate = SAMPLE_RATE

    def mel_and_padding(self, batch: dict) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """audio (B, n) -> mel (B, 128, T) and patch padding (B, L) (None when nothing is padded)."""
        audio = batch["audio"]
        mel = self.model.frontend(audio)
        lengths = batch["lengths"].to(mel.device)
        if bool((lengths >= audio.shape[1]).all()):
            return mel, None
        valid_frames = (lengths - 1).clamp_min(0) // MEL_HOP + 1
        T = mel.shape[-1] // self.model.dims.patch * self.model.dims.patch
        d = self.model.dims
        return mel, patch_padding(valid_frames, T, d.n_mels, d.patch)

    def export_state(self) -> dict:
        from hear_models.models.maskspec import EXPORT_FORMAT

        sd = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
              if k.startswith(("frontend.", "encoder."))}
        return {"format": EXPORT_FORMAT, "dims": self.model.dims.to_dict(), "state_dict": sd,
                "description": f"maskspec-{self.cfg.model.variant} trained with hear-models ({self.cfg.objective})"}


class MaskSpecPretrain(_MaskSpecBase):
    """Masked-spectrogram pretraining of :class:`MaskSpecMAE`."""

    def build_model(self):
        m = self.cfg.model
        model = MaskSpecMAE(m.dims(), mask_ratio=m.mask_ratio, norm_pix_loss=m.norm_pix_loss)
        if m.init:
            _load_encoder_init(model, m.init)
        return model

    def compute_loss(self, batch, train: bool = True):
        mel, padding = self.mel_and_padding(batch)
        if train and self.cfg.data.mixup > 0 and float(torch.rand(())) < self.cfg.data.mixup:
            from .data import mixup

            mel, _, _, perm = mixup(mel, None, self.cfg.data.mixup_alpha)
            if padding is not None:
                padding = padding & padding[perm]  # a patch is padding only if both clips pad it
        loss, _, mask = self.model(mel, padding=padding)
        return loss, {"masked": mask.mean()}


class MaskSpecFinetune(FinetuneModule, _MaskSpecBase):
    """Supervised fine-tuning of :class:`MaskSpecClassifier` (labels, validation, best
    checkpoint and test score: :class:`~hear_models.training.finetune.FinetuneModule`)."""

    def build_model(self):
        m = self.cfg.model
        model = MaskSpecClassifier(m.dims(), m.n_classes)
        if m.init:
            _load_encoder_init(model, m.init)
        return model

    def param_groups(self) -> List[dict]:
        o = self.cfg.optim
        return param_groups_lrd(self.model, o.weight_decay, o.layer_decay, len(self.model.encoder.blocks))

    def compute_loss(self, batch, train: bool = True):
        mel, padding = self.mel_and_padding(batch)
        target = batch["target"].to(mel.dtype)
        if train and self.cfg.data.mixup > 0 and float(torch.rand(())) < self.cfg.data.mixup:
            from .data import mixup

            mel, target, _, perm = mixup(mel, target, self.cfg.data.mixup_alpha)
            if padding is not None:
                padding = padding & padding[perm]  # a patch is padding only if both clips pad it
        logits = self.model(mel, padding).float()
        if self.cfg.model.multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, target.float())
            logs: Dict[str, torch.Tensor] = {}
        else:
            loss = F.cross_entropy(logits, target.float(), label_smoothing=self.cfg.model.label_smoothing)
            logs = {"acc": (logits.argmax(-1) == target.argmax(-1)).float().mean()}
        return loss, logs

    def clip_probabilities(self, audio, lengths):
        mel, padding = self.mel_and_padding({"audio": audio, "lengths": lengths})
        return self.activate(self.model(mel, padding))

    def export_state(self) -> dict:
        state = super().export_state()
        state["head"] = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
                         if k.startswith(("fc_norm.", "head."))}
        state["labels"] = list(self.cfg.model.labels)
        state["multilabel"] = bool(self.cfg.model.multilabel)
        return state
