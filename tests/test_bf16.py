"""bf16 inference: every model honours ``precision="bf16"`` and agrees with fp32.

Measured on two noise clips and a chirp (3 s). The bounds are the ones docs/speed.md
states per model: per-frame cosine >= 0.999 for every offline model, mean frame and scene
>= 0.9999 (Whisper reaches it by keeping its first two blocks in fp32: test below).
CREPE runs in fp32 whatever the precision (bf16 ruins it: see hear_models.layers.crepe);
the CREPE-only models are therefore equal, and a fusion's bf16 covers its speech members.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hear_models import create_model, list_models

# same code path as a twin that runs here (test_contract.LONG_CLIP_TWIN says why)
TWINS = {"crepe": "crepe_tiny", "fusion_cat_xwc_time_standin": "fusion_cat_xwc_standin"}
# Mean frame cosine: 0.9999, except GURA variants made of speech members only. bf16 rounding
# in HuBERT's / wav2vec 2.0's conv feature extractor leaves every hidden state at a mean of
# 0.99987-0.99992 (tiny stand-ins, measured state by state; random full-size members in
# fusion_cat_xwc: 0.99989, docs/speed.md), which the fusions with CREPE (fp32) dilute.
MEAN_FRAME_COS = {"avg_hubert_wav2vec2_standin": 0.9998, "cat_hubert_wav2vec2_standin": 0.9998}


def _audio(sr: int, seconds: float = 3.0) -> torch.Tensor:
    n = int(seconds * sr)
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(2, n, generator=g) * 0.2 - 0.1
    t = torch.arange(n) / sr
    chirp = 0.3 * torch.sin(2 * math.pi * (200 + 300 * t) * t) + 0.01 * torch.randn(n, generator=g)
    return torch.cat([noise, chirp[None]])


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models(offline=True) if n not in TWINS])
def test_bf16_agrees_with_fp32(name, get_model):
    m32 = get_model(name)
    torch.manual_seed(0)
    m16 = create_model(name, precision="bf16")
    assert m16.precision == "bf16"
    audio = _audio(m32.sample_rate)
    e32, ts32 = m32.timestamp_embeddings(audio)
    e16, ts16 = m16.timestamp_embeddings(audio)
    assert e16.dtype == torch.float32 and torch.equal(ts32, ts16)
    if name.startswith("crepe"):  # CREPE stays fp32 on purpose (hear_models.layers.crepe)
        assert torch.equal(e32, e16)
    else:
        assert not torch.equal(e32, e16), "precision='bf16' changed nothing: autocast not applied"
    frame = F.cosine_similarity(e32.double(), e16.double(), dim=-1)
    assert frame.min() >= 0.999, float(frame.min())
    assert frame.mean() >= MEAN_FRAME_COS.get(name, 0.9999), float(frame.mean())
    scene = F.cosine_similarity(m32.scene_embeddings(audio).double(), m16.scene_embeddings(audio).double(), dim=-1)
    assert scene.min() >= 0.9999, float(scene.min())


def test_whisper_residual_stream_stays_fp32_under_autocast(get_model):
    """Only the blocks' matrix products run in bf16: the conv stem's output and every
    block output (the residual stream) are float32."""
    enc = get_model("whisper_tiny_en").encoder
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        states = list(enc.hidden_states(_audio(16000, 1.0)))
    assert all(h.dtype == torch.float32 for h in states)


def test_whisper_first_blocks_run_fp32_under_autocast(get_model):
    """Whisper's outlier channels form in its first blocks: their matrix products stay
    float32 under bf16 autocast (without that, Whisper base's worst frame fell to 0.986),
    the later blocks' run in bf16."""
    enc = get_model("whisper_tiny_en").encoder
    seen = []
    hooks = [b.mlp[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype)) for b in enc.encoder.blocks]
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            list(enc.hidden_states(_audio(16000, 1.0)))
    finally:
        for h in hooks:
            h.remove()
    assert seen == [torch.float32] * 2 + [torch.bfloat16] * (len(enc.encoder.blocks) - 2)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        create_model("conformer_tiny", precision="fp16")
