"""The training engine (hear_models.training) on a tiny MaskSpec, on CPU.

Config loading and overrides, data sources (folder, CSV/JSONL manifests, HEAR task
folders), crops and padding masks, resume equivalence, the NaN guard, JSON-lines logs,
export -> load_model, fine-tuning (multiclass, multilabel).
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import need  # noqa: E402

need("lightning")

from hear_models.training.config import ConfigError, load_config
from hear_models.training.data import (ClipDataset, StepBatchSampler, collate, finalise_labels,
                                       mixup, read_source)

TINY = ["model.width=32", "model.heads=2", "model.layers=2", "model.decoder_width=32",
        "model.decoder_layers=1", "model.decoder_heads=2", "data.crop_seconds=0.64",
        "data.batch_size=4", "data.num_workers=0", "trainer.progress_bar=false",
        "trainer.log_every=1", "trainer.deterministic=true", "trainer.accelerator=cpu",
        "trainer.devices=1"]


def _write(path, seconds, sr, freq, seed=0):
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), sr)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    for i in range(8):
        _write(d / f"sub{i % 2}" / f"c{i}.wav", 0.4 + 0.15 * i, 16000 if i % 2 else 32000, 200 + 150 * i, i)
    return d


@pytest.fixture(scope="module")
def hear_task(tmp_path_factory):
    """A scene task in the HEAR layout, offered at 16 kHz only (resampled on load)."""
    d = tmp_path_factory.mktemp("tasks") / "tones-v1-full"
    labels = {"train": {}, "valid": {}}
    for split, n in (("train", 8), ("valid", 4)):
        for i in range(n):
            name = f"{split}{i}.wav"
            lab = "low" if i % 2 == 0 else "high"
            _write(d / "16000" / split / name, 0.8, 16000, 220 if lab == "low" else 1760, i)
            labels[split][name] = [lab]
    for split in labels:
        (d / f"{split}.json").write_text(json.dumps(labels[split]))
    (d / "labelvocabulary.csv").write_text("idx,label\n0,high\n1,low\n")
    (d / "task_metadata.json").write_text(json.dumps({
        "task_name": "tones", "version": "v1", "embedding_type": "scene",
        "prediction_type": "multiclass", "split_mode": "trainvaltest",
        "splits": ["train", "valid"], "sample_duration": 0.8, "evaluation": ["top1_acc"],
        "sample_rates": [16000]}))
    return d


def run(tmp_path, name, overrides=(), **fit_kw):
    from hear_models.training.engine import fit

    cfg = load_config("maskspec_tiny_pretrain", TINY + [f"trainer.out_dir={tmp_path / name}", *overrides])
    return cfg, fit(cfg, **fit_kw)


# -- config ------------------------------------------------------------------------------------
def test_config_yaml_and_overrides():
    cfg = load_config("maskspec_tiny_pretrain", ["trainer.max_steps=7", "optim.betas=[0.8,0.9]",
                                                 "data.source=/x", "model.mask_ratio=0.5"])
    assert cfg.trainer.max_steps == 7 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.data.source == "/x" and cfg.model.mask_ratio == 0.5
    assert cfg.optim.weight_decay == 0.05 and cfg.model.variant == "tiny"
    with pytest.raises(ConfigError, match="unknown key"):
        load_config("maskspec_tiny_pretrain", ["trainer.max_stpes=7"])
    with pytest.raises(ConfigError, match="integer"):
        load_config("maskspec_tiny_pretrain", ["trainer.max_steps=abc"])
    with pytest.raises(ConfigError, match="no config"):
        load_config("no_such_config")
    base = load_config("maskspec_base_pretrain")
    assert base.model.dims().width == 768 and base.trainer.strategy == "ddp"


# -- data --------------------------------------------------------------------------------------
def test_sources_folder_manifests_hear(audio_dir, hear_task, tmp_path):
    folder = read_source(str(audio_dir))
    assert len(folder.items) == 8 and folder.items[0].labels is None
    files = [it.path for it in folder.items]
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,labels,duration\n" + "".join(
        f"{Path(p).relative_to(audio_dir)},{'a;b' if i % 2 else 'a'},1.0\n" for i, p in enumerate(files)))
    (tmp_path / "sub0").symlink_to(audio_dir / "sub0")
    (tmp_path / "sub1").symlink_to(audio_dir / "sub1")
    m = finalise_labels(read_source(str(csv_path)))
    assert m.vocab == ["a", "b"] and m.multilabel and m.items[1].labels == ["a", "b"]
    assert Path(m.items[0].path).is_file() and m.items[0].duration == 1.0
    jl = tmp_path / "m.jsonl"
    jl.write_text("".join(json.dumps({"path": p, "labels": ["x" if i % 2 else "y"]}) + "\n"
                          for i, p in enumerate(files)))
    j = finalise_labels(read_source(str(jl)))
    assert j.vocab == ["x", "y"] and j.multilabel is False
    h = finalise_labels(read_source(str(hear_task), "train", 32000))
    assert len(h.items) == 8 and h.vocab == ["high", "low"] and h.multilabel is False
    assert all("/16000/train/" in it.path for it in h.items)
    hv = read_source(str(hear_task), "train,valid", 32000)
    assert len(hv.items) == 12
    with pytest.raises(ValueError, match="no split"):
        read_source(str(hear_task), "test", 32000)


def test_crops_padding_resampling_and_batches(audio_dir):
    src = read_source(str(audio_dir))
    ds = ClipDataset(src, 32000, 0.5, random_crop=True)
    long_idx = max(range(8), key=lambda i: Path(src.items[i].path).stat().st_size)
    a = ds[(long_idx, 1)]
    b = ds[(long_idx, 1)]
    c = ds[(long_idx, 2)]
    assert a["audio"].shape == (16000,) and torch.equal(a["audio"], b["audio"])  # crop = f(seed)
    assert not torch.equal(a["audio"], c["audio"])
    short = ClipDataset(src, 32000, 2.0)[(0, 0)]  # 0.4 s clip, padded to 2 s
    assert short["length"] == int(0.4 * 32000) and short["audio"][short["length"]:].abs().sum() == 0
    batch = collate([short, a])
    assert batch["padding_mask"].shape == (2, 64000) and batch["padding_mask"][0, 12800:].all()
    assert not batch["padding_mask"][0, :12800].any()
    s = StepBatchSampler(10, 4, seed=3)
    it = iter(s)
    first = [next(it) for _ in range(6)]
    assert first[3] == StepBatchSampler(10, 4, seed=3, start=3).batch(3)  # resumable
    ranks = [StepBatchSampler(10, 2, seed=3, rank=r, world_size=2).batch(0) for r in (0, 1)]
    assert [k[0] for k in ranks[0] + ranks[1]] == [k[0] for k in StepBatchSampler(10, 4, seed=3).batch(0)]
    epoch0 = sorted(k[0] for b in first[:2] for k in b)[:8] + [k[0] for k in first[2][:2]]
    assert sorted(epoch0) == list(range(10))  # every clip once per epoch


def test_mixup():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 5)
    y = torch.eye(6)
    xm, ym, lam, perm = mixup(x, y, 0.3)
    assert (lam >= 0.5).all() and torch.allclose(ym.sum(1), torch.ones(6))
    i = 2
    assert torch.allclose(xm[i], lam[i] * x[i] + (1 - lam[i]) * x[perm[i]], atol=1e-6)


# -- runs ----------------------------------------------------------------------------------------
class Kill(Exception):
    pass


def test_resume_equals_uninterrupted(audio_dir, tmp_path):
    """Killed after the checkpoint of step 3 (at step 4), resumed: same weights, optimizer
    state and lr at step 6 as a run that was never interrupted."""
    from lightning.pytorch.callbacks import Callback

    class KillAt(Callback):
        def on_train_batch_end(self, trainer, *a):
            if trainer.global_step == 4:
                raise Kill()

    common = [f"data.source={audio_dir}", "trainer.max_steps=6", "trainer.checkpoint_every=3",
              "model.drop_path=0.1",  # drop-path draws from the RNG: it must be restored too
              "trainer.ema_decay=0.9"]  # and the EMA of the weights
    _, full = run(tmp_path, "full", common)
    with pytest.raises(Kill):
        run(tmp_path, "killed", common, callbacks=[KillAt()])
    ck = tmp_path / "killed" / "checkpoints"
    assert (ck / "step0000003.ckpt").is_file() and not list(ck.glob("*.tmp*"))
    _, resumed = run(tmp_path, "killed", common, resume="auto")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    full_ck = torch.load(tmp_path / "full/checkpoints/final.ckpt", weights_only=True)
    res_ck = torch.load(ck / "final.ckpt", weights_only=True)
    assert full_ck["global_step"] == res_ck["global_step"] == 6
    sa, sb = full_ck["optimizer_states"][0]["state"], res_ck["optimizer_states"][0]["state"]
    for k in sa:
        assert torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"])
    assert full_ck["hear_models"]["data_position"] == res_ck["hear_models"]["data_position"] == 6
    ea, eb = full_ck["hear_models"]["ema"]["shadow"], res_ck["hear_models"]["ema"]["shadow"]
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    assert not torch.equal(ea["encoder.cls_token"], a["encoder.cls_token"])  # an average, not a copy
    assert full_ck["hear_models"]["config"]["trainer"]["max_steps"] == 6
    log = [json.loads(x) for x in (tmp_path / "killed/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 4, 5, 6]  # step 4 redone after the kill
    full_log = [json.loads(x) for x in (tmp_path / "full/log.jsonl").read_text().splitlines()]
    assert full_log[-1]["train/loss"] == log[-1]["train/loss"] and full_log[-1]["lr"] == log[-1]["lr"]


def test_resume_with_a_changed_schedule_warns(audio_dir, tmp_path, recwarn):
    """Resuming with another trainer.max_steps recomputes the lr schedule (a cosine restarts
    part-way): the user is told, with the lr before and after; the same settings say
    nothing; a max_steps already reached says there is nothing to train."""
    common = [f"data.source={audio_dir}", "trainer.checkpoint_every=2", "optim.warmup_steps=1"]
    run(tmp_path, "r", common + ["trainer.max_steps=4"], resume="auto")
    ck = tmp_path / "r" / "checkpoints"
    run(tmp_path, "same", common + ["trainer.max_steps=4"], resume=str(ck / "step0000002.ckpt"))
    assert not [w for w in recwarn if "lr schedule" in str(w.message) or "nothing left" in str(w.message)]
    with pytest.warns(UserWarning, match=r"at step 4 with a changed lr schedule \(trainer\.max_steps 4 -> 8\).*"
                                         r"moves from 0 to [0-9.e-]+ \(a warm restart\)"):
        run(tmp_path, "r", common + ["trainer.max_steps=8"], resume=str(ck / "final.ckpt"))
    assert torch.load(ck / "final.ckpt", weights_only=True)["global_step"] == 8
    with pytest.warns(UserWarning, match="at step 8 with trainer.max_steps=6: nothing left to train"):
        run(tmp_path, "r", common + ["trainer.max_steps=6"], resume="auto")


def test_sigterm_checkpoints_and_resume_continues(audio_dir, tmp_path, monkeypatch):
    """SIGTERM mid-run: the step in flight finishes, last.ckpt is written, the run ends with
    TrainingInterrupted (the CLI: status 143), and --resume auto ends where an uninterrupted
    run ends."""
    import os
    import signal

    from lightning.pytorch.callbacks import Callback

    from hear_models.training import cli as train_cli
    from hear_models.training.engine import TrainingInterrupted

    class TermAt(Callback):
        def on_train_batch_start(self, trainer, *a):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    common = [f"data.source={audio_dir}", "trainer.max_steps=5", "trainer.checkpoint_every=100"]
    _, full = run(tmp_path, "full", common)
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 3") as e:
        run(tmp_path, "term", common, callbacks=[TermAt()])
    last = torch.load(e.value.checkpoint, weights_only=True)
    assert last["global_step"] == 3 and e.value.checkpoint.endswith("last.ckpt")
    assert not (tmp_path / "term/checkpoints/final.ckpt").exists()
    _, resumed = run(tmp_path, "term", common, resume="auto")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    def interrupted(cfg, resume=None):
        raise TrainingInterrupted(7, "x/last.ckpt")

    monkeypatch.setattr("hear_models.training.engine.fit", interrupted)
    assert train_cli.main(["maskspec_tiny_pretrain", f"data.source={audio_dir}"]) == 143


def test_nan_guard_stops_with_clear_message(audio_dir, tmp_path):
    from hear_models.training.engine import NonFiniteLossError

    from lightning.pytorch.callbacks import Callback

    class Poison(Callback):  # a weight turns NaN after step 2: the loss of step 2 (0-based) is NaN
        def on_train_batch_end(self, trainer, module, *a):
            if trainer.global_step == 2:
                with torch.no_grad():
                    module.model.decoder_pred.bias[0] = float("nan")

    with pytest.raises(NonFiniteLossError, match="non-finite training loss at step 2") as e:
        run(tmp_path, "nan", [f"data.source={audio_dir}", "trainer.max_steps=5"], callbacks=[Poison()])
    assert "loss=nan" in str(e.value) and "lower optim.lr" in str(e.value)
    log = [json.loads(x) for x in (tmp_path / "nan/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]  # the NaN step is not logged as a result


def test_pretraining_reduces_loss_export_and_load_model(audio_dir, tmp_path):
    from hear_models.maskspec import load_model
    from hear_models.training.engine import export

    cfg, module = run(tmp_path, "pre", [f"data.source={audio_dir}", "trainer.max_steps=25",
                                        "optim.lr=3e-3", "optim.warmup_steps=3",
                                        "trainer.checkpoint_every=100", "data.batch_size=8"])
    log = [json.loads(x) for x in (tmp_path / "pre/log.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in log]
    assert len(losses) == 25 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:3]), losses
    assert all("lr" in r and "samples_per_s" in r for r in log)
    out = tmp_path / "w.pt"
    sha = export(str(tmp_path / "pre/checkpoints/final.ckpt"), str(out))
    assert len(sha) == 64
    m = load_model(str(out))
    assert m.timestamp_embedding_size == 32 and m.sample_rate == 32000
    sd = m.encoder.encoder.state_dict()
    for k, v in module.model.encoder.state_dict().items():
        assert torch.equal(sd[k], v), k
    emb, ts = m.timestamp_embeddings(torch.rand(2, 16000) * 0.2 - 0.1)
    assert emb.shape == (2, 13, 32) and torch.isfinite(emb).all()


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_finetune_step(kind, audio_dir, hear_task, tmp_path):
    from hear_models.training.engine import fit

    if kind == "multiclass":
        extra = [f"data.source={hear_task}", "data.split=train", f"data.val_source={hear_task}",
                 "data.val_split=valid", "trainer.val_every=2"]
    else:
        files = sorted(Path(audio_dir).rglob("*.wav"))
        jl = tmp_path / "ml.jsonl"
        jl.write_text("".join(json.dumps({"path": str(p), "labels": ["a", "b"][: 1 + i % 2]}) + "\n"
                              for i, p in enumerate(files)))
        extra = [f"data.source={jl}"]
    cfg = load_config("maskspec_finetune", TINY + extra + [
        f"trainer.out_dir={tmp_path / kind}", "trainer.max_steps=3", "data.mixup=1.0"])
    module = fit(cfg)
    assert module.cfg.model.multilabel == (kind == "multilabel")
    assert module.model.head.out_features == 2
    log = [json.loads(x) for x in (tmp_path / kind / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(math.isfinite(r["train/loss"]) for r in log)
    assert len(log[0]["lr"]) > 4  # layer-wise lr decay: one group per depth (x decay / no decay)
    if kind == "multiclass":
        assert "train/acc" in log[-1] and "val/loss" in log[-1]


def test_workers_give_the_same_batches(audio_dir):
    from hear_models.training.data import make_loader

    ds = ClipDataset(read_source(str(audio_dir)), 32000, 0.3)
    batches = []
    for workers in (0, 2):
        it = iter(make_loader(ds, 3, workers, seed=5, start=2))
        batches.append([next(it) for _ in range(3)])
    for a, b in zip(*batches):
        assert int(a["index"]) == int(b["index"]) and torch.equal(a["audio"], b["audio"])
    assert [int(b["index"]) for b in batches[0]] == [2, 3, 4]


def test_cli_train_export_and_finetune_from_it(audio_dir, hear_task, tmp_path, capsys):
    from hear_models.cli import main
    from hear_models.training.engine import load_checkpoint

    out = tmp_path / "cli"
    assert main(["train", "maskspec_tiny_pretrain", *TINY, f"data.source={audio_dir}",
                 f"trainer.out_dir={out}", "trainer.max_steps=2"]) == 0
    assert main(["train", "export", str(out / "checkpoints/final.ckpt"), str(tmp_path / "e.pt")]) == 0
    assert "sha256" in capsys.readouterr().out
    if __import__("importlib").util.find_spec("matplotlib"):
        assert main(["train", "plot", str(out / "log.jsonl"), str(tmp_path / "loss.png")]) == 0
        assert (tmp_path / "loss.png").stat().st_size > 1000
    exported = torch.load(tmp_path / "e.pt", weights_only=True)
    assert exported["trained"]["steps"] == 2
    assert exported["trained"]["config"]["data"]["source"] == str(audio_dir)
    # a file to share: its own description, and a note instead of the local data path
    assert main(["train", "export", str(out / "checkpoints/final.ckpt"), str(tmp_path / "s.pt"),
                 "--description", "MaskSpec-Tiny, 2 steps", "--data-note", "3 test clips"]) == 0
    shared = torch.load(tmp_path / "s.pt", weights_only=True)
    assert shared["description"] == "MaskSpec-Tiny, 2 steps"
    assert shared["trained"]["config"]["data"]["source"] == "3 test clips"
    assert str(audio_dir) not in repr(shared["trained"])
    for key, value in exported["state_dict"].items():
        assert torch.equal(value, shared["state_dict"][key])
    # fine-tune from the export: the encoder starts from the pretrained weights
    ft = tmp_path / "ft"
    assert main(["train", "maskspec_finetune", *TINY, f"data.source={hear_task}", f"model.init={tmp_path / 'e.pt'}",
                 f"trainer.out_dir={ft}", "trainer.max_steps=1", "optim.lr=1e-12"]) == 0
    cfg, ck = load_checkpoint(str(ft / "checkpoints/final.ckpt"))
    assert cfg.model.labels == ["high", "low"] and cfg.model.multilabel is False
    w = "model.encoder.blocks.1.mlp.0.weight"
    torch.testing.assert_close(ck["state_dict"][w], exported["state_dict"][w[len("model."):]])
    assert main(["train", "maskspec_tiny_pretrain", "trainer.max_stpes=1"]) == 2
    assert main(["train", "configs"]) == 0
