"""ATST BYOL pretraining in the shared engine, on CPU, with a tiny model.

Loss decreases, the EMA teacher gets no gradients and follows the momentum rule, every
student parameter gets a gradient, short clips (padding masks), schedules, resume
equivalence, export -> hear_models.atst.load_model."""

import json

import numpy as np
import pytest
import torch
from tests.conftest import need  # noqa: E402

need("lightning")

from hear_models.training.config import load_config

TINY = ["model.width=32", "model.heads=2", "model.layers=2", "model.proj_hidden=64", "model.proj_dim=16",
        "model.view_seconds=1.0", "model.mixup_memory=8", "data.crop_seconds=1.6", "data.batch_size=4",
        "data.num_workers=0", "trainer.progress_bar=false", "trainer.log_every=1",
        "trainer.deterministic=true", "trainer.accelerator=cpu", "trainer.devices=1"]


def _write(path, seconds, sr, freq, seed=0):
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), sr)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    """8 clips of 0.4 - 2.5 s: several shorter than a 1 s view."""
    d = tmp_path_factory.mktemp("atst_audio")
    for i in range(8):
        _write(d / f"c{i}.wav", [0.4, 2.5, 0.7, 2.0, 1.8, 0.3, 2.2, 1.5][i], 16000, 200 + 170 * i, i)
    return d


def cfg_for(tmp_path, name, overrides=()):
    return load_config("atst_tiny_pretrain", TINY + [f"trainer.out_dir={tmp_path / name}", *overrides])


def module_and_batch(tmp_path, overrides=(), lengths=(25600, 25600, 6000, 25600)):
    from hear_models.training.engine import build_module

    torch.manual_seed(0)
    cfg = cfg_for(tmp_path, "m", overrides)
    module = build_module(cfg)
    g = torch.Generator().manual_seed(1)
    n = 25600
    t = torch.arange(n) / 16000
    audio = torch.stack([0.3 * torch.sin(2 * torch.pi * (300 + 400 * i) * t) for i in range(4)])
    audio = audio + 0.02 * torch.randn(4, n, generator=g)
    lengths = torch.tensor(lengths)
    audio = audio * (torch.arange(n)[None] < lengths[:, None])
    return module, {"audio": audio, "lengths": lengths, "index": torch.tensor(0)}


def test_config_and_sizes():
    cfg = load_config("atst_tiny_pretrain")
    assert cfg.objective == "atst_pretrain" and cfg.model.momentum == 0.99
    assert cfg.optim.weight_decay == 0.04 and cfg.model.weight_decay_end == 0.4
    from hear_models.training.atst import ATSTBYOL

    m = ATSTBYOL(cfg.model)
    assert m.view_samples == 96000
    s, t = m.student, m.teacher
    assert [tuple(p.shape) for p in s.projector.parameters()] == [(4096, 192), (4096,), (4096,), (256, 4096)]
    assert [tuple(p.shape) for p in s.predictor.parameters()] == [(4096, 256), (4096,), (4096,), (256, 4096)]
    assert t.predictor is None and not any(p.requires_grad for p in t.parameters())
    for (k, a), (_, b) in zip(s.encoder.state_dict().items(), t.encoder.state_dict().items()):
        assert torch.equal(a, b), k  # the teacher starts as a copy


def test_views_crops_and_padding(tmp_path):
    module, batch = module_and_batch(tmp_path)
    m = module.model
    mel, tok, pad = m.make_views(batch["audio"], batch["lengths"])
    assert mel.shape == (8, 64, 100) and pad.shape == (8, 25)
    # clip 2 (6000 samples, shorter than the 1 s view): both views are the whole clip, padded
    assert tok[2] == tok[6] == 10 and pad[2, 10:].all() and not pad[2, :10].any()
    assert not pad[[0, 1, 3]].any()
    # two different crops of the same clip
    assert not torch.allclose(mel[0], mel[4])
    mel_v, _, _ = m.make_views(batch["audio"], batch["lengths"], random=False)
    torch.testing.assert_close(mel_v[2], mel_v[6])


def test_mixup_memory_and_rrc(tmp_path):
    module, batch = module_and_batch(tmp_path)
    m = module.model
    mel, tok, _ = m.make_views(batch["audio"], batch["lengths"])
    assert int(m.memory_filled) == 0
    first = m.mixup(mel)
    assert torch.equal(first, mel) and int(m.memory_filled) == 8  # empty memory: nothing to mix
    mixed = m.mixup(mel)
    assert not torch.equal(mixed, mel) and int(m.memory_filled) == 8 and int(m.memory_next) == 0
    # a mix in the exp domain lies between the two (log-sum-exp of a convex combination)
    assert (mixed <= torch.maximum(mel, m.memory.max()) + 1e-5).all()
    out = m.random_resized_crop(mel, tok)
    assert out.shape == mel.shape and torch.isfinite(out).all()
    assert torch.equal(out[2, :, 40:], mel[2, :, 40:])  # padding left alone


def test_gradients_teacher_and_short_clips(tmp_path):
    """Every student parameter gets a gradient, the teacher none; a batch with a clip
    shorter than the view gives a finite loss."""
    module, batch = module_and_batch(tmp_path)
    module.train()
    loss, logs = module.model(batch["audio"], batch["lengths"])
    assert torch.isfinite(loss) and 0 <= float(loss.detach()) <= 4
    loss.backward()
    for name, p in module.model.student.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    for name, p in module.model.teacher.named_parameters():
        assert p.grad is None, name
    # padded tokens do not change the CLS output of the short clip
    enc = module.model.student.encoder.eval()
    mel, tok, pad = module.model.make_views(batch["audio"], batch["lengths"], random=False)
    full = enc(mel[2:3], pad[2:3])[:, 0]
    short = enc(mel[2:3, :, :4 * int(tok[2])])[:, 0]
    torch.testing.assert_close(full, short, atol=1e-5, rtol=1e-5)


def test_byol_loss_symmetric():
    from hear_models.training.atst import byol_loss

    p, z = torch.randn(6, 5), torch.randn(6, 5)
    want = ((2 - 2 * torch.cosine_similarity(p[:3], z[3:])).mean()
            + (2 - 2 * torch.cosine_similarity(p[3:], z[:3])).mean()) / 2
    torch.testing.assert_close(byol_loss(p, z), want)
    assert float(byol_loss(z, z.roll(3, 0))) < 1e-6


def test_schedules():
    from hear_models.training.atst import cosine_to

    assert cosine_to(0.99, 1.0, 0, 100) == 0.99 and cosine_to(0.99, 1.0, 100, 100) == 1.0
    assert abs(cosine_to(0.04, 0.4, 50, 100) - 0.22) < 1e-12


def test_training_loss_decreases_teacher_momentum(tmp_path):
    """A few steps on one repeated tiny batch: the loss falls; after every optimizer step the
    teacher is m t + (1 - m) s with m on the cosine schedule; weight decay follows its
    cosine."""
    from lightning.pytorch.callbacks import Callback

    from hear_models.training.engine import fit

    seen = []

    class Watch(Callback):
        def on_train_batch_start(self, trainer, module, batch, idx):
            self.before = [p.detach().clone() for p in module.model.teacher.encoder.parameters()]

        def on_train_batch_end(self, trainer, module, outputs, batch, idx):
            m = module.last_momentum
            assert m == module.momentum_at(trainer.global_step)
            for t0, s, t1 in zip(self.before, module.model.student.encoder.parameters(),
                                 module.model.teacher.encoder.parameters()):
                torch.testing.assert_close(t1, m * t0 + (1 - m) * s.detach(), atol=1e-6, rtol=1e-5)
            wd = trainer.optimizers[0].param_groups[0]["weight_decay"]
            seen.append((trainer.global_step, m, wd, float(outputs["loss"])))

    cfg = cfg_for(tmp_path, "learn", [f"data.source={tmp_path}/none", "trainer.max_steps=12",
                                      "optim.lr=3e-3", "optim.warmup_steps=2", "model.mixup_ratio=0",
                                      "model.rrc=false", "model.drop_path=0", "model.momentum=0.9"])
    from hear_models.training import engine

    module = engine.build_module(cfg)
    _, batch = module_and_batch(tmp_path)

    class OneBatch(torch.utils.data.IterableDataset):
        def __iter__(self):
            while True:
                yield batch

    import lightning.pytorch as L

    class DM(L.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(OneBatch(), batch_size=None)

    trainer = engine.make_trainer(cfg, [Watch()])
    trainer.fit(module, datamodule=DM())
    steps = [s for s, *_ in seen]
    assert steps == list(range(1, 13))
    assert seen[0][1] == pytest.approx(module.momentum_at(1)) and seen[-1][1] == 1.0
    wds = [w for _, _, w, _ in seen]
    assert wds[0] == pytest.approx(0.04) and all(b >= a for a, b in zip(wds, wds[1:]))
    losses = [x for *_, x in seen]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


class Kill(Exception):
    pass


def test_resume_equals_uninterrupted_and_export(audio_dir, tmp_path):
    """Killed at step 3 after the checkpoint of step 2 and resumed: teacher, student, mixup
    memory and optimizer state equal to the uninterrupted run's. Export -> load_model."""
    from lightning.pytorch.callbacks import Callback

    from hear_models.training.engine import export, fit

    class KillAt(Callback):
        def on_train_batch_end(self, trainer, *a):
            if trainer.global_step == 3:
                raise Kill()

    common = [f"data.source={audio_dir}", "trainer.max_steps=4", "trainer.checkpoint_every=2"]
    full = fit(cfg_for(tmp_path, "full", common))
    with pytest.raises(Kill):
        fit(cfg_for(tmp_path, "killed", common), callbacks=[KillAt()])
    resumed = fit(cfg_for(tmp_path, "killed", common), resume="auto")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and "memory" in a and "teacher.projector.1.running_mean" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["teacher.encoder.cls_token"], a["student.encoder.cls_token"])
    ck = tmp_path / "killed" / "checkpoints" / "final.ckpt"
    log = [json.loads(x) for x in (tmp_path / "killed/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 3, 4] and "train/momentum" in log[0]

    from hear_models.atst import load_model

    out = tmp_path / "atst.pt"
    export(str(ck), str(out))
    model = load_model(str(out))
    assert model.encoder.window_samples == 16000  # the view length travels with the export
    teacher = resumed.model.teacher.encoder.state_dict()
    for k, v in model.encoder.encoder.state_dict().items():
        assert torch.equal(v, teacher[k]), k
    audio = torch.rand(2, 40000) * 0.2 - 0.1
    assert model.scene_embeddings(audio).shape == (2, 2 * 2 * 32)
    # the training checkpoint itself also loads (teacher encoder, our key names)
    assert load_model(str(ck)).scene_embedding_size == 128
