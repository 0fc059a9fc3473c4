"""Reading checkpoint files: published files that pickle more than tensors load without
running any code from them, and every bad file is reported with its path and the problem
in words (not found, not a checkpoint, corrupt, another family or objective, keys that do
not fit), by every family's loader and by ``--resume``."""

import argparse
import os
import pathlib
import sys
import types

import numpy as np
import pytest
import torch

from hear_models.checkpoints import CheckpointError, UnloadedGlobal, packaged_weights, torch_load_trusted_weights
from hear_models.models import atst, conformer, maskspec

FAMILIES = {"maskspec": maskspec, "atst": atst, "conformer": conformer}


def packaged(name):
    return torch.load(packaged_weights(f"{name}_tiny_mini"), weights_only=True)


@pytest.fixture
def absent_module():
    """A module that exists only while the file is written (a user's training code)."""
    name = "hm_test_absent_pkg"
    pkg, mod = types.ModuleType(name), types.ModuleType(f"{name}.config")
    exec("class RunConfig:\n    def __init__(self):\n        self.lr = 1e-3\n        self.tags = ['a']\n",
         mod.__dict__)
    sys.modules[name], sys.modules[f"{name}.config"] = pkg, mod
    try:
        yield mod
    finally:
        sys.modules.pop(name, None)
        sys.modules.pop(f"{name}.config", None)


# -- files as published ------------------------------------------------------------------------
def test_published_files_with_pickled_classes_load_their_weights(tmp_path, absent_module):
    """A Lightning-style checkpoint whose hyper-parameters hold a Namespace, a PosixPath, a
    numpy scalar and an instance of a class of a module the user does not have, and an
    MAE-style {"model", "optimizer", "args"} file, load; the tensors are the saved ones."""
    export = packaged("maskspec")
    sd = export["state_dict"]
    hparams = {"args": argparse.Namespace(lr=0.1, out=pathlib.Path("/runs/a")),
               "root": pathlib.PosixPath("/data/audioset"), "scale": np.float32(2.5),
               "dtype": np.dtype("float64"), "mean": np.arange(3.0),
               "cfg": absent_module.RunConfig()}
    lightning = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": sd, "hyper_parameters": hparams, "epoch": 3}, lightning)
    mae = tmp_path / "mae.pth"
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
                "args": argparse.Namespace(model="mae_vit_tiny", norm_pix_loss=False), "epoch": 3,
                "scaler": absent_module.RunConfig()}, mae)
    sys.modules.pop(absent_module.__name__)  # the user loading the file does not have it
    sys.modules.pop(absent_module.__name__.split(".")[0])

    obj = torch_load_trusted_weights(lightning)
    hp = obj["hyper_parameters"]
    assert hp["args"] == argparse.Namespace(lr=0.1, out=pathlib.PosixPath("/runs/a"))
    assert hp["root"] == pathlib.PosixPath("/data/audioset")
    assert hp["scale"] == np.float32(2.5) and hp["scale"].dtype == np.float32
    assert hp["dtype"] == np.dtype("float64") and np.array_equal(hp["mean"], np.arange(3.0))
    cfg = hp["cfg"]  # a placeholder that kept what the file said, never the class itself
    assert isinstance(cfg, UnloadedGlobal)
    assert cfg.pickled_global == "hm_test_absent_pkg.config.RunConfig"
    assert cfg.state == {"lr": 1e-3, "tags": ["a"]}
    assert "hm_test_absent_pkg" not in sys.modules  # nothing was imported
    for k, v in sd.items():
        assert torch.equal(obj["state_dict"][k], v), k

    for path in (lightning, mae):  # through the family's loader: the weights are the saved ones
        loaded = maskspec.load_encoder(str(path))
        for k, v in loaded.encoder.state_dict().items():
            assert torch.equal(v, sd[f"encoder.{k}"]), (path, k)


def test_a_pickle_that_would_run_code_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"

    class Shell:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    class Eval:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w')",)

    for name, payload, refused in (("system", Shell(), "posix.system"), ("eval", Eval(), "builtins.eval")):
        path = tmp_path / f"{name}.pt"
        torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": payload}, path)
        for load in (torch_load_trusted_weights, maskspec.load_encoder):
            with pytest.raises(CheckpointError) as e:
                load(str(path))
            msg = str(e.value)
            assert str(path) in msg and refused in msg and "Nothing was executed" in msg, msg
        assert not marker.exists()


def test_a_placeheld_function_is_never_called(tmp_path):
    """A global of an ordinary module becomes a placeholder even when that module is
    importable: the function the file names is not called."""
    marker = tmp_path / "called"
    mod = types.ModuleType("hm_test_side_effect")
    exec(f"def touch(*a):\n    open({str(marker)!r}, 'w').close()\n", mod.__dict__)
    sys.modules[mod.__name__] = mod
    try:
        class Call:
            def __reduce__(self):
                return mod.touch, ("x", 1)

        path = tmp_path / "call.pt"
        torch.save({"w": torch.ones(2), "hook": Call()}, path)
        obj = torch_load_trusted_weights(path)
    finally:
        sys.modules.pop(mod.__name__)
    assert not marker.exists()
    assert isinstance(obj["hook"], UnloadedGlobal) and obj["hook"].args == ("x", 1)
    assert obj["hook"].pickled_global == "hm_test_side_effect.touch"
    assert torch.equal(obj["w"], torch.ones(2))


# -- files that are not checkpoints, or broken ---------------------------------------------------
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.pt").write_text("model: maskspec\nlr: 0.1\n")
    (d / "empty.pt").write_bytes(b"")
    (d / "random.pt").write_bytes(np.random.default_rng(0).bytes(4000))
    whole = d / "whole.pt"
    torch.save(packaged("maskspec"), whole)
    data = whole.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    return d


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("name,words", [
    ("missing.pt", "checkpoint file not found"),
    ("notes.pt", "not a checkpoint, the file is text"),
    ("empty.pt", "not a checkpoint, the file is empty"),
    ("random.pt", "not a checkpoint or corrupt"),
    ("truncated.pt", "corrupt or truncated checkpoint"),
])
def test_bad_files_are_named_with_the_problem(bad_files, family, name, words):
    path = bad_files / name
    with pytest.raises((CheckpointError, FileNotFoundError)) as e:
        FAMILIES[family].load_encoder(str(path))
    assert str(path) in str(e.value) and words in str(e.value), str(e.value)
    assert "pickled code" not in str(e.value)  # corrupt is not "needs code"


# -- files of another family ---------------------------------------------------------------------
def official_maskspec(sd):
    """models_mae key names (official MaskSpec pretraining), enough to be recognised."""
    return {"model": {"cls_token": sd["encoder.cls_token"], "mask_token": torch.zeros(1, 1, 8),
                      "blocks.0.attn.qkv.weight": torch.zeros(96, 32),
                      "decoder_embed.weight": torch.zeros(8, 32)},
            "args": argparse.Namespace(model="mae_vit_base_patch16")}


def official_atst():
    """audiossl ATST Lightning key names, enough to be recognised."""
    return {"state_dict": {"model.teacher.encoder.patch_embed.patch_embed.weight": torch.zeros(4, 1, 64, 4),
                           "model.teacher.encoder.blocks.0.attn.qkv.weight": torch.zeros(12, 4)}}


@pytest.mark.parametrize("family,file,words", [
    ("atst", "maskspec_export", "it is a MaskSpec export (format 'hear_models.maskspec/1')"),
    ("conformer", "maskspec_export", "it is a MaskSpec export"),
    ("atst", "maskspec_state_dict", "it is MaskSpec weights (hear-models key names)"),
    ("atst", "maskspec_official", "it is an official MaskSpec (models_mae) pretraining checkpoint"),
    ("conformer", "maskspec_official", "it is an official MaskSpec (models_mae)"),
    ("maskspec", "atst_export", "it is an ATST export (format 'hear_models.atst/1')"),
    ("maskspec", "atst_official", "it is an official ATST (audiossl) checkpoint"),
    ("conformer", "atst_official", "it is an official ATST (audiossl) checkpoint"),
    ("maskspec", "conformer_export", "it is a Conformer SSL export"),
    ("atst", "conformer_state_dict", "it is Conformer SSL weights"),
])
def test_a_file_of_another_family_says_which(tmp_path, family, file, words):
    ms, at, cf = packaged("maskspec"), packaged("atst"), packaged("conformer")
    content = {"maskspec_export": ms, "maskspec_state_dict": ms["state_dict"],
               "maskspec_official": official_maskspec(ms["state_dict"]),
               "atst_export": at, "atst_official": official_atst(), "conformer_export": cf,
               "conformer_state_dict": {f"encoder.{k}": v for k, v in cf["state_dict"].items()}}[file]
    path = tmp_path / f"{file}.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError) as e:
        FAMILIES[family].load_encoder(str(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}: not a") and words in msg, msg


# -- keys and sizes --------------------------------------------------------------------------
def test_a_corrupted_mlp_is_the_key_reported(tmp_path):
    """Sizes come from what the blocks agree on: a corrupted fc1 of block 0 is reported with
    the shape the model declares, and no other block is blamed."""
    sd = dict(packaged("maskspec")["state_dict"])
    key = "encoder.blocks.0.mlp.0.weight"
    good = tuple(sd[key].shape)
    sd[key] = sd[key][:-5]
    path = tmp_path / "fc1.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        maskspec.load_encoder(str(path))
    msg = str(e.value)
    assert str(path) in msg and f"{key} {tuple(sd[key].shape)} (expected {good})" in msg, msg
    assert "blocks.1" not in msg

    sd = {k[len("encoder."):]: v for k, v in packaged("atst")["state_dict"].items()}
    key = "blocks.1.mlp.0.weight"
    good = tuple(sd[key].shape)
    sd[key] = torch.zeros(good[0] + 3, good[1])
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        atst.load_encoder(str(path))
    assert f"{key} {(good[0] + 3, good[1])} (expected {good})" in str(e.value), str(e.value)
    assert "blocks.0" not in str(e.value)


def test_atst_position_table_of_the_wrong_length(tmp_path):
    sd = {k[len("encoder."):]: v for k, v in packaged("atst")["state_dict"].items()}
    sd["pos_embed"] = sd["pos_embed"][:, :101]
    path = tmp_path / "pos.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        atst.load_encoder(str(path))
    msg = str(e.value)
    assert str(path) in msg and "pos_embed has 101 rows" in msg and "251" in msg, msg
    assert "chunk_seconds" not in msg


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = dict(packaged("conformer")["state_dict"])
    sd.pop("context.proj.bias")
    sd["context.extra.weight"] = torch.zeros(2)
    path = tmp_path / "keys.pt"
    torch.save({f"encoder.{k}": v for k, v in sd.items()}, path)
    with pytest.raises(CheckpointError) as e:
        conformer.load_encoder(str(path))
    msg = str(e.value)
    assert str(path) in msg and "missing ['context.proj.bias']" in msg, msg


# -- --resume --------------------------------------------------------------------------------
def test_resume_with_a_checkpoint_of_another_objective_or_size(tmp_path):
    from hear_models.training.config import load_config
    from hear_models.training.engine import CKPT_KEY, build_module, check_resume

    tiny = ["model.width=32", "model.heads=2", "model.layers=2", "model.decoder_width=32",
            "model.decoder_layers=1", "model.decoder_heads=2"]
    cfg = load_config("maskspec_tiny_pretrain", tiny)
    module = build_module(cfg)
    good = {CKPT_KEY: {"config": cfg.to_dict()}, "state_dict": module.state_dict()}
    check_resume(good, module, "run/last.ckpt")  # its own checkpoint: fine

    other = dict(good, **{CKPT_KEY: {"config": dict(cfg.to_dict(), objective="atst_pretrain")}})
    with pytest.raises(CheckpointError, match=r"--resume other.ckpt: a checkpoint of objective "
                                              r"'atst_pretrain'; this run trains 'maskspec_pretrain'"):
        check_resume(other, module, "other.ckpt")

    wide = build_module(load_config("maskspec_tiny_pretrain", [*tiny, "model.width=64"]))
    bigger = dict(good, state_dict=wide.state_dict())
    with pytest.raises(CheckpointError) as e:
        check_resume(bigger, module, "wide.ckpt")
    assert "--resume wide.ckpt: does not fit this run's maskspec_pretrain model" in str(e.value)
    assert "(expected (1, 1, 32))" in str(e.value)

    with pytest.raises(CheckpointError, match="--resume ms.pt: not a hear-models training checkpoint.*"
                                              "it is a MaskSpec export"):
        check_resume(packaged("maskspec"), module, "ms.pt")


def test_fit_refuses_to_resume_from_another_objectives_checkpoint(tmp_path):
    """Through the training engine: Lightning never sees the file (no raw key lists)."""
    import soundfile as sf

    from hear_models.training.config import load_config
    from hear_models.training.engine import CKPT_KEY, fit

    rng = np.random.default_rng(0)
    (tmp_path / "audio").mkdir()
    for i in range(4):
        sf.write(str(tmp_path / "audio" / f"c{i}.wav"), 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
    over = ["model.width=32", "model.heads=2", "model.layers=2", "model.decoder_width=32",
            "model.decoder_layers=1", "model.decoder_heads=2", "data.crop_seconds=0.64",
            "data.batch_size=2", "data.num_workers=0", "trainer.progress_bar=false",
            "trainer.accelerator=cpu", "trainer.devices=1", "trainer.max_steps=1",
            f"data.source={tmp_path / 'audio'}"]
    fit(load_config("maskspec_tiny_pretrain", [*over, f"trainer.out_dir={tmp_path / 'a'}"]))
    ckpt = torch.load(tmp_path / "a/checkpoints/last.ckpt", weights_only=True)
    ckpt[CKPT_KEY]["config"]["objective"] = "atst_pretrain"
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    with pytest.raises(CheckpointError, match=f"--resume {other}: a checkpoint of objective 'atst_pretrain'"):
        fit(load_config("maskspec_tiny_pretrain", [*over, f"trainer.out_dir={tmp_path / 'b'}",
                                                  "trainer.max_steps=2"]), resume=str(other))


def test_whisper_and_tagging_head_loaders_say_what_the_file_is(tmp_path):
    from hear_models.checkpoints import load_whisper
    from hear_models.tagging import load_head

    path = tmp_path / "atst.pt"
    torch.save(packaged("atst"), path)
    with pytest.raises(CheckpointError, match="not an openai-whisper checkpoint.*it is an ATST export"):
        load_whisper(str(path))
    with pytest.raises(ValueError, match="not a Whisper-AT head checkpoint: it is an ATST export"):
        load_head(str(path))
    (tmp_path / "notes.pt").write_text("labels: speech\n")
    for load in (load_whisper, load_head):
        with pytest.raises(CheckpointError, match="not a checkpoint, the file is text"):
            load(str(tmp_path / "notes.pt"))
