#!/usr/bin/env bash
# The checks that need a GPU, as one prepared command for a session lent a device machine
# (/work/.library/device: ~15 min of device time per session, no network there, its own python3 with
# torch and transformers but not every package of ours).
#
#   bash scripts/device_checks.sh prepare     # here: wheels the device image lacks + 60 s of test speech
#   run(command="bash scripts/device_checks.sh run", carry=[".device"], timeout_s=600)   # there
#   SMOKE=1 DEVICE=cpu DTYPE=float32 PYTHON=.venv/bin/python bash scripts/device_checks.sh run   # a dry run here
#
# What it measures (results also under $OUT when the device tool sets it):
#   issue 2: fp32 / fp16 / bf16 forward of the large config, ours vs transformers, speed-ups and logits drift
#   issue 4: concurrent real-time streams of the large config in bf16 (p95 partial latency <= 1 s), and of
#            the embedded model
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}  # the engine's low precision on CUDA (float32 for a dry run on a CPU)
PYTHON=${PYTHON:-python3}
OUT=${OUT:-.device/out}
# our run-time packages the device image lacks (it has torch, transformers, numpy, safetensors, tqdm)
WHEELS=(soxr soundfile cffi pycparser jiwer rapidfuzz)

case "${1:-}" in
prepare)
  mkdir -p .device/wheels
  # the device image runs Python 3.12 on x86-64
  .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d .device/wheels "${WHEELS[@]}"
  .venv/bin/python - <<'EOF'
import sys
sys.path.insert(0, "bench")
import soundfile
from bench_streaming import synthesize_speech

audio, _ = synthesize_speech(60.0, seed=0)
soundfile.write(".device/speech60.wav", audio, 16000, subtype="PCM_16")
print(f".device/speech60.wav: {len(audio) / 16000:.1f} s")
EOF
  du -sh .device
  ;;
run)
  if [ "$DEVICE" != "cpu" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --find-links .device/wheels "${WHEELS[@]}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  fi
  mkdir -p "$OUT"
  export PYTHONUNBUFFERED=1
  if [ -n "${SMOKE:-}" ]; then
    quick=(--quick --runs 2) ladder_large=1 ladder_small=1,4 seconds=3
  else
    quick=(--runs 10) ladder_large=1,64,128,256,512,768 ladder_small=64,256,512,1024 seconds=10
  fi
  "$PYTHON" bench/bench_model.py --device "$DEVICE" "${quick[@]}" 2>&1 | tee "$OUT/model_batch1.txt"
  "$PYTHON" bench/bench_model.py --device "$DEVICE" "${quick[@]}" --batch 16 2>&1 | tee "$OUT/model_batch16.txt"
  large=(--large)
  [ -n "${SMOKE:-}" ] && large=()
  "$PYTHON" bench/bench_streaming.py "${large[@]}" --device "$DEVICE" --dtype "$DTYPE" --audio .device/speech60.wav \
    --streams "$ladder_large" --stream-seconds "$seconds" --json "$OUT/streams_large.json" 2>&1 |
    tee "$OUT/streams_large.txt"
  "$PYTHON" bench/bench_streaming.py --device "$DEVICE" --dtype "$DTYPE" --audio .device/speech60.wav \
    --streams "$ladder_small" --stream-seconds "$seconds" --json "$OUT/streams_small.json" 2>&1 |
    tee "$OUT/streams_small.txt"
  ;;
*)
  echo "usage: bash scripts/device_checks.sh prepare|run" >&2
  exit 2
  ;;
esac
