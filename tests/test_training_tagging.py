"""Whisper-AT head training in the shared engine: feature cache, recipe, resume, export."""

import shutil

import pytest
import torch

from hear_models.models.whisper_at_heads import pool_time

from tests.conftest import copy_tasks, need  # noqa: E402

need("lightning")


@pytest.fixture(scope="module")
def task(smoke_suite, tmp_path_factory):
    out = copy_tasks(smoke_suite, tmp_path_factory.mktemp("tasks"), ["sound_mixtures"])
    return next(p for p in out.iterdir() if p.name.startswith("sound_mixtures"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("feature_cache")  # shared: features are extracted once


@pytest.fixture
def _cfg(cache):
    def make(task, tmp, **over):
        return _config(task, tmp, cache, **over)
    return make


def _config(task, tmp, cache, **over):
    from hear_models.training.config import load_config

    args = {"data.source": str(task), "data.split": "train", "model.whisper": "offline:tiny.en",
            "model.cache_dir": str(cache), "trainer.out_dir": str(tmp / "run"),
            "data.batch_size": 8, "trainer.max_steps": 12, "trainer.checkpoint_every": 6,
            "trainer.log_every": 3, "trainer.progress_bar": False, "model.proj_dim": 32}
    args.update(over)
    return load_config("whisper_at_tl_tr", [f"{k}={v}" for k, v in args.items()])


def test_features_extracted_once_and_exact(task, tmp_path, monkeypatch, _cfg):
    from hear_models.audio import load_audio
    from hear_models.checkpoints import load_whisper
    from hear_models.models.whisper import WhisperEncoder
    from hear_models.training.tagging import FeatureSet, extract_features

    cfg = _cfg(task, tmp_path).model
    folder = extract_features(str(task), "train", cfg, progress=False)
    fs = FeatureSet(folder)
    assert fs.multilabel and fs.n_layers == 4 and fs.width == 384 and len(fs) > 10
    clip = fs.clips[0]
    enc = WhisperEncoder(load_whisper("offline:tiny.en").encoder)
    audio = torch.from_numpy(load_audio(clip["path"], 16000))[None]
    with torch.inference_mode():
        ref = pool_time(torch.stack(list(enc.hidden_states(audio)), 1))[0]  # (L, T, D)
    x, mask = fs.window(0, clip["n_pooled"], None)
    assert not mask.any()
    torch.testing.assert_close(x, ref, atol=2e-2, rtol=2e-3)  # stored as float16
    # a second call (another head type, say) reuses the cache: no backbone is loaded
    monkeypatch.setattr("hear_models.checkpoints.load_whisper", lambda *a, **k: pytest.fail("re-extracted"))
    assert extract_features(str(task), "train", cfg, progress=False) == folder


def test_batches_are_a_function_of_seed_and_step_and_balanced(task, tmp_path, _cfg):
    from hear_models.training.tagging import FeatureSet, _FeatureBatches, extract_features

    cfg = _cfg(task, tmp_path).model
    fs = FeatureSet(extract_features(str(task), "train", cfg, progress=False))
    a, b = _FeatureBatches(fs, cfg, 8, 0, 0), _FeatureBatches(fs, cfg, 8, 0, 0)
    for k in (0, 5):
        for key in ("features", "padding_mask", "targets"):
            assert torch.equal(a.batch(k)[key], b.batch(k)[key])
    assert not torch.equal(a.batch(0)["features"], a.batch(1)["features"])
    x = a.batch(0)
    assert x["features"].shape == (8, 4, 25, 384) and x["targets"].shape == (8, len(fs.vocab))
    # balanced sampling: the rarest label is drawn more often than its share of clips
    counts = fs.targets.sum(0)
    rare = int(counts.argmin())
    share = float((fs.targets[:, rare] > 0).float().mean())
    w = fs.sample_weights()
    drawn = float(w[fs.targets[:, rare] > 0].sum() / w.sum())
    assert drawn > share


def test_training_learns_resumes_and_exports(task, tmp_path, _cfg):
    from hear_models.tagging import load_head
    from hear_models.training.engine import export, fit
    from hear_models.training.tagging import FeatureSet

    quiet = {"model.mixup": 0.0, "model.time_mask": 0, "model.label_smoothing": 0.0, "optim.lr": 3e-3}
    module = fit(_cfg(task, tmp_path, **quiet))
    fs = FeatureSet(module.cache)
    x = torch.stack([fs.window(i, 25, None)[0] for i in range(len(fs))])
    m = torch.stack([fs.window(i, 25, None)[1] for i in range(len(fs))])
    from hear_models.models.whisper_at_heads import create_head

    torch.manual_seed(0)
    init = create_head("tl_tr", 4, 384, len(fs.vocab), 32)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    with torch.no_grad():
        before = float(bce(init(x, m), fs.targets))
        trained = module.model.eval()
        after = float(bce(trained(x, m), fs.targets))
    assert after < before, (before, after)

    # resume from step 6 in a fresh folder: the same final weights and weight average
    run2 = tmp_path / "run2"
    (run2 / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "run" / "checkpoints" / "step0000006.ckpt", run2 / "checkpoints" / "last.ckpt")
    resumed = fit(_cfg(task, tmp_path, **quiet, **{"trainer.out_dir": str(run2)}), resume="auto")
    for (k, a), (_, b) in zip(module.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert resumed.n_averaged == module.n_averaged > 0
    for k in module.average:
        assert torch.equal(module.average[k], resumed.average[k]), k

    # export -> a head file the HEAR module and `tag` read, carrying the task's labels
    out = tmp_path / "head.pt"
    export(str(tmp_path / "run" / "checkpoints" / "final.ckpt"), str(out))
    hf = load_head(out)
    assert hf.labels == fs.vocab and hf.meta["averaged_steps"] == module.n_averaged
    for k, v in hf.head.state_dict().items():
        torch.testing.assert_close(v, module.average[k])
    from hear_models import whisper_at

    hm = whisper_at.load_model("offline:tiny.en", head=str(out))
    assert hm.scene_embedding_size == 384 + len(fs.vocab)
