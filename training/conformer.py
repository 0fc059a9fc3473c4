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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hear_models.models.conformer import (SAMPLE_RATE, ConformerDims, ConformerWav2Vec2,
                                          latent_lengths)

from .engine import TrainModule


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
    from hear_models.conformer import build_encoder

    encoder, _ = build_encoder(path)
    if encoder.dims.width != model.encoder.dims.width or len(encoder.context.blocks) != len(model.encoder.context.blocks):
        raise ValueError(f"model.init={path}: encoder {encoder.dims.width} x {len(encoder.context.blocks)} does not "
                         f"match the configured {model.encoder.dims.width} x {len(model.encoder.context.blocks)}")
    model.encoder.load_state_dict(encoder.state_dict())


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
        from hear_models.conformer import EXPORT_FORMAT

        sd = {k[len("encoder."):]: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
              if k.startswith("encoder.")}
        return {"format": EXPORT_FORMAT, "dims": self.model.dims.to_dict(), "state_dict": sd,
                "description": f"conformer-{self.cfg.model.variant} trained with hear-models ({self.cfg.objective})"}
