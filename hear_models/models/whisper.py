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

from typing import Iterator, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..frontends import get_frontend
from ..hear_api import FrameEncoder, LayerSelector

SAMPLE_RATE = 16000  # Hz
MEL_HOP = 160  # samples: 10 ms
FRAME_HOP = 320  # samples: 20 ms per encoder frame (conv2 stride 2)
WINDOW = 30 * SAMPLE_RATE  # samples: Whisper's 30 s context = 3000 mel frames = 1500 frames
MIN_SAMPLES = 400  # samples: one 25 ms STFT window


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
    """

    sample_rate = SAMPLE_RATE
    hop_samples = FRAME_HOP
    first_center_samples = 0.0
    window_samples = WINDOW
    min_samples = MIN_SAMPLES

    def __init__(self, encoder, layers: Union[str, int, Sequence[int]] = "all", combine: str = "mean"):
        super().__init__()
        self.encoder = encoder
        n_mels = encoder.conv1.in_channels
        self.frontend = get_frontend("WHISPER_80" if n_mels == 80 else f"WHISPER_{n_mels}")
        self.n_layers = len(encoder.blocks)
        self.width = encoder.ln_post.normalized_shape[0]
        self.final = layers == "final"
        self.layers = LayerSelector("last" if self.final else layers, combine, self.n_layers)
        self.embedding_size = self.layers.width(self.width)
        self.max_frames = encoder.positional_embedding.shape[0]

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
        x = F.gelu(self.encoder.conv1(mel))
        x = F.gelu(self.encoder.conv2(x)).permute(0, 2, 1)  # (batch, frames, width)
        if x.shape[1] > self.max_frames:
            raise ValueError(f"{mel.shape[-1]} mel frames exceed Whisper's {2 * self.max_frames}-frame context")
        x = (x + self.encoder.positional_embedding[: x.shape[1]]).to(x.dtype)
        for block in self.encoder.blocks:
            x = block(x)
            yield x

    def forward(self, audio: Tensor) -> Tensor:
        """audio : (batch, n_samples) -> (batch, n_frames, embedding_size)."""
        if self.final:
            return self.encoder.ln_post(self.layers.reduce(self.hidden_states(audio)))
        return self.layers.reduce(self.hidden_states(audio))


def whisper_param_count(encoder) -> int:
    """Parameters of an openai-whisper AudioEncoder (the fixed sinusoidal positions are a buffer)."""
    return sum(p.numel() for p in encoder.parameters())
