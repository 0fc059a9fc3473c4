"""ATST-Frame: sizes, official checkpoints (seeded random weights written in the official
Lightning layout), parity with a reference written here from audiossl's code
(``methods/atstframe/audio_transformer.py``, ``modules/transformer.py``, ``embedding.py``,
torchaudio's MelSpectrogram / AmplitudeToDB), strict loading, and the HEAR contract."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hear_models import atst_frame
from hear_models.checkpoints import CheckpointError
from hear_models.models.atst_frame import ATSTFrameDims, ATSTFrameEncoder, count_parameters

from .conftest import assert_close_to_scale, noise


# -- the reference: audiossl's definitions, written out ------------------------------------------
def ref_fbank(n_freqs=513, f_min=60.0, f_max=7800.0, n_mels=64, sr=16000):
    """torchaudio.functional.melscale_fbanks, htk scale, norm None: (n_freqs, n_mels)."""
    all_freqs = torch.linspace(0, sr // 2, n_freqs, dtype=torch.float64)
    m_min, m_max = (2595.0 * math.log10(1.0 + f / 700.0) for f in (f_min, f_max))
    m_pts = torch.linspace(m_min, m_max, n_mels + 2, dtype=torch.float64)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0).float()


def ref_transform(audio):
    """embedding.py's transform on (B, 1, N): MelSpectrogram -> AmplitudeToDB(top_db=80) ->
    MinMax(-79.6482, 50.6842); (B, 1, 64, 1 + N // 160)."""
    spec = torch.stft(audio[:, 0], 1024, hop_length=160, win_length=1024, window=torch.hann_window(1024),
                      center=True, pad_mode="reflect", return_complex=True).abs().pow(2)
    mel = torch.matmul(spec.transpose(-1, -2), ref_fbank()).transpose(-1, -2)[:, None]
    db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    db = torch.max(db, db.amax(dim=(-3, -2, -1), keepdim=True) - 80.0)
    return (db - (-79.6482)) / (50.6842 - (-79.6482)) * 2.0 - 1.0


class RefAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        attn = (qkv[0] @ qkv[1].transpose(-2, -1)) * (C // self.heads) ** -0.5 + mask
        return self.proj((attn.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(B, N, C))


class RefMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = RefAttention(dim, heads), RefMlp(dim, 4 * dim)

    def forward(self, x, length):
        B, N, _ = x.shape
        pad = torch.arange(N).expand(B, N) >= length[:, None]  # get_attention_mask
        mask = (-10000.0 * pad[:, None, None, :]).expand(B, 1, N, N)
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class RefPatchEmbed(nn.Module):  # PatchEmbed_v2, patch 64 x 4
    def __init__(self, dim):
        super().__init__()
        self.patch_embed = nn.Linear(256, dim)

    def forward(self, mel, length):
        B, c, h, w = mel.shape
        w4 = w - w % 4
        # Rearrange('b c (h p1) (w p2) -> b (w h) (p1 p2 c)', p1=64, p2=4)
        x = mel[:, :, :64, :w4].reshape(B, c, 1, 64, w4 // 4, 4).permute(0, 4, 2, 3, 5, 1)
        x = x.reshape(B, w4 // 4, 64 * 4 * c)
        return self.patch_embed(x), (length - length % 4) // 4


class RefFrameAST(nn.Module):
    def __init__(self, dim, depth, heads, spec_w=1001):
        super().__init__()
        self.patch_embed = RefPatchEmbed(dim)
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, spec_w // 4 + 1, dim))
        self.blocks = nn.ModuleList([RefBlock(dim, heads) for _ in range(depth)])
        self.norm_frame = nn.LayerNorm(dim, eps=1e-6)

    def get_intermediate_layers(self, x, length, n=1, scene=True):
        x, plen = self.patch_embed(x, length)
        x = x + self.pos_embed[:, 1:x.shape[1] + 1]
        out = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, plen)
            if len(self.blocks) - i <= n:
                nx = self.norm_frame(x)
                if scene:
                    m = (torch.arange(x.shape[1]) < plen[:, None]).unsqueeze(-1)
                    out.append((nx * m).sum(1) / (plen[:, None] + 1e-6))
                else:
                    out.append(nx)
        return torch.cat(out, -1)


def ref_embeddings(audio, model, chunk_len=1001, pad_last_token=False):
    """embedding.py's get_timestamp_embedding and get_scene_embedding (n = all blocks),
    chunk length a parameter (official 1001 mel frames). ``pad_last_token``: our one
    deviation on short ends, the frames of a token centred inside the clip that the official
    count drops appended as silence (the clip's dB floor)."""
    n = len(model.blocks)
    mel = ref_transform(audio[:, None])
    if pad_last_token:
        want = 4 * ((audio.shape[1] - 240) // 640 + 1)
        if want > mel.shape[-1]:
            floor = mel.amax(dim=(-2, -1), keepdim=True) - 160.0 / (50.6842 + 79.6482)
            mel = torch.cat([mel, floor.expand(-1, -1, 64, want - mel.shape[-1])], -1)
    total = mel.shape[-1]
    frames, scenes = [], []
    for i in range(total // chunk_len + 1):
        start, end = i * chunk_len, min((i + 1) * chunk_len, total)
        if end > start:
            part = mel[..., start:end]
            length = torch.tensor([part.shape[-1]]).expand(mel.shape[0])
            frames.append(model.get_intermediate_layers(part, length, n=n, scene=False))
            scenes.append(model.get_intermediate_layers(part, length, n=n))
    emb = torch.cat(frames, 1)
    ts = (torch.arange(emb.shape[1]) * 40).float().unsqueeze(0).expand(mel.shape[0], -1)
    return emb, ts, torch.stack(scenes).mean(0)


WIDTH, DEPTH, HEADS = 96, 2, 3  # the tiny variant


def random_reference(seed=0):
    torch.manual_seed(seed)
    ref = RefFrameAST(WIDTH, DEPTH, HEADS)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.3 if p.dim() > 1 else 0.1)
        for m in ref.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(1.0)
    return ref.eval()


def write_lightning(path, teacher, student=None, hparams=None):
    """The layout of the official atstframe_*.ckpt: FrameATSTLightningModule's checkpoint."""
    sd = {}
    for who, enc in (("teacher", teacher), ("student", student or teacher)):
        sd.update({f"model.{who}.encoder.{k}": v for k, v in enc.state_dict().items()})
        sd[f"model.{who}.projector.0.weight"] = torch.zeros(4096, WIDTH)
    sd["model.student.predictor.0.weight"] = torch.zeros(4096, 256)
    hp = {"arch": "tiny", "patch_h": 64, "patch_w": 4, "pos_type": "cut", "nprompt": 0,
          "patch_embed": "Linear", "n_mels": 64, "spec_h": 64, "learning_rate": 4e-4}
    hp.update(hparams or {})
    torch.save({"state_dict": sd, "hyper_parameters": hp, "epoch": 3, "global_step": 58500,
                "pytorch-lightning_version": "2.2.1"}, path)
    return path


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    ref = random_reference()
    path = write_lightning(tmp_path_factory.mktemp("atstframe") / "atstframe_tiny.ckpt", ref)
    return ref, str(path), atst_frame.load_model(str(path), precision="fp32")


def rel_l2(a, b):
    return float((a - b).detach().double().norm() / b.detach().double().norm())


# -- sizes ---------------------------------------------------------------------------------------
def test_parameter_counts_match_the_official_definition():
    for v, (D, heads) in {"small": (384, 6), "base": (768, 12)}.items():
        with torch.device("meta"):
            ours = count_parameters(ATSTFrameEncoder(ATSTFrameDims.variant(v)))
            ref = count_parameters(RefFrameAST(D, 12, heads))
        assert ours == ref
    with torch.device("meta"):
        counts = {v: count_parameters(ATSTFrameEncoder(ATSTFrameDims.variant(v))) for v in ("small", "base", "tiny")}
    assert counts == {"small": 21_475_968, "base": 85_419_264, "tiny": 272_160}  # module docstring


# -- parity with the official embedding code ----------------------------------------------------
@pytest.mark.parametrize("n_samples", [15520, 48000, 52640, 160000, 160159])
def test_parity_with_official_embedding_up_to_ten_seconds(official, n_samples):
    """Every clip up to 10.01 s whose end the official tokens cover: the official output."""
    ref, _, model = official
    audio = noise(2, 11, 16000, seed=1)[:, :n_samples] * torch.tensor([[0.5], [0.05]])
    with torch.no_grad():
        r_emb, r_ts, r_scene = ref_embeddings(audio, ref)
    emb, ts = atst_frame.get_timestamp_embeddings(audio, model)
    scene = atst_frame.get_scene_embeddings(audio, model)
    assert emb.shape == r_emb.shape == (2, (1 + n_samples // 160) // 4, DEPTH * WIDTH)
    assert rel_l2(emb, r_emb) <= 1e-5 and rel_l2(scene, r_scene) <= 1e-5
    torch.testing.assert_close(ts, r_ts + 15.0)  # token centres: 15 ms after official's stamps
    assert scene.shape == (2, model.scene_embedding_size) == (2, DEPTH * WIDTH)


@pytest.mark.parametrize("n_samples", [52800, 31680, 16000 + 80 + 2 * 160])
def test_a_last_token_the_official_count_drops(official, n_samples):
    """3 trailing mel frames (or 2 and n % 160 >= 80) hold a further token's centre: we add
    that token (its 4th / 3rd-4th frames silent), so the last frame ends within 40 ms of the
    clip (HEAR's rule; officially up to 55 ms stay uncovered)."""
    ref, _, model = official
    audio = noise(2, 4, 16000, seed=8)[:, :n_samples] * 0.3
    with torch.no_grad():
        o_emb, _, _ = ref_embeddings(audio, ref)
        r_emb, _, r_scene = ref_embeddings(audio, ref, pad_last_token=True)
    emb, ts = atst_frame.get_timestamp_embeddings(audio, model)
    assert emb.shape[1] == r_emb.shape[1] == o_emb.shape[1] + 1
    assert rel_l2(emb, r_emb) <= 1e-5
    assert rel_l2(atst_frame.get_scene_embeddings(audio, model), r_scene) <= 1e-5
    assert 1000 * n_samples / 16000 - float(ts[0, -1]) <= 40.0


def test_long_audio_chunks_of_ten_seconds(official):
    """Past 10.01 s: the official 1001-frame chunks drop a mel frame per chunk; ours are 1000
    frames (250 tokens): the same computation with chunk_len 1000, and the official output
    for the first 250 tokens."""
    ref, _, model = official
    audio = noise(1, 23.4, 16000, seed=2)[:, :373000] * 0.3
    with torch.no_grad():
        r_emb, _, r_scene = ref_embeddings(audio, ref, chunk_len=1000)
        o_emb, _, _ = ref_embeddings(audio, ref, chunk_len=1001)
    emb, ts = atst_frame.get_timestamp_embeddings(audio, model)
    scene = atst_frame.get_scene_embeddings(audio, model)
    assert emb.shape[1] == r_emb.shape[1] == (1 + audio.shape[1] // 160) // 4 == 583
    assert rel_l2(emb, r_emb) <= 1e-5 and rel_l2(scene, r_scene) <= 1e-5
    assert rel_l2(emb[:, :250], o_emb[:, :250]) <= 1e-5
    # official chunk 2 starts one mel frame later (frame 1001): its tokens are not ours
    assert o_emb.shape[1] == 582 and rel_l2(emb[:, 250:500], o_emb[:, 250:500]) > 1e-2
    torch.testing.assert_close(ts[0], torch.arange(583) * 40.0 + 15.0)


def test_trailing_chunk_without_a_token_is_left_out_of_the_scene(official):
    """1002 mel frames: officially a second chunk of 1 frame, no token, counted in the scene
    mean as a zero vector (the scene halves); ours is the mean of the one chunk."""
    ref, _, model = official
    audio = noise(1, 10.1, 16000, seed=3)[:, :160200] * 0.2
    with torch.no_grad():
        o_emb, _, o_scene = ref_embeddings(audio, ref)
    emb, _ = atst_frame.get_timestamp_embeddings(audio, model)
    scene = atst_frame.get_scene_embeddings(audio, model)
    assert emb.shape[1] == o_emb.shape[1] == 250 and rel_l2(emb, o_emb) <= 1e-5
    assert rel_l2(scene, 2 * o_scene) <= 1e-5


def test_student_and_layer_options(official, tmp_path):
    ref, _, _ = official
    student = random_reference(seed=5)
    path = write_lightning(tmp_path / "two.ckpt", ref, student)
    audio = noise(1, 1.6, 16000, seed=4)[:, :24160] * 0.3
    with torch.no_grad():
        s_emb, _, _ = ref_embeddings(audio, student)
    m = atst_frame.load_model(str(path), which="student", precision="fp32")
    assert rel_l2(atst_frame.get_timestamp_embeddings(audio, m)[0], s_emb) <= 1e-5
    last = atst_frame.load_model(str(path), layers="last", precision="fp32")
    emb, _ = atst_frame.get_timestamp_embeddings(audio, last)
    t_emb, _, _ = ref_embeddings(audio, ref)
    assert last.timestamp_embedding_size == last.scene_embedding_size == WIDTH
    assert rel_l2(emb, t_emb[..., -WIDTH:]) <= 1e-5  # official N_BLOCKS = 1
    mean = atst_frame.load_model(str(path), combine="mean", precision="fp32")
    emb, _ = atst_frame.get_timestamp_embeddings(audio, mean)
    assert rel_l2(emb, (t_emb[..., :WIDTH] + t_emb[..., WIDTH:]) / 2) <= 1e-5


# -- strict loading ------------------------------------------------------------------------------
def test_strict_loading_errors(official, tmp_path):
    ref, _, _ = official
    sd = {k: v.clone() for k, v in ref.state_dict().items()}

    def lightning(name, enc_sd, **hp):
        obj = {"state_dict": {f"model.teacher.encoder.{k}": v for k, v in enc_sd.items()},
               "hyper_parameters": {"arch": "tiny", **hp}}
        torch.save(obj, tmp_path / name)
        return str(tmp_path / name)

    missing = {k: v for k, v in sd.items() if k != "blocks.1.norm2.bias"}
    with pytest.raises(CheckpointError, match=r"missing\.ckpt.*missing \['blocks\.1\.norm2\.bias'\]"):
        atst_frame.load_model(lightning("missing.ckpt", missing))
    with pytest.raises(CheckpointError, match=r"shaped\.ckpt.*pos_embed \(1, 200, 96\) \(expected \(1, 251, 96\)\)"):
        atst_frame.load_model(lightning("shaped.ckpt", dict(sd, pos_embed=torch.zeros(1, 200, WIDTH))))
    extra = dict(sd, **{"blocks.0.attn.qkv.bias": torch.zeros(3 * WIDTH)})
    with pytest.raises(CheckpointError, match=r"extra\.ckpt.*unexpected \['blocks\.0\.attn\.qkv\.bias'\]"):
        atst_frame.load_model(lightning("extra.ckpt", extra))
    no_mask = {k: v for k, v in sd.items() if k != "mask_embed"}
    with pytest.raises(CheckpointError, match=r"missing \['mask_embed'\]"):
        atst_frame.load_model(lightning("nomask.ckpt", no_mask))
    with pytest.raises(CheckpointError, match=r"patch_w.*16"):
        atst_frame.load_model(lightning("patch16.ckpt", sd, patch_w=16))
    with pytest.raises(CheckpointError, match=r"arch='small'.*width 96"):
        atst_frame.load_model(lightning("arch.ckpt", sd, arch="small"))
    # a bare FrameAST state dict loads too
    torch.save(sd, tmp_path / "bare.pt")
    atst_frame.load_model(str(tmp_path / "bare.pt"))


def test_other_families_files_are_refused(official, tmp_path):
    _, path, _ = official
    # ATST-Clip's official layout: CLS token, final ``norm``
    clip = {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 251, 8),
            "patch_embed.patch_embed.weight": torch.zeros(8, 256), "norm.weight": torch.zeros(8)}
    torch.save({"state_dict": {f"model.teacher.encoder.{k}": v for k, v in clip.items()}}, tmp_path / "clip.ckpt")
    with pytest.raises(CheckpointError, match=r"clip\.ckpt: not an ATST-Frame checkpoint: it is an official ATST"):
        atst_frame.load_model(str(tmp_path / "clip.ckpt"))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not an ATST-Frame checkpoint"):
        atst_frame.load_model(str(tmp_path / "other.pt"))
    from hear_models.models.atst import load_encoder as load_atst
    with pytest.raises(CheckpointError, match=r"it is an official ATST-Frame .*load it as an ATST-Frame model"):
        load_atst(path)


# -- HEAR contract -------------------------------------------------------------------------------
def test_random_variants_and_declared_sizes():
    small = atst_frame.load_model("")
    assert "atst_frame-small UNTRAINED" in small.name
    assert small.timestamp_embedding_size == small.scene_embedding_size == 12 * 384
    assert small.sample_rate == 16000
    tiny = atst_frame.load_model("", variant="tiny")
    assert tiny.scene_embedding_size == DEPTH * WIDTH
    with pytest.raises(KeyError, match="unknown ATST-Frame variant"):
        atst_frame.load_model("", variant="huge")


def test_contract_batched_timestamps_short_clips(official):
    _, _, model = official
    audio = noise(3, 2.5, 16000, seed=6) * torch.tensor([[0.9], [0.1], [0.01]])
    emb, ts = atst_frame.get_timestamp_embeddings(audio, model)
    scene = atst_frame.get_scene_embeddings(audio, model)
    assert emb.dtype == scene.dtype == ts.dtype == torch.float32
    for i in range(3):
        e1, t1 = atst_frame.get_timestamp_embeddings(audio[i:i + 1], model)
        assert_close_to_scale(e1, emb[i:i + 1])
        assert_close_to_scale(atst_frame.get_scene_embeddings(audio[i:i + 1], model), scene[i:i + 1])
        torch.testing.assert_close(t1[0], ts[i])
    again, _ = atst_frame.get_timestamp_embeddings(audio, model)
    torch.testing.assert_close(again, emb, rtol=0, atol=0)
    d = torch.diff(ts[0])
    assert torch.all(d == 40.0) and ts[0, 0] == 15.0 and ts[0, -1] <= 2500.0 and ts[0, -1] >= 2500 - 40
    one, t = atst_frame.get_timestamp_embeddings(audio[:, :640], model)  # 40 ms: one token
    assert one.shape == (3, 1, DEPTH * WIDTH) and t[0].tolist() == [15.0]
    with pytest.raises(ValueError, match="too short"):
        atst_frame.get_timestamp_embeddings(audio[:, :639], model)


def test_memory_budget_sub_batches_agree(official):
    """Sounds split into sub-batches of the memory budget give the same embeddings."""
    _, path, model = official
    small_budget = atst_frame.load_model(path, max_batch_seconds=12.0, precision="fp32")
    audio = noise(3, 10.5, 16000, seed=7) * 0.2
    a, _ = atst_frame.get_timestamp_embeddings(audio, small_budget)
    b, _ = atst_frame.get_timestamp_embeddings(audio, model)
    assert_close_to_scale(a, b)
    assert_close_to_scale(atst_frame.get_scene_embeddings(audio, small_budget),
                          atst_frame.get_scene_embeddings(audio, model))


@pytest.mark.parametrize("seconds", [1.07, 1.98, 4.0])
def test_timestamps_as_the_validator(official, seconds):
    from .test_contract import check_timestamps

    _, _, model = official
    audio = noise(2, seconds, 16000, seed=9)
    emb, ts = atst_frame.get_timestamp_embeddings(audio, model)
    assert emb.shape[:2] == ts.shape and torch.isfinite(emb).all()
    check_timestamps(ts.numpy(), seconds)


def test_frame_encoder_on_audio_and_layer_outputs(official):
    """The frame encoder's audio path (probes) = the HEAR path on a clip under 10 s; the
    per-block outputs are the slices of the concatenation."""
    _, _, model = official
    audio = noise(2, 3.0, 16000, seed=10) * 0.3
    emb, _ = atst_frame.get_timestamp_embeddings(audio, model)
    with torch.no_grad():
        assert_close_to_scale(model.encoder(audio), emb)
    layers, _ = model.layer_timestamp_embeddings(audio)
    assert len(layers) == DEPTH
    assert_close_to_scale(torch.cat(layers, -1), emb)


def test_a_lightning_file_without_the_encoder_names_what_it_holds(official, tmp_path):
    ref, _, _ = official
    sd = {f"encoder.encoder.{k}": v for k, v in ref.state_dict().items()}  # a fine-tuned wrapper
    torch.save({"state_dict": sd}, tmp_path / "ft.ckpt")
    with pytest.raises(CheckpointError, match=r"ft\.ckpt: .*no 'model\.teacher\.encoder\.\*' keys.*encoder\.encoder\."):
        atst_frame.load_model(str(tmp_path / "ft.ckpt"))
