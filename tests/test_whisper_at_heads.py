"""Whisper-AT tagging heads: sizes from models.md, official checkpoint parity, masking."""

import pytest
import torch

from hear_models.models.whisper_at_heads import (
    HEAD_KINDS, WHISPER_SIZES, convert_official_head, create_head, head_from_official, pool_time,
)
from tests.conftest import need  # noqa: E402


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# Whisper-AT paper / models.md, 527 AudioSet classes, in millions (2 decimals).
PAPER_SIZES = {
    ("tl_tr", None): {"large": 40.03, "medium": 25.73, "small": 14.58, "base": 6.58, "tiny": 3.75},
    ("tl_tr", 512): {"large": 7.23, "medium": 7.10, "small": 6.97},
    ("last_mlp", None): {"large": 0.68},
    ("wa_mlp", None): {"large": 0.68},
}


@pytest.mark.parametrize("kind,proj", sorted(PAPER_SIZES, key=str))
def test_parameter_counts_match_the_paper(kind, proj):
    with torch.device("meta"):
        for size, millions in PAPER_SIZES[(kind, proj)].items():
            layers, width = WHISPER_SIZES[size]
            head = create_head(kind, layers, width, 527, proj_dim=proj)
            assert round(n_params(head) / 1e6, 2) == millions, (kind, proj, size, n_params(head))


def test_exact_counts():
    """Counts derived by hand: a Whisper block at width d has 12 d^2 + 12 d parameters
    (q, k, v, out: 4 d^2 + 3 d biases, key has none; MLP 8 d^2 + 5 d; two LayerNorms 4 d)."""
    block = lambda d: 12 * d * d + 12 * d  # noqa: E731
    cls = lambda d: 2 * d + d * 527 + 527  # noqa: E731
    assert n_params(create_head("tl_tr", 32, 1280)) == 2 * block(1280) + cls(1280) == 40_029_967
    assert n_params(create_head("tl_tr", 32, 1280, proj_dim=512)) == (
        2 * 1280 + 1280 * 512 + 512 + 2 * block(512) + cls(512)) == 7_233_551
    assert n_params(create_head("wa_mlp", 32, 1280)) == cls(1280) + 32
    assert n_params(create_head("wa_tr", 6, 512)) == cls(512) + 6 + block(512)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_forward_backward_every_parameter(kind):
    torch.manual_seed(0)
    head = create_head(kind, 4, 64, 10)
    x = torch.randn(3, 4, 25, 64)
    logits = head(x)
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    logits.sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_padding_mask_equals_trimmed(kind):
    torch.manual_seed(0)
    head = create_head(kind, 4, 64, 10).eval()
    x = torch.randn(2, 4, 25, 64)
    mask = torch.zeros(2, 25, dtype=torch.bool)
    mask[1, 17:] = True
    padded = x.clone()
    padded[1, :, 17:] = 99.0  # whatever sits in padding must not matter
    out = head(padded, mask)
    torch.testing.assert_close(out[1], head(x[1:, :, :17])[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[0], head(x[:1])[0], atol=1e-5, rtol=1e-5)


def test_bad_shape_is_named():
    with pytest.raises(ValueError, match="expects"):
        create_head("tl_tr", 6, 512)(torch.randn(2, 5, 25, 512))


def test_pool_time():
    h = torch.arange(45, dtype=torch.float32).view(1, 1, 45, 1)
    p = pool_time(h)
    assert p.shape == (1, 1, 3, 1)
    assert p.flatten().tolist() == [9.5, 29.5, 42.0]


@pytest.mark.parametrize("mode,proj", [("tl_tr_1_8", None), ("tl_down_tr_512_1_8", 512)])
def test_official_checkpoint_same_logits(mode, proj, tmp_path):
    """A head of the whisper-at package, saved as its {size}_ori/_low.pth files are (keys
    ``at_model.*``), loads through ours strictly and gives the same logits."""
    whisper_at_model = need("whisper_at.model", reason="pip install --no-deps whisper-at==0.5")
    from hear_models.checkpoints import torch_load_trusted_weights

    torch.manual_seed(0)
    official = whisper_at_model.ATModel(n_layer=12, rep_dim=768, mode=mode).eval()
    path = tmp_path / ("small_low.pth" if proj else "small_ori.pth")
    torch.save({f"at_model.{k}": v for k, v in official.state_dict().items()}, path)
    ours = head_from_official(torch_load_trusted_weights(path), str(path)).eval()
    assert (ours.down_layer is not None) == bool(proj)
    feats = torch.randn(12, 50, 768)  # (layers, pooled frames of 20 s, width), one clip
    with torch.no_grad():
        ref = official(feats, time_resolution=10)  # 2 decision windows of 25
        windows = feats.view(12, 2, 25, 768).permute(1, 0, 2, 3)  # (windows, layers, 25, width)
        mine = ours(windows)
    assert ref.shape == mine.shape == (2, 527)
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)


def test_official_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match="at_model"):
        convert_official_head({"encoder.conv1.weight": torch.zeros(1)}, "x.pth")
    sd = {f"at_model.{k}": v for k, v in create_head("tl_tr", 6, 512).state_dict().items()}
    sd.pop("at_model.layer_tr.mlp_ln.bias")
    with pytest.raises(ValueError, match="x.pth"):
        head_from_official(sd, "x.pth")
