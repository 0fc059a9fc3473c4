"""MaskSpec: sizes, position embeddings, patches, masking, loss, gradients, learning,
official checkpoints, and the HEAR module's 40 ms frames."""

import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hear_models.models.maskspec import (MaskSpecClassifier, MaskSpecDims, MaskSpecFrameEncoder,
                                         MaskSpecMAE, checkpoint_filter_fn, count_trainable,
                                         decoder_parameters,
                                         patch_padding, sincos_2d)
from hear_models.models import load_strict
from hear_models.training.maskspec import param_groups_lrd

SMALL = dict(width=32, heads=2, layers=2, decoder_width=32, decoder_heads=2, decoder_layers=1)


def small_mae(**kw):
    torch.manual_seed(0)
    return MaskSpecMAE(MaskSpecDims.variant("tiny", **{**SMALL, **kw}))


# -- sizes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("variant,exact,stated,digits", [
    ("base", 85_254_144, 85.25, 2), ("small", 21_393_408, 21.4, 1), ("tiny", 5_388_288, 5.39, 2)])
def test_encoder_parameter_counts(variant, exact, stated, digits):
    m = MaskSpecMAE(MaskSpecDims.variant(variant))
    n = count_trainable(m.encoder)
    assert n == exact
    assert round(n / 1e6, digits) == stated
    assert m.encoder.dims.layers == 12 and len(m.encoder.blocks) == 12
    if variant == "base":
        dec = sum(p.numel() for p in decoder_parameters(m))
        assert dec == 25_745_664 and round(dec / 1e6, 1) == 25.7
        # the fixed position table of the paper's 8 x 62 grid (+ CLS): 0.38M, not trainable
        assert round(497 * 768 / 1e6, 2) == 0.38
        assert not any("pos" in k for k in m.state_dict())
    assert count_trainable(m.frontend) == 0


def test_block_options():
    m = small_mae()
    b = m.encoder.blocks[0]
    assert b.attn.key.bias is not None and b.attn.query.bias is not None  # qkv bias
    assert b.attn_ln.eps == 1e-6 and m.encoder.norm.eps == 1e-6
    assert b.mlp[0].out_features == 4 * 32  # MLP ratio 4


# -- position embeddings ----------------------------------------------------------------------
def _mae_reference_pos(dim, gh, gw):
    """The formula of MAE's get_2d_sincos_pos_embed (meshgrid with w first), in numpy."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    grid = np.stack(np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32)), 0)
    grid = grid.reshape(2, 1, gh, gw)
    return np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)


@pytest.mark.parametrize("gh,gw", [(8, 62), (8, 3), (2, 2)])
def test_sincos_matches_mae_layout_for_any_grid(gh, gw):
    ref = torch.from_numpy(_mae_reference_pos(64, gh, gw)).float()
    torch.testing.assert_close(sincos_2d(64, gh, gw), ref, atol=1e-6, rtol=0)


# -- patches, masking, loss ---------------------------------------------------------------------
@pytest.mark.parametrize("frames", [64, 200, 992])
def test_patchify_roundtrip_non_square_and_conv_order(frames):
    m = small_mae()
    mel = torch.randn(2, 128, frames)
    patches, grid = m.patchify(mel)
    assert grid == (8, frames // 16) and patches.shape == (2, 8 * (frames // 16), 256)
    assert torch.equal(m.unpatchify(patches, grid), mel[..., : frames // 16 * 16])
    # the patch embedding (a strided Conv2d) orders tokens and pixels as patchify does
    conv = m.encoder.patch_embed.proj
    with torch.no_grad():
        w = torch.zeros_like(conv.weight)
        w.view(32, 256)[torch.arange(32), torch.arange(32) * 7] = 1.0  # token ch c = pixel 7c
        conv.weight.copy_(w)
        conv.bias.zero_()
    tokens, _ = m.encoder.patch_embed(mel)
    torch.testing.assert_close(tokens, patches[..., torch.arange(32) * 7])


def test_paper_grid_496_patches():
    m = small_mae()
    _, grid = m.patchify(torch.zeros(1, 128, 992))
    assert grid == (8, 62) and grid[0] * grid[1] == 496


def test_random_masking_exact_ratio_per_sample_and_visible_only():
    m = small_mae()
    torch.manual_seed(1)
    mel = torch.randn(4, 128, 160)  # 8 x 10 = 80 patches
    latent, mask, ids_restore, grid, _ = m.forward_encoder(mel, 0.75)
    assert grid == (8, 10) and mask.shape == (4, 80)
    assert (mask.sum(1) == 60).all()  # exactly 75 % of every sample
    assert len({tuple(r.tolist()) for r in mask}) == 4  # different per sample
    assert latent.shape == (4, 1 + 20, 32)  # CLS + the 20 visible patches only
    # the encoder never sees masked patches: changing them does not change the latent
    noise = torch.rand(4, 80)
    lat1, mask1, *_ = m.forward_encoder(mel, 0.75, noise=noise)
    patches, _ = m.patchify(mel)
    patches2 = patches + 10.0 * mask1[..., None] * torch.randn_like(patches)
    lat2, *_ = m.forward_encoder(m.unpatchify(patches2, grid), 0.75, noise=noise)
    torch.testing.assert_close(lat1, lat2)
    # ids_restore un-shuffles: visible positions are exactly those with mask 0
    keep = torch.argsort(noise, 1)[:, :20]
    assert torch.equal(torch.zeros(4, 20), torch.gather(mask1, 1, keep))


def test_loss_only_on_masked_patches():
    m = small_mae()
    torch.manual_seed(2)
    mel = torch.randn(2, 128, 96)
    loss, pred, mask = m(mel)
    patches, grid = m.patchify(mel)
    visible_changed = m.unpatchify(patches + 5 * (1 - mask)[..., None] * torch.randn_like(patches), grid)
    masked_changed = m.unpatchify(patches + 5 * mask[..., None] * torch.randn_like(patches), grid)
    base = m.forward_loss(mel, pred, mask)
    torch.testing.assert_close(m.forward_loss(visible_changed, pred, mask), base)
    assert not torch.allclose(m.forward_loss(masked_changed, pred, mask), base)
    # per-patch normalised targets: a patch's loss ignores its offset and scale
    torch.testing.assert_close(m.forward_loss(mel * 3 + 1, pred, mask), base, atol=1e-4, rtol=1e-4)
    # padded patches do not count even when masked
    pad = patch_padding(torch.tensor([96, 40]), 96)
    assert pad.shape == (2, 48) and pad[1].view(8, 6)[:, 3:].all() and not pad[0].any()
    padded_changed = m.unpatchify(patches + 5 * pad[..., None] * torch.randn_like(patches), grid)
    torch.testing.assert_close(m.forward_loss(padded_changed, pred, mask, pad), m.forward_loss(mel, pred, mask, pad))


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = MaskSpecMAE(MaskSpecDims.variant("tiny", layers=2, decoder_layers=2))
    loss, _, _ = m(torch.randn(2, 128, 64))
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing
    c = MaskSpecClassifier(MaskSpecDims.variant("tiny", layers=2), 5)
    F.cross_entropy(c(torch.randn(2, 128, 64)), torch.tensor([1, 3])).backward()
    assert all(p.grad is not None for p in c.parameters() if p.requires_grad)
    assert not c.encoder.norm.weight.requires_grad  # unused by the mean-pooled head


def test_a_few_steps_reduce_the_loss():
    m = small_mae()
    torch.manual_seed(3)
    t = torch.linspace(0, 1, 96)
    mel = torch.stack([torch.sin(2 * math.pi * (3 + i) * t)[None].expand(128, -1) *
                       torch.linspace(-1, 1, 128)[:, None] for i in range(4)])
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.05)
    noise = torch.rand(4, 48)
    first = None
    for step in range(30):
        loss, _, _ = m(mel, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    last = float(loss.detach())
    assert last < 0.8 * first, (first, last)


def test_classifier_and_layer_decay_groups():
    c = MaskSpecClassifier(MaskSpecDims.variant("tiny", **SMALL), 3)
    out = c(torch.randn(2, 128, 50), padding=patch_padding(torch.tensor([50, 20]), 50))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    groups = param_groups_lrd(c, 0.05, 0.75, 2)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    assert scale["head.weight"] == 1.0 and scale["encoder.blocks.1.mlp.0.weight"] == 0.75
    assert scale["encoder.blocks.0.mlp.0.weight"] == 0.75 ** 2 and scale["encoder.patch_embed.proj.weight"] == 0.75 ** 3
    wd = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert wd["head.bias"] == 0 and wd["encoder.cls_token"] == 0 and wd["head.weight"] == 0.05


# -- official checkpoints --------------------------------------------------------------------------
def official_state_dict(D=32, depth=2, Dd=32, ddepth=1, frames_grid=(8, 4), seed=0):
    """A seeded random state dict with the key layout of the official models_mae
    (timm PatchEmbed / Block names), fixed sin-cos tables included."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731
    sd = {"cls_token": r(1, 1, D), "patch_embed.proj.weight": r(D, 1, 16, 16), "patch_embed.proj.bias": r(D),
          "norm.weight": 1 + r(D), "norm.bias": r(D), "decoder_embed.weight": r(Dd, D),
          "decoder_embed.bias": r(Dd), "mask_token": r(1, 1, Dd), "decoder_norm.weight": 1 + r(Dd),
          "decoder_norm.bias": r(Dd), "decoder_pred.weight": r(256, Dd), "decoder_pred.bias": r(256)}
    h, w = frames_grid
    for key, width in (("pos_embed", D), ("decoder_pos_embed", Dd)):
        table = torch.from_numpy(_mae_reference_pos(width, h, w)).float()
        sd[key] = torch.cat([torch.zeros(1, width), table])[None]
    for prefix, n, width in (("blocks", depth, D), ("decoder_blocks", ddepth, Dd)):
        for i in range(n):
            b = f"{prefix}.{i}."
            sd.update({b + "norm1.weight": 1 + r(width), b + "norm1.bias": r(width),
                       b + "attn.qkv.weight": r(3 * width, width), b + "attn.qkv.bias": r(3 * width),
                       b + "attn.proj.weight": r(width, width), b + "attn.proj.bias": r(width),
                       b + "norm2.weight": 1 + r(width), b + "norm2.bias": r(width),
                       b + "mlp.fc1.weight": r(4 * width, width), b + "mlp.fc1.bias": r(4 * width),
                       b + "mlp.fc2.weight": r(width, 4 * width), b + "mlp.fc2.bias": r(width)})
    return sd


def reference_encoder(sd, mel, heads=2):
    """timm-style ViT forward on the official keys (no masking): tokens after ``norm``."""
    x = F.conv2d(mel[:, None], sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2)
    L = x.shape[1]
    x = x + sd["pos_embed"][:, 1:1 + L]
    x = torch.cat([(sd["cls_token"] + sd["pos_embed"][:, :1]).expand(x.shape[0], -1, -1), x], 1)
    D = x.shape[-1]
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        p = lambda k: sd[f"blocks.{i}.{k}"]  # noqa: E731
        y = F.layer_norm(x, (D,), p("norm1.weight"), p("norm1.bias"), 1e-6)
        qkv = F.linear(y, p("attn.qkv.weight"), p("attn.qkv.bias")).reshape(x.shape[0], -1, 3, heads, D // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // heads), -1) @ v
        x = x + F.linear(a.transpose(1, 2).reshape(x.shape), p("attn.proj.weight"), p("attn.proj.bias"))
        y = F.layer_norm(x, (D,), p("norm2.weight"), p("norm2.bias"), 1e-6)
        x = x + F.linear(F.gelu(F.linear(y, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
        i += 1
    return F.layer_norm(x, (D,), sd["norm.weight"], sd["norm.bias"], 1e-6)


def test_official_checkpoint_converts_strictly_and_computes_the_same():
    sd = official_state_dict()
    ours = checkpoint_filter_fn({"model": sd, "epoch": 3})
    m = MaskSpecMAE(MaskSpecDims.variant("tiny", **SMALL))
    load_strict(m, ours)  # every key of the model is filled, nothing left over
    assert set(ours) == set(m.state_dict())
    mel = torch.randn(2, 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(m.encoder(mel), reference_encoder(sd, mel), atol=1e-5, rtol=1e-4)


def test_official_checkpoint_file_loads_in_hear_module(tmp_path):
    from hear_models.maskspec import load_model

    sd = official_state_dict(D=128, Dd=64)  # heads are not in a state dict: 64-d heads assumed
    path = tmp_path / "checkpoint-399.pth"
    torch.save({"model": sd, "epoch": 399, "args": argparse.Namespace(model="mae_vit_tiny")}, path)
    m = load_model(str(path))
    assert m.timestamp_embedding_size == 128
    mel_model = m.encoder.encoder
    with torch.no_grad():
        mel = torch.randn(1, 128, 64)  # the 8 x 4 grid of the checkpoint's table
        torch.testing.assert_close(mel_model(mel), reference_encoder(sd, mel), atol=1e-5, rtol=1e-4)


def test_audioset_stats_are_the_official_files_values():
    """The transcription reproduces the float32 bytes of the official mean_std_128.npy
    (sha256 taken from that file) and has its shape and plausible values."""
    import hashlib

    from hear_models.models import maskspec_audioset_stats as S
    from hear_models.models.maskspec import audioset_mel_stats

    rows = np.array([S.FRAME_MEAN, S.FRAME_STD], dtype="<f4")
    assert rows.shape == (2, 128)
    assert hashlib.sha256(rows.tobytes()).hexdigest() == S.F32_SHA256
    mean, std = audioset_mel_stats()
    assert mean.dtype == torch.float32
    np.testing.assert_array_equal(mean.numpy(), rows[0])
    np.testing.assert_array_equal(std.numpy(), rows[1])
    assert (std > 0).all()


def official_normalised_mel(audio):
    """The official ``mel_forward``: the PaSST log-mel, then ``(x - frame_mean[None, :, None])
    / frame_std[None, :, None]`` with ``torch.Tensor(frame_mean)`` (float32) of the official
    mean_std_128.npy values."""
    from hear_models.frontends import PASST_128_32K, LogMel
    from hear_models.models import maskspec_audioset_stats as S

    frame_mean, frame_std = torch.Tensor(S.FRAME_MEAN), torch.Tensor(S.FRAME_STD)
    x = LogMel(PASST_128_32K)(audio)
    return (x - frame_mean[None, :, None]) / frame_std[None, :, None]


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


def test_official_checkpoint_gets_the_official_audioset_standardisation(tmp_path):
    """An official checkpoint (no statistics inside) computes what the official code
    computes: tokens of the official normalised mel; "none" gives identity (different
    features), "official" forces the statistics on our files, ours keep their own."""
    from hear_models.maskspec import load_model
    from hear_models.models import maskspec_audioset_stats as S
    from hear_models.models.maskspec import load_encoder

    sd = official_state_dict(D=128, Dd=64)
    path = tmp_path / "checkpoint-399.pth"
    torch.save({"model": sd, "epoch": 399}, path)
    torch.manual_seed(0)
    audio = torch.rand(2, 64 * 320) * 0.2 - 0.1  # 64 mel frames: the 8 x 4 grid of the table
    ref = reference_encoder(sd, official_normalised_mel(audio))
    m = load_model(str(path))
    assert "AudioSet" in m.name
    with torch.no_grad():
        ours = m.encoder.encoder(m.encoder.frontend(audio))
    assert rel_l2(ours, ref) < 1e-5
    plain = load_model(str(path), mel_stats="none")
    with torch.no_grad():
        off = plain.encoder.encoder(plain.encoder.frontend(audio))
    assert rel_l2(off, ref) > 0.05  # identity statistics are not the official features
    # our own files keep the statistics they carry, unless told otherwise
    enc = load_encoder(str(path))
    ours_path = tmp_path / "ours.pt"
    carried = {"frontend.mean": torch.full((128,), 0.5), "frontend.std": torch.full((128,), 2.0)}
    torch.save({**{"encoder." + k: v for k, v in enc.encoder.state_dict().items()}, **carried}, ours_path)
    kept = load_encoder(str(ours_path))
    assert torch.equal(kept.frontend.mean, carried["frontend.mean"]) and "the file's" in kept.description
    forced = load_encoder(str(ours_path), mel_stats="official")
    assert torch.equal(forced.frontend.std, torch.Tensor(S.FRAME_STD)) and "AudioSet" in forced.description
    with pytest.raises(ValueError, match="mel_stats"):
        load_encoder(str(path), mel_stats="")


def test_mel_stats_from_a_file(tmp_path):
    """A path: a (2, n_mels) float .npy, or the official pickled dict, read with only numpy's
    constructors allowed (a pickle that would run code is refused, nothing runs)."""
    from hear_models.models.maskspec import load_encoder, read_mel_stats

    mean, std = np.linspace(-1, 1, 128, dtype=np.float32), np.linspace(0.5, 1.5, 128, dtype=np.float32)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.stack([mean, std]))
    official = tmp_path / "mean_std_128.npy"
    np.save(official, {"all_mean": np.float64(0.1), "all_std": np.float64(0.7), "frame_mean": mean,
                       "frame_std": std}, allow_pickle=True)
    for f in (plain, official):
        m, s = read_mel_stats(str(f))
        np.testing.assert_array_equal(m.numpy(), mean)
        np.testing.assert_array_equal(s.numpy(), std)
    loaded = load_encoder("", mel_stats=str(official))
    np.testing.assert_array_equal(loaded.frontend.std.numpy(), std)
    assert f"from {official}" in loaded.description

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    evil = tmp_path / "evil.npy"
    arr = np.empty((), dtype=object)
    arr[()] = Evil()
    with open(evil, "wb") as f:
        np.lib.format.write_array(f, arr, allow_pickle=True)
    with pytest.raises(ValueError, match="refused to load posix.system|refused to load os.system"):
        read_mel_stats(str(evil))
    assert not marker.exists()
    np.save(tmp_path / "short.npy", np.stack([mean[:64], std[:64]]))
    with pytest.raises(ValueError, match="64 bins; the model has 128"):
        load_encoder("", mel_stats=str(tmp_path / "short.npy"))
    np.save(tmp_path / "zero.npy", np.stack([mean, 0 * std]))
    with pytest.raises(ValueError, match="std > 0"):
        read_mel_stats(str(tmp_path / "zero.npy"))
    with pytest.raises(ValueError, match="not found"):
        read_mel_stats(str(tmp_path / "absent.npy"))


def test_official_checkpoint_refusals():
    sd = official_state_dict()
    with pytest.raises(ValueError, match="unexpected key"):
        checkpoint_filter_fn({**sd, "blocks.0.ls1.gamma": torch.ones(32)})
    with pytest.raises(ValueError, match="fine-tuned"):
        checkpoint_filter_fn({**sd, "head.weight": torch.zeros(527, 32)})
    bad = dict(sd)
    bad["pos_embed"] = bad["pos_embed"] + 0.1
    with pytest.raises(ValueError, match="sin-cos"):
        checkpoint_filter_fn(bad)
    ours = checkpoint_filter_fn(sd)
    del ours["encoder.blocks.1.mlp.2.bias"]
    with pytest.raises(ValueError, match="missing"):
        load_strict(MaskSpecMAE(MaskSpecDims.variant("tiny", **SMALL)), ours)
    # encoder-only loading names exactly what may be missing
    enc_only = {k: v for k, v in checkpoint_filter_fn(sd).items() if k.startswith(("encoder.", "frontend."))}
    load_strict(MaskSpecMAE(MaskSpecDims.variant("tiny", **SMALL)), enc_only,
                allowed_missing=["decoder_embed.", "mask_token", "decoder_blocks.", "decoder_norm.", "decoder_pred."])


# -- the HEAR module -----------------------------------------------------------------------------------
def test_untrained_default_is_labelled():
    from hear_models import registry
    from hear_models.maskspec import load_model

    assert "PRETRAINED BY US" in registry.get_spec("maskspec_tiny").description
    assert "UNTRAINED" in load_model("").name


@pytest.fixture(scope="module")
def shifted():
    from hear_models.maskspec import load_model

    torch.manual_seed(0)
    return load_model("", layers=0)  # the first block: features stay local in time


def test_shifted_frames_every_40ms_follow_the_validator(shifted):
    from tests.test_contract import check_timestamps

    audio = torch.rand(2, int(1.98 * 32000)) * 0.2 - 0.1
    emb, ts = shifted.timestamp_embeddings(audio)
    assert emb.shape == (2, 50, 192) and float(ts[0, 1] - ts[0, 0]) == 40.0
    check_timestamps(ts.numpy(), 1.98)
    one, _ = shifted.timestamp_embeddings(audio[1:])
    torch.testing.assert_close(one[0], emb[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("centre_ms", [1000, 1040, 1200])
def test_shifted_frames_are_centred_on_their_time(shifted, centre_ms):
    """A 10 ms click at t changes the frames whose own 160 ms patch column holds it: the
    frames k - 1 .. k + 2 around k = t / 40 ms (columns span [40 k - 85, 40 k + 75) ms),
    and much less elsewhere; with ``shifts=1`` the 4 frames of one column change alike."""
    from hear_models.maskspec import load_model

    quiet = torch.zeros(1, 2 * 32000)
    click = quiet.clone()
    i = centre_ms * 32
    click[0, i - 160:i + 160] = 0.9 * torch.hann_window(320)
    k = centre_ms // 40
    a, _ = shifted.timestamp_embeddings(quiet)
    b, _ = shifted.timestamp_embeddings(click)
    change = (b - a)[0].norm(dim=-1)
    strong = (change > 0.5 * change.max()).nonzero().flatten().tolist()
    # (the 25 ms STFT window spreads the click over 3 mel frames: up to 5 columns hold it)
    assert k in strong and set(strong) <= {k - 2, k - 1, k, k + 1, k + 2}, (strong, k)
    far = torch.cat([change[: k - 3], change[k + 4:]])
    assert far.max() < 0.2 * change.max()
    m1 = load_model("", layers=0, shifts=1)
    a1, _ = m1.timestamp_embeddings(quiet)
    b1, _ = m1.timestamp_embeddings(click)
    strong1 = ((b1 - a1)[0].norm(dim=-1) > 0.5 * change.max()).nonzero().flatten().tolist()
    col = centre_ms // 160
    assert strong1 == [4 * col, 4 * col + 1, 4 * col + 2, 4 * col + 3]


def test_scene_is_mean_of_patch_tokens(shifted):
    from hear_models.maskspec import load_model

    m1 = load_model("", layers=0, shifts=1)
    audio = torch.rand(2, 32000 * 2) * 0.2 - 0.1
    torch.testing.assert_close(shifted.scene_embeddings(audio), m1.scene_embeddings(audio))
    fe = m1.encoder
    with torch.no_grad():
        # 2 s: 50 frames of 40 ms -> 13 columns of 160 ms; 200 mel frames + 8 of silence
        mel = fe.frontend(audio)
        mel = torch.cat([mel, fe.frontend.silence()[None, :, None].expand(2, -1, 208 - mel.shape[-1])], -1)
        tokens, grid = fe.encoder.tokens(mel)
        assert grid == (8, 13)
        h = next(iter(fe.encoder.run_blocks(fe.encoder.with_cls(tokens))))[:, 1:]
        per_col = h.reshape(2, 8, 13, -1).mean(1)  # (2, 13, D): mean of the 8 frequency tokens
        frames = per_col.repeat_interleave(4, 1)[:, :50]
    emb, _ = m1.timestamp_embeddings(audio)
    torch.testing.assert_close(emb, frames, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m1.scene_embeddings(audio), frames.mean(1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("shifts", [1, 4])
def test_hidden_states_are_what_the_embeddings_are_made_of(shifts):
    """Layer-wise probes read ``hidden_states``: block k alone is ``layers=k``, their mean is
    ``layers="all"``, the last block + the encoder norm is the default ``"final"``; the
    per-block scene embeddings pool the unshifted tokens, as the scene embedding does."""
    from hear_models.maskspec import load_model

    audio = torch.rand(2, int(1.3 * 32000)) * 0.2 - 0.1
    m = load_model("", layers="all", shifts=shifts)
    fe = m.encoder
    assert fe.n_layers == 12 and fe.layer_names == [str(i) for i in range(12)]
    with torch.no_grad():
        hidden = list(fe.hidden_states(audio))
        assert len(hidden) == 12 and hidden[0].shape == (2, 33, 192)
        torch.testing.assert_close(fe(audio), torch.stack(hidden).mean(0), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(load_model("", layers=3, shifts=shifts).encoder(audio), hidden[3])
    final = load_model("", shifts=shifts).encoder  # the default, "final": last block + norm
    with torch.no_grad():
        blocks, grid, B, K = final._grids(audio)
        last = list(blocks)[-1]
        torch.testing.assert_close(final._frames(last, grid, B, K), hidden[-1])
        torch.testing.assert_close(final(audio), final._frames(final.encoder.norm(last), grid, B, K))
    layer_scene = load_model("", layers="all", shifts=shifts).layer_scene_embeddings(audio)
    assert len(layer_scene) == 12
    torch.testing.assert_close(torch.stack(layer_scene).mean(0),
                               load_model("", layers="all", shifts=shifts).scene_embeddings(audio),
                               atol=1e-5, rtol=1e-4)
