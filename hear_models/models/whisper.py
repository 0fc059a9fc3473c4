"""The Whisper audio encoder as a frame encoder, run UNPADDED as Whisper-AT trained its heads.

openai-whisper's ``AudioEncoder.forward`` insists on 30 s (3000 mel frames). Whisper-AT
slices the positional embedding to the clip's own length instead, so a 10 s clip costs a
third of a padded window and its features are the ones the tagging heads were trained
on. We wrap openai-whisper's modules (no copy of its code) and run its own submodules in
that order: conv1 -> GELU -> conv2 (stride 2) -> GELU -> + positional_embedding[:frames]
-> blocks -> (ln_post).

Frames: one per 2 mel frames, i.e. every 20 ms (320 samples at 16 kHz). Mel frame j is
centred at sample 160 j (centred STFT), so encoder frame i (conv2, kernel 3, stride 2,
padding 1, centred on mel frame 2 i) is centred at sample 320 i: 0, 20, 40, ... ms.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..frontends import get_frontend
from ..hear_api import FrameEncoder, LayerSelector
from .whisper_at_heads import decision_windows, pool_time

SAMPLE_RATE = 16000  # Hz
MEL_HOP = 160  # samples: 10 ms
FRAME_HOP = 320  # samples: 20 ms per encoder frame (conv2 stride 2)
WINDOW = 30 * SAMPLE_RATE  # samples: Whisper's 30 s context = 3000 mel frames = 1500 frames
MIN_SAMPLES = 400  # samples: one 25 ms STFT window
FP32_BLOCKS = 2  # Whisper blocks kept in float32 under bf16 autocast (see hidden_states_from_mel)


class WhisperEncoder(FrameEncoder):
    """Per-block features of a Whisper encoder, combined by a :class:`LayerSelector`.

    Parameters
    ----------
    encoder : whisper.model.AudioEncoder
        The encoder of a loaded openai-whisper model (its weights are used as they are).
    layers : "all" | "last" | "final" | int | list of int
        Blocks whose outputs (taken before ``ln_post``, as Whisper-AT's heads read them)
        feed the embedding. ``"final"`` is the encoder's real output (last block +
        ``ln_post``), which Whisper's decoder reads.
    combine : "mean" | "concat"
    head : a Whisper-AT tagging head (hear_models.models.whisper_at_heads), optional
        Adds its output over each window to the scene embedding (``forward_with_summary``).
    head_output : "logits" | "repr" | "both"
        What the head adds: its class logits, its pooled representation (before the
        classifier), or both.
    """

    sample_rate = SAMPLE_RATE
    hop_samples = FRAME_HOP
    first_center_samples = 0.0
    window_samples = WINDOW
    min_samples = MIN_SAMPLES

    def __init__(self, encoder, layers: Union[str, int, Sequence[int]] = "all", combine: str = "mean",
                 head=None, head_output: str = "logits"):
        super().__init__()
        self.encoder = encoder
        n_mels = encoder.conv1.in_channels
        self.frontend = get_frontend("WHISPER_80" if n_mels == 80 else f"WHISPER_{n_mels}")
        self.n_layers = len(encoder.blocks)  # hidden_states: the blocks' outputs before ln_post
        self.width = encoder.ln_post.normalized_shape[0]
        self.final = layers == "final"
        self.layers = LayerSelector("last" if self.final else layers, combine, self.n_layers)
        self.embedding_size = self.layers.width(self.width)
        self.max_frames = encoder.positional_embedding.shape[0]
        self.head = head
        self.head_output = head_output
        if head is not None:
            if (head.n_layers, head.width) != (self.n_layers, self.width):
                raise ValueError(f"the tagging head reads {head.n_layers} blocks of width {head.width}; "
                                 f"this Whisper has {self.n_layers} blocks of width {self.width}")
            sizes = {"logits": head.n_classes, "repr": head.rep_dim, "both": head.rep_dim + head.n_classes}
            if head_output not in sizes:
                raise ValueError(f"head_output={head_output!r}: expected one of {sorted(sizes)}")
            self.summary_size = sizes[head_output]

    def n_frames(self, n_samples: int) -> int:
        mel_frames = n_samples // MEL_HOP  # whisper drops the STFT's last frame
        return (mel_frames + 1) // 2  # conv2: kernel 3, stride 2, padding 1

    def hidden_states(self, audio: Tensor) -> Iterator[Tensor]:
        """Output of every block, before ``ln_post``, one block at a time.

        Parameters
        ----------
        audio : Tensor, shape = (batch, n_samples), at most 30 s

        Returns
        -------
        iterator over n_layers Tensors, shape = (batch, n_frames, width)
        """
        return self.hidden_states_from_mel(self.frontend(audio))

    def hidden_states_from_mel(self, mel: Tensor) -> Iterator[Tensor]:
        """mel : Tensor, shape = (batch, n_mels, n_mel_frames) -> block outputs as above."""
        # Under bf16 autocast the conv stem (~4% of the FLOPs) and the residual stream stay
        # in the weights' dtype (float32); only the blocks' matrix products run in bf16.
        # Whisper's outlier channels make bf16 rounding of either cost up to 0.08 of a
        # frame's cosine to fp32 (docs/speed.md).
        with torch.autocast(mel.device.type, enabled=False):
            w = self.encoder.conv1.weight
            x = F.gelu(self.encoder.conv1(mel.to(w.dtype)))
            x = F.gelu(self.encoder.conv2(x)).permute(0, 2, 1)  # (batch, frames, width)
        if x.shape[1] > self.max_frames:
            raise ValueError(f"{mel.shape[-1]} mel frames exceed Whisper's {2 * self.max_frames}-frame context")
        x = x + self.encoder.positional_embedding[: x.shape[1]].to(x.dtype)
        for i, block in enumerate(self.encoder.blocks):
            # The first FP32_BLOCKS blocks stay in float32 under bf16 autocast too: Whisper's
            # outlier channels form there. With all blocks in bf16, 1.4 % of base's frames
            # fell below 0.999 cosine to fp32 (worst 0.986); with the first in fp32, worst
            # 0.9988; with the first two, worst 0.9999 on 3-20 s clips (docs/speed.md).
            with torch.autocast(x.device.type, enabled=False) if i < FP32_BLOCKS else contextlib.nullcontext():
                x = block(x)
            yield x

    def _frames(self, hidden) -> Tensor:
        if self.final:
            return self.encoder.ln_post(self.layers.reduce(hidden))
        return self.layers.reduce(hidden)

    def forward(self, audio: Tensor) -> Tensor:
        """audio : (batch, n_samples) -> (batch, n_frames, embedding_size)."""
        return self._frames(self.hidden_states(audio))

    def forward_with_summary(self, audio: Tensor):
        """Frames as ``forward``, plus the tagging head's output over the window.

        The head reads every block pooled by 0.4 s (pooled as the blocks stream past, so
        memory stays small) in Whisper-AT decision windows of 10 s; its outputs are averaged
        over the decision windows, weighted by their real (unpadded) length.

        Returns
        -------
        frames : Tensor, shape = (batch, n_frames, embedding_size)
        summary : Tensor, shape = (batch, summary_size): logits, representation, or both
        """
        pooled = []

        def tap(hidden):
            for h in hidden:
                pooled.append(pool_time(h[:, None])[:, 0])
                yield h

        stream = tap(self.hidden_states(audio))
        frames = self._frames(stream)
        for _ in stream:  # the head needs every block
            pass
        return frames, self.head_summary(torch.stack(pooled, 1))

    def head_summary(self, pooled: Tensor, window: int = 25) -> Tensor:
        """pooled : (batch, n_layers, n_pooled, width) -> (batch, summary_size)."""
        x, mask, n_win = decision_windows(pooled, window)
        rep = self.head.representation(x, mask)
        parts = {"repr": [rep], "logits": [self.head.mlp_layer(rep.float())]}
        parts["both"] = parts["repr"] + parts["logits"]
        out = torch.cat(parts[self.head_output], -1).view(pooled.shape[0], n_win, -1)
        weight = (~mask).sum(-1).view(pooled.shape[0], n_win, 1).to(out.dtype)
        return (out * weight).sum(1) / weight.sum(1)


def whisper_param_count(encoder) -> int:
    """Parameters of an openai-whisper AudioEncoder (the fixed sinusoidal positions are a buffer)."""
    return sum(p.numel() for p in encoder.parameters())
