"""Conformer SSL: sizes, the block, masking, distractors, the contrastive loss, gradients,
learning, frames and timestamps, weights files."""

import pytest
import torch

from hear_models.layers import ConformerBlock
from hear_models.layers.conformer import conformer_block_parameters
from hear_models.models.conformer import (FIRST_CENTER, FRAME_HOP, ConformerDims, ConformerEncoder,
                                          ConformerFrameEncoder, ConformerWav2Vec2, count_parameters,
                                          latent_lengths)


@pytest.mark.parametrize("variant, encoder, with_target, stated_enc, stated_total", [
    ("S", 18_350_080, 18_415_872, 18.35, 18.4),
    ("L", 87_898_624, 88_096_000, 87.90, 88.1),
])
def test_parameter_counts(variant, encoder, with_target, stated_enc, stated_total):
    with torch.device("meta"):
        m = ConformerWav2Vec2(ConformerDims.variant(variant))
    n_enc = count_parameters(m.encoder)
    n_tgt = n_enc + count_parameters(m.target_proj)
    assert n_enc == encoder and n_tgt == with_target
    assert round(n_enc / 1e6, 2) == stated_enc and round(n_tgt / 1e6, 1) == stated_total
    assert count_parameters(m) == n_tgt + 256  # + the mask embedding
    d = m.dims
    closed = sum(conformer_block_parameters(d.width, d.ffn, k) for k in d.kernels())
    assert closed == count_parameters(m.encoder.context.blocks)
    assert d.kernels() == [31] + [15] * 11 and d.ffn == 1024 and d.dropout == 0.1


def test_block_layout_convolution_first_no_position_encoding():
    torch.manual_seed(0)
    blk = ConformerBlock(32, 4, 64, 7, dropout=0.0).eval()
    calls = []
    for name in ("conv", "attn"):
        getattr(blk, name).register_forward_hook(lambda m, i, o, n=name: calls.append(n))
    x = torch.randn(2, 9, 32)
    y = blk(x)
    assert calls == ["conv", "attn"] and y.shape == x.shape
    # no position encoding in attention: permuting time without conv gives permuted outputs
    assert not any("pos" in k for k in blk.state_dict())
    # padding never leaks into valid frames
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[:, 9:] = True
    xp = torch.cat([x, torch.randn(2, 3, 32) * 100], dim=1)
    torch.testing.assert_close(blk(xp, pad)[:, :9], y, atol=1e-5, rtol=1e-5)


def test_span_masking_fraction_and_padding():
    m = ConformerWav2Vec2(ConformerDims.variant("tiny"))
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([125] * 30 + [40, 7, 2, 1])
    mask = m.compute_mask(lengths, 125, g)
    pad = torch.arange(125)[None] >= lengths[:, None]
    assert not (mask & pad).any(), "padding is never masked"
    frac = mask[:30].float().mean().item()
    assert 0.22 < frac < 0.32, frac
    assert mask[32].sum() == 2 and mask[33].sum() == 0  # 2 valid latents: both; 1: none
    # spans: every masked run is at least mask_length long unless cut by the clip's end
    assert (mask.sum(1)[:31] >= 2).all()


def test_distractors_never_positive_never_padding_same_clip():
    m = ConformerWav2Vec2(ConformerDims.variant("tiny"), n_negatives=100)
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([50, 20, 9, 1])
    mask = m.compute_mask(lengths, 50, g)
    b, t, neg = m.sample_distractors(mask, g)
    assert neg.shape == (b.numel(), 100)
    assert b.numel() == int(mask[:3].sum())  # every masked step of clips with >= 2 of them
    assert (neg != t[:, None]).all(), "a distractor is the positive"
    assert mask[b[:, None].expand_as(neg), neg].all(), "distractors come from masked steps of the clip"
    assert (neg < lengths[b][:, None]).all(), "a distractor from padding"
    # uniform over the other masked steps: every other masked step of clip 0 is drawn
    first = (b == 0) & (t == t[b == 0][0])
    assert set(neg[first].flatten().tolist()) <= set(mask[0].nonzero().flatten().tolist())


def test_loss_is_contrastive_cosine_with_temperature():
    torch.manual_seed(0)
    m = ConformerWav2Vec2(ConformerDims.variant("tiny"), n_negatives=5, temperature=0.1)
    c = torch.randn(1, 6, 64)
    y = torch.randn(1, 6, 64)
    b = torch.tensor([0, 0])
    t = torch.tensor([1, 4])
    neg = torch.tensor([[4, 4, 2, 3, 5], [1, 0, 2, 3, 5]])
    loss, _ = m.forward_loss(c, y, b, t, neg)
    cos = torch.nn.functional.cosine_similarity
    ref = 0
    for i in range(2):
        cand = torch.cat([y[0, t[i]][None], y[0, neg[i]]])
        lg = cos(c[0, t[i]][None], cand) / 0.1
        ref = ref - torch.log_softmax(lg, 0)[0]
    torch.testing.assert_close(loss, ref / 2)
    # the positive perfectly aligned and distractors orthogonal-ish -> small loss
    c2 = y.clone()
    assert m.forward_loss(c2, y, b, t, neg)[0] < loss


def _tiny():
    d = ConformerDims.variant("tiny", width=32, heads=2, layers=2, ffn=64, dropout=0.0)
    return ConformerWav2Vec2(d, n_negatives=20)


def test_every_parameter_gets_a_gradient_and_short_clips():
    torch.manual_seed(0)
    m = _tiny()
    audio = torch.randn(3, 16000) * 0.1
    mel = m.encoder.frontend(audio)
    lengths = latent_lengths(torch.tensor([16000, 9000, 700]), mel.shape[-1] // 4)
    loss, logs = m(mel, lengths)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing
    # a clip of one latent (80 ms) alone: finite, zero loss (nothing to contrast)
    short = m.encoder.frontend(torch.randn(1, 1280) * 0.1)
    loss1, _ = m(short)
    assert torch.isfinite(loss1)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    m = _tiny()
    g = torch.Generator().manual_seed(0)
    t = torch.arange(2 * 16000) / 16000
    audio = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t * (1 + 0.5 * t)) for f in (300, 700, 1500, 2500)])
    mel = m.encoder.frontend(audio)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, betas=(0.9, 0.98), weight_decay=0.01)
    losses = []
    for step in range(25):
        g.manual_seed(step % 3)
        loss, _ = m(mel, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses


def test_frames_every_40ms_repeat_latents():
    torch.manual_seed(0)
    enc = ConformerEncoder(ConformerDims.variant("tiny")).eval()
    fe = ConformerFrameEncoder(enc, layers="last")
    audio = torch.randn(2, 16000) * 0.1
    frames = fe(audio)
    K = fe.n_frames(16000)
    assert K == (16000 - FIRST_CENTER) // FRAME_HOP + 1 == 25 and frames.shape == (2, K, 64)
    torch.testing.assert_close(frames[:, 0], frames[:, 1])  # two rows per latent
    z = enc.feature_encoder(torch.nn.functional.pad(enc.frontend(audio), (0, 52 - 51), value=enc.silence_level()))
    for h in enc.hidden_states(z):
        pass
    torch.testing.assert_close(frames[:, ::2], h)
    hs = list(fe.hidden_states(audio))
    assert len(hs) == fe.n_layers == 4 and all(x.shape == (2, K, 64) for x in hs)
    torch.testing.assert_close(ConformerFrameEncoder(enc, layers="all")(audio), torch.stack(hs).mean(0))


def test_export_roundtrip_and_bad_files(tmp_path):
    from hear_models.conformer import EXPORT_FORMAT, load_model

    torch.manual_seed(0)
    m = ConformerWav2Vec2(ConformerDims.variant("tiny"))
    sd = {k: v for k, v in m.encoder.state_dict().items()}
    path = tmp_path / "cf.pt"
    torch.save({"format": EXPORT_FORMAT, "dims": m.dims.to_dict(), "state_dict": sd}, path)
    hm = load_model(str(path))
    audio = torch.randn(1, 8000) * 0.1
    ref = ConformerFrameEncoder(m.encoder.eval())(audio)
    torch.testing.assert_close(hm.timestamp_embeddings(audio)[0], ref)
    raw = tmp_path / "raw.pt"
    torch.save(m.state_dict(), raw)  # a whole pretraining model: encoder.* kept, the rest dropped
    torch.testing.assert_close(load_model(str(raw)).scene_embeddings(audio), hm.scene_embeddings(audio))
    bad = tmp_path / "bad.pt"
    torch.save({"format": "hear_models.maskspec/1", "dims": {}, "state_dict": {}}, bad)
    with pytest.raises(ValueError, match="format"):
        load_model(str(bad))
    torch.save({"x": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="Conformer"):
        load_model(str(bad))
    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "nope.pt"))
