#!/usr/bin/env bash
# The issue-5/9 side-by-side (scripts/compare_pytorch.py) on the device machine's CPU, pinned to two
# cores: the project's reference numbers (../shared/reference) come from 2 cores of an Intel Xeon
# with AVX-512 VNNI, and the lent GPU machines carry such a Xeon, while the development VMs are
# AVX2-only AMD EPYCs. Uses the binary scripts/build-cuda.sh staged in dist-cuda/ (its CPU paths are
# the same code as the CPU-only build) and the machine's own Python if it has torch, onnx and
# onnxruntime; otherwise it times joulecut's f32 and int8 alone. Run through the device tool with
# carry ["dist-cuda"] (docs/CUDA.md). Output under $OUT: cpu.txt, compare.json / compare.md or
# eval-*.json. JOULECUT_BIN=path runs that binary instead of dist-cuda's.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/cpu-compare}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/joulecut-cpu.XXXXXX)
DIST=$ROOT/dist-cuda
CORES=${JOULECUT_COMPARE_CORES:-0,1}
REPEATS=${JOULECUT_COMPARE_REPEATS:-3}
(cd "$DIST" && sha256sum -c --quiet SHA256SUMS) || { echo "dist-cuda/ is damaged"; exit 1; }
if [[ -n ${JOULECUT_BIN:-} ]]; then
  JC=$JOULECUT_BIN # e.g. a CPU-only build carried beside dist-cuda/ (no CUDA libraries needed)
else
  xz -dc "$DIST/joulecut.xz" >"$WORK/joulecut" && chmod +x "$WORK/joulecut"
  JC=$WORK/joulecut
  source "$ROOT/scripts/device/cuda-libs.sh"
fi
export JOULECUT_DATA=$DIST/fashion-mnist
{
  grep -m1 'model name' /proc/cpuinfo
  echo "avx512/vnni flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E 'avx512(f|bw|_vnni|vnni)|avx_vnni' | sort -u | tr '\n' ' ')"
  echo "pinned to cores $CORES"
} | tee "$OUT/cpu.txt"

py=""
for c in ${JOULECUT_COMPARE_PYTHON:-} python3 /opt/torch/.venv/bin/python3; do
  if "$c" -c 'import torch, onnx, onnxruntime, numpy' 2>/dev/null; then py=$c; break; fi
done
if [[ -n $py ]]; then
  echo "python with torch/onnx/onnxruntime: $py" | tee -a "$OUT/cpu.txt"
  taskset -c "$CORES" "$py" scripts/compare_pytorch.py --threads 2 --epochs 1 --repeats "$REPEATS" \
    --models mlp --joulecut "$JC" --data "$JOULECUT_DATA" --out "$OUT/compare.json" \
    --markdown "$OUT/compare.md" --load-threshold 100
  status=$?
else
  echo "no python with torch, onnx and onnxruntime: joulecut f32 vs int8 only" | tee -a "$OUT/cpu.txt"
  "$JC" train --model lenet-300-100 --epochs 1 --seed 0 -o "$WORK/f32.safetensors" -q
  "$JC" quantize "$WORK/f32.safetensors" -o "$WORK/int8.safetensors" --dtype int8 \
    --granularity channel >/dev/null
  for r in $(seq "$REPEATS"); do
    for v in f32 int8; do
      RAYON_NUM_THREADS=2 taskset -c "$CORES" "$JC" eval "$WORK/$v.safetensors" --device cpu \
        --batch-size 256 --latency-iters 2000 --json >"$OUT/eval-$v-$r.json"
    done
  done
  status=$?
fi
rm -rf "$WORK"
exit $status
