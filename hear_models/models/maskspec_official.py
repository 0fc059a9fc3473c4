"""MaskSpec's official checkpoint formats: the ``models_mae`` key names converted to ours,
the AudioSet mel statistics the official code standardises with (official checkpoints do not
carry them), and sizes read from a state dict. :func:`hear_models.models.maskspec.load_encoder`
is the entry point."""

from __future__ import annotations

from collections import Counter
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

import torch.nn.functional as F

from ..layers import last, split_qkv
from .maskspec import PATCH, MaskSpecDims, MaskSpecFrameEncoder, sincos_2d


# -- official checkpoints ---------------------------------------------------------------------
_BLOCK_MAP = {  # timm Block names -> our ResidualAttentionBlock names
    "norm1": "attn_ln", "attn.proj": "attn.out", "norm2": "mlp_ln",
    "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.2",
}


def is_official_state_dict(sd: Mapping[str, Tensor]) -> bool:
    return any(k.endswith("attn.qkv.weight") for k in sd)


def is_finetuned(sd: Mapping[str, Tensor]) -> bool:
    """An official fine-tuned ViT (``models_vit``: ``head`` / ``fc_norm`` keys)."""
    return any(k.startswith(("head.", "fc_norm.")) for k in sd)


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor],
                         mel_stats: Optional[Tuple[Tensor, Tensor]] = None) -> Dict[str, Tensor]:
    """Convert an official MaskSpec state dict to ours: a pretraining checkpoint
    (``models_mae.MaskedAutoencoderViT``) or a fine-tuned one (``models_vit.VisionTransformer``
    with ``global_pool``, e.g. the published AudioSet tagger).

    Shared keys (timm ``PatchEmbed`` / ``Block``): ``patch_embed.proj``, ``cls_token``,
    ``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``; ``attn.qkv`` (3D, D)
    splits into our ``query``, ``key``, ``value``; ``mel.*`` (front-end buffers) is dropped.

    - pretraining: ``pos_embed`` (fixed sin-cos, checked and dropped), ``norm``; decoder
      ``decoder_embed``, ``mask_token``, ``decoder_pos_embed`` (checked and dropped),
      ``decoder_blocks.i.*``, ``decoder_norm``, ``decoder_pred``.
    - fine-tuned (:func:`finetuned_filter`): ``pos_embed`` (trained: kept), ``fc_norm``,
      ``head``; no ``norm`` (``global_pool`` deletes it), no decoder.

    Parameters
    ----------
    mel_stats : (mean, std), each (n_mels,), optional
        The per-bin statistics the official model standardised with (AudioSet's
        ``mean_std_128.npy``); identity when not given.
    """
    sd = dict(state_dict)
    if "model" in sd and isinstance(sd["model"], Mapping):
        sd = dict(sd["model"])
    if is_finetuned(sd):
        return finetuned_filter(sd, mel_stats)
    out: Dict[str, Tensor] = {}
    for key in ("pos_embed", "decoder_pos_embed"):
        if key in sd:
            table = sd.pop(key)[0]  # (1 + L, width)
            width = table.shape[-1]
            h = 128 // PATCH
            w = (table.shape[0] - 1) // h
            ref = sincos_2d(width, h, w)
            if (table.shape[0] - 1) != h * w or not torch.allclose(table[1:].float(), ref, atol=1e-4) \
                    or table[0].abs().max() > 1e-6:
                raise ValueError(f"{key} is not MAE's fixed 2-D sin-cos table of a {h} x {w} grid; "
                                 "learned position embeddings are not supported")
    out.update(_convert_encoder(sd, decoder=True))
    return _with_stats(out, mel_stats)


def finetuned_filter(sd: Mapping[str, Tensor], mel_stats: Optional[Tuple[Tensor, Tensor]] = None
                     ) -> Dict[str, Tensor]:
    """The fine-tuned ``models_vit`` ViT (``global_pool=True``) -> our encoder with a learned
    position table and a head: ``pos_embed`` (1, 1 + 8 w, D) -> ``encoder.pos_embed`` as is,
    ``fc_norm`` -> ``encoder.norm`` (the one LayerNorm after the blocks: the official model
    applies it to the mean patch token), ``head`` -> ``encoder.head``."""
    sd = dict(sd)
    if "norm.weight" in sd or "fc_norm.weight" not in sd:
        raise ValueError("head / fc_norm keys with a final 'norm' or without 'fc_norm': not the "
                         "fine-tuned MaskSpec ViT with global pooling (fc_norm + head, the "
                         "official default); CLS-pooled (--cls_token) or mixed files are not supported")
    table = sd.pop("pos_embed", None)
    if table is None or table.dim() != 3 or table.shape[0] != 1 or (table.shape[1] - 1) % (128 // PATCH):
        raise ValueError("pos_embed missing or not (1, 1 + 8 x columns, width): the learned "
                         "position table of a 128-bin fine-tuned ViT"
                         + ("" if table is None else f" (found {tuple(table.shape)})"))
    out = {"encoder.pos_embed": table}
    for k in [k for k in sd if k.startswith(("fc_norm.", "head."))]:
        ours = "encoder.norm." + k[len("fc_norm."):] if k.startswith("fc_norm.") else "encoder." + k
        out[ours] = sd.pop(k)
    out.update(_convert_encoder(sd, decoder=False))
    return _with_stats(out, mel_stats)


def _convert_encoder(sd: Mapping[str, Tensor], decoder: bool) -> Dict[str, Tensor]:
    out: Dict[str, Tensor] = {}
    for k, v in sd.items():
        prefix = None
        for official, ours in (("blocks.", "encoder.blocks."), ("decoder_blocks.", "decoder_blocks.")):
            if k.startswith(official) and (decoder or official == "blocks."):
                prefix = (official, ours)
        if prefix is not None:
            i, rest = k[len(prefix[0]):].split(".", 1)
            base = f"{prefix[1]}{i}."
            if rest.startswith("attn.qkv."):
                out.update(split_qkv(base + "attn.", rest.rsplit(".", 1)[1], v))
                continue
            for a, b in _BLOCK_MAP.items():
                if rest.startswith(a + "."):
                    rest = b + rest[len(a):]
                    break
            else:
                raise ValueError(f"unexpected key in an official MaskSpec checkpoint: {k}")
            out[base + rest] = v
        elif k.startswith(("patch_embed.", "cls_token", "norm.")):
            out["encoder." + k] = v
        elif decoder and k.startswith(("decoder_embed.", "mask_token", "decoder_norm.", "decoder_pred.")):
            out[k] = v
        elif k.startswith("mel.") or k in ("frame_mean", "frame_std"):
            continue  # the front end has no weights (non-persistent buffers)
        else:
            what = "" if decoder else " (fine-tuned)"
            raise ValueError(f"unexpected key in an official MaskSpec{what} checkpoint: {k}")
    return out


def _with_stats(out: Dict[str, Tensor], mel_stats: Optional[Tuple[Tensor, Tensor]]) -> Dict[str, Tensor]:
    n_mels = 128
    mean, std = (torch.zeros(n_mels), torch.ones(n_mels)) if mel_stats is None else \
        (torch.as_tensor(mel_stats[0]).float(), torch.as_tensor(mel_stats[1]).float())
    out["frontend.mean"], out["frontend.std"] = mean, std
    return out


def audioset_mel_stats() -> Tuple[Tensor, Tensor]:
    """The official code's AudioSet per-bin (mean, std), each (128,) float32
    (:mod:`.maskspec_audioset_stats`, transcribed from the repo's ``mean_std_128.npy``)."""
    from .maskspec_audioset_stats import FRAME_MEAN, FRAME_STD

    return torch.tensor(FRAME_MEAN, dtype=torch.float32), torch.tensor(FRAME_STD, dtype=torch.float32)


_NUMPY_PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                         ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                         ("numpy", "ndarray"), ("numpy", "dtype")}


def read_mel_stats(path: str) -> Tuple[Tensor, Tensor]:
    """Per-bin (mean, std) from a ``.npy`` file: a float array of shape (2, n_mels) (mean
    row first), or a file in the official format (a numpy-pickled dict with ``frame_mean``
    and ``frame_std``, as ``get_mean_std.py`` writes). The pickle is read with only numpy's
    array and scalar constructors allowed: no other code can run."""
    import io
    import pickle

    import numpy as np

    class NumpyOnly(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in _NUMPY_PICKLE_GLOBALS:
                raise pickle.UnpicklingError(f"refused to load {module}.{name} (only numpy arrays are read)")
            return super().find_class(module.replace("numpy.core.", "numpy._core.")
                                      if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else module, name)

    try:
        with open(path, "rb") as f:
            readers = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}
            version = np.lib.format.read_magic(f)
            if version not in readers:
                raise ValueError(f".npy format version {version} is not supported")
            _, _, dtype = readers[version](f)
            if dtype.hasobject:
                obj = NumpyOnly(io.BytesIO(f.read())).load()
                if isinstance(obj, np.ndarray) and obj.shape == ():
                    obj = obj.item()
                if not isinstance(obj, dict) or not {"frame_mean", "frame_std"} <= set(obj):
                    raise ValueError("a pickled .npy that is not a dict with frame_mean and frame_std")
                arr = np.stack([np.asarray(obj["frame_mean"]), np.asarray(obj["frame_std"])])
            else:
                f.seek(0)
                arr = np.load(f, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"mel statistics file not found: {path}") from None
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"{path}: not a mel statistics file ({e})") from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != 2:
        raise ValueError(f"{path}: mel statistics of shape {tuple(arr.shape)}; expected (2, n_mels): "
                         "the mean row, then the std row")
    if not np.isfinite(arr).all() or (arr[1] <= 0).any():
        raise ValueError(f"{path}: mel statistics must be finite with every std > 0")
    t = torch.from_numpy(arr).float()
    return t[0], t[1]


def _most_common(sizes: Sequence[int]) -> int:
    return Counter(sizes).most_common(1)[0][0]


def infer_dims(sd: Mapping[str, Tensor]) -> MaskSpecDims:
    """Sizes from one of OUR state dicts (encoder keys, optionally decoder keys).

    A state dict declares no sizes, so each is taken from what the blocks agree on (the
    most common hidden size of ``mlp.0`` over all blocks, ...): one corrupted tensor is
    then reported as mis-shaped by :func:`load_strict`, instead of setting the size the
    others are measured against."""
    for k in ("encoder.cls_token", "encoder.blocks.0.mlp.0.weight"):
        if k not in sd:
            raise ValueError(f"no {k!r}")
    D = sd["encoder.cls_token"].shape[-1]
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.blocks."))
    heads = MaskSpecDims.heads_for(D)
    hidden = _most_common([v.shape[0] for k, v in sd.items()
                           if k.startswith("encoder.blocks.") and k.endswith(".mlp.0.weight")])
    kw = dict(width=D, layers=layers, heads=heads, mlp_ratio=hidden / D)
    if "encoder.pos_embed" in sd:
        kw["pos_cols"] = (sd["encoder.pos_embed"].shape[1] - 1) // (128 // PATCH)
    if "encoder.head.weight" in sd:
        kw["n_classes"] = sd["encoder.head.weight"].shape[0]
    if "decoder_embed.weight" in sd:
        kw["decoder_width"] = sd["decoder_embed.weight"].shape[0]
        kw["decoder_layers"] = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("decoder_blocks."))
    return MaskSpecDims(**kw)


# -- the fine-tuned model's head in the HEAR frame encoder --------------------------------------
HEAD_OUTPUTS = ("logits", "repr", "both")


class MaskSpecTaggingFrameEncoder(MaskSpecFrameEncoder):
    """:class:`MaskSpecFrameEncoder` whose windows also yield the fine-tuned ViT's output as
    a summary (appended to the scene embedding by :class:`~hear_models.hear_api.HearModel`).

    The summary of a window is computed as the official inference does: the audio zero-padded
    to the full 9.92 s window (the official ``test.py`` / evaluation pad clips to 10 s with
    zeros; the 8 frames past 9.92 s fall outside the 62 patch columns), unshifted, its 8 x 62
    patch tokens from the last block averaged, ``norm`` (the official ``fc_norm``) -> the
    pooled representation ("repr", width D), ``head`` -> the logits ("logits", n_classes,
    before the sigmoid). A full window in the unshifted pass (scene embeddings) reuses the
    frames' own pass; shorter ones take one more pass on the padded copy, so the frames
    themselves never see the padding.
    """

    def __init__(self, frontend, encoder, head_output: str = "logits", **options):
        super().__init__(frontend, encoder, **options)
        n_classes, D = encoder.dims.n_classes, encoder.dims.width
        if not n_classes:
            raise ValueError("this MaskSpec encoder has no tagging head (not a fine-tuned file)")
        sizes = {"logits": n_classes, "repr": D, "both": D + n_classes}
        if head_output not in sizes:
            raise ValueError(f"head_output={head_output!r}: expected one of {HEAD_OUTPUTS}")
        self.head_output = head_output
        self.summary_size = sizes[head_output]

    def summary(self, last_block: Tensor) -> Tensor:
        """Last block's output (batch, 1 + 8 x 62, D) -> (batch, summary_size)."""
        rep = self.encoder.pooled(last_block)
        if self.head_output == "repr":
            return rep
        logits = self.encoder.head(rep)
        return logits if self.head_output == "logits" else torch.cat([rep, logits], dim=-1)

    def padded_last_block(self, audio: Tensor) -> Tensor:
        """audio (B, n <= window) zero-padded to the window -> last block (B, 1 + 8 x 62, D)."""
        if audio.shape[1] > self.window_samples:
            raise ValueError(f"{audio.shape[1]} samples: the head reads windows of at most {self.window_samples}")
        mel = self.frontend(F.pad(audio, (0, self.window_samples - audio.shape[1])))
        tokens, _ = self.encoder.tokens(mel)
        return last(self.encoder.run_blocks(self.encoder.with_cls(tokens)))

    def forward_with_summary(self, audio: Tensor):
        """audio (B, n_samples) -> frames as ``forward``, summary (B, summary_size)."""
        if self.shifts != 1 or audio.shape[1] != self.window_samples:
            return self(audio), self.summary(self.padded_last_block(audio))
        final = []

        def tap(hidden):
            for x in hidden:
                final[:] = [x]
                yield x

        hidden, grid, B, K = self._grids(audio)
        stream = tap(hidden)
        out = self.layers.reduce(stream)
        for _ in stream:  # the head needs the last block
            pass
        if self.final:
            out = self.encoder.norm(out)
        return self._frames(out, grid, B, K), self.summary(final[0])
