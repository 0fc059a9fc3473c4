"""Shared layers: whisper parity (strict state-dict load), masks, drop-path, gradients."""

import pytest
import torch

from hear_models.layers import (
    DropPath,
    LayerNorm,
    MultiHeadAttention,
    ResidualAttentionBlock,
    build_attention_mask,
)
from tests.conftest import need  # noqa: E402

N_STATE, N_HEAD = 64, 4


def _randomise(module, seed=0):
    """Random values for every parameter (LayerNorm gains around 1) so parity tests bite."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(1.0 + noise if name.endswith("ln.weight") else noise)
    return module


def _whisper_block(cross):
    wm = need("whisper.model")
    return _randomise(wm.ResidualAttentionBlock(N_STATE, N_HEAD, cross_attention=cross)).eval()


def _x(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cross", [False, True])
def test_whisper_block_parity(cross):
    ref = _whisper_block(cross)
    ours = ResidualAttentionBlock(N_STATE, N_HEAD, cross_attention=cross).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert set(ours.state_dict()) == set(ref.state_dict())
    x, xa = _x(3, 11, N_STATE), _x(3, 7, N_STATE, seed=2)
    with torch.no_grad():
        want = ref(x, xa if cross else None)
        got = ours(x, xa if cross else None)
    assert (got - want).abs().max().item() < 1e-5


def test_whisper_block_parity_causal_and_eager_path():
    wm = need("whisper.model")
    ref = _whisper_block(True)
    ours = ResidualAttentionBlock(N_STATE, N_HEAD, cross_attention=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x, xa = _x(2, 9, N_STATE), _x(2, 5, N_STATE, seed=2)
    mask = torch.empty(9, 9).fill_(-float("inf")).triu_(1)  # whisper's decoder mask
    with torch.no_grad():
        want = ref(x, xa, mask=mask)
        got = ours(x, xa, is_causal=True)
        assert (got - want).abs().max().item() < 1e-5
        old = wm.MultiHeadAttention.use_sdpa
        try:  # whisper's explicit softmax path agrees too
            wm.MultiHeadAttention.use_sdpa = False
            want_eager = ref(x, xa, mask=mask)
        finally:
            wm.MultiHeadAttention.use_sdpa = old
        assert (got - want_eager).abs().max().item() < 1e-5


def test_whisper_block_low_precision_numerics():
    ref = _whisper_block(False)
    ours = ResidualAttentionBlock(N_STATE, N_HEAD).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = _x(2, 6, N_STATE).bfloat16()
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, want)


def test_key_padding_mask_equals_trimmed():
    torch.manual_seed(0)
    block = _randomise(ResidualAttentionBlock(N_STATE, N_HEAD)).eval()
    lengths = [11, 6, 1]
    x = _x(3, 11, N_STATE)
    pad = torch.arange(11)[None, :] >= torch.tensor(lengths)[:, None]  # True = padded
    with torch.no_grad():
        out = block(x, key_padding_mask=pad)
        for i, n in enumerate(lengths):
            alone = block(x[i : i + 1, :n])
            assert (out[i, :n] - alone[0]).abs().max().item() < 1e-5
        assert torch.isfinite(out).all()
        # and the padding really matters: without the mask the short item changes
        assert (block(x)[1, :6] - out[1, :6]).abs().max().item() > 1e-3


def test_cross_attention_padding_mask_equals_trimmed():
    block = _randomise(ResidualAttentionBlock(N_STATE, N_HEAD, cross_attention=True)).eval()
    x, xa = _x(2, 5, N_STATE), _x(2, 8, N_STATE, seed=3)
    xa_pad = torch.tensor([[False] * 8, [False] * 3 + [True] * 5])
    with torch.no_grad():
        out = block(x, xa, xa_padding_mask=xa_pad)
        alone = block(x[1:2], xa[1:2, :3])
    assert (out[1] - alone[0]).abs().max().item() < 1e-5


def test_fully_masked_rows_stay_finite():
    keep = build_attention_mask(3, 3, torch.tensor([[True, False, False]]), is_causal=True)
    assert keep[0, 0, 0].all()  # row 0 saw only a padded key: opened entirely
    attn = MultiHeadAttention(N_STATE, N_HEAD)
    out = attn(_x(1, 3, N_STATE), key_padding_mask=torch.tensor([[True, True, True]]))
    assert torch.isfinite(out).all()


def test_drop_path_eval_identity_and_whole_samples_in_train():
    dp = DropPath(0.5)
    x = _x(400, 3, 5) + 3.0
    assert torch.equal(dp.eval()(x), x)
    torch.manual_seed(0)
    y = dp.train()(x)
    dropped = (y == 0).flatten(1).all(1)
    kept = torch.isclose(y, x / 0.5).flatten(1).all(1)
    assert torch.all(dropped ^ kept)  # every sample is either dropped or kept whole
    assert 0.35 < dropped.float().mean().item() < 0.65


def test_block_drop_path_is_identity_in_eval():
    a = _randomise(ResidualAttentionBlock(N_STATE, N_HEAD, drop_path=0.3, dropout=0.1,
                                          attn_dropout=0.1))
    b = ResidualAttentionBlock(N_STATE, N_HEAD)
    b.load_state_dict(a.state_dict(), strict=True)  # dropout / drop-path add no keys
    x = _x(2, 4, N_STATE)
    with torch.no_grad():
        assert torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)
        # in training, drop-path with p close to 1 drops samples' branches entirely
        c = ResidualAttentionBlock(N_STATE, N_HEAD, drop_path=0.999).train()
        c.load_state_dict(a.state_dict())
        torch.manual_seed(0)
        assert torch.equal(c(x), x)


@pytest.mark.parametrize("kw", [dict(), dict(qkv_bias=True, key_bias=None, ln_eps=1e-6),
                                dict(qkv_bias=False, key_bias=None)])
@pytest.mark.parametrize("cross", [False, True])
def test_gradients_reach_every_parameter(kw, cross):
    block = ResidualAttentionBlock(N_STATE, N_HEAD, cross_attention=cross, **kw)
    x = _x(2, 7, N_STATE).requires_grad_()
    xa = _x(2, 4, N_STATE, seed=5) if cross else None
    pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    block(x, xa, key_padding_mask=pad).pow(2).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None


def test_parameter_layouts():
    whisper_like = ResidualAttentionBlock(N_STATE, N_HEAD).state_dict()
    assert "attn.key.bias" not in whisper_like and "attn.query.bias" in whisper_like
    assert {"mlp.0.weight", "mlp.2.weight", "mlp_ln.weight", "attn_ln.bias"} <= set(whisper_like)
    vit = ResidualAttentionBlock(N_STATE, N_HEAD, key_bias=None, ln_eps=1e-6, mlp_ratio=2)
    assert "attn.key.bias" in vit.state_dict()
    assert vit.mlp[0].out_features == 2 * N_STATE and vit.attn_ln.eps == 1e-6
    atst = ResidualAttentionBlock(N_STATE, N_HEAD, qkv_bias=False, key_bias=None)
    assert not any(k.startswith(("attn.query.bias", "attn.key.bias", "attn.value.bias"))
                   for k in atst.state_dict())
    assert isinstance(atst.attn_ln, LayerNorm)
    with pytest.raises(ValueError):
        MultiHeadAttention(10, 3)
