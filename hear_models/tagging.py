"""Whisper-AT tagging: head files, and text + sound tags from one encoder pass.

Head files: ours (written by training, they carry their label names) or the official
Whisper-AT ones (``{size}_ori.pth`` = TL-Tr, ``{size}_low.pth`` = TL-Tr-512). Both are read
with ``torch.load(weights_only=True)``.

Built-in heads ship inside the package for the offline backbones (``BUILTIN_HEADS``),
pinned by sha256, so ``hear-models tag`` tags out of the box; their model cards are in
``docs/whisper_at.md``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor

from .models.whisper_at_heads import create_head, decision_windows, head_from_official, pool_time

HEAD_FORMAT = "hear_models/whisper_at_head/v1"

# backbone source (as load_whisper takes it) -> packaged head (hear_models.checkpoints.PACKAGED)
BUILTIN_HEADS = {"": "whisper_at_base_tl_tr_128", "offline:base": "whisper_at_base_tl_tr_128"}


def builtin_head(backbone: str) -> Optional[Path]:
    """The packaged head trained for ``backbone`` (sha256-checked), or None if there is none."""
    from .checkpoints import packaged_weights

    name = BUILTIN_HEADS.get(str(backbone))
    return None if name is None else packaged_weights(name)


@dataclass
class HeadFile:
    head: torch.nn.Module
    labels: List[str]
    meta: Dict


def save_head(path, head, labels: List[str], kind: str, proj_dim: Optional[int] = None, **meta) -> None:
    """Write a head with what is needed to rebuild it (atomically: tmp file + rename)."""
    if len(labels) != head.n_classes:
        raise ValueError(f"{len(labels)} labels for a head of {head.n_classes} classes")
    obj = {"format": HEAD_FORMAT, "kind": kind, "n_layers": head.n_layers, "width": head.width,
           "n_classes": head.n_classes, "proj_dim": proj_dim, "labels": list(labels),
           "meta": meta, "state_dict": head.state_dict()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _audioset_labels(n: int) -> List[str]:
    """AudioSet display names from the whisper-at package's assets when installed."""
    import importlib.util

    spec = importlib.util.find_spec("whisper_at")
    if spec is not None and spec.submodule_search_locations:
        f = Path(list(spec.submodule_search_locations)[0]) / "assets" / "class_labels_indices.csv"
        if f.is_file():
            with open(f, newline="") as fh:
                names = [row["display_name"] for row in csv.DictReader(fh)]
            if len(names) == n:
                return names
    return [f"class_{i}" for i in range(n)]


def read_labels_csv(path) -> List[str]:
    """A label file: ``idx,label`` (HEAR labelvocabulary.csv) or ``index,mid,display_name`` (AudioSet)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for col in ("label", "display_name"):
        if rows and col in rows[0]:
            return [r[col] for r in rows]
    raise ValueError(f"{path}: expected a 'label' or 'display_name' column")


def load_head(path, labels: Optional[str] = None) -> HeadFile:
    """Read a head file (ours or official), strictly; ``labels`` (a CSV) overrides names."""
    from .checkpoints import torch_load_trusted_weights

    obj = torch_load_trusted_weights(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a tagging head file")
    if obj.get("format") == HEAD_FORMAT:
        head = create_head(obj["kind"], obj["n_layers"], obj["width"], obj["n_classes"], obj["proj_dim"])
        try:
            head.load_state_dict(obj["state_dict"], strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path}: weights do not fit a {obj['kind']} head: {e}") from None
        names, meta = obj["labels"], dict(obj.get("meta", {}), kind=obj["kind"])
    else:
        head = head_from_official(obj, str(path))
        names, meta = _audioset_labels(head.n_classes), {"kind": "tl_tr", "official": True}
    if labels is not None:
        names = read_labels_csv(labels)
        if len(names) != head.n_classes:
            raise ValueError(f"{labels}: {len(names)} labels for a head of {head.n_classes} classes")
    return HeadFile(head.eval(), names, meta)


def check_at_time_res(at_time_res: float) -> None:
    """Tag windows are whole numbers of the head's 0.4 s steps."""
    if not at_time_res > 0 or abs(at_time_res / 0.4 - round(at_time_res / 0.4)) > 1e-6:
        near = max(1, round(at_time_res / 0.4)) * 0.4 if at_time_res > 0 else 0.4
        raise ValueError(f"--at-time-res {at_time_res:g}: must be a positive multiple of 0.4 s "
                         f"(0.4, 0.8, 1.2, ...; nearest: {near:.1f})")


@torch.inference_mode()
def transcribe_and_tag(whisper_model, audio: Tensor, head: Optional[HeadFile] = None,
                       at_time_res: float = 10.0, top_k: int = 5, language: Optional[str] = None,
                       decode: bool = True, threshold: float = 0.0) -> Dict:
    """Text and sound tags of one clip, from ONE encoder pass per 30 s window.

    Each 30 s window is padded to 30 s as Whisper's decoder expects (as the whisper-at
    package does); the same pass gives the decoder its input (``ln_post`` of the last
    block) and the head every block's output, pooled by 0.4 s, over the frames that
    hold audio. Tags come per ``at_time_res`` seconds (a multiple of 0.4 s): the ``top_k``
    labels of each window whose probability (the sigmoid of the head's logit: the heads are
    trained with binary cross-entropy per class) is at least ``threshold``.

    Parameters
    ----------
    audio : Tensor, shape = (n_samples,), 16 kHz float in [-1, 1]
    language : str, optional
        The spoken language; None: detected by multilingual models, "en" for English-only
        ones (``*.en``), which have no language tokens to detect with.
    """
    import whisper

    from .frontends import get_frontend

    check_at_time_res(at_time_res)
    if language is None and not getattr(whisper_model, "is_multilingual", True):
        language = "en"
    window = int(round(at_time_res * 2.5))
    enc = whisper_model.encoder
    frontend = get_frontend("WHISPER_80" if enc.conv1.in_channels == 80 else f"WHISPER_{enc.conv1.in_channels}")
    n30 = 30 * 16000
    texts, tags = [], []
    opts = whisper.DecodingOptions(language=language, without_timestamps=True, fp16=False)
    pooled_all = []
    for start in range(0, audio.shape[-1], n30):
        chunk = audio[start:start + n30]
        frames = (chunk.shape[-1] // 160 + 1) // 2  # encoder frames that hold audio
        mel = frontend(torch.nn.functional.pad(chunk, (0, n30 - chunk.shape[-1]))[None])
        x = torch.nn.functional.gelu(enc.conv1(mel))
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1) + enc.positional_embedding
        blocks = []
        for block in enc.blocks:
            x = block(x)
            blocks.append(x[:, :frames])
        if head is not None:
            pooled_all.append(pool_time(torch.stack(blocks, 1)))
        if decode:
            result = whisper.decode(whisper_model, enc.ln_post(x), opts)[0]
            texts.append({"start": start / 16000, "end": (start + chunk.shape[-1]) / 16000,
                          "text": result.text.strip(), "language": result.language})
    if head is not None:
        pooled = torch.cat(pooled_all, 2)
        xw, mask, n_win = decision_windows(pooled, window)
        logits = head.head(xw, mask)
        seconds = audio.shape[-1] / 16000
        for i in range(n_win):
            top = torch.topk(logits[i], k=min(top_k, logits.shape[-1]))
            labels = [{"label": head.labels[j], "probability": round(p, 4), "logit": round(v, 4)}
                      for v, p, j in zip(top.values.tolist(), torch.sigmoid(top.values).tolist(),
                                         top.indices.tolist())]
            tags.append({"start": i * at_time_res, "end": min((i + 1) * at_time_res, seconds),
                         "labels": [x for x in labels if x["probability"] >= threshold]})
    return {"text": " ".join(t["text"] for t in texts), "segments": texts,
            "at_time_res": at_time_res, "audio_tag": tags}
