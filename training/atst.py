"""ATST pretraining: BYOL teacher-student on two long crops of each clip (Li & Li, 2022).

The recipe (``configs/atst_*_pretrain.yaml``), as audiossl's ``ATSTLightningModule``:

- views: two different random ``view_seconds`` (6 s) crops of each training clip (10 s
  crops from the data pipeline, so the two views overlap by at least 2 s); each view's
  log-mel (``ATST_64_16K``) gets BYOL-A's Mixup (a random clip from a memory of past
  views, ``log((1 - a) exp(x) + a exp(z))``, ``a ~ U(0, 0.4)``) and BYOL-A's Random
  Resized Crop (virtual canvas 1 x 1.5, frequency and time scales 0.6 - 1.5, bicubic);
- student = encoder + projector (D -> 4096 -> 256: Linear without bias, BatchNorm, ReLU,
  Linear) + predictor (256 -> 4096 -> 256, same form); teacher = encoder + projector, an
  exponential moving average of the student's, momentum on a cosine from ``momentum``
  (m0: 0.99 Small, 0.9995 Base) to 1 over the run; the teacher gets no gradients;
- loss: symmetric BYOL, ``2 - 2 cos(p_1, z_2)`` and ``2 - 2 cos(p_2, z_1)`` averaged, on
  L2-normalised student predictions p and teacher projections z of the CLS outputs (after
  the encoder's final LayerNorm);
- AdamW, lr = base_lr x batch / 256 with linear warm-up then cosine (engine), weight decay
  of everything but biases and norms (audiossl's groups) on a cosine from ``optim.weight_decay``
  (0.04) to ``model.weight_decay_end`` (0.4), set every step.

Clips shorter than a view are not an error: the view is the whole clip, zero-padded, and
the padded tokens are masked as attention keys (the CLS output ignores them).
The teacher encoder is what downstream uses (and what ``export`` writes).

Fine-tuning (``atst_finetune``, ``configs/atst_finetune.yaml``; the paper's section 3 and
audiossl's ``train_finetune.py``): every weight updates; the segment embedding is
[CLS ; mean of the tokens] of the last block (after the final LayerNorm), 2 D; clips
longer than ``max_seconds`` (12 s) are cropped to 12 s (randomly in training, centrally
for validation and test), then cut into ``chunk_seconds`` (6 s) chunks encoded
independently, whose embeddings are averaged; head: BatchNorm without affine parameters
+ Linear. SGD (momentum 0.9, no weight decay), lr = base_lr x global batch / 256, linear
warm-up for ``warmup_epochs`` (5) then cosine to 1e-6, gradient clipping at 3. Augmentation
(multilabel and command tasks): Mixup of the log-mels and the labels (an in-batch partner,
``lam = max(l, 1 - l)``, ``l ~ Beta(0.5, 0.5)``; audiossl draws the partner from a memory
of past clips) and BYOL-A random resized crop; none for speaker-like tasks
(``data.mixup=0 model.rrc=false``). Initialised from any file ``hear_models.atst`` reads
(the packaged tiny, our exports, official audiossl checkpoints); the sizes come from the
file. Export: the encoder (``hear_models.atst/1``, read by ``hear_models.atst.load_model``)
plus ``head``, ``labels``, ``multilabel``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hear_models.models.atst import (SAMPLE_RATE, TOKEN_CENTER, TOKEN_FRAMES, TOKEN_HOP, ATSTDims,
                                     ATSTEncoder, ATSTFrontend, init_atst_weights, masked_mean)
from hear_models.models.atst import n_tokens as n_tokens_of

from .engine import TrainModule, load_init
from .finetune import FinetuneConfig, FinetuneModule


@dataclass
class ATSTPretrainConfig:
    variant: str = "tiny"  # tiny | small | base
    # sizes that override the variant's (0 = the variant's); for tests and experiments
    width: int = 0
    layers: int = 0
    heads: int = 0
    drop_path: float = 0.1
    proj_hidden: int = 4096
    proj_dim: int = 256
    momentum: float = 0.99  # m0 of the teacher's EMA (cosine to 1); 0.9995 for Base
    weight_decay_end: float = 0.4  # weight decay goes from optim.weight_decay to this (cosine)
    view_seconds: float = 6.0  # each view; a multiple of 0.04 s, at most 10 s
    mixup_ratio: float = 0.4  # a ~ U(0, mixup_ratio); 0 = no mixup
    mixup_memory: int = 128  # past views kept for mixup (BYOL-A: 2048); in the checkpoint
    rrc: bool = True  # BYOL-A random resized crop
    rrc_virtual_scale: Tuple[float, float] = (1.0, 1.5)  # canvas (freq, time) / input
    rrc_freq_scale: Tuple[float, float] = (0.6, 1.5)
    rrc_time_scale: Tuple[float, float] = (0.6, 1.5)
    init: str = ""  # weights to start the encoders from (export, official checkpoint); "" = random

    def dims(self) -> ATSTDims:
        over = {k: getattr(self, k) for k in ("width", "layers", "heads") if getattr(self, k)}
        return ATSTDims.variant(self.variant, drop_path=self.drop_path, **over)


def build_mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """audiossl's ``build_mlp(2, d_in, hidden, d_out, last_bn=False)``: Linear (no bias),
    BatchNorm1d, ReLU, Linear (no bias); keys ``0``, ``1``, ``3``."""
    return nn.Sequential(nn.Linear(d_in, hidden, bias=False), nn.BatchNorm1d(hidden),
                         nn.ReLU(inplace=True), nn.Linear(hidden, d_out, bias=False))


class Branch(nn.Module):
    """Encoder + projector (+ predictor for the student): CLS output -> vector."""

    def __init__(self, dims: ATSTDims, hidden: int, out: int, predictor: bool):
        super().__init__()
        self.encoder = ATSTEncoder(dims)
        self.projector = build_mlp(dims.width, hidden, out)
        self.predictor = build_mlp(out, hidden, out) if predictor else None

    def forward(self, mel: Tensor, token_padding: Optional[Tensor]) -> Tensor:
        cls = self.encoder(mel, token_padding)[:, 0]
        z = self.projector(cls)
        return self.predictor(z) if self.predictor is not None else z


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """Symmetric BYOL loss: p (2B, d) student predictions of views [1; 2], z (2B, d) teacher
    projections -> mean of (2 - 2 cos(p_1, z_2)) and (2 - 2 cos(p_2, z_1))."""
    p = F.normalize(p.float(), dim=-1)
    z = F.normalize(z.float(), dim=-1)
    p1, p2 = p.chunk(2)
    z1, z2 = z.chunk(2)
    return ((2 - 2 * (p1 * z2).sum(-1)).mean() + (2 - 2 * (p2 * z1).sum(-1)).mean()) / 2


def cosine_to(start: float, end: float, step: int, total: int) -> float:
    """``end + (start - end) (1 + cos(pi step / total)) / 2``: start at 0, end at total."""
    t = min(max(step, 0), total) / max(total, 1)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def random_resized_crop(mel: Tensor, tokens: Tensor, virtual_scale=(1.0, 1.5), freq_scale=(0.6, 1.5),
                        time_scale=(0.6, 1.5)) -> Tensor:
    """BYOL-A Random Resized Crop of each clip's valid part (4 x tokens frames): the
    spectrogram centred on a zero canvas (virtual scale), a random crop of size
    (freq_scale x F, time_scale x T) clipped to the canvas, resized back (bicubic)."""
    out = mel.clone()
    Fq = mel.shape[1]
    u = torch.rand(mel.shape[0], 4)
    for b in range(mel.shape[0]):
        T = int(tokens[b]) * TOKEN_FRAMES
        x = mel[b, :, :T]
        H, W = int(Fq * virtual_scale[0]), int(T * virtual_scale[1])
        canvas = x.new_zeros(H, W)
        y0, x0 = (H - Fq) // 2, (W - T) // 2
        canvas[y0:y0 + Fq, x0:x0 + T] = x
        fs = freq_scale[0] + (freq_scale[1] - freq_scale[0]) * float(u[b, 0])
        ts = time_scale[0] + (time_scale[1] - time_scale[0]) * float(u[b, 1])
        h = min(max(int(fs * Fq), 1), H)
        w = min(max(int(ts * T), 1), W)
        i = int(float(u[b, 2]) * (H - h + 1)) if H > h else 0
        j = int(float(u[b, 3]) * (W - w + 1)) if W > w else 0
        crop = canvas[i:i + h, j:j + w][None, None]
        out[b, :, :T] = F.interpolate(crop, size=(Fq, T), mode="bicubic", align_corners=True)[0, 0]
    return out


class ATSTBYOL(nn.Module):
    """Student, EMA teacher, the front end and the mixup memory (buffers, so that resume
    restores them)."""

    def __init__(self, cfg: ATSTPretrainConfig):
        super().__init__()
        self.cfg = cfg
        self.dims = cfg.dims()
        self.view_tokens = int(round(cfg.view_seconds * SAMPLE_RATE / TOKEN_HOP))
        if abs(self.view_tokens * TOKEN_HOP - cfg.view_seconds * SAMPLE_RATE) > 1e-3 \
                or not 1 <= self.view_tokens <= self.dims.max_tokens:
            raise ValueError(f"model.view_seconds={cfg.view_seconds}: a multiple of 0.04 s, at most "
                             f"{self.dims.max_tokens * 0.04:g} s")
        self.frontend = ATSTFrontend()
        self.student = Branch(self.dims, cfg.proj_hidden, cfg.proj_dim, predictor=True)
        self.teacher = Branch(self.dims, cfg.proj_hidden, cfg.proj_dim, predictor=False)
        init_atst_weights(self.student)
        self.teacher.load_state_dict({k: v for k, v in self.student.state_dict().items()
                                      if not k.startswith("predictor.")})
        self.teacher.requires_grad_(False)
        M, T = max(0, int(cfg.mixup_memory)), TOKEN_FRAMES * self.view_tokens
        self.register_buffer("memory", torch.zeros(M, self.dims.n_mels, T))
        self.register_buffer("memory_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("memory_next", torch.zeros((), dtype=torch.long))

    @property
    def view_samples(self) -> int:
        return self.view_tokens * TOKEN_HOP

    # ---- the named steps -----------------------------------------------------------------
    def make_views(self, audio: Tensor, lengths: Tensor, random: bool = True
                   ) -> Tuple[Tensor, Tensor, Tensor]:
        """Two crops of ``view_samples`` per clip (random starts within the clip's valid
        samples; a clip shorter than a view gives its whole self, zero-padded).

        Returns mel (2B, 64, 4 Kv) [views 1 of all clips; views 2], valid tokens (2B,),
        token padding (2B, Kv) bool."""
        B, n = audio.shape
        V = self.view_samples
        lengths = lengths.to(audio.device).clamp(max=n)
        room = (lengths - V).clamp_min(0)  # (B,) possible start offsets
        if random:
            starts = (torch.rand(2, B, device=audio.device) * (room + 1)).floor().long()
        else:
            starts = torch.stack([torch.zeros_like(room), room])
        idx = starts[..., None] + torch.arange(V, device=audio.device)  # (2, B, V)
        valid = torch.minimum(lengths, torch.full_like(lengths, V))  # (B,)
        inside = torch.arange(V, device=audio.device)[None, None] < valid[None, :, None]
        crops = torch.gather(audio[None].expand(2, -1, -1), 2, idx.clamp(max=n - 1)) * inside
        mel = self.frontend(crops.reshape(2 * B, V), tokens=self.view_tokens)
        # tokens centred inside the valid part (n_tokens), at least one
        tok = ((valid.repeat(2) - int(TOKEN_CENTER)).clamp_min(0) // TOKEN_HOP + 1).clamp(max=self.view_tokens)
        padding = torch.arange(self.view_tokens, device=audio.device)[None] >= tok[:, None]
        return mel, tok, padding

    @torch.no_grad()
    def mixup(self, mel: Tensor) -> Tensor:
        """BYOL-A mixup with a memory of past views: x <- log((1 - a) e^x + a e^z), z a random
        remembered view, a ~ U(0, mixup_ratio); then the (unmixed) views join the memory."""
        M = self.memory.shape[0]
        out = mel
        filled = int(self.memory_filled)
        if self.cfg.mixup_ratio > 0 and filled > 0:
            pick = torch.randint(0, filled, (mel.shape[0],), device=mel.device)
            z = self.memory[pick].to(mel.dtype)
            a = (torch.rand(mel.shape[0], 1, 1, device=mel.device) * self.cfg.mixup_ratio).to(mel.dtype)
            out = torch.logaddexp(torch.log1p(-a) + mel, torch.log(a.clamp_min(1e-12)) + z)
            out = torch.where(a > 0, out, mel)
        if M > 0:
            nxt = int(self.memory_next)
            for x in mel.detach():
                self.memory[nxt] = x.to(self.memory.dtype)
                nxt = (nxt + 1) % M
            self.memory_next.fill_(nxt)
            self.memory_filled.fill_(min(M, filled + mel.shape[0]))
        return out

    def random_resized_crop(self, mel: Tensor, tokens: Tensor) -> Tensor:
        c = self.cfg
        return random_resized_crop(mel, tokens, c.rrc_virtual_scale, c.rrc_freq_scale, c.rrc_time_scale)

    def forward(self, audio: Tensor, lengths: Tensor, augment: bool = True) -> Tuple[Tensor, Dict[str, Tensor]]:
        """audio (B, n), lengths (B,) -> (loss, logs)."""
        mel, tokens, padding = self.make_views(audio, lengths, random=augment)
        if augment:
            mel = self.mixup(mel)
            if self.cfg.rrc:
                mel = self.random_resized_crop(mel, tokens)
        p = self.student(mel, padding)
        with torch.no_grad():
            z = self.teacher(mel, padding)
        loss = byol_loss(p, z)
        with torch.no_grad():
            zn = F.normalize(z.float(), dim=-1)
            logs = {"std_t": zn.std(0).mean(), "std_s": F.normalize(p.float(), dim=-1).std(0).mean(),
                    "padded": padding.float().mean()}
        return loss, logs

    @torch.no_grad()
    def update_teacher(self, m: float) -> None:
        """teacher <- m teacher + (1 - m) student, for the encoder and projector parameters
        (the teacher's BatchNorm statistics are its own, as in audiossl)."""
        for part in ("encoder", "projector"):
            for q, k in zip(getattr(self.student, part).parameters(), getattr(self.teacher, part).parameters()):
                k.mul_(m).add_(q.detach(), alpha=1 - m)


def _load_init(model: ATSTBYOL, path: str) -> None:
    from hear_models.models.atst import load_encoder

    load_init(path, load_encoder, [model.student.encoder, model.teacher.encoder])


class ATSTPretrain(TrainModule):
    """BYOL pretraining of :class:`ATSTBYOL` in the shared engine."""

    sample_rate = SAMPLE_RATE

    def build_model(self):
        model = ATSTBYOL(self.cfg.model)
        if self.cfg.model.init:
            _load_init(model, self.cfg.model.init)
        self.last_momentum = float("nan")
        return model

    def param_groups(self) -> List[dict]:
        """Student parameters only; group 0 gets the weight-decay schedule: every parameter
        but biases and norms (1-D), so the CLS token and the position table are decayed, as
        audiossl's ``get_params_groups`` does."""
        decay, no_decay = [], []
        for name, p in self.model.student.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        return [{"params": decay, "weight_decay": self.cfg.optim.weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    def momentum_at(self, step: int) -> float:
        return cosine_to(self.cfg.model.momentum, 1.0, step, self.cfg.trainer.max_steps)

    def weight_decay_at(self, step: int) -> float:
        return cosine_to(self.cfg.optim.weight_decay, self.cfg.model.weight_decay_end, step,
                         self.cfg.trainer.max_steps)

    def on_train_batch_start(self, batch, batch_idx):
        super().on_train_batch_start(batch, batch_idx)
        opt = self.optimizers()
        opt = getattr(opt, "optimizer", opt)
        opt.param_groups[0]["weight_decay"] = self.weight_decay_at(self.global_step)

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        # global_step counts this step only after the hook: the update after step n (1-based)
        # uses m(n), as audiossl's on_train_batch_end reads its schedule at the new step
        self.last_momentum = self.momentum_at(self.global_step + 1)
        self.model.update_teacher(self.last_momentum)

    def compute_loss(self, batch, train: bool = True):
        loss, logs = self.model(batch["audio"], batch["lengths"], augment=train)
        if train:
            logs["momentum"] = torch.tensor(self.momentum_at(self.global_step + 1))
        return loss, logs

    def export_state(self) -> dict:
        from hear_models.models.atst import EXPORT_FORMAT

        sd = {"encoder." + k: v.detach().cpu().clone()
              for k, v in self.model.teacher.encoder.state_dict().items()}
        dims = self.model.dims.to_dict()
        dims["drop_path"] = 0.0
        return {"format": EXPORT_FORMAT, "dims": dims, "state_dict": sd,
                "chunk_seconds": float(self.cfg.model.view_seconds),
                "description": f"atst-{self.cfg.model.variant} teacher, trained with hear-models ({self.cfg.objective})"}


# -- fine-tuning ------------------------------------------------------------------------------
@dataclass
class ATSTFinetuneConfig(FinetuneConfig):
    variant: str = "tiny"  # tiny | small | base (used when init is empty)
    width: int = 0  # size overrides of the variant (0 = the variant's); for tests
    layers: int = 0
    heads: int = 0
    drop_path: float = 0.1
    init: str = ""  # any ATST file hear_models.atst reads (packaged:..., export, official); "" = random
    max_seconds: float = 12.0  # longer clips: a 12 s crop (random in training, central otherwise)
    chunk_seconds: float = 6.0  # cut into chunks of this length, encoded independently, averaged
    rrc: bool = True  # BYOL-A random resized crop (training); off for speaker-like tasks
    rrc_virtual_scale: Tuple[float, float] = (1.0, 1.5)
    rrc_freq_scale: Tuple[float, float] = (0.6, 1.5)
    rrc_time_scale: Tuple[float, float] = (0.6, 1.5)


class ATSTClassifier(nn.Module):
    """The ATST paper's fine-tuning model: the encoder (every weight trained) and a linear
    head on the segment embedding [CLS ; mean of the tokens] of the LAST block (after the
    encoder's final LayerNorm), 2 D wide, averaged over the clip's 6 s chunks; the head is
    audiossl's ``LinearHead``: BatchNorm without affine parameters, Linear (std 0.01, zero
    bias)."""

    def __init__(self, dims: ATSTDims, n_classes: int, chunk_tokens: int):
        super().__init__()
        self.dims = dims
        self.chunk_tokens = int(chunk_tokens)
        self.frontend = ATSTFrontend()
        self.encoder = ATSTEncoder(dims)
        init_atst_weights(self.encoder)
        self.head_norm = nn.BatchNorm1d(2 * dims.width, affine=False)
        self.head = nn.Linear(2 * dims.width, n_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def segment_embedding(self, mel: Tensor, tokens: Tensor) -> Tensor:
        """mel (B, 64, 4 K), valid tokens (B,) -> (B, 2 D): per chunk of ``chunk_tokens``,
        [CLS ; mean of its valid tokens]; chunks averaged, the first always, a later one
        when more than half of it is the clip's."""
        K, C = mel.shape[-1] // TOKEN_FRAMES, self.chunk_tokens
        total, count = None, torch.zeros(mel.shape[0], device=mel.device)
        for i, start in enumerate(range(0, K, C)):
            width = min(C, K - start)
            valid = (tokens - start).clamp(0, width)
            use = torch.ones_like(valid, dtype=torch.bool) if i == 0 else valid > C // 2
            if i > 0 and not bool(use.any()):
                break
            padding = torch.arange(width, device=mel.device)[None] >= valid.clamp_min(1)[:, None]
            chunk = mel[..., TOKEN_FRAMES * start: TOKEN_FRAMES * (start + width)]
            h = self.encoder(chunk, padding if bool(padding.any()) else None)
            emb = torch.cat([h[:, 0], masked_mean(h[:, 1:], padding)], dim=-1) * use[:, None].to(h.dtype)
            total = emb if total is None else total + emb
            count = count + use
        return total / count.clamp_min(1)[:, None].to(total.dtype)

    def forward(self, mel: Tensor, tokens: Tensor) -> Tensor:
        return self.head(self.head_norm(self.segment_embedding(mel, tokens).float()))


def valid_tokens(lengths: Tensor, max_tokens: int) -> Tensor:
    """Tokens centred inside each clip's valid samples (``n_tokens``), 1 .. max_tokens."""
    return ((lengths - int(TOKEN_CENTER)).clamp_min(0) // TOKEN_HOP + 1).clamp(1, max_tokens)


class ATSTFinetune(FinetuneModule):
    """Fine-tuning of an ATST encoder with the paper's protocol (module docstring of
    :mod:`hear_models.training.finetune` for labels, validation, test score)."""

    sample_rate = SAMPLE_RATE

    def build_model(self):
        m = self.cfg.model
        chunk = int(round(m.chunk_seconds * SAMPLE_RATE / TOKEN_HOP))
        if m.init:
            from hear_models.models.atst import load_encoder

            encoder = load_encoder(m.init).encoder
            dims = ATSTDims.from_dict({**encoder.dims.to_dict(), "drop_path": m.drop_path})
        else:
            over = {k: getattr(m, k) for k in ("width", "layers", "heads") if getattr(m, k)}
            dims, encoder = ATSTDims.variant(m.variant, drop_path=m.drop_path, **over), None
        if not 1 <= chunk <= dims.max_tokens or abs(chunk * TOKEN_HOP - m.chunk_seconds * SAMPLE_RATE) > 1e-3:
            raise ValueError(f"model.chunk_seconds={m.chunk_seconds}: a multiple of 0.04 s, at most "
                             f"{dims.max_tokens * 0.04:g} s")
        model = ATSTClassifier(dims, m.n_classes, chunk)
        if encoder is not None:
            model.encoder.load_state_dict(encoder.state_dict())
        return model

    @property
    def eval_window_seconds(self) -> float:
        return 0.0  # crop_audio() and the chunks handle any length

    def crop_audio(self, audio: Tensor, lengths: Tensor, random: bool) -> Tuple[Tensor, Tensor]:
        """Clips longer than ``max_seconds``: a crop of that length, at a random start
        (training) or central."""
        M = int(round(self.cfg.model.max_seconds * SAMPLE_RATE))
        lengths = lengths.to(audio.device).clamp(min=1, max=audio.shape[1])
        if int(lengths.max()) <= M:
            return audio[:, :int(lengths.max())], lengths
        room = (lengths - M).clamp_min(0)
        start = (torch.rand(len(room), device=audio.device) * (room + 1)).floor().long() if random else room // 2
        idx = (start[:, None] + torch.arange(M, device=audio.device)).clamp(max=audio.shape[1] - 1)
        return torch.gather(audio, 1, idx), lengths.clamp(max=M)

    def features(self, audio: Tensor, lengths: Tensor, train: bool) -> Tuple[Tensor, Tensor]:
        audio, lengths = self.crop_audio(audio, lengths, random=train)
        K = max(1, n_tokens_of(audio.shape[1]))
        mel = self.model.frontend(audio, tokens=K)
        return mel, valid_tokens(lengths, K)

    def clip_probabilities(self, audio, lengths):
        mel, tokens = self.features(audio, lengths, train=False)
        return self.activate(self.model(mel, tokens))

    def compute_loss(self, batch, train: bool = True):
        mel, tokens = self.features(batch["audio"], batch["lengths"], train)
        target = batch["target"].to(mel.dtype)
        if train and self.cfg.data.mixup > 0 and float(torch.rand(())) < self.cfg.data.mixup:
            from .data import mixup

            mel, target, _, perm = mixup(mel, target, self.cfg.data.mixup_alpha)
            tokens = torch.maximum(tokens, tokens[perm])
        if train and self.cfg.model.rrc:
            m = self.cfg.model
            mel = random_resized_crop(mel, tokens, m.rrc_virtual_scale, m.rrc_freq_scale, m.rrc_time_scale)
        logits = self.model(mel, tokens).float()
        if self.cfg.model.multilabel:
            return F.binary_cross_entropy_with_logits(logits, target.float()), {}
        loss = F.cross_entropy(logits, target.float())
        return loss, {"acc": (logits.argmax(-1) == target.argmax(-1)).float().mean()}

    def export_state(self) -> dict:
        from hear_models.models.atst import EXPORT_FORMAT

        dims = self.model.dims.to_dict()
        dims["drop_path"] = 0.0
        sd = {"encoder." + k: v.detach().cpu().clone() for k, v in self.model.encoder.state_dict().items()}
        head = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
                if k.startswith(("head_norm.", "head."))}
        return {"format": EXPORT_FORMAT, "dims": dims, "state_dict": sd,
                "chunk_seconds": float(self.cfg.model.chunk_seconds), "head": head,
                "labels": list(self.cfg.model.labels), "multilabel": bool(self.cfg.model.multilabel),
                "description": f"atst {dims['width']} x {dims['layers']} fine-tuned with hear-models "
                               f"({self.cfg.objective})"}
