#!/usr/bin/env bash
# Install hear-models into a virtual environment (default .venv) from this checkout.
#
#   bash scripts/install.sh            # the package, offline weights, evaluation tools,
#                                      # and (as root / with sudo) the task-suite sources
#   bash scripts/install.sh test       # ... plus what the test suite needs
#
# Why a script and not only `pip install .`: the tools we build on (openai-whisper,
# hearvalidator, heareval, torchcrepe) cannot be installed by plain dependency resolution on
# today's Python (see docs/install.md). Their recipe lives in one place, hear_models/tools.py,
# run by `hear-models install-tools` (which pip-only users run themselves); this script
# calls that command. Nothing inside site-packages is edited.
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
pip_ -e ".[$extras]"
# openai-whisper, hearvalidator, heareval, torchcrepe (+ whisper-at for the tests) and, where
# tensorflow is absent, the two-file stand-in hearvalidator and heareval import instead
tools=(-c "$cons")
[ "${1:-}" = "test" ] && tools+=(--test)
"$VENV/bin/hear-models" install-tools "${tools[@]}"
# Debian packages the offline task suite is generated from (espeak-ng, fluidsynth, real
# drum and word recordings, ...): needs root or sudo.
if [ "$(id -u)" = "0" ] || sudo -n true 2>/dev/null; then
  bash scripts/install_task_sources.sh
else
  echo "note: run 'sudo bash scripts/install_task_sources.sh' to generate the offline task suite" >&2
fi
echo "hear-models installed in $VENV ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
