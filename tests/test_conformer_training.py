"""Conformer SSL in the training engine: config, a short pretraining run with padded
short clips, export -> hear_models.conformer.load_model."""

import json

import numpy as np
import pytest
import torch
from tests.conftest import need  # noqa: E402

need("lightning")

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


# -- fine-tuning ---------------------------------------------------------------------------------
def _task(tmp_path, multilabel):
    import soundfile as sf

    d = tmp_path / ("ml" if multilabel else "mc") / "tones-v1-full"
    labels = {}
    for i in range(6):
        name = f"t{i}.wav"
        t = np.arange(int(16000 * (0.5 + 0.1 * i))) / 16000
        sf.write(str((d / "16000" / "train").mkdir(parents=True, exist_ok=True) or d / "16000" / "train" / name),
                 (0.3 * np.sin(2 * np.pi * (220 if i % 2 else 1760) * t)).astype(np.float32), 16000)
        labels[name] = (["low", "high"] if multilabel and i % 3 == 0 else ["low" if i % 2 else "high"])
    (d / "train.json").write_text(json.dumps(labels))
    (d / "labelvocabulary.csv").write_text("idx,label\n0,high\n1,low\n")
    (d / "task_metadata.json").write_text(json.dumps({
        "task_name": "tones", "version": "v1", "embedding_type": "scene",
        "prediction_type": "multilabel" if multilabel else "multiclass", "split_mode": "trainvaltest",
        "splits": ["train"], "sample_duration": 1.0, "evaluation": ["mAP"], "sample_rates": [16000]}))
    return d


def test_linear_softmax_pooling_and_mean_pooling():
    from hear_models.models.conformer import ConformerClassifier, ConformerDims

    torch.manual_seed(0)
    d = ConformerDims.variant("tiny", width=32, heads=2, layers=2, ffn=64, dropout=0.0)
    m = ConformerClassifier(d, 3, multilabel=True).eval()
    mel = torch.randn(2, 64, 40)
    p = m(mel, torch.tensor([10, 4]))
    assert p.shape == (2, 3) and ((p > 0) & (p < 1)).all()
    # equals sum p_t^2 / sum p_t over the valid latents, computed here by hand for clip 1
    z = m.encoder.feature_encoder(mel[1:, :, :16])  # the 4 valid latents alone
    for h in m.encoder.hidden_states(z):
        pass
    pt = torch.sigmoid(m.head(h))[0]
    torch.testing.assert_close(p[1], (pt ** 2).sum(0) / pt.sum(0), atol=1e-5, rtol=1e-5)
    mc = ConformerClassifier(d, 3, multilabel=False).eval()
    assert mc(mel).shape == (2, 3)


def test_tri_stage_schedule_and_augmentations():
    from hear_models.training.conformer import symmetric_kl, time_jitter, time_mask, tri_stage_factor

    f = [tri_stage_factor(s, 100, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(1 / 30) and f[29] == 1.0 and f[30] == 1.0 and f[59] == 1.0
    assert f[99] == pytest.approx(0.01 ** (39 / 40)) and all(a >= b for a, b in zip(f[60:], f[61:]))
    a = torch.arange(1, 1001, dtype=torch.float32).repeat(4, 1)
    j = time_jitter(a, 200)
    for row in j:  # a shifted copy, zero-filled
        nz = row[row != 0]
        assert (torch.diff(nz) == 1).all() and (row == 0).sum() <= 200
    mel = torch.zeros(3, 2, 500)
    masked = time_mask(mel, 100, -5.0)
    assert ((masked == -5.0).sum(-1)[:, 0] <= 100).all()
    p = torch.tensor([[0.7, 0.3]])
    assert float(symmetric_kl(p, p, False)) == pytest.approx(0.0, abs=1e-6)
    assert float(symmetric_kl(p, p.flip(-1), False)) > 0


@pytest.mark.parametrize("multilabel", [False, True])
def test_finetune_steps_all_weights_update(multilabel, tmp_path):
    from hear_models.training.engine import export, fit
    from hear_models.conformer import load_model

    task = _task(tmp_path, multilabel)
    out = tmp_path / "ft"
    over = [o for o in TINY if not o.startswith("model.n_negatives")]
    cfg = load_config("conformer_finetune", over + [f"data.source={task}", f"trainer.out_dir={out}",
                                                    "trainer.max_steps=2", "optim.lr=1e-3", "data.mixup=1.0"])
    from hear_models.training.engine import build_module

    before = {k: v.clone() for k, v in build_module(cfg).model.state_dict().items()}
    module = fit(cfg)
    assert module.cfg.model.multilabel is multilabel and module.cfg.model.n_classes == 2
    after = module.model.state_dict()
    frozen = [k for k, v in after.items() if v.is_floating_point() and torch.equal(v, before[k])]
    assert not frozen, frozen
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train/loss"]) and "train/consistency" in r for r in log)
    pt = tmp_path / "ft.pt"
    export(str(out / "checkpoints" / "final.ckpt"), str(pt))
    state = torch.load(pt, weights_only=True)
    assert state["labels"] == ["high", "low"] and state["multilabel"] is multilabel
    assert load_model(str(pt)).scene_embeddings(torch.rand(1, 8000) * 0.1).shape == (1, 32)
