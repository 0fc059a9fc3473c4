"""Fine-tuning ends with a test score (training/finetune.py), and ATST fine-tuning
(``atst_finetune``): the paper's segment embedding, chunks and crops, all weights
training, init from the packaged checkpoint, export -> hear_models.atst.load_model.

MaskSpec, ATST and the conformer (tiny sizes, a few steps) are each fine-tuned on the
offline smoke suite's spoken_keywords task; the run writes test_scores.json with the
task's metrics computed by heareval's own score functions on heareval's test split."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import copy_tasks, need  # noqa: E402

need("lightning")
need("heareval")

from hear_models.training.config import load_config

COMMON = ["data.num_workers=0", "trainer.progress_bar=false", "trainer.log_every=1",
          "trainer.accelerator=cpu", "trainer.devices=1", "data.batch_size=8"]
TINY = {
    "maskspec_finetune": ["model.width=32", "model.heads=2", "model.layers=2", "data.crop_seconds=0.64"],
    "atst_finetune": ["model.width=32", "model.heads=2", "model.layers=2", "model.chunk_seconds=0.48",
                      "model.max_seconds=0.96", "data.crop_seconds=0.96", "optim.base_lr=0.05",
                      "model.epochs=0"],
    "conformer_finetune": ["model.width=32", "model.heads=2", "model.layers=2", "model.ffn=64",
                           "data.crop_seconds=0.96", "optim.lr=1e-3"],
}
TASK = "spoken_keywords-v1-smoke"


@pytest.fixture(scope="module")
def smoke(smoke_suite, tmp_path_factory):
    return copy_tasks(smoke_suite, tmp_path_factory.mktemp("tasks"), ["spoken_keywords"]) / TASK


def _tone_task(root: Path, split_mode: str = "new_split_kfold", event: bool = False) -> Path:
    """A k-fold (or train/valid/test) scene task of sine tones, two labels."""
    import soundfile as sf

    d = root / f"tones-{split_mode}"
    splits = ["fold00", "fold01", "fold02"] if split_mode != "trainvaltest" else ["train", "valid", "test"]
    for s in splits:
        labels = {}
        for i in range(4):
            lab = ["low", "high"][i % 2]
            t = np.arange(8000) / 16000
            (d / "16000" / s).mkdir(parents=True, exist_ok=True)
            sf.write(str(d / "16000" / s / f"{s}{i}.wav"),
                     (0.3 * np.sin(2 * np.pi * (300 if lab == "low" else 2000) * t)).astype(np.float32), 16000)
            labels[f"{s}{i}.wav"] = ([{"label": lab, "start": 0.0, "end": 100.0}] if event else [lab])
        (d / f"{s}.json").write_text(json.dumps(labels))
    (d / "labelvocabulary.csv").write_text("idx,label\n0,high\n1,low\n")
    (d / "task_metadata.json").write_text(json.dumps({
        "task_name": "tones", "version": "v1", "embedding_type": "event" if event else "scene",
        "prediction_type": "multilabel" if event else "multiclass", "split_mode": split_mode,
        "nfolds": 3, "splits": splits, "sample_duration": 0.5,
        "evaluation": ["event_onset_200ms_fms"] if event else ["top1_acc", "mAP"], "sample_rates": [16000]}))
    return d


# -- every fine-tuning objective ends with heareval's test score ---------------------------------
@pytest.mark.parametrize("objective", ["maskspec_finetune", "atst_finetune", "conformer_finetune"])
def test_finetune_writes_heareval_test_scores(objective, smoke, tmp_path, capsys):
    import soundfile as sf

    from hear_models.training.engine import fit

    out = tmp_path / objective
    cfg = load_config(objective, COMMON + TINY[objective] + [
        f"data.source={smoke}", f"trainer.out_dir={out}", "trainer.max_steps=4", "trainer.val_every=2"])
    module = fit(cfg)
    meta = json.loads((smoke / "task_metadata.json").read_text())
    # heareval's run of a train/valid/test task: train on train, validate on valid, test on test
    assert (cfg.data.split, cfg.data.val_source, cfg.data.val_split, cfg.data.test_split) == \
        ("train", str(smoke), "valid", "test")
    report = json.loads((out / "test_scores.json").read_text())
    assert report["task"] == TASK and report["test_split"] == "test" and report["scorer"] == "heareval.score"
    assert list(report["scores"]) == meta["evaluation"] and report["primary"] == meta["evaluation"][0]
    test = json.loads((smoke / "test.json").read_text())
    assert report["n_test_clips"] == len(test)
    # the best validated step's checkpoint is the one tested
    assert report["checkpoint"] == "best.ckpt" and report["step"] in (2, 4)
    assert (out / "checkpoints" / "best.ckpt").is_file() and 0.0 <= report["val_score"] <= 1.0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"test_scores"')]
    assert printed and printed[-1]["scores"] == report["scores"]
    # the score is the accuracy of the module's predictions, clip by clip (no batching)
    module.eval()
    vocab = {lab: i for i, lab in enumerate(module.cfg.model.labels)}
    hits = []
    for name, labels in sorted(test.items()):
        x, sr = sf.read(str(smoke / "16000" / "test" / name), dtype="float32")
        if sr != module.sample_rate:
            from hear_models.audio import resample

            x = resample(x, sr, module.sample_rate).astype(np.float32)
        p = module.predict(torch.from_numpy(x)[None], torch.tensor([len(x)]))
        hits.append(int(p.argmax()) == vocab[labels[0]])
    assert report["scores"]["top1_acc"] == pytest.approx(float(np.mean(hits)), abs=1e-6)


def test_heareval_folds_and_refusals(tmp_path):
    from hear_models.training.finetune import resolve_splits

    task = _tone_task(tmp_path)
    cfg = load_config("atst_finetune", [f"data.source={task}", "data.fold=1"])
    resolve_splits(cfg)  # heareval: fold i tests, fold i + 1 validates, the rest train
    d = cfg.data
    assert (d.split, d.val_source, d.val_split, d.test_split) == ("fold00", str(task), "fold02", "fold01")
    cfg = load_config("atst_finetune", [f"data.source={task}", "data.split=fold01",
                                        f"data.val_source={task}", "data.val_split=fold00"])
    resolve_splits(cfg)
    assert cfg.data.test_split == "fold02"  # heareval's run 2: test fold02, valid fold00, train fold01
    cfg = load_config("atst_finetune", [f"data.source={task}", "data.split=fold00,fold01"])
    with pytest.warns(UserWarning, match="data.fold=0: train fold02, valid fold01, test fold00"):
        resolve_splits(cfg)  # not one of heareval's runs: no test score, and it says which runs exist
    assert cfg.data.test_split == ""
    with pytest.raises(ValueError, match="has 3 heareval run"):
        resolve_splits(load_config("atst_finetune", [f"data.source={task}", "data.fold=3"]))
    event = _tone_task(tmp_path / "ev", "trainvaltest", event=True)
    with pytest.raises(ValueError, match="event task"):
        resolve_splits(load_config("atst_finetune", [f"data.source={event}", "data.test_split=test"]))
    with pytest.raises(ValueError, match="needs a HEAR task folder"):
        resolve_splits(load_config("atst_finetune", [f"data.source={tmp_path}", "data.test_split=test"]))


# -- ATST fine-tuning ---------------------------------------------------------------------------
def _atst(tmp_path, over=()):
    from hear_models.training.engine import build_module

    task = _tone_task(tmp_path, "trainvaltest")
    cfg = load_config("atst_finetune", COMMON + TINY["atst_finetune"] + [
        f"data.source={task}", f"trainer.out_dir={tmp_path / 'atst'}", *over])
    torch.manual_seed(0)
    return build_module(cfg), task


def test_atst_segment_embedding_is_cls_and_mean_of_the_last_block_per_chunk(tmp_path):
    """[CLS ; mean of tokens] of the last block (after the final LayerNorm): for one chunk,
    what hear_models.atst's clip protocol gives for its last block; longer clips: chunks of
    the clip's log-mel encoded independently and averaged, the trailing one only when more
    than half full."""
    from hear_models.models.atst import ATSTFrameEncoder

    module, _ = _atst(tmp_path, ["model.max_seconds=2.0"])
    model = module.model.eval()
    frame = ATSTFrameEncoder(model.frontend, model.encoder, chunk_seconds=0.48).eval()
    D, L, C = model.dims.width, model.dims.layers, model.chunk_tokens
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for seconds in (0.3, 0.48):  # one chunk
            x = 0.1 * torch.randn(1, int(seconds * 16000), generator=g)
            mel, tok = module.features(x, torch.tensor([x.shape[1]]), train=False)
            ref = frame.chunk_summary(x)  # [CLS_1 .. CLS_L, mean_1 .. mean_L]
            last = torch.cat([ref[:, (L - 1) * D: L * D], ref[:, (2 * L - 1) * D:]], dim=-1)
            torch.testing.assert_close(model.segment_embedding(mel, tok), last, atol=1e-5, rtol=1e-4)
        for seconds, n_used in ((0.8, 2), (1.0, 2)):  # a 0.32 s tail (> half) counts, a 0.04 s one not
            x = 0.1 * torch.randn(1, int(seconds * 16000), generator=g)
            mel, tok = module.features(x, torch.tensor([x.shape[1]]), train=False)
            parts = []
            for start in range(0, int(tok), C)[:n_used]:
                h = model.encoder(mel[..., 4 * start: 4 * (start + C)])
                parts.append(torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1))
            torch.testing.assert_close(model.segment_embedding(mel, tok), torch.stack(parts).mean(0),
                                       atol=1e-5, rtol=1e-4)


def test_atst_crops_long_clips_centrally_and_pads_short_ones(tmp_path):
    module, _ = _atst(tmp_path)  # max_seconds 0.96
    model = module.model.eval()
    g = torch.Generator().manual_seed(1)
    x = 0.1 * torch.randn(1, 48000, generator=g)  # 3 s
    with torch.no_grad():
        p_long = module.predict(x, torch.tensor([48000]))
        centre = x[:, (48000 - 15360) // 2: (48000 - 15360) // 2 + 15360]
        p_centre = module.predict(centre, torch.tensor([15360]))
        torch.testing.assert_close(p_long, p_centre)
        # a short clip padded inside a batch gives what it gives alone
        short = x[:, :5000]
        batch = torch.cat([x[:, :15360], torch.nn.functional.pad(short, (0, 15360 - 5000))])
        p_batch = module.predict(batch, torch.tensor([15360, 5000]))
        torch.testing.assert_close(p_batch[1:], module.predict(short, torch.tensor([5000])), atol=1e-5, rtol=1e-4)
    assert model.head_norm.affine is False and model.head.in_features == 2 * model.dims.width


def test_atst_finetune_trains_every_weight_with_sgd_and_epoch_schedule(tmp_path):
    from hear_models.training.engine import fit

    module, task = _atst(tmp_path, ["model.epochs=2", "model.warmup_epochs=1", "data.batch_size=2",
                                    "data.mixup=1.0", "model.rrc=true"])
    cfg = module.cfg
    assert cfg.model.steps_per_epoch == 2 and cfg.trainer.max_steps == 4 and cfg.optim.warmup_steps == 2
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trained = fit(cfg)
    opt = trained.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    after = trained.model.state_dict()
    same = [k for k, v in after.items() if v.is_floating_point() and torch.equal(v, before[k])]
    assert not same, same  # all weights update (the paper's fine-tuning)
    from hear_models.training.engine import peak_lr, schedule_factor

    peak = peak_lr(cfg)
    assert peak == pytest.approx(0.05 * 2 / 256)  # base_lr x global batch / 256
    assert [schedule_factor(cfg, s, peak) for s in (0, 1)] == pytest.approx([0.5, 1.0])  # 2 warm-up steps
    assert schedule_factor(cfg, 4, peak) == pytest.approx(cfg.optim.min_lr / peak)  # cosine to 1e-6
    log = [json.loads(line) for line in (Path(cfg.trainer.out_dir) / "log.jsonl").read_text().splitlines()]
    assert max(r["lr"][0] for r in log) <= peak * (1 + 1e-6) and len(log) == 4
    report = json.loads((Path(cfg.trainer.out_dir) / "test_scores.json").read_text())
    assert report["test_split"] == "test" and set(report["scores"]) == {"top1_acc", "mAP"}
    assert report["checkpoint"] == "final.ckpt"  # no validation in 4 steps (val_every 100)


def test_atst_finetune_from_packaged_export_reads_in_hear_module(tmp_path):
    from hear_models.atst import load_model
    from hear_models.models.atst import load_encoder
    from hear_models.training.engine import export, fit

    task = _tone_task(tmp_path, "trainvaltest")
    out = tmp_path / "ft"
    cfg = load_config("atst_finetune", COMMON + [
        "model.init=packaged:atst_tiny_mini", "model.chunk_seconds=0.48", "model.max_seconds=0.96",
        "data.crop_seconds=0.96", "optim.base_lr=1e-9", "model.epochs=0", "trainer.max_steps=1",
        f"data.source={task}", f"trainer.out_dir={out}"])
    module = fit(cfg)
    packaged = load_encoder("packaged:atst_tiny_mini").encoder
    assert module.model.dims.width == 192 and module.model.dims.layers == 6  # sizes from the file
    for k, v in packaged.state_dict().items():
        torch.testing.assert_close(module.model.encoder.state_dict()[k], v, atol=1e-6, rtol=0)
    pt = tmp_path / "atst_ft.pt"
    export(str(out / "checkpoints" / "final.ckpt"), str(pt))
    state = torch.load(pt, weights_only=True)
    assert state["labels"] == ["high", "low"] and state["multilabel"] is False
    assert set(state["head"]) == {"head_norm.running_mean", "head_norm.running_var",
                                  "head_norm.num_batches_tracked", "head.weight", "head.bias"}
    hear = load_model(str(pt))
    assert hear.scene_embedding_size == 2 * 6 * 192
    emb = hear.scene_embeddings(0.1 * torch.randn(1, 16000))
    assert emb.shape == (1, 2304) and torch.isfinite(emb).all()


def test_configs_listing_and_every_packaged_config_builds(capsys):
    from hear_models.training.cli import main
    from hear_models.training.config import list_configs

    names = list_configs()
    for wanted in ("atst_small_pretrain", "atst_base_pretrain", "atst_finetune", "conformer_S_pretrain",
                   "conformer_L_pretrain", "maskspec_small_pretrain", "maskspec_tiny_pretrain",
                   "whisper_at_last_mlp", "whisper_at_wa_mlp", "whisper_at_wa_tr", "whisper_at_tl_tr",
                   "whisper_at_tl_tr_512"):
        assert wanted in names
    for name in names:
        load_config(name)  # names, types and the objective's model fields check out
    assert load_config("atst_small_pretrain").model.dims().width == 384
    assert load_config("atst_base_pretrain").model.momentum == 0.9995
    assert load_config("conformer_L_pretrain").model.dims().width == 768
    assert load_config("whisper_at_tl_tr_512").model.proj_dim == 512
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(names)
    row = next(line for line in lines if line.startswith("atst_base_pretrain "))
    assert "atst_pretrain" in row and " base " in row and "AudioSet" in row


def test_all_folds_reports_the_mean_over_heareval_runs(tmp_path, capsys):
    from hear_models.training.cli import main

    task = _tone_task(tmp_path)  # 3 folds: 3 heareval runs
    out = tmp_path / "kfold"
    assert main(["atst_finetune", *COMMON, *TINY["atst_finetune"], "data.batch_size=2", f"data.source={task}",
                 f"trainer.out_dir={out}", "trainer.max_steps=2", "--all-folds"]) == 0
    summary = json.loads((out / "test_scores.json").read_text())
    runs = [json.loads((out / f"fold{i:02d}" / "test_scores.json").read_text()) for i in range(3)]
    assert [r["test_split"] for r in runs] == ["fold00", "fold01", "fold02"]
    assert [r["valid_split"] for r in runs] == ["fold01", "fold02", "fold00"]
    for m in ("top1_acc", "mAP"):
        vals = [r["scores"][m] for r in runs]
        assert summary["scores"][m] == pytest.approx(np.mean(vals))
        assert summary["stds"][m] == pytest.approx(np.std(vals, ddof=1))
    assert summary["runs"] == 3 and '"runs": 3' in capsys.readouterr().out
    assert main(["maskspec_tiny_pretrain", f"data.source={task}", "--all-folds"]) == 2


def test_atst_finetune_from_an_official_audiossl_checkpoint(tmp_path):
    """A DINO-style official file: the TEACHER encoder, converted, is the starting point."""
    import argparse

    from hear_models.models.atst import checkpoint_filter_fn
    from hear_models.training.engine import build_module
    from tests.test_atst import official_state

    teacher, student = official_state(D=64, layers=1, seed=1), official_state(D=64, layers=1, seed=2)
    path = tmp_path / "official.ckpt"
    torch.save({"teacher": {"module.backbone." + k: v for k, v in teacher.items()},
                "student": {"module.backbone." + k: v for k, v in student.items()},
                "args": argparse.Namespace(arch="ast", anchor_len=[6.0, 6.0])}, path)
    task = _tone_task(tmp_path, "trainvaltest")
    cfg = load_config("atst_finetune", COMMON + [f"model.init={path}", f"data.source={task}",
                                                 f"trainer.out_dir={tmp_path / 'o'}"])
    module = build_module(cfg)
    assert (module.model.dims.width, module.model.dims.layers) == (64, 1)
    for k, v in checkpoint_filter_fn(teacher).items():
        assert torch.equal(module.model.encoder.state_dict()[k], v), k


def test_event_task_trains_on_clip_labels_and_validates_by_map(tmp_path):
    from hear_models.training.engine import fit

    task = _tone_task(tmp_path, "trainvaltest", event=True)
    with pytest.warns(UserWarning, match="event task"):
        cfg = load_config("conformer_finetune", COMMON + TINY["conformer_finetune"] + [
            f"data.source={task}", f"trainer.out_dir={tmp_path / 'ev'}", "trainer.max_steps=2",
            "trainer.val_every=1", "data.batch_size=2"])
        fit(cfg)
    log = [json.loads(line) for line in (tmp_path / "ev" / "log.jsonl").read_text().splitlines()]
    assert cfg.model.multilabel is True and 0.0 <= log[-1]["val/score"] <= 1.0  # clip-level mAP
    assert not (tmp_path / "ev" / "test_scores.json").exists()
