"""Conformer SSL objectives: wav2vec 2.0-style contrastive pretraining.

Pretraining (``configs/conformer_*_pretrain.yaml``; the paper's recipe scaled down): span
masking of the 80 ms latents (mask_prob 0.3, spans of 3, fairseq/torchaudio semantics,
see :class:`~hear_models.models.conformer.ConformerWav2Vec2`), a contrastive loss at each
masked step between the context output and the projected true latent against K = 100
distractors from other masked steps of the same clip (cosine similarity / 0.1), padding
masks (padded latents are never masked, never distractors, never attended to). Optimiser:
the engine's AdamW (Adam with decoupled weight decay, as fairseq's ``adam``) with betas
(0.9, 0.98), weight decay 0.01 (not on biases, norms, the mask embedding), linear warm-up
then linear decay to 0 (the paper: 10k warm-up to 3e-4, 0 at 300k).

Fine-tuning (``configs/conformer_finetune.yaml``): all weights update. Single-label: mean
pooling + linear, cross-entropy; multilabel: frame-level linear + sigmoid, linear-softmax
pooling, binary cross-entropy. Augmentations, each view independently: time jitter (the
audio shifted by up to +-200 samples, zero-filled), one SpecAugment time mask of up to 2 s
(filled with the log-mel of silence); mixup (``data.mixup`` probability per batch,
``mixup_alpha`` >= 0.5) with ``lam = max(l, 1 - l)`` that KEEPS the dominant (own) clip's
labels; a consistency loss, ``consistency_weight`` (2) x the symmetric KL divergence
between the predictions of two augmented views (``KL(p1 || p2) + KL(p2 || p1)`` / 2;
Bernoulli per class for multilabel); the task loss is the mean over both views.
Three-stage lr (``model.tri_stage``): linear warm-up over 30 % of the steps, hold 30 %,
exponential decay over the last 40 % to ``final_lr_scale`` x the peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hear_models.models.conformer import (MEL_HOP, SAMPLE_RATE, ConformerClassifier, ConformerDims,
                                          ConformerWav2Vec2, latent_lengths)

from .engine import TrainModule, load_init
from .finetune import FinetuneConfig, FinetuneModule


@dataclass
class ConformerModelConfig:
    variant: str = "tiny"  # tiny | S | L
    # sizes that override the variant's (0 = the variant's); for tests and experiments
    width: int = 0
    heads: int = 0
    layers: int = 0
    ffn: int = 0
    dropout: float = 0.1
    conv_norm: str = "layer"  # layer | batch | group
    drop_path: float = 0.0
    init: str = ""  # encoder weights to start from (an export); "" = random

    def dims(self) -> ConformerDims:
        over = {k: getattr(self, k) for k in ("width", "heads", "layers", "ffn") if getattr(self, k)}
        return ConformerDims.variant(self.variant, dropout=self.dropout, conv_norm=self.conv_norm,
                                     drop_path=self.drop_path, **over)


@dataclass
class ConformerPretrainConfig(ConformerModelConfig):
    mask_prob: float = 0.3  # span starts per step / mask_length (fairseq's mask_prob)
    mask_length: int = 3  # latents per span (240 ms)
    min_masks: int = 2
    n_negatives: int = 100  # K distractors per masked step
    temperature: float = 0.1


def _load_encoder_init(model, path: str) -> None:
    from hear_models.models.conformer import load_encoder

    load_init(path, load_encoder, [model.encoder])


class ConformerPretrain(TrainModule):
    """Contrastive pretraining of :class:`ConformerWav2Vec2`."""

    sample_rate = SAMPLE_RATE

    def build_model(self):
        m = self.cfg.model
        model = ConformerWav2Vec2(m.dims(), mask_prob=m.mask_prob, mask_length=m.mask_length,
                                  min_masks=m.min_masks, n_negatives=m.n_negatives, temperature=m.temperature)
        if m.init:
            _load_encoder_init(model, m.init)
        return model

    def compute_loss(self, batch, train: bool = True):
        audio = batch["audio"]
        mel = self.model.encoder.frontend(audio)  # (B, 64, T)
        n_latents = mel.shape[-1] // self.model.dims.stack
        lengths = latent_lengths(batch["lengths"].to(mel.device), n_latents)
        loss, logs = self.model(mel, lengths)
        return loss, logs

    def export_state(self) -> dict:
        from hear_models.models.conformer import EXPORT_FORMAT

        sd = {k[len("encoder."):]: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
              if k.startswith("encoder.")}
        return {"format": EXPORT_FORMAT, "dims": self.model.dims.to_dict(), "state_dict": sd,
                "description": f"conformer-{self.cfg.model.variant} trained with hear-models ({self.cfg.objective})"}


# -- fine-tuning --------------------------------------------------------------------------------
@dataclass
class ConformerFinetuneConfig(ConformerModelConfig, FinetuneConfig):
    jitter_samples: int = 200  # time jitter: shift by up to +- this many samples
    time_mask_seconds: float = 2.0  # SpecAugment: one time mask of up to this length
    consistency_weight: float = 2.0  # x symmetric KL between two augmented views (0 = off)
    tri_stage: bool = True  # warm-up 30 %, hold 30 %, exponential decay 40 %
    final_lr_scale: float = 0.01  # lr at the end of the exponential decay / peak


def tri_stage_factor(step: int, max_steps: int, final_scale: float = 0.01,
                     stages=(0.3, 0.3, 0.4)) -> float:
    """Multiplier of the peak lr: linear warm-up (from 0), hold at 1, exponential decay to
    ``final_scale`` at ``max_steps`` (fairseq's tri-stage schedule, fractions of the run)."""
    warm = max(1, int(round(stages[0] * max_steps)))
    hold = int(round(stages[1] * max_steps))
    decay = max(1, max_steps - warm - hold)
    if step < warm:
        return (step + 1) / warm
    if step < warm + hold:
        return 1.0
    progress = min(1.0, (step - warm - hold) / decay)
    return math.exp(math.log(final_scale) * progress)


def time_jitter(audio: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each clip by an integer in [-max_shift, max_shift] samples (zero-filled)."""
    if max_shift <= 0:
        return audio
    B, n = audio.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (B,))
    idx = torch.arange(n)[None] - shifts[:, None]  # output sample i takes input i - shift
    valid = (idx >= 0) & (idx < n)
    out = torch.gather(audio, 1, idx.clamp(0, n - 1).to(audio.device))
    return out * valid.to(audio.device, audio.dtype)


def time_mask(mel: torch.Tensor, max_frames: int, fill: float) -> torch.Tensor:
    """SpecAugment: per clip one time mask of width U[0, max_frames] at a random start."""
    B, _, T = mel.shape
    if max_frames <= 0:
        return mel
    width = torch.randint(0, min(max_frames, T) + 1, (B,))
    start = (torch.rand(B) * (T - width + 1).float()).long()
    t = torch.arange(T)[None]
    m = ((t >= start[:, None]) & (t < (start + width)[:, None])).to(mel.device)
    return mel.masked_fill(m[:, None, :], fill)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor, multilabel: bool, eps: float = 1e-7) -> torch.Tensor:
    """(KL(p || q) + KL(q || p)) / 2, mean over the batch; categorical rows, or Bernoulli
    per class (summed over classes) when ``multilabel``."""
    p, q = p.float().clamp(eps, 1 - eps if multilabel else 1.0), q.float().clamp(eps, 1 - eps if multilabel else 1.0)
    if multilabel:
        kl_pq = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
        kl_qp = q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()
    else:
        kl_pq = p * (p / q).log()
        kl_qp = q * (q / p).log()
    return 0.5 * (kl_pq + kl_qp).sum(-1).mean()


class ConformerFinetune(FinetuneModule):
    """Supervised fine-tuning of :class:`ConformerClassifier` (all weights; labels,
    validation, best checkpoint and test score: :class:`~hear_models.training.finetune.FinetuneModule`)."""

    sample_rate = SAMPLE_RATE

    def build_model(self):
        m = self.cfg.model
        model = ConformerClassifier(m.dims(), m.n_classes, bool(m.multilabel))
        if m.init:
            _load_encoder_init(model, m.init)
        return model

    def configure_optimizers(self):
        out = super().configure_optimizers()
        m, t = self.cfg.model, self.cfg.trainer
        if m.tri_stage:
            opt = out["optimizer"]
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"]
            max_steps, final = t.max_steps, m.final_lr_scale
            out["lr_scheduler"]["scheduler"] = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda step: tri_stage_factor(step, max_steps, final))
        return out

    def _predict(self, audio, lengths, train: bool):
        m = self.cfg.model
        if train:
            audio = time_jitter(audio, m.jitter_samples)
        mel = self.model.encoder.frontend(audio)
        if train:
            max_frames = int(m.time_mask_seconds * SAMPLE_RATE / MEL_HOP)
            mel = time_mask(mel, max_frames, self.model.encoder.silence_level())
        n_latents = mel.shape[-1] // self.model.dims.stack
        return self.model(mel, latent_lengths(lengths, n_latents))

    def clip_probabilities(self, audio, lengths):
        out = self._predict(audio, lengths, train=False)
        return out.float() if self.cfg.model.multilabel else out.float().softmax(-1)

    def _task_loss(self, out, target):
        if self.cfg.model.multilabel:
            return F.binary_cross_entropy(out.float().clamp(1e-7, 1 - 1e-7), target.float())
        return F.cross_entropy(out.float(), target.float())

    def compute_loss(self, batch, train: bool = True):
        m = self.cfg.model
        audio, lengths = batch["audio"], batch["lengths"].to(batch["audio"].device)
        target = batch["target"].to(audio.dtype)
        if train and self.cfg.data.mixup > 0 and float(torch.rand(())) < self.cfg.data.mixup:
            from .data import mixup

            # lam >= 0.5: each clip dominates its mix and KEEPS its own labels
            audio, _, _, perm = mixup(audio, None, self.cfg.data.mixup_alpha)
            lengths = torch.maximum(lengths, lengths[perm])
        out1 = self._predict(audio, lengths, train)
        loss = self._task_loss(out1, target)
        logs = {}
        if train and m.consistency_weight > 0:
            out2 = self._predict(audio, lengths, train)
            loss = 0.5 * (loss + self._task_loss(out2, target))
            if m.multilabel:
                p1, p2 = out1, out2
            else:
                p1, p2 = out1.float().softmax(-1), out2.float().softmax(-1)
            cons = symmetric_kl(p1, p2, bool(m.multilabel))
            loss = loss + m.consistency_weight * cons
            logs["consistency"] = cons.detach()
        if not m.multilabel:
            logs["acc"] = (out1.argmax(-1) == target.argmax(-1)).float().mean()
        return loss, logs

    def export_state(self) -> dict:
        from hear_models.models.conformer import EXPORT_FORMAT

        sd = {k[len("encoder."):]: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
              if k.startswith("encoder.")}
        head = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if k.startswith("head.")}
        return {"format": EXPORT_FORMAT, "dims": self.model.dims.to_dict(), "state_dict": sd, "head": head,
                "labels": list(self.cfg.model.labels), "multilabel": bool(self.cfg.model.multilabel),
                "description": f"conformer-{self.cfg.model.variant} fine-tuned with hear-models"}
