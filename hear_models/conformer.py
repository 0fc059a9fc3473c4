"""HEAR module: Conformer SSL, a conformer pretrained with a wav2vec 2.0-style contrastive
objective on log-mels (16 kHz).

    hear-validator hear_models.conformer -m PATH
    python -m heareval.embeddings.runner hear_models.conformer --model PATH ...

Timestamp embeddings: one frame every 40 ms at 10 + 40 k ms. The model's latents are 80 ms
apart (4 stacked 20 ms mel frames); latent j covers [80j - 10, 80j + 70) ms and is given to
the two 40 ms halves of that span, timestamped at their centres (80j + 10 and 80j + 50 ms):
true resolution 80 ms, two equal rows per latent. Features: the mean of the chosen
blocks' outputs (``layers``, default "all": every block). Windows of 10.24 s (128
latents), encoded independently. Scene embedding: the mean of the timestamp frames.
See docs/models.md (Conformer SSL).
"""

from __future__ import annotations

from typing import Sequence, Union


from .hear_api import HearModel, get_scene_embeddings, get_timestamp_embeddings
from .models.conformer import EXPORT_FORMAT

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "EXPORT_FORMAT"]


def load_model(
    model_file_path: str = "",
    variant: str = "tiny",
    layers: Union[str, int, Sequence[int]] = "all",
    combine: str = "mean",
    max_batch_seconds: float = 240.0,
    precision: str = "auto",
) -> HearModel:
    """Load a Conformer SSL encoder behind HEAR's API.

    Parameters
    ----------
    model_file_path : str
        A weights file (the formats: :func:`hear_models.models.conformer.load_encoder`);
        ``""``: the ``variant`` with seeded
        RANDOM weights (untrained; for tests and as a baseline).
    variant : "tiny" | "S" | "L"
        Size when ``model_file_path`` is empty (a file carries its own sizes).
    layers : "all" | "last" | int | list of int
        Blocks that feed the embeddings (default: all of them, averaged).
    combine : "mean" | "concat"
    precision : "auto" | "fp32" | "bf16"
        bf16: matrix products in bfloat16 under autocast, the rest float32 (docs/speed.md);
        auto (default): bf16 only on devices with native bf16 matrix units and calls where
        it pays, fp32 otherwise (hear_models.precision).
    """
    from .models.conformer import ConformerFrameEncoder, load_encoder

    loaded = load_encoder(model_file_path, variant)
    frame_encoder = ConformerFrameEncoder(loaded.encoder, layers=layers, combine=combine)
    frame_encoder.requires_grad_(False)
    return HearModel(frame_encoder, name=loaded.description, max_batch_seconds=max_batch_seconds,
                     precision=precision).eval()
