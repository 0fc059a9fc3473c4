"""HEAR module: MaskSpec, a masked-spectrogram-pretrained ViT (32 kHz).

    hear-validator hear_models.maskspec -m PATH
    python -m heareval.embeddings.runner hear_models.maskspec --model PATH ...

Timestamp embeddings: one frame every 40 ms. A MaskSpec token covers a 16 x 16 patch
(16 mel bins x 160 ms), too coarse for HEAR's 50 ms rule, so by default the encoder runs
on four copies of each window shifted by 40 ms and every frame gets the patch column
centred on it (``shifts=4``); ``shifts=1`` repeats each 160 ms column four times (4 x
cheaper, true resolution 160 ms). A frame is the mean of its column's 8 frequency
tokens (``freq_pool="concat"``: their concatenation). Windows of 9.92 s (the 8 x 62
grid of pretraining), encoded independently. Scene embedding: the mean of the frames,
i.e. the mean of the patch tokens (the CLS token is not trained by MAE and not used),
followed, for the official AudioSet fine-tuned file, by its head's 527 logits per window
(``head_output``). See docs/models.md.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence, Union

import torch

from .hear_api import HearModel, get_scene_embeddings, get_timestamp_embeddings
from .models.maskspec import EXPORT_FORMAT

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "EXPORT_FORMAT"]


def load_model(
    model_file_path: str = "",
    variant: str = "tiny",
    layers: Union[str, int, Sequence[int]] = "final",
    combine: str = "mean",
    freq_pool: str = "mean",
    shifts: int = 4,
    max_batch_seconds: float = 240.0,
    precision: str = "auto",
    mel_stats: str = "auto",
    head_output: str = "auto",
) -> HearModel:
    """Load a MaskSpec encoder behind HEAR's API.

    Parameters
    ----------
    model_file_path : str
        A weights file (the formats: :func:`hear_models.models.maskspec.load_encoder`);
        ``""``: the ``variant`` with seeded
        RANDOM weights (untrained; for tests and as a baseline).
    variant : "tiny" | "small" | "base"
        Size when ``model_file_path`` is empty (a file carries its own sizes).
    layers : "final" | "all" | "last" | int | list of int
        Blocks that feed the embedding; "final": the last block + the encoder's LayerNorm.
    combine : "mean" | "concat"
    freq_pool : "mean" | "concat"
        How the 8 frequency tokens of a patch column make a frame.
    shifts : 4 | 1
        4: each 40 ms frame has its own patch column (4 passes); 1: columns repeated.
    precision : "auto" | "fp32" | "bf16"
        bf16: matrix products in bfloat16 under autocast, the rest float32 (docs/speed.md);
        auto (default): bf16 only on devices with native bf16 matrix units and calls where
        it pays, fp32 otherwise (hear_models.precision).
    mel_stats : "auto" | "official" | "none" | path
        Per-bin standardisation of the log-mel. "auto": official checkpoints get the
        official AudioSet statistics (the official code always applies them; its files do
        not carry them), our files keep their own; "official" / "none" (identity) / a
        ``.npy`` file override (:func:`hear_models.models.maskspec.load_encoder`).
    head_output : "auto" | "none" | "logits" | "repr" | "both"
        What a fine-tuned file's head (the official AudioSet tagger) appends to the scene
        embedding, computed per 9.92 s window as the official inference does (the window
        zero-padded, the 8 x 62 patch tokens averaged, ``fc_norm``, ``head``): the 527
        logits, the pooled representation (D), or both (D + 527); "none": nothing.
        "auto" (default): "logits" for a file with a head, "none" otherwise. Logits by
        default because they are what the head adds: the pooled representation is a
        LayerNorm of the same last-block tokens the frames already average.
    """
    from .models.maskspec import MaskSpecFrameEncoder, load_encoder
    from .models.maskspec_official import MaskSpecTaggingFrameEncoder

    choices = ("auto", "none", "logits", "repr", "both")
    if head_output not in choices:
        raise ValueError(f"head_output={head_output!r}: expected one of {choices}")
    loaded = load_encoder(model_file_path, variant, mel_stats=mel_stats)
    has_head = bool(loaded.encoder.dims.n_classes)
    if head_output == "auto":
        head_output = "logits" if has_head else "none"
    options = dict(layers=layers, combine=combine, freq_pool=freq_pool, shifts=shifts)
    if head_output == "none":
        frame_encoder = MaskSpecFrameEncoder(loaded.frontend, loaded.encoder, **options)
    elif not has_head:
        raise ValueError(f"head_output={head_output!r}: {loaded.description} has no tagging head "
                         "(only a fine-tuned file has one)")
    else:
        frame_encoder = MaskSpecTaggingFrameEncoder(loaded.frontend, loaded.encoder, head_output, **options)
    frame_encoder.requires_grad_(False)
    model = MaskSpecHearModel(frame_encoder, name=loaded.description, max_batch_seconds=max_batch_seconds,
                              precision=precision)
    return model.eval()


class MaskSpecHearModel(HearModel):
    """:class:`HearModel` whose scene embedding takes one unshifted pass: the mean of the
    patch tokens of the plain 16 x 16 grid (the shifted copies only serve timestamps);
    per-block scene embeddings (layer-wise probes) pool the same tokens."""

    @contextmanager
    def _unshifted(self):
        shifts = self.encoder.shifts
        self.encoder.shifts = 1
        try:
            yield
        finally:
            self.encoder.shifts = shifts

    @torch.inference_mode()
    def scene_embeddings(self, audio):
        with self._unshifted():
            return super().scene_embeddings(audio)

    @torch.inference_mode()
    def layer_scene_embeddings(self, audio):
        with self._unshifted():
            return super().layer_scene_embeddings(audio)
