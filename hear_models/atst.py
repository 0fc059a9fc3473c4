"""HEAR module: ATST, a BYOL teacher-student audio Transformer (16 kHz).

    hear-validator hear_models.atst -m PATH
    python -m heareval.embeddings.runner hear_models.atst --model PATH ...

Scene embedding (the official downstream protocol of audiossl, ``n_last_blocks=12``): the
clip is cut into 6 s chunks (the pretraining crop length); per chunk and per block, the
block's output goes through the encoder's final LayerNorm and gives [CLS ; mean of the
chunk's tokens]; chunks are averaged, the trailing one only if it holds more than half a
chunk (the first one always). Layout [CLS_1 .. CLS_L, mean_1 .. mean_L]: 2 L D
(9216 for Small, 18432 for Base, 4608 for the tiny variant). The official
``FreezingTransform`` first keeps only the central 12 s of a longer clip; we embed the
whole clip unless ``official_crop=True``.

Timestamp embeddings: one per 40 ms token, centred (15 ms + 40 ms k), in windows of 6 s.
``layers`` / ``combine`` choose what a frame is: the official frame embedding is all blocks
concatenated (``layers="all", combine="concat"``: L x D); lighter: ``combine="mean"``
(D), ``layers="last"`` (D), or a list of blocks. See docs/models.md.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from .hear_api import HearModel, get_scene_embeddings, get_timestamp_embeddings
from .models.atst import EXPORT_FORMAT

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "ATSTHearModel", "EXPORT_FORMAT",
           "official_central_crop"]


class ATSTHearModel(HearModel):
    """:class:`HearModel` with ATST's official clip embedding (see the module docstring):
    ``scene_embedding_size = 2 x n_layers x D`` whatever the timestamp ``layers``."""

    def __init__(self, encoder, official_crop: bool = False, **kw):
        super().__init__(encoder, **kw)
        self.scene_embedding_size = 2 * encoder.n_layers * encoder.width
        self.official_crop = bool(official_crop)

    @torch.inference_mode()
    def scene_embeddings(self, audio) -> Tensor:
        audio = self.check_audio(audio)
        if self.official_crop:
            audio = official_central_crop(audio, self.sample_rate)
        enc = self.encoder
        n_sounds, n_samples = audio.shape
        C = enc.window_samples
        total = torch.zeros(n_sounds, self.scene_embedding_size, dtype=torch.float64, device=audio.device)
        n_chunks = 0
        for i, start in enumerate(range(0, n_samples, C)):
            length = min(C, n_samples - start)
            if i > 0 and length <= C // 2:
                break  # the trailing chunk counts only when more than half full
            window = audio[:, start:start + length]
            if length < enc.min_samples:
                window = torch.nn.functional.pad(window, (0, enc.min_samples - length))
            per_batch = max(1, self.max_batch_samples // window.shape[1])
            for j in range(0, n_sounds, per_batch):
                with self._autocast(audio):
                    summ = enc.chunk_summary(window[j:j + per_batch])
                total[j:j + per_batch] += summ.double()
            n_chunks += 1
        return (total / n_chunks).float()


OFFICIAL_MAX_SECONDS = 12  # audiossl FreezingTransform(max_len=12)


def official_central_crop(audio: Tensor, sample_rate: int) -> Tensor:
    """audiossl's ``CentralCrop(int(sr * max_len), pad=False)`` as ``FreezingTransform``
    applies it to the waveform: a clip longer than 12 s keeps samples
    ``[start, start + 12 sr)`` with ``start = (n - 12 sr) // 2``; shorter clips are
    unchanged (not padded)."""
    size = int(sample_rate * OFFICIAL_MAX_SECONDS)
    n = audio.shape[-1]
    if n < size:
        return audio
    start = (n - size) // 2
    return audio[..., start:start + size]


def load_model(
    model_file_path: str = "",
    variant: str = "tiny",
    layers: Union[str, int, Sequence[int]] = "all",
    combine: str = "concat",
    chunk_seconds: float = 0.0,
    which: str = "teacher",
    max_batch_seconds: float = 240.0,
    precision: str = "auto",
    official_crop: bool = False,
) -> ATSTHearModel:
    """Load an ATST encoder behind HEAR's API.

    Parameters
    ----------
    model_file_path : str
        A weights file (the formats: :func:`hear_models.models.atst.load_encoder`);
        ``""``: the ``variant`` with seeded
        RANDOM weights (untrained; for tests and as a baseline).
    variant : "tiny" | "small" | "base"
        Size when ``model_file_path`` is empty (a file carries its own sizes).
    layers : "all" | "last" | int | list of int
        Blocks of the timestamp embedding (each after the final LayerNorm).
    combine : "concat" | "mean"
        "concat" (official: L x D per frame with all blocks) or "mean" (D).
    chunk_seconds : float
        Chunk of the scene protocol and window of the timestamps; 0 = what the file says
        (official checkpoints: their ``train_len``), else 6 s. At most 10 s.
    which : "teacher" | "student"
        Which encoder of an official / training checkpoint (downstream uses the teacher).
    precision : "auto" | "fp32" | "bf16"
        bf16: matrix products in bfloat16 under autocast, the rest float32 (docs/speed.md);
        auto (default): bf16 only on devices with native bf16 matrix units and calls where
        it pays, fp32 otherwise (hear_models.precision).
    official_crop : bool
        True: scene embeddings of clips longer than 12 s see only their central 12 s, as
        audiossl's ``FreezingTransform`` crops (:func:`official_central_crop`). False
        (default): the whole clip, so a HEAR scene embedding describes all of it (on
        30 s clips the crop would drop 60 %); clips up to 12 s are the same either way.
        Timestamp embeddings always cover the whole clip.
    """
    from .models.atst import CHUNK_SECONDS, ATSTFrameEncoder, load_encoder

    if not isinstance(official_crop, bool):
        raise ValueError(f"official_crop={official_crop!r}: expected True or False")

    loaded = load_encoder(model_file_path, variant, which=which)
    frontend, encoder, desc = loaded.frontend, loaded.encoder, loaded.description
    chunk = chunk_seconds or loaded.meta.get("chunk_seconds", CHUNK_SECONDS)
    frame_encoder = ATSTFrameEncoder(frontend, encoder, layers=layers, combine=combine, chunk_seconds=chunk)
    frame_encoder.requires_grad_(False)
    if official_crop:
        desc += "; scene: official central 12 s crop"
    model = ATSTHearModel(frame_encoder, name=desc, max_batch_seconds=max_batch_seconds, precision=precision,
                          official_crop=official_crop)
    return model.eval()
