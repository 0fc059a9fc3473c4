"""HEAR module: Conformer SSL, a conformer pretrained with a wav2vec 2.0-style contrastive
objective on log-mels (16 kHz).

    hear-validator hear_models.conformer -m PATH
    python -m heareval.embeddings.runner hear_models.conformer --model PATH ...

Timestamp embeddings: one frame every 40 ms at 10 + 40 k ms. The model's latents are 80 ms
apart (4 stacked 20 ms mel frames); latent j covers [80j - 10, 80j + 70) ms and is given to
the two 40 ms halves of that span, timestamped at their centres (80j + 10 and 80j + 50 ms):
true resolution 80 ms, two equal rows per latent. Features: the mean of the chosen
blocks' outputs (``layers``, default "all": the 12 blocks). Windows of 10.24 s (128
latents), encoded independently. Scene embedding: the mean of the timestamp frames.
See docs/models.md (Conformer SSL).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

from .hear_api import HearModel, get_scene_embeddings, get_timestamp_embeddings

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "build_encoder",
           "EXPORT_FORMAT"]

EXPORT_FORMAT = "hear_models.conformer/1"


def build_encoder(model_file_path: str = "", variant: str = "tiny", seed: int = 0):
    """(encoder, description) from a weights file, or seeded random weights.

    Accepted files (read with ``torch.load(weights_only=True)``):

    - our export (``hear-models train export``): ``{"format": "hear_models.conformer/1",
      "dims": {...}, "state_dict": {feature_encoder.*, context.*}, ...}``;
    - a state dict of ours: a ``ConformerWav2Vec2`` / classifier (``encoder.*`` keys; the
      others, e.g. ``target_proj``, are dropped) or a bare encoder.
    """
    from .checkpoints import torch_load_trusted_weights
    from .models.conformer import ConformerDims, ConformerEncoder, infer_dims

    if not model_file_path:
        dims = ConformerDims.variant(variant)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            encoder = ConformerEncoder(dims)
        return encoder, f"conformer-{variant} UNTRAINED (random weights, seed {seed})"

    obj = torch_load_trusted_weights(model_file_path)
    if not isinstance(obj, dict):
        raise ValueError(f"{model_file_path}: not a Conformer SSL weights file (got {type(obj).__name__})")
    if "format" in obj:
        if obj["format"] != EXPORT_FORMAT:
            raise ValueError(f"{model_file_path}: format {obj['format']!r} is not {EXPORT_FORMAT!r} "
                             "(a weights file of another model?)")
        dims = ConformerDims.from_dict(obj["dims"])
        sd = obj["state_dict"]
        desc = obj.get("description", f"conformer ({model_file_path})")
    else:
        sd = obj.get("state_dict", obj)
        if not isinstance(sd, dict):
            raise ValueError(f"{model_file_path}: not a Conformer SSL checkpoint")
        if any(k.startswith("encoder.") for k in sd):
            sd = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
        sd = {k: v for k, v in sd.items() if k.startswith(("feature_encoder.", "context."))}
        dims = infer_dims(sd)
        desc = f"conformer ({model_file_path})"
    encoder = ConformerEncoder(dims)
    missing, unexpected = encoder.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{model_file_path}: weights do not fit a Conformer SSL encoder {dims}: "
                         f"missing {list(missing)[:8]}, unexpected {list(unexpected)[:8]}")
    return encoder, desc


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
        A weights file (see :func:`build_encoder`); ``""``: the ``variant`` with seeded
        RANDOM weights (untrained; for tests and as a baseline).
    variant : "tiny" | "S" | "L"
        Size when ``model_file_path`` is empty (a file carries its own sizes).
    layers : "all" | "last" | int | list of int
        Blocks that feed the embeddings (default: all 12, averaged).
    combine : "mean" | "concat"
    precision : "auto" | "fp32" | "bf16"
        bf16: matrix products in bfloat16 under autocast, the rest float32 (docs/speed.md);
        auto (default): bf16 only on devices with native bf16 matrix units and calls where
        it pays, fp32 otherwise (hear_models.precision).
    """
    from .models.conformer import ConformerFrameEncoder

    encoder, desc = build_encoder(model_file_path, variant)
    frame_encoder = ConformerFrameEncoder(encoder, layers=layers, combine=combine)
    frame_encoder.requires_grad_(False)
    return HearModel(frame_encoder, name=desc, max_batch_seconds=max_batch_seconds,
                     precision=precision).eval()
