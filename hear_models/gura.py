"""HEAR module: NTU-GURA fusion of HuBERT, wav2vec 2.0 and CREPE (16 kHz).

    hear-validator hear_models.gura -m fusion_cat_xwc           # official weights (download)
    hear-validator hear_models.gura -m crepe                    # real CREPE, offline
    hear-validator hear_models.gura -m fusion_cat_xwc:standin,crepe=tiny   # offline stand-ins

``model_file_path`` names the variant and, after a colon, where the members come from:
``VARIANT[:ITEM,ITEM,...]`` with items ``official`` (default: the official HuggingFace
names, downloaded into the HF cache on first use), ``standin`` (tiny RANDOM speech
models of the same structure, seeded and cached at first use: for tests, NOT
pretrained), ``hubert=NAME_OR_FOLDER`` (HuBERT xLarge, or Large in
``avg_hubert_wav2vec2`` / ``cat_hubert_wav2vec2``), ``wav2vec2=NAME_OR_FOLDER``,
``crepe=full|tiny|PATH``. ``""`` is ``fusion_cat_xwc``. Variants:
``hear_models.models.gura.VARIANTS``; what each embedding is made of: docs/models.md.

Timestamps: speech variants every 20 ms at 12.5 + 20 k ms: the official
``(ms - 5) // 20`` computed frames, plus, when the clip ends 20 ms or more after the
last centre (the official module leaves up to 32.5 ms uncovered and hear-validator
warns), one row at the next centre repeating the last frame. ``crepe`` alone: every 50 ms at
50 k ms (``1 + n // 800`` frames, torchcrepe's ``pad=True``).
Scene embeddings: the time mean of the computed frames (``_time``: the means of 5 equal
time groups, concatenated). As in the official code, the CREPE part of scene embeddings
is computed every 250 ms, so a scene embedding is not the mean of the timestamp
embeddings for variants with CREPE (except the clean fusion).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor

from .hear_api import HearModel, get_scene_embeddings, get_timestamp_embeddings

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "GuraHearModel",
           "parse_model_file_path"]


class GuraHearModel(HearModel):
    """:class:`HearModel` for :class:`~hear_models.models.gura.GuraEncoder`.

    What differs from the plain adapter: the rows of a window come from the encoder's
    ``plan`` (CREPE rows on a window edge, speech rows reaching the clip's end); scene
    embeddings pool the computed frames only, on the encoder's scene grid (CREPE every
    250 ms, as the official code), optionally in k equal time groups (``_time``).
    """

    def __init__(self, encoder, name: str = "", max_batch_seconds: float = 30.0, scene_groups: int = 1,
                 precision: str = "auto"):
        super().__init__(encoder, name=name, max_batch_seconds=max_batch_seconds, precision=precision)
        self.scene_groups = int(scene_groups)
        if self.scene_groups < 1:
            raise ValueError("scene_groups must be >= 1")
        self.scene_embedding_size = int(encoder.embedding_size) * self.scene_groups

    def n_frames(self, n_samples: int) -> int:
        """Timestamp rows of a clip of n samples."""
        return self.encoder.total_rows(n_samples)[0]

    def windows_frames(self, audio: Tensor, scene: bool = False, layers: bool = False
                       ) -> Iterator[Tuple[slice, int, int, Tensor, int]]:
        """Rows of every window of every sound, a memory-bounded batch at a time.

        Yields ``(sounds, first_row, first_computed, rows, n_computed)``: rows
        (len(sounds), n, D) at row offset ``first_row`` of those sounds, of which the first
        ``n_computed`` are computed frames number ``first_computed`` ... of the clip.
        ``layers``: rows is the list of every state's rows (``encoder.hidden_states``).
        """
        enc = self.encoder
        n_sounds, n_samples = audio.shape
        per_batch = max(1, self.max_batch_samples // enc.window_samples)
        row = computed = 0
        for start, length, skip, rows, n_comp in enc.plan(n_samples, scene):
            for i in range(0, n_sounds, per_batch):
                window = audio[i:i + per_batch, start:start + length]
                with self._autocast(audio):  # precision="bf16": the members under autocast
                    if layers:
                        out = [h[:, skip:skip + rows].float() for h in enc.hidden_states(window, scene=scene)]
                    else:
                        out = enc(window, scene=scene)[:, skip:skip + rows].float()
                yield slice(i, i + per_batch), row, computed, out, n_comp
            row += rows
            computed += n_comp

    def iter_frames(self, audio: Tensor, summary: bool = False):
        """The adapter's iterator protocol: ``(sounds, first_frame, frames, None)`` (the
        adapter's ``timestamp_embeddings`` reads the rows through it)."""
        for sounds, first, _, frames, _ in self.windows_frames(audio):
            yield sounds, first, frames, None

    def iter_layer_frames(self, audio: Tensor, scene: bool = False):
        """The adapter's per-block iterator; ``scene``: the computed frames of the scene
        grid (what scene embeddings pool), at their offset among the computed frames."""
        for sounds, first, first_comp, states, n_comp in self.windows_frames(audio, scene, layers=True):
            for layer, h in enumerate(states):
                yield (sounds, first_comp, layer, h[:, :n_comp]) if scene else (sounds, first, layer, h)

    def n_scene_frames(self, n_samples: int) -> int:
        return self.encoder.total_rows(n_samples, scene=True)[1]

    @torch.inference_mode()
    def scene_embeddings(self, audio) -> Tensor:
        audio = self.check_audio(audio)
        n_sounds, n_samples = audio.shape
        _, total = self.encoder.total_rows(n_samples, scene=True)
        weights = group_weights(total, self.scene_groups).to(audio.device)  # (frames, groups)
        d = self.encoder.embedding_size
        out = torch.zeros(n_sounds, self.scene_groups, d, dtype=torch.float64, device=audio.device)
        for sounds, _, first, frames, n_comp in self.windows_frames(audio, scene=True):
            w = weights[first:first + n_comp]
            out[sounds] += torch.einsum("btd,tg->bgd", frames[:, :n_comp].double(), w)
        return out.reshape(n_sounds, self.scene_groups * d).float()


def group_weights(total: int, groups: int) -> Tensor:
    """(total, groups) float64 matrix: frames x weights of the scene pooling.

    groups == 1: the time mean. Otherwise the official ``get_condense_embeddings``: the
    first ``total // groups * groups`` frames in ``groups`` equal consecutive groups,
    each averaged, the remainder dropped. With fewer frames than groups (clips under
    ~0.1 s, where the official code fails), group j is frame ``j * total // groups``.
    """
    w = torch.zeros(total, groups, dtype=torch.float64)
    if groups == 1:
        w[:, 0] = 1.0 / total
        return w
    size = total // groups
    for j in range(groups):
        if size >= 1:
            w[j * size:(j + 1) * size, j] = 1.0 / size
        else:
            w[j * total // groups, j] = 1.0
    return w


def parse_model_file_path(model_file_path: str) -> Tuple[str, Dict[str, str]]:
    """``VARIANT[:ITEM,...]`` -> (variant, {"hubert": .., "wav2vec2": .., "crepe": ..})."""
    from .models.gura import VARIANTS

    text = (model_file_path or "").strip()
    variant, _, rest = text.partition(":")
    variant = variant or "fusion_cat_xwc"
    if variant not in VARIANTS:
        raise ValueError(f"unknown GURA variant {variant!r} in model_file_path {model_file_path!r}; "
                         f"known: {', '.join(sorted(VARIANTS))} (syntax: VARIANT[:official|standin,"
                         "hubert=..,wav2vec2=..,crepe=full|tiny|PATH])")
    sources: Dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        if item in ("official", "standin"):
            sources.setdefault("hubert", item)
            sources.setdefault("wav2vec2", item)
            continue
        key, eq, value = item.partition("=")
        if not eq or key not in ("hubert", "wav2vec2", "crepe") or not value:
            raise ValueError(f"model_file_path {model_file_path!r}: cannot read {item!r} (expected "
                             "official, standin, hubert=NAME_OR_FOLDER, wav2vec2=NAME_OR_FOLDER or crepe=full|tiny|PATH)")
        sources[key] = value
    return variant, sources


def load_model(
    model_file_path: str = "",
    variant: Optional[str] = None,
    hubert: Optional[str] = None,
    wav2vec2: Optional[str] = None,
    crepe: Optional[str] = None,
    window_seconds: float = 30.0,
    max_batch_seconds: float = 30.0,
    crepe_batch_frames: Optional[int] = None,
    precision: str = "auto",
) -> GuraHearModel:
    """Load a GURA variant behind HEAR's API.

    Parameters
    ----------
    model_file_path : str
        ``VARIANT[:ITEM,...]`` (see the module docstring); ``""`` = ``fusion_cat_xwc``
        with the official weights; or a ``.json`` file written by ``hear-models weights path``
        that names one (for tools such as heareval that take a file).
    variant, hubert, wav2vec2, crepe : str, optional
        Override what ``model_file_path`` says.
    window_seconds : float
        Longest audio one window holds (multiple of 0.5 s). Clips up to this length are
        computed exactly as the official code computes the whole clip.
    max_batch_seconds : float
        Audio (summed over sounds, counted in whole windows) per window batch, bounding
        memory. Default 30 s, one window per forward, unlike the other models' 240 s: the
        speech members keep all their hidden states (49 + 25 for fusion_cat_xwc) until
        they are averaged, and one window's matrices are already large enough that
        batching windows gains nothing (16 clips of 10 s: 166 s and 0.3 GB one at a time,
        166 s and 1.9 GB eight at a time; docs/speed.md).
    crepe_batch_frames : int, optional
        CREPE frames per forward pass (default: about 100 MB of activations, 64 frames
        for CREPE full, 512 for tiny, whose thin layers need big batches to be fast).
    precision : "auto" | "fp32" | "bf16"
        bf16: matrix products in bfloat16 under autocast, the rest float32 (docs/speed.md);
        auto (default): bf16 only on devices with native bf16 matrix units and calls where
        it pays, fp32 otherwise (hear_models.precision).
    """
    from .layers.crepe import load_crepe
    from .models.gura import VARIANTS, GuraEncoder, load_speech_model

    if str(model_file_path).endswith(".json") and Path(model_file_path).is_file():
        from .weights import read_gura_file  # `hear-models weights path`'s file (for heareval)

        model_file_path = read_gura_file(Path(model_file_path))
    name, sources = parse_model_file_path(model_file_path)
    name = variant or name
    if name not in VARIANTS:
        raise ValueError(f"unknown GURA variant {name!r}; known: {', '.join(sorted(VARIANTS))}")
    spec = VARIANTS[name]
    for key, value in (("hubert", hubert), ("wav2vec2", wav2vec2), ("crepe", crepe)):
        if value is not None:
            sources[key] = value
    # the "hubert" member is HuBERT xLarge, or HuBERT Large where the variant says so
    speech = {k: load_speech_model(spec.hubert if k == "hubert" else k, sources.get(k, "official"),
                                   layers=spec.layers, normalize=spec.normalize)
              for k in spec.members if k != "crepe"}
    crepe_model = load_crepe(sources.get("crepe", "full")) if "crepe" in spec.members else None
    encoder = GuraEncoder(spec, speech, crepe_model, window_seconds=window_seconds,
                          crepe_batch_frames=crepe_batch_frames)
    origins = "; ".join(f"{k}: {m.origin}" for k, m in speech.items() if m.origin)
    desc = f"gura:{model_file_path or 'fusion_cat_xwc'}" + (f" ({origins})" if origins else "")
    model = GuraHearModel(encoder, name=desc,
                          max_batch_seconds=max_batch_seconds, scene_groups=spec.scene_groups,
                          precision=precision)
    return model.eval()
