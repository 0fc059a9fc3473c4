"""HEAR module: ATST-Frame, ATST's Transformer trained with a frame-wise teacher-student
loss (16 kHz, one embedding per 40 ms).

    hear-validator hear_models.atst_frame -m atstframe_base.ckpt
    python -m heareval.embeddings.runner hear_models.atst_frame --model PATH ...

What the official ``audiossl/methods/atstframe/embedding.py`` returns, and what we return:

- log-mel of the WHOLE clip (top_db 80 below the clip's peak), cut into chunks of the
  position table's length; each chunk is encoded on its own (positions 1 .. K), one token
  per 4 mel frames (trailing frames of a chunk that do not fill a token are dropped);
- timestamp embedding: per token, every block's output through ``norm_frame``, the 12
  blocks concatenated (12 x D: 4608 small, 9216 base); ``layers`` / ``combine`` choose other
  blocks (the official ``N_BLOCKS = n`` is ``layers=[-n, ..., -1]``);
- scene embedding: per chunk, the mean over its tokens of the timestamp embedding (the
  official ``sum / (K + 1e-6)``), then the mean over chunks (every chunk weighs the same,
  as officially): 12 x D, the timestamp embedding's width.

Where we differ (docs/models.md):

- the official ``load_model`` declares ``scene_embedding_size = 24 x D`` but returns 12 x D;
  we declare what we return;
- the official chunks are 1001 mel frames, of which 1000 make 250 tokens: one frame (10 ms)
  per 10 s is dropped and its timestamps (``40 ms x token index``) drift 10 ms per chunk
  from the audio. We cut chunks of 1000 frames (10 s, exactly 250 tokens), so tokens tile
  the clip; the first 10.01 s (every clip up to that length) are the official output
  exactly, later tokens sit one mel frame per chunk earlier than the official ones;
- timestamps are each token's centre, 40 ms x k + 15 ms (the official ones are 15 ms
  earlier, the start of the token's first mel frame's hop);
- officially a clip has ``(1 + n // 160) // 4`` tokens and its last 1-3 mel frames are
  dropped, leaving up to 55 ms of its end without a frame; when they hold a further token's
  centre we add that token (its missing frames silent, the clip's dB floor), so the last
  frame is within 40 ms of the end (HEAR's rule); that chunk's other tokens then differ
  slightly from the official ones;
- a trailing chunk of under 4 mel frames has no token: officially it still counts in the
  scene mean as a zero vector; we leave it out;
- clips shorter than 40 ms are refused (officially: under 513 samples the STFT fails, up
  to 479 samples there is no token).
"""

from __future__ import annotations

from typing import Iterator, Sequence, Tuple, Union

import torch
from torch import Tensor

from .hear_api import HearModel, get_scene_embeddings, get_timestamp_embeddings

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "ATSTFrameHearModel"]

SCENE_EPS = 1e-6  # embedding.py's token mean: sum / (K + 1e-6)


class ATSTFrameHearModel(HearModel):
    """:class:`HearModel` over the clip's whole log-mel, cut in chunks of 1000 mel frames
    (see the module docstring); scene embedding = mean over chunks of the token mean."""

    def n_frames(self, n_samples: int) -> int:
        return self.encoder.n_frames(n_samples)

    def n_chunks(self, n_samples: int) -> int:
        """Chunks that hold at least one token."""
        return -(-self.n_frames(n_samples) // self.encoder.encoder.dims.max_tokens)

    def _window_batches(self, audio: Tensor) -> Iterator[Tuple[slice, int, int, Tensor]]:
        """``(sounds, first_token, n_tokens, mel_chunk)``: the log-mel of each clip is
        computed whole (for sub-batches of sounds under the memory budget), then cut."""
        from .models.atst_frame import TOKEN_FRAMES

        enc = self.encoder
        n_sounds, n_samples = audio.shape
        per_batch = max(1, self.max_batch_samples // n_samples)
        chunk = enc.window_samples // enc.frontend.logmel.config.hop_length  # 1000 frames
        for i in range(0, n_sounds, per_batch):
            sounds = slice(i, i + per_batch)
            mel = enc.mel(audio[sounds])
            for first, c0 in enumerate(range(0, mel.shape[-1], chunk)):
                part = mel[..., c0:c0 + chunk]
                keep = part.shape[-1] // TOKEN_FRAMES
                if keep:
                    yield sounds, first * (chunk // TOKEN_FRAMES), keep, part

    @torch.inference_mode()
    def scene_embeddings(self, audio) -> Tensor:
        audio = self.check_audio(audio)
        total = torch.zeros(audio.shape[0], self.scene_embedding_size, dtype=torch.float64, device=audio.device)
        for sounds, _, frames, _ in self.iter_frames(audio):
            total[sounds] += frames.double().sum(dim=1) / (frames.shape[1] + SCENE_EPS)
        return (total / self.n_chunks(audio.shape[1])).float()


def load_model(
    model_file_path: str = "",
    variant: str = "small",
    layers: Union[str, int, Sequence[int]] = "all",
    combine: str = "concat",
    which: str = "teacher",
    max_batch_seconds: float = 240.0,
    precision: str = "auto",
    seed: int = 0,
) -> ATSTFrameHearModel:
    """Load an ATST-Frame encoder behind HEAR's API.

    Parameters
    ----------
    model_file_path : str
        An official checkpoint (``atstframe_small.ckpt`` / ``atstframe_base.ckpt``; formats:
        :func:`hear_models.models.atst_frame.load_encoder`); ``""``: the ``variant`` with
        seeded RANDOM weights (untrained; for tests and as a baseline).
    variant : "small" | "base" | "tiny"
        Size when ``model_file_path`` is empty (a file carries its own sizes).
    layers : "all" | "last" | int | list of int
        Blocks of the embeddings (each after ``norm_frame``).
    combine : "concat" | "mean"
        "concat" (official: L x D) or "mean" (D).
    which : "teacher" | "student"
        Which encoder of the Lightning checkpoint (the official embedding uses the teacher).
    precision : "auto" | "fp32" | "bf16"
        As every model of the package (docs/hear_api.md).
    seed : int
        Seed of the random weights when ``model_file_path`` is empty.
    """
    from .models.atst_frame import ATSTFrameEncoderFrames, load_encoder

    loaded = load_encoder(model_file_path, variant, seed=seed, which=which)
    frame_encoder = ATSTFrameEncoderFrames(loaded.frontend, loaded.encoder, layers=layers, combine=combine)
    frame_encoder.requires_grad_(False)
    model = ATSTFrameHearModel(frame_encoder, name=loaded.description, max_batch_seconds=max_batch_seconds,
                               precision=precision)
    return model.eval()
