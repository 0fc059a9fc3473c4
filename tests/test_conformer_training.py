"""Conformer SSL in the training engine: config, a short pretraining run with padded
short clips, export -> hear_models.conformer.load_model."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

from hear_models.training.config import load_config

TINY = ["model.width=32", "model.heads=2", "model.layers=2", "model.ffn=64", "model.n_negatives=20",
        "data.crop_seconds=0.96", "data.batch_size=4", "data.num_workers=0", "trainer.progress_bar=false",
        "trainer.log_every=1", "trainer.accelerator=cpu", "trainer.devices=1", "optim.warmup_steps=1"]


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    import soundfile as sf

    d = tmp_path_factory.mktemp("cf_audio")
    rng = np.random.default_rng(0)
    for i in range(6):  # 0.3 .. 1.3 s: shorter than the crop -> padded batches
        sr = 16000 if i % 2 else 22050
        t = np.arange(int(sr * (0.3 + 0.2 * i))) / sr
        x = 0.3 * np.sin(2 * np.pi * (200 + 170 * i) * t * (1 + t)) + 0.02 * rng.standard_normal(len(t))
        sf.write(str(d / f"c{i}.wav"), x.astype(np.float32), sr)
    return d


def test_config_is_the_papers_recipe():
    cfg = load_config("conformer_tiny_pretrain")
    assert cfg.objective == "conformer_pretrain"
    assert cfg.optim.betas == (0.9, 0.98) and cfg.optim.weight_decay == 0.01 and cfg.optim.schedule == "linear"
    assert cfg.model.mask_prob == 0.3 and cfg.model.n_negatives == 100 and cfg.model.temperature == 0.1


def test_pretrain_export_load_model(audio_dir, tmp_path):
    from hear_models.conformer import load_model
    from hear_models.training.engine import export, fit

    out = tmp_path / "run"
    cfg = load_config("conformer_tiny_pretrain", TINY + [f"data.source={audio_dir}", f"trainer.out_dir={out}",
                                                         "trainer.max_steps=4", "optim.lr=3e-3"])
    module = fit(cfg)
    # weight decay only on matrices; the mask embedding and norms are not decayed
    groups = module.optimizers().optimizer.param_groups
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(np.isfinite(r["train/loss"]) for r in log)
    assert all(0.1 < r["train/masked"] < 0.6 for r in log)
    pt = tmp_path / "cf.pt"
    export(str(out / "checkpoints" / "final.ckpt"), str(pt))
    m = load_model(str(pt))
    assert m.timestamp_embedding_size == 32 and "trained with hear-models" in m.name
    audio = torch.rand(2, 16000) * 0.2 - 0.1
    emb, ts = m.timestamp_embeddings(audio)
    assert emb.shape == (2, 25, 32) and torch.isfinite(emb).all()
    # the exported encoder is the trained one
    sd = module.model.encoder.state_dict()
    torch.testing.assert_close(m.encoder.encoder.state_dict()["context.proj.weight"], sd["context.proj.weight"])
