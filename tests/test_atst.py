"""ATST: sizes, token layout, positions, official checkpoints (seeded random, reference
forward written from audiossl's code), frames, the official scene protocol, layer options."""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from hear_models.checkpoints import CheckpointError
from hear_models.models.atst import (ATSTDims, ATSTEncoder, ATSTFrontend, TokenEmbed,
                                     count_parameters, n_tokens)

from .conftest import noise


def test_parameter_counts():
    counts = {}
    for v in ("small", "base", "tiny"):
        with torch.device("meta"):
            counts[v] = count_parameters(ATSTEncoder(ATSTDims.variant(v)))
    assert counts["small"] == 21_475_968 and round(counts["small"] / 1e6, 2) == 21.48  # models.md
    assert counts["base"] == 85_419_264 and round(counts["base"] / 1e6, 2) == 85.42
    assert counts["tiny"] == 2_763_840
    with torch.device("meta"):
        enc = ATSTEncoder(ATSTDims.variant("small"))
    assert enc.pos_embed.shape == (1, 251, 384)
    for b in enc.blocks:  # blocks without qkv bias, with an output-projection bias
        assert b.attn.query.bias is None and b.attn.key.bias is None and b.attn.value.bias is None
        assert b.attn.out.bias is not None


def test_token_layout_bin_major():
    """A token's vector is (bin, frame) bin-major: audiossl's
    Rearrange('b c (h p1) (w p2) -> b (w h) (p1 p2 c)') with p1 = 64, p2 = 4."""
    mel = torch.randn(2, 64, 4 * 5 + 3)
    te = TokenEmbed(8)
    p = te.patches(mel)
    assert p.shape == (2, 5, 256)
    for w in range(5):
        for f in (0, 17, 63):
            for t in range(4):
                assert p[0, w, f * 4 + t] == mel[0, f, 4 * w + t]


def test_positions_cut_and_limit():
    torch.manual_seed(0)
    enc = ATSTEncoder(ATSTDims(width=32, layers=1, heads=2))
    torch.nn.init.normal_(enc.pos_embed)
    mel = torch.randn(1, 64, 40)
    x = enc.tokens(mel)
    ref = torch.cat([enc.cls_token, enc.patch_embed(mel)], 1) + enc.pos_embed[:, :11]
    torch.testing.assert_close(x, ref)
    with pytest.raises(ValueError, match="position table"):
        enc.tokens(torch.randn(1, 64, 4 * 251))


def test_frames_geometry():
    assert n_tokens(96000) == 150 and n_tokens(160000) == 250 and n_tokens(640) == 1
    assert n_tokens(239) == 0
    from hear_models.atst import load_model

    m = load_model("", layers="last")
    assert m.encoder.window_samples == 96000 and m.timestamp_embedding_size == 192
    emb, ts = m.timestamp_embeddings(noise(1, 1.0, 16000))
    assert emb.shape[1] == 25 and ts[0, 0] == 15.0 and ts[0, 1] == 55.0
    assert load_model("", chunk_seconds=10.0).encoder.window_samples == 160000
    with pytest.raises(ValueError, match="chunk_seconds"):
        load_model("", chunk_seconds=10.04)
    # the front end pads in the waveform so that the last token has its 4 frames
    mel = ATSTFrontend()(noise(1, 0.05, 16000))
    assert mel.shape == (1, 64, 4) and mel.min() >= -1 - 1e-6


def test_padding_mask_equals_shorter_input():
    torch.manual_seed(0)
    enc = ATSTEncoder(ATSTDims(width=32, layers=2, heads=2)).eval()
    mel = torch.randn(1, 64, 40)
    short = enc(mel[..., :24])
    pad = torch.zeros(1, 10, dtype=torch.bool)
    pad[:, 6:] = True
    full = enc(mel, token_padding=pad)
    torch.testing.assert_close(full[:, :7], short, atol=1e-5, rtol=1e-5)


# -- official checkpoints --------------------------------------------------------------------------
def official_state(D=384, layers=2, seed=0, prefix=""):
    """A seeded random state dict in audiossl's AST layout (with mask_embed)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731
    sd = {"patch_embed.patch_embed.weight": r(D, 256), "patch_embed.patch_embed.bias": r(D),
          "cls_token": r(1, 1, D), "pos_embed": r(1, 251, D), "mask_embed": r(1, 1, D),
          "norm.weight": 1 + r(D), "norm.bias": r(D)}
    for i in range(layers):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(D), b + "norm1.bias": r(D), b + "attn.qkv.weight": r(3 * D, D),
                   b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
                   b + "norm2.weight": 1 + r(D), b + "norm2.bias": r(D),
                   b + "mlp.fc1.weight": r(4 * D, D), b + "mlp.fc1.bias": r(4 * D),
                   b + "mlp.fc2.weight": r(D, 4 * D), b + "mlp.fc2.bias": r(D)})
    return {prefix + k: v for k, v in sd.items()}


def reference_blocks(sd, mel, heads):
    """audiossl's AST.get_intermediate_layers written out: every block's output through
    ``norm`` (eps 1e-6), CLS first."""
    D = sd["cls_token"].shape[-1]
    B, H, T = mel.shape
    K = T // 4
    patches = mel[..., :4 * K].reshape(B, H, K, 4).permute(0, 2, 1, 3).reshape(B, K, 256)
    x = patches @ sd["patch_embed.patch_embed.weight"].T + sd["patch_embed.patch_embed.bias"]
    x = torch.cat([sd["cls_token"].expand(B, -1, -1), x], 1) + sd["pos_embed"][:, :K + 1]
    ln = lambda x, p: F.layer_norm(x, (D,), sd[p + ".weight"], sd[p + ".bias"], 1e-6)  # noqa: E731
    out = []
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        b = f"blocks.{i}."
        h = ln(x, b + "norm1")
        N = h.shape[1]
        qkv = (h @ sd[b + "attn.qkv.weight"].T).reshape(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = ((q @ k.transpose(-2, -1)) * (D // heads) ** -0.5).softmax(-1)
        y = (a @ v).transpose(1, 2).reshape(B, N, D) @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        x = x + y
        h = ln(x, b + "norm2")
        h = F.gelu(h @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        x = x + h @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
        out.append(ln(x, "norm"))
        i += 1
    return out


@pytest.mark.parametrize("layout", ["lightning", "dino"])
def test_official_checkpoint_teacher_strict(layout, tmp_path):
    from hear_models.atst import load_model

    teacher = official_state(seed=1)
    student = official_state(seed=2)
    if layout == "lightning":
        sd = {"model.teacher.encoder." + k: v for k, v in teacher.items()}
        sd.update({"model.student.encoder." + k: v for k, v in student.items()})
        g = torch.Generator().manual_seed(3)
        for who in ("teacher", "student"):
            sd[f"model.{who}.projector.0.weight"] = torch.randn(4096, 384, generator=g)
            sd[f"model.{who}.projector.1.running_mean"] = torch.zeros(4096)
            sd[f"model.{who}.projector.3.weight"] = torch.randn(256, 4096, generator=g)
        obj = {"state_dict": sd, "pytorch-lightning_version": "1.6.0",
               "hyper_parameters": {"arch": "small", "learning_rate": 5e-4, "train_len": 6.0}}
    else:
        obj = {"teacher": {"module.backbone." + k: v for k, v in teacher.items()},
               "student": {"module.backbone." + k: v for k, v in student.items()},
               "args": argparse.Namespace(arch="ast", anchor_len=[6.0, 6.0])}
    path = tmp_path / "atst.ckpt"
    torch.save(obj, path)
    m = load_model(str(path))
    assert m.encoder.encoder.dims.width == 384 and m.encoder.n_layers == 2
    assert m.encoder.window_samples == 96000
    audio = noise(2, 1.3, 16000, seed=4)
    mel = ATSTFrontend()(audio)
    ref = reference_blocks(teacher, mel, heads=6)
    emb, _ = m.timestamp_embeddings(audio)
    torch.testing.assert_close(emb, torch.cat([r[:, 1:] for r in ref], -1), atol=2e-4, rtol=1e-4)
    scene = m.scene_embeddings(audio)  # one chunk: [CLS_1, CLS_2, mean_1, mean_2]
    want = torch.cat([r[:, 0] for r in ref] + [r[:, 1:].mean(1) for r in ref], -1)
    torch.testing.assert_close(scene, want, atol=2e-4, rtol=1e-4)
    assert scene.shape[1] == m.scene_embedding_size == 4 * 384
    # the student when asked
    ms = load_model(str(path), which="student")
    ref_s = reference_blocks(student, mel, heads=6)
    torch.testing.assert_close(ms.timestamp_embeddings(audio)[0][..., -384:], ref_s[-1][:, 1:],
                               atol=2e-4, rtol=1e-4)


def test_official_checkpoint_errors(tmp_path):
    from hear_models.atst import load_model

    sd = official_state(D=192, layers=1)
    bad = dict(sd, **{"blocks.0.attn.qkv.bias": torch.zeros(3 * 192)})
    torch.save({"teacher": bad}, tmp_path / "qkvbias.pth")
    with pytest.raises(CheckpointError, match="qkv bias"):
        load_model(str(tmp_path / "qkvbias.pth"))
    for extra in ("fc.weight", "blocks.0.attn.rel_pos"):
        torch.save({"teacher": dict(sd, **{extra: torch.zeros(3)})}, tmp_path / "extra.pth")
        with pytest.raises(CheckpointError, match="unexpected key"):
            load_model(str(tmp_path / "extra.pth"))
    # a wrapper's heads are not the encoder: left out, as audiossl's strict=False load does
    torch.save({"teacher": dict(sd, **{"head.mlp.0.weight": torch.zeros(3)})}, tmp_path / "head.pth")
    assert load_model(str(tmp_path / "head.pth")).encoder.n_layers == 1
    missing = {k: v for k, v in sd.items() if k != "blocks.0.mlp.fc2.bias"}
    torch.save({"teacher": missing}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(str(tmp_path / "missing.pth"))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an ATST checkpoint"):
        load_model(str(tmp_path / "other.pth"))
    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "nope.pth"))


# -- the HEAR module ------------------------------------------------------------------------------
def test_scene_protocol_chunks_and_trailing_rule(get_model):
    """6 s chunks, per chunk [CLS ; mean] per block; a trailing chunk counts only when more
    than half full."""
    from hear_models.atst import load_model

    m = load_model("", precision="fp32")  # the official 6 s chunks (atst_tiny: its 2 s views)
    enc = m.encoder
    assert m.scene_embedding_size == 2 * 6 * 192
    for seconds, counted in ((13.0, 2), (16.0, 3)):
        audio = noise(2, seconds, 16000, seed=5)
        want = sum(enc.chunk_summary(audio[:, 96000 * i: 96000 * (i + 1)]) for i in range(counted)) / counted
        got = m.scene_embeddings(audio)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_official_crop_keeps_the_central_12_seconds():
    """official_crop=True: audiossl's CentralCrop(int(16000 * 12), pad=False) before the
    scene protocol, start (n - 192000) // 2; clips up to 12 s unchanged; timestamps untouched;
    off by default."""
    from hear_models.atst import load_model, official_central_crop

    default = load_model("packaged:atst_tiny_mini", precision="fp32")  # float32 numerics compared
    assert default.official_crop is False
    m = load_model("packaged:atst_tiny_mini", official_crop=True, precision="fp32")
    assert "official central 12 s crop" in m.name
    audio = 0.01 * noise(2, 13.0, 16000, seed=7)  # 208000 samples: start 8000
    t = torch.arange(8000) / 16000
    audio[:, :8000] += torch.sin(2 * math.pi * 440 * t)  # a tone in the 0.5 s the crop drops
    x = torch.arange(208001.0)
    assert torch.equal(official_central_crop(x, 16000), x[8000:200000])  # odd excess: floor
    assert torch.equal(official_central_crop(x[:192000], 16000), x[:192000])
    assert torch.equal(official_central_crop(x[:50000], 16000), x[:50000])  # no padding
    cropped = m.scene_embeddings(audio)
    torch.testing.assert_close(cropped, default.scene_embeddings(audio[:, 8000:200000]), atol=1e-6, rtol=1e-6)
    whole = default.scene_embeddings(audio)
    assert float((cropped - whole).norm() / whole.norm()) > 1e-2
    short = audio[:, :16000 * 5]
    torch.testing.assert_close(m.scene_embeddings(short), default.scene_embeddings(short))
    e, ts = m.timestamp_embeddings(audio)
    e0, ts0 = default.timestamp_embeddings(audio)
    assert torch.equal(ts, ts0) and torch.equal(e, e0)
    with pytest.raises(ValueError, match="official_crop"):
        load_model("", official_crop="yes")


@pytest.mark.parametrize("layers,combine,width", [("all", "concat", 6 * 192), ("all", "mean", 192),
                                                  ("last", "concat", 192), ([0, 2], "concat", 384)])
def test_layer_options(layers, combine, width, get_model):
    from hear_models.atst import load_model

    full = get_model("atst_tiny")
    m = load_model("packaged:atst_tiny_mini", layers=layers, combine=combine)
    assert m.timestamp_embedding_size == width
    assert m.scene_embedding_size == full.scene_embedding_size  # the scene protocol is fixed
    audio = noise(1, 1.2, 16000, seed=6)
    e, _ = m.timestamp_embeddings(audio)
    ref, _ = full.timestamp_embeddings(audio)
    blocks = ref.view(1, -1, 6, 192)
    want = {("all", "concat"): ref, ("all", "mean"): blocks.mean(2), ("last", "concat"): blocks[:, :, 5],
            ("[0, 2]", "concat"): blocks[:, :, [0, 2]].reshape(1, -1, 384)}[(str(layers), combine)]
    torch.testing.assert_close(e, want, atol=1e-5, rtol=1e-5)
    hidden = list(m.encoder.hidden_states(audio))
    assert len(hidden) == 6 and hidden[0].shape == (1, 30, 192)


def test_export_format_roundtrip(tmp_path):
    from hear_models.atst import EXPORT_FORMAT, load_model

    m = load_model("")
    enc = m.encoder.encoder
    state = {"format": EXPORT_FORMAT, "dims": enc.dims.to_dict(),
             "state_dict": {"encoder." + k: v for k, v in enc.state_dict().items()}}
    torch.save(state, tmp_path / "e.pt")
    m2 = load_model(str(tmp_path / "e.pt"))
    a = noise(1, 0.7, 16000)
    torch.testing.assert_close(m2.scene_embeddings(a), m.scene_embeddings(a))
