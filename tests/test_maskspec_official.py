"""MaskSpec's official AudioSet FINE-TUNED checkpoint (``models_vit.VisionTransformer``,
global pooling, 527-class head): strict conversion, parity with a reference forward written
from the official ``models_vit.forward_features`` / ``forward`` on seeded random weights
saved in the official format, the HEAR module's head output, and refusals."""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from hear_models.checkpoints import CheckpointError

D, DEPTH, HEADS, N_CLASSES = 128, 2, 2, 527  # 128 wide: 2 heads of 64 (heads_for)
GRID_H, GRID_W = 8, 62  # img_size (128, 1000), patch 16: the official fine-tuning grid
OFFICIAL_SAMPLES = 320000  # the official inference pads every clip to 10 s at 32 kHz
WINDOW = 317440  # our HEAR window: 9.92 s, the 62 patch columns


def finetuned_state_dict(seed=0):
    """Seeded random weights with the key layout of the official fine-tuned ViT (timm 0.5.4
    ``VisionTransformer`` + ``fc_norm``, ``norm`` deleted by ``global_pool``): a LEARNED
    ``pos_embed`` (1, 1 + 8 x 62, D) that is no sin-cos table, ``head`` (527, D)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731
    sd = {"cls_token": r(1, 1, D), "pos_embed": r(1, 1 + GRID_H * GRID_W, D),
          "patch_embed.proj.weight": r(D, 1, 16, 16), "patch_embed.proj.bias": r(D),
          "fc_norm.weight": 1 + r(D), "fc_norm.bias": r(D),
          "head.weight": r(N_CLASSES, D) * 10, "head.bias": r(N_CLASSES)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(D), b + "norm1.bias": r(D),
                   b + "attn.qkv.weight": r(3 * D, D), b + "attn.qkv.bias": r(3 * D),
                   b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
                   b + "norm2.weight": 1 + r(D), b + "norm2.bias": r(D),
                   b + "mlp.fc1.weight": r(4 * D, D), b + "mlp.fc1.bias": r(4 * D),
                   b + "mlp.fc2.weight": r(D, 4 * D), b + "mlp.fc2.bias": r(D)})
    return sd


def save_official(path, sd):
    """As the official ``misc.save_model``: {"model", "optimizer", "epoch", "scaler", "args"}."""
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 79,
                "scaler": {"scale": 65536.0}, "args": argparse.Namespace(model="vit_base_patch16", nb_classes=527)},
               path)


def official_normalised_mel(audio):
    """The official ``mel_forward``: PaSST log-mel, then the AudioSet ``frame_mean`` /
    ``frame_std`` of ``mean_std_128.npy`` (float32)."""
    from hear_models.frontends import PASST_128_32K, LogMel
    from hear_models.models import maskspec_audioset_stats as S

    x = LogMel(PASST_128_32K)(audio)
    return (x - torch.Tensor(S.FRAME_MEAN)[None, :, None]) / torch.Tensor(S.FRAME_STD)[None, :, None]


def reference_forward(sd, mel, target_frames=1000):
    """``models_vit.VisionTransformer.forward_features`` + ``forward`` (eval, no mixup, no
    patchout, global_pool) on the official keys.

    mel : (B, 128, 1000) — ``patch_embed`` of img_size (128, 1000), the conv dropping the
    trailing 8 frames. ``target_frames`` < 1000: the official ``target_size`` cut (the first
    target_frames // 16 columns of the position-embedded grid).
    Returns the last block's tokens (B, 1 + L, D), the pooled embedding (B, D), the logits."""
    assert mel.shape[-2:] == (128, 1000)
    B = mel.shape[0]
    x = F.conv2d(mel[:, None], sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2)  # (B, 8 * 62, D), row-major (freq, time)
    x = torch.cat([sd["cls_token"].expand(B, -1, -1), x], dim=1) + sd["pos_embed"]
    if target_frames < 1000:
        t = target_frames // 16
        audio_part = x[:, 1:].reshape(B, GRID_H, GRID_W, D)[:, :, :t].reshape(B, -1, D)
        x = torch.cat([x[:, :1], audio_part], dim=1)
    hd = D // HEADS
    for i in range(DEPTH):
        p = lambda k: sd[f"blocks.{i}.{k}"]  # noqa: E731
        y = F.layer_norm(x, (D,), p("norm1.weight"), p("norm1.bias"), 1e-6)
        qkv = F.linear(y, p("attn.qkv.weight"), p("attn.qkv.bias")).reshape(B, -1, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1) * hd ** -0.5).softmax(dim=-1)
        x = x + F.linear((attn @ v).transpose(1, 2).reshape(B, -1, D), p("attn.proj.weight"), p("attn.proj.bias"))
        y = F.layer_norm(x, (D,), p("norm2.weight"), p("norm2.bias"), 1e-6)
        x = x + F.linear(F.gelu(F.linear(y, p("mlp.fc1.weight"), p("mlp.fc1.bias"))),
                         p("mlp.fc2.weight"), p("mlp.fc2.bias"))
    emb = F.layer_norm(x[:, 1:].mean(dim=1), (D,), sd["fc_norm.weight"], sd["fc_norm.bias"], 1e-6)
    return x, emb, F.linear(emb, sd["head.weight"], sd["head.bias"])


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    sd = finetuned_state_dict()
    path = tmp_path_factory.mktemp("maskspec_ft") / "AudioSet_Pretrained_Finetuned.pth"
    save_official(path, sd)
    return sd, str(path)


def test_finetuned_file_is_recognised_and_loads_strictly(official):
    from hear_models.models.maskspec import load_encoder

    sd, path = official
    loaded = load_encoder(path)
    dims = loaded.encoder.dims
    assert (dims.width, dims.layers, dims.heads, dims.pos_cols, dims.n_classes) == (D, DEPTH, HEADS, GRID_W, N_CLASSES)
    assert "fine-tuned: 527-class head, learned 8 x 62 position table" in loaded.description
    assert "AudioSet" in loaded.description  # the official statistics, as for the pretrained format
    # the learned table and the head are the file's, unchanged
    assert torch.equal(loaded.encoder.pos_embed, sd["pos_embed"])
    assert torch.equal(loaded.encoder.head.weight, sd["head.weight"])
    assert torch.equal(loaded.encoder.norm.weight, sd["fc_norm.weight"])


def test_clip_head_matches_the_official_inference(official):
    """A 3 s clip: the official inference zero-pads it to 10 s; our head pads the window to
    9.92 s (the same 62 columns). Last-block tokens, pooled embedding and 527 logits agree
    with the reference; the scene embedding is [mean of frames ; repr ; logits]."""
    from hear_models.maskspec import load_model

    sd, path = official
    torch.manual_seed(1)
    audio = torch.rand(2, 3 * 32000) * 0.4 - 0.2
    ref_tokens, ref_emb, ref_logits = reference_forward(
        sd, official_normalised_mel(F.pad(audio, (0, OFFICIAL_SAMPLES - audio.shape[1]))))
    m = load_model(path, head_output="both")
    enc = m.encoder
    assert enc.summary_size == D + N_CLASSES and m.scene_embedding_size == 2 * D + N_CLASSES
    with torch.no_grad():
        tokens = enc.padded_last_block(audio)
    scene = m.scene_embeddings(audio)
    errors = dict(tokens=rel_l2(tokens, ref_tokens), emb=rel_l2(scene[:, D:2 * D], ref_emb),
                  logits=rel_l2(scene[:, 2 * D:], ref_logits))
    assert max(errors.values()) <= 1e-5, errors
    # the frame part never sees the head's padding: what the model without head gives
    plain = load_model(path, head_output="none").scene_embeddings(audio)
    torch.testing.assert_close(scene[:, :D], plain)
    print("rel L2 vs the official reference:", errors)


def test_full_window_reuses_the_frames_pass(official):
    """A full 9.92 s window (silent over its last 60 ms so that the official 10 s input has
    the same 992 frames): one unshifted pass gives frames and head; same numbers as the
    reference."""
    from hear_models.maskspec import load_model

    sd, path = official
    torch.manual_seed(2)
    audio = torch.rand(1, WINDOW) * 0.4 - 0.2
    audio[:, -1920:] = 0
    padded = F.pad(audio, (0, OFFICIAL_SAMPLES - WINDOW))
    _, ref_emb, ref_logits = reference_forward(sd, official_normalised_mel(padded))
    m = load_model(path, head_output="both")
    calls = []
    m.encoder.padded_last_block = lambda a: calls.append(a) or None  # must not be needed
    scene = m.scene_embeddings(audio)
    assert not calls
    assert rel_l2(scene[:, D:2 * D], ref_emb) <= 1e-5
    assert rel_l2(scene[:, 2 * D:], ref_logits) <= 1e-5


def test_long_clip_head_is_the_frame_weighted_mean_over_windows(official):
    """A 12 s clip: windows of 9.92 s and 2.08 s, each window's logits as the official
    inference of that window alone (the tail zero-padded), weighted by its 248 and 52 frames."""
    from hear_models.maskspec import load_model

    sd, path = official
    torch.manual_seed(4)
    audio = torch.rand(1, 12 * 32000) * 0.4 - 0.2
    audio[:, WINDOW - 1920:WINDOW] = 0  # the first window ends in silence (same 992 frames)
    m = load_model(path)  # auto: logits
    scene = m.scene_embeddings(audio)
    refs = [reference_forward(sd, official_normalised_mel(F.pad(w, (0, OFFICIAL_SAMPLES - w.shape[1]))))[2]
            for w in (audio[:, :WINDOW], audio[:, WINDOW:])]
    expected = (248 * refs[0] + 52 * refs[1]) / 300
    assert scene.shape == (1, D + N_CLASSES)
    assert rel_l2(scene[:, D:], expected) <= 1e-5


def test_shorter_grids_cut_the_learned_table_as_target_size(official):
    """Frames of a shorter clip run on fewer columns: the first w columns of the learned
    table, as the official ``target_size`` cut; more than 62 columns is refused."""
    from hear_models.models.maskspec import load_encoder

    sd, path = official
    enc = load_encoder(path).encoder
    torch.manual_seed(3)
    mel = torch.randn(2, 128, 1000)
    ref_tokens, _, _ = reference_forward(sd, mel, target_frames=320)
    with torch.no_grad():
        x, grid = enc.tokens(mel[..., :320])
        ours = enc.run_blocks(enc.with_cls(x))
        for ours_last in ours:
            pass
    assert grid == (8, 20)
    assert rel_l2(ours_last, ref_tokens) <= 1e-5
    with pytest.raises(ValueError, match="learned position table covers 8 x 62"):
        enc.tokens(torch.randn(1, 128, 1008))


def test_load_model_picks_the_variant_from_the_file(official, tmp_path):
    from hear_models.maskspec import load_model
    from tests.test_maskspec import official_state_dict

    _, path = official
    assert load_model(path).scene_embedding_size == D + N_CLASSES  # auto: logits
    assert load_model(path, head_output="repr").scene_embedding_size == 2 * D
    assert load_model(path, head_output="none").scene_embedding_size == D
    pre = tmp_path / "checkpoint-399.pth"
    torch.save({"model": official_state_dict(D=D, Dd=64), "epoch": 399}, pre)
    m = load_model(str(pre))
    assert m.scene_embedding_size == D and m.encoder.encoder.dims.n_classes == 0
    assert not hasattr(m.encoder.encoder, "pos_embed")  # fixed sin-cos, as before
    with pytest.raises(ValueError, match="no tagging head"):
        load_model(str(pre), head_output="logits")
    with pytest.raises(ValueError, match="head_output"):
        load_model(path, head_output="probs")


@pytest.mark.parametrize("change,message", [
    (lambda sd: sd.pop("head.bias"), "encoder.head.bias"),
    (lambda sd: sd.pop("blocks.1.mlp.fc2.weight"), "encoder.blocks.1.mlp.2.weight"),
    (lambda sd: sd.update({"head.weight": torch.zeros(N_CLASSES, D + 1)}), "encoder.head.weight"),
    (lambda sd: sd.update({"blocks.0.ls1.gamma": torch.ones(D)}), "blocks.0.ls1.gamma"),
    (lambda sd: sd.update({"decoder_blocks.0.norm1.weight": torch.ones(64)}), "decoder_blocks.0.norm1.weight"),
    (lambda sd: sd.update({"pos_embed": torch.zeros(1, 500, D)}), r"pos_embed .*\(1, 500, 128\)"),
    (lambda sd: sd.pop("pos_embed"), "pos_embed missing"),
    (lambda sd: sd.update({"norm.weight": torch.ones(D), "norm.bias": torch.zeros(D)}), "final 'norm'"),
    (lambda sd: sd.pop("fc_norm.weight"), "without 'fc_norm'"),
])
def test_strict_refusals_name_the_file_and_key(tmp_path, change, message):
    from hear_models.models.maskspec import load_encoder

    sd = finetuned_state_dict()
    change(sd)
    path = tmp_path / "bad.pth"
    save_official(path, sd)
    with pytest.raises(CheckpointError, match=message) as e:
        load_encoder(str(path))
    assert str(path) in str(e.value)


def test_published_base_size_parameter_count():
    """vit_base_patch16 fine-tuned on AudioSet: encoder 85,254,144 + learned table
    497 x 768 + head 768 x 527 + 527 = 86,041,103 (the official model's trainable count;
    ``fc_norm`` takes the place of ``norm``)."""
    from hear_models.models.maskspec import MaskSpecDims, MaskSpecEncoder

    enc = MaskSpecEncoder(MaskSpecDims.variant("base", pos_cols=62, n_classes=527))
    assert sum(p.numel() for p in enc.parameters()) == 85_254_144 + 497 * 768 + 768 * 527 + 527 == 86_041_103
    assert math.isclose(enc.pos_embed.numel(), 497 * 768)
