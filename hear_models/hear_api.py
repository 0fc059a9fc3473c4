"""The one HEAR adapter: a frame encoder -> ``load_model`` / scene / timestamp embeddings.

Every model in this package is a :class:`FrameEncoder`: it maps a window of audio to a
sequence of frame features at a fixed hop. This module owns everything HEAR asks on top
of that, once for all models:

- input checks (dtype, shape, NaN/inf, empty, too short, amplitude) with clear errors;
- chunking of long audio into the encoder's longest window, batched across sounds and
  windows under a memory budget, so memory does not grow with duration (beyond the
  returned timestamp embeddings themselves);
- timestamps in milliseconds, evenly spaced, at the centre of the frame each row describes;
- pooling to a scene embedding (streaming over windows), with declared sizes equal to the
  returned sizes.

Layer selection is an option of the encoder (:class:`LayerSelector`), not of this adapter.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .precision import check_precision, native_bf16, slow_bf16_warning
from .precision import describe as describe_precision
from .precision import resolve as resolve_precision

HEAR_SAMPLE_RATES = (16000, 22050, 32000, 44100, 48000)

# |x| above this cannot be audio in [-1, 1] (resampling may overshoot 1 a little; int16
# samples stored as float are in the thousands).
MAX_ABS_AMPLITUDE = 1.5


class LayerSelector:
    """Which encoder blocks feed an embedding, and how they are combined.

    Parameters
    ----------
    spec : "all" | "last" | int | sequence of int | str of comma-separated ints
        ``"all"``: every block; ``"last"``: the last block; an int: that block (negative
        counts from the end); a list: those blocks.
    combine : "mean" | "concat"
        Mean of the chosen blocks (width D) or their concatenation (width D x n_chosen).
    n_layers : int
        Number of blocks of the encoder.
    """

    def __init__(self, spec: Union[str, int, Sequence[int]], combine: str, n_layers: int):
        if isinstance(spec, str) and spec not in ("all", "last"):
            try:
                spec = [int(s) for s in spec.split(",")]
            except ValueError:
                raise ValueError(
                    f"layers={spec!r}: expected 'all', 'last', an int or a list of ints"
                ) from None
        if spec == "all":
            idx = list(range(n_layers))
        elif spec == "last":
            idx = [n_layers - 1]
        elif isinstance(spec, (int, np.integer)):
            idx = [int(spec)]
        else:
            idx = [int(i) for i in spec]
        if not idx:
            raise ValueError("layers: the list of blocks is empty")
        for i in idx:
            if not -n_layers <= i < n_layers:
                raise ValueError(f"layers: block {i} does not exist (the encoder has {n_layers})")
        self.indices = sorted({i % n_layers for i in idx})
        if combine not in ("mean", "concat"):
            raise ValueError(f"combine={combine!r}: expected 'mean' or 'concat'")
        self.combine = combine
        self.n_layers = n_layers

    def width(self, d: int) -> int:
        return d * len(self.indices) if self.combine == "concat" else d

    def reduce(self, hidden: Iterable[Tensor]) -> Tensor:
        """Combine block outputs as they stream past (only the chosen ones are kept).

        hidden : the n_layers block outputs in order, each (batch, frames, D), a list or
        a generator -> (batch, frames, width).
        """
        chosen: List[Tensor] = []
        total: Optional[Tensor] = None
        last = self.indices[-1]
        for i, h in enumerate(hidden):
            if i in self.indices:
                if self.combine == "concat":
                    chosen.append(h)
                else:
                    total = h.clone() if total is None else total.add_(h)
            if i == last:
                break
        if self.combine == "concat":
            return torch.cat(chosen, dim=-1)
        return total / len(self.indices)

    def __repr__(self) -> str:
        return f"LayerSelector(blocks={self.indices}, combine={self.combine!r})"


class FrameEncoder(nn.Module):
    """What a model provides to the adapter.

    Attributes
    ----------
    sample_rate : int
        Input rate in Hz.
    hop_samples : int
        Samples between consecutive output frames.
    first_center_samples : float
        Where, in samples from the start of a window, frame 0 is centred.
    window_samples : int
        Longest input processed in one forward; a multiple of ``hop_samples``.
    min_samples : int
        Shortest input ``forward`` accepts (shorter windows are zero-padded by the adapter,
        and frames centred past the end are dropped).
    embedding_size : int
        Width of the frames ``forward`` returns.
    n_layers : int
        Number of blocks whose outputs ``hidden_states`` yields (for layer-wise probes).
    summary_size : int
        Width of an optional per-window summary (0: none). An encoder with a summary
        implements ``forward_with_summary(audio) -> (frames, summary (batch, summary_size))``;
        the scene embedding is then [mean of frames ; frame-weighted mean of the window
        summaries] (e.g. a tagging head's representation or logits).
    """

    sample_rate: int
    hop_samples: int
    first_center_samples: float = 0.0
    window_samples: int
    min_samples: int
    embedding_size: int
    summary_size: int = 0
    n_layers: int = 0

    @property
    def layer_names(self) -> List[str]:
        """A name per block of ``hidden_states``: ``"0"`` ... ``"n_layers - 1"`` unless an
        encoder names them (fusion: ``"hubert.3"``, ``"crepe.5"``, member by member)."""
        return [str(i) for i in range(self.n_layers)]

    def hidden_states(self, audio: Tensor) -> Iterator[Tensor]:  # pragma: no cover - abstract
        """Every block's output, one at a time, each (batch, n_frames(n_samples), D_l), on the
        same frames as ``forward`` (widths may differ between blocks, e.g. fusion members).
        Layer-wise probes (``hear-models probe``) read models through this."""
        raise NotImplementedError

    def n_frames(self, n_samples: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, audio: Tensor) -> Tensor:  # pragma: no cover - abstract
        """audio : (batch, n_samples) float32 -> frames : (batch, n_frames(n_samples), D)."""
        raise NotImplementedError


class HearModel(nn.Module):
    """A :class:`FrameEncoder` behind HEAR's API.

    Carries ``sample_rate``, ``scene_embedding_size`` and ``timestamp_embedding_size`` as
    the API requires. Scene embedding: the mean of all frame embeddings of the clip,
    followed by the frame-weighted mean of the encoder's window summaries if it has any.

    Parameters
    ----------
    encoder : FrameEncoder
    max_batch_seconds : float
        Audio processed in one forward (summed over the batch), which bounds memory.
    precision : "auto" | "fp32" | "bf16"
        ``bf16`` runs the encoder under ``torch.autocast`` in bfloat16 (the front end stays
        float32 and outputs are float32); ``auto`` (default) does so only on devices with
        native bf16 matrix units and, on CPUs, only for calls with enough audio to pay
        (:mod:`hear_models.precision`); fp32 otherwise.
    """

    def __init__(self, encoder: FrameEncoder, name: str = "", max_batch_seconds: float = 240.0,
                 precision: str = "auto"):
        super().__init__()
        self.precision = check_precision(precision)
        self._warned_slow_bf16: set = set()
        if encoder.sample_rate not in HEAR_SAMPLE_RATES:
            raise ValueError(f"sample_rate {encoder.sample_rate} is not one HEAR allows")
        if encoder.n_frames(encoder.window_samples) * encoder.hop_samples != encoder.window_samples:
            raise ValueError("a full window must hold exactly window_samples / hop_samples frames, "
                             "so that frames of consecutive windows are evenly spaced")
        self.encoder = encoder
        self.name = name
        self.sample_rate = int(encoder.sample_rate)
        self.timestamp_embedding_size = int(encoder.embedding_size)
        self.scene_embedding_size = int(encoder.embedding_size + encoder.summary_size)
        self.max_batch_samples = max(int(max_batch_seconds * self.sample_rate), encoder.window_samples)

    # -- input checks -------------------------------------------------------------------
    def check_audio(self, audio) -> Tensor:
        """Validate HEAR input and return it as float32 on the model's device.

        Accepted: a tensor or numpy array of shape (n_sounds, n_samples), float32 (float64
        and float16/bfloat16 are converted to float32), values in [-1, 1].
        Refused with ``ValueError``: integer PCM, other ranks (1-D, stereo), empty input,
        NaN or inf, amplitudes far outside [-1, 1], clips shorter than the model needs.
        """
        if isinstance(audio, np.ndarray):
            audio = torch.from_numpy(np.ascontiguousarray(audio))
        if not isinstance(audio, Tensor):
            raise TypeError(f"audio must be a torch.Tensor of shape (n_sounds, n_samples), got {type(audio).__name__}")
        if not audio.is_floating_point():
            raise ValueError(
                f"audio has dtype {audio.dtype}; HEAR models take float audio in [-1, 1]. "
                "Convert integer PCM first, e.g. int16: audio.float() / 32768"
            )
        if audio.ndim != 2:
            hint = " (one sound? use audio[None])" if audio.ndim == 1 else (
                " (multichannel? average the channels to mono first)" if audio.ndim == 3 else "")
            raise ValueError(f"audio must have shape (n_sounds, n_samples), got {tuple(audio.shape)}{hint}")
        n_sounds, n_samples = audio.shape
        if n_sounds == 0 or n_samples == 0:
            raise ValueError(f"audio is empty: shape {tuple(audio.shape)}")
        min_s = self.encoder.min_samples
        if n_samples < min_s:
            raise ValueError(
                f"audio is too short: {n_samples} samples ({1000 * n_samples / self.sample_rate:.1f} ms) "
                f"at {self.sample_rate} Hz; this model needs at least {min_s} samples "
                f"({1000 * min_s / self.sample_rate:.1f} ms)"
            )
        # reductions only: no temporary the size of the input (an hour of audio is 230 MB)
        lo, hi = (float(v) for v in torch.aminmax(audio))  # NaN propagates, inf shows
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = (~torch.isfinite(audio)).any(dim=1).nonzero().flatten().tolist()
            raise ValueError(f"audio contains NaN or inf (sounds {bad[:10]})")
        peak = max(-lo, hi)
        if peak > MAX_ABS_AMPLITUDE:
            raise ValueError(
                f"audio peaks at {peak:.4g}: HEAR audio is float in [-1, 1] "
                "(integer PCM scale? divide int16 samples by 32768)"
            )
        return audio.to(device=self._device(), dtype=torch.float32)

    def _device(self) -> torch.device:
        for p in self.encoder.parameters():
            return p.device
        for b in self.encoder.buffers():
            return b.device
        return torch.device("cpu")

    # -- the windows of a batch ------------------------------------------------------------
    def _frame_plan(self, n_samples: int) -> List[Tuple[int, int, int]]:
        """(start, length, n_frames kept) of each window of a clip of n_samples."""
        enc = self.encoder
        plan = []
        for start in range(0, n_samples, enc.window_samples):
            length = min(enc.window_samples, n_samples - start)
            if length >= enc.min_samples:
                keep = enc.n_frames(length)
            else:  # a short tail: padded to min_samples, frames centred past the end dropped
                centers = enc.first_center_samples + enc.hop_samples * np.arange(enc.n_frames(enc.min_samples))
                keep = int((centers <= length).sum())
            plan.append((start, length, keep))
        return plan

    def n_frames(self, n_samples: int) -> int:
        return sum(k for _, _, k in self._frame_plan(n_samples))

    def timestamps_ms(self, n_samples: int) -> Tensor:
        """Centre of every frame of a clip, in ms: evenly spaced by hop_samples."""
        enc = self.encoder
        k = torch.arange(self.n_frames(n_samples), dtype=torch.float64)
        return ((enc.first_center_samples + k * enc.hop_samples) * 1000.0 / self.sample_rate).float()

    def _window_batches(self, audio: Tensor) -> Iterator[Tuple[slice, int, int, Tensor]]:
        """The windows of all sounds, a memory-bounded batch at a time: ``(sounds,
        first_frame, n_frames_kept, window_batch)``; a short tail is zero-padded to
        ``min_samples`` (its frames centred past the end are not kept)."""
        enc = self.encoder
        n_sounds, n_samples = audio.shape
        offset = 0
        for start, length, keep in self._frame_plan(n_samples):
            window = audio[:, start:start + length]
            if length < enc.min_samples:
                window = torch.nn.functional.pad(window, (0, enc.min_samples - length))
            per_batch = max(1, self.max_batch_samples // window.shape[1])
            for i in range(0, n_sounds, per_batch):
                yield slice(i, i + per_batch), offset, keep, window[i:i + per_batch]
            offset += keep

    # -- precision ---------------------------------------------------------------------------
    def precision_for(self, audio: Tensor) -> str:
        """``"fp32"`` or ``"bf16"``: what a call on ``audio`` (n_sounds, n_samples) runs in."""
        return resolve_precision(self.precision, audio.device, audio.shape[0] * audio.shape[1] / self.sample_rate)

    def precision_text(self, device=None) -> str:
        """The precision setting and what it means on ``device`` (default: the model's)."""
        return describe_precision(self.precision, self._device() if device is None else device)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, {self.precision_text()}"

    def _autocast(self, audio: Tensor):
        """The autocast context of a call (the whole call runs in one precision)."""
        chosen = self.precision_for(audio)
        if self.precision == "bf16" and audio.device.type not in self._warned_slow_bf16:
            self._warned_slow_bf16.add(audio.device.type)  # one warning per model and device
            if not native_bf16(audio.device)[0]:
                warnings.warn(slow_bf16_warning(audio.device), RuntimeWarning, stacklevel=3)
        return torch.autocast(audio.device.type, dtype=torch.bfloat16, enabled=chosen == "bf16")

    def iter_frames(self, audio: Tensor, summary: bool = False) -> Iterator[Tuple[slice, int, Tensor, Optional[Tensor]]]:
        """Run the encoder over all windows of all sounds, a memory-bounded batch at a time.

        Yields ``(sounds, first_frame, frames, window_summary)``: frames of shape
        (len(sounds), n, D) that belong at frame offset ``first_frame`` of those sounds, and
        the window's summary (len(sounds), summary_size) when ``summary`` is asked for.
        """
        for sounds, first, keep, window in self._window_batches(audio):
            with self._autocast(audio):
                frames, summ = self._encode(window, summary)
            yield sounds, first, frames[:, :keep].float(), summ

    def _encode(self, window: Tensor, summary: bool):
        enc = self.encoder
        if summary:
            frames, summ = enc.forward_with_summary(window)
            return frames, summ.float()
        return enc(window), None

    # -- HEAR ------------------------------------------------------------------------------
    @torch.inference_mode()
    def timestamp_embeddings(self, audio) -> Tuple[Tensor, Tensor]:
        audio = self.check_audio(audio)
        n_sounds, n_samples = audio.shape
        n = self.n_frames(n_samples)
        out = torch.empty(n_sounds, n, self.timestamp_embedding_size, device=audio.device)
        for sounds, first, frames, _ in self.iter_frames(audio):
            out[sounds, first:first + frames.shape[1]] = frames.float()
        ts = self.timestamps_ms(n_samples).to(audio.device).expand(n_sounds, n).contiguous()
        return out, ts

    def iter_layer_frames(self, audio: Tensor, scene: bool = False) -> Iterator[Tuple[slice, int, int, Tensor]]:
        """Every block's frames over all windows, a memory-bounded batch at a time.

        Yields ``(sounds, first_frame, layer, frames)``: block ``layer``'s frames
        (len(sounds), n, D_l) at frame offset ``first_frame`` of those sounds. ``scene``
        selects the frames scene embeddings pool (the same ones here; encoders whose scene
        grid differs override this).
        """
        for sounds, first, keep, window in self._window_batches(audio):
            with self._autocast(audio):
                for layer, h in enumerate(self.encoder.hidden_states(window)):
                    yield sounds, first, layer, h[:, :keep].float()

    def n_scene_frames(self, n_samples: int) -> int:
        """Frames that scene pooling averages (``iter_layer_frames(scene=True)``)."""
        return self.n_frames(n_samples)

    @torch.inference_mode()
    def layer_scene_embeddings(self, audio) -> List[Tensor]:
        """Per block, the mean over the clip's frames: n_layers tensors (n_sounds, D_l).

        Streams over windows like ``scene_embeddings`` (bounded memory)."""
        audio = self.check_audio(audio)
        n_sounds, n_samples = audio.shape
        totals: List[Optional[Tensor]] = [None] * self.encoder.n_layers
        for sounds, _, layer, h in self.iter_layer_frames(audio, scene=True):
            if totals[layer] is None:
                totals[layer] = torch.zeros(n_sounds, h.shape[2], dtype=torch.float64, device=audio.device)
            totals[layer][sounds] += h.double().sum(1)
        n = self.n_scene_frames(n_samples)
        return [(t / n).float() for t in totals]

    @torch.inference_mode()
    def layer_timestamp_embeddings(self, audio) -> Tuple[List[Tensor], Tensor]:
        """Every block's frames: n_layers tensors (n_sounds, n_frames, D_l), and the
        timestamps (n_sounds, n_frames) in ms, as ``timestamp_embeddings`` returns them."""
        audio = self.check_audio(audio)
        n_sounds, n_samples = audio.shape
        n = self.n_frames(n_samples)
        out: List[Optional[Tensor]] = [None] * self.encoder.n_layers
        for sounds, first, layer, h in self.iter_layer_frames(audio):
            if out[layer] is None:
                out[layer] = torch.empty(n_sounds, n, h.shape[2], device=audio.device)
            out[layer][sounds, first:first + h.shape[1]] = h
        ts = self.timestamps_ms(n_samples).to(audio.device).expand(n_sounds, n).contiguous()
        return out, ts

    @torch.inference_mode()
    def scene_embeddings(self, audio) -> Tensor:
        audio = self.check_audio(audio)
        n_sounds = audio.shape[0]
        total = torch.zeros(n_sounds, self.scene_embedding_size, dtype=torch.float64, device=audio.device)
        d = self.timestamp_embedding_size
        with_summary = self.encoder.summary_size > 0
        for sounds, _, frames, summ in self.iter_frames(audio, summary=with_summary):
            total[sounds, :d] += frames.double().sum(dim=1)
            if with_summary:  # weighted by the frames the window contributes
                total[sounds, d:] += summ.double() * frames.shape[1]
        return (total / self.n_frames(audio.shape[1])).float()


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """HEAR: ``audio`` (n_sounds, n_samples) -> (n_sounds, model.scene_embedding_size)."""
    return model.scene_embeddings(audio)


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> Tuple[Tensor, Tensor]:
    """HEAR: ``audio`` (n_sounds, n_samples) -> embeddings (n_sounds, n_frames, size),
    timestamps (n_sounds, n_frames) in ms at the centre of each frame."""
    return model.timestamp_embeddings(audio)
