#!/usr/bin/env bash
# The CUDA acceptance check for issue 10, run on a lent H100 through the device tool (docs/CUDA.md
# has the exact `run` call). Needs no Rust and no network there: it uses the binary and dataset
# that scripts/build-cuda.sh staged in dist-cuda/ (carried), and the machine's Python for cuBLAS,
# cuRAND and cudart (pip nvidia-* packages, CUDA 13) and for the summary.
#
# Steps (about 3-5 minutes on the H100, most of it the CPU side):
#   1. unpack + verify the binary, find the CUDA libraries, nvidia-smi
#   2. train LeNet-300-100 for 2 epochs on cuda; quantize it to f16 and int8 (per channel)
#   3. eval f32 / f16 / int8 on cuda, and the same three files on cpu (same checkpoint)
#   4. train the same model on cpu (same seed) for the CPU-vs-CUDA training comparison
#   5. a short `joulecut bench --device cuda` (scripts/device/cuda-smoke.json)
#   6. summary.json: accuracies, the differences the acceptance bounds (0.3 pt), joules by domain
#      with provenance (the GPU's must be `measured` by NVML), fallbacks
# Output (under $OUT, at most 8 files): summary.json, log.txt, nvidia-smi.txt, reports.tar.gz.
# Exit status: 0 when every step ran and the acceptance checks pass, 1 otherwise (the summary says
# which).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/cuda-check}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/joulecut-cuda.XXXXXX)
REP=$WORK/reports
mkdir -p "$REP"
LOG=$OUT/log.txt
exec > >(tee -a "$LOG") 2>&1
DIST=$ROOT/dist-cuda
EPOCHS=${JOULECUT_CHECK_EPOCHS:-2}
SEED=${JOULECUT_CHECK_SEED:-1}
# The model trained and evaluated (any `--model` of joulecut train), and whether the bench smoke
# run (LeNet-300-100 only) follows: e.g. JOULECUT_CHECK_MODEL=lenet5 JOULECUT_CHECK_BENCH=0.
MODEL=${JOULECUT_CHECK_MODEL:-lenet-300-100}
BENCH=${JOULECUT_CHECK_BENCH:-1}
source "$ROOT/scripts/device/steps.sh"

step "unpack"
(cd "$DIST" && sha256sum -c SHA256SUMS) || { echo "dist-cuda/ is damaged or incomplete"; exit 1; }
cat "$DIST/BUILD-INFO"
xz -dc "$DIST/joulecut.xz" >"$WORK/joulecut" && chmod +x "$WORK/joulecut"
JC=$WORK/joulecut

step "CUDA libraries"
source "$ROOT/scripts/device/cuda-libs.sh"
ldd "$JC" | grep -E 'cuda|cublas|curand'
"$JC" --version

step "nvidia-smi"
nvidia-smi | tee "$OUT/nvidia-smi.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,power.draw,power.limit,clocks.sm \
  --format=csv | tee -a "$OUT/nvidia-smi.txt"

export JOULECUT_DATA=$DIST/fashion-mnist
M=$WORK/models
mkdir -p "$M"

step "train on cuda ($EPOCHS epochs)"
run train-cuda "$JC" train --model "$MODEL" --epochs "$EPOCHS" --seed "$SEED" --device cuda \
  -o "$M/cuda-f32.safetensors" --json
step "quantize"
run quantize-f16 "$JC" quantize "$M/cuda-f32.safetensors" -o "$M/cuda-f16.safetensors" --dtype f16 --json
run quantize-int8 "$JC" quantize "$M/cuda-f32.safetensors" -o "$M/cuda-int8.safetensors" \
  --dtype int8 --granularity channel --json
for dev in cuda cpu; do
  for v in f32 f16 int8; do
    step "eval $v on $dev"
    run "eval-$v-$dev" "$JC" eval "$M/cuda-$v.safetensors" --device "$dev" --latency-iters 100 --json
  done
done

step "train on cpu ($EPOCHS epochs, same seed)"
run train-cpu "$JC" train --model "$MODEL" --epochs "$EPOCHS" --seed "$SEED" --device cpu \
  -o "$M/cpu-f32.safetensors" --json

if [[ $BENCH == 1 ]]; then
  step "bench on cuda (scripts/device/cuda-smoke.json)"
  run bench-cuda "$JC" bench --config "$ROOT/scripts/device/cuda-smoke.json" --device cuda \
    --out "$WORK/bench" --json
  cp -f "$WORK/bench"/report.{md,csv} "$REP/" 2>/dev/null
else
  touch "$REP/bench-skipped"
fi

finish cuda-summary.py ""
