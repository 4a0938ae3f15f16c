#!/usr/bin/env bash
# Training and inference speed of joulecut's reference models on this machine, through the CLI:
# training samples/s (1 epoch, Adam, batch 128) for LeNet-300-100 and LeNet-5, and inference
# samples/s at batch 256 plus batch-1 latency. Compare with ../shared/reference/README.md, or run
# scripts/compare.sh for a side-by-side run. Run it on a quiet machine.
#
# usage: scripts/speed.sh [EPOCHS]      (env: JOULECUT=path/to/joulecut, default target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-1}
bin=${JOULECUT:-target/release/joulecut}
[ -x "$bin" ] || cargo build --release
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-15s %12s %10s %14s %14s\n' model train_sps accuracy infer_b256_sps b1_median_us
for m in lenet-300-100 lenet5; do
  t=$("$bin" train --model "$m" --epochs "$epochs" -o "$out/$m.safetensors" --json -q)
  e=$("$bin" eval "$out/$m.safetensors" --batch-size 256 --latency-iters 1000 --json)
  python3 - "$m" "$t" "$e" <<'PY'
import json, sys
m, t, e = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"{m:<15} {t['samples_per_second']:12.0f} {t['accuracy']:10.4f} {e['samples_per_second']:14.0f} {e['latency']['batch_1']['median_us']:14.1f}")
PY
done
