#!/usr/bin/env bash
# The CUDA acceptance check for issue 25 (transformers on the GPU), run on a lent H100/H200 through
# the device tool (docs/CUDA.md, "Transformers", has the exact `run` call). Needs no Rust and no
# network there: the binary, all-MiniLM-L6-v2 (stored f16) and WordNet glosses come from
# dist-minilm/ (carried; scripts/device/stage-transformer.sh makes it), cuBLAS/cuRAND/cudart from
# the machine's Python (pip nvidia-* packages, CUDA 13), and the summary is Python.
#
# Steps (about 4 minutes on an H100; the CPU does the compression):
#   1. unpack + verify, CUDA libraries, nvidia-smi
#   2. quantize MiniLM to int8 with calibrated grids (CPU)
#   3. eval-embeddings, each with the batch-size sweep (default 1,32,256) in its own NVML windows:
#      f32 on cuda against joulecut's f32 kernels on the cpu; bf16, f16 and int8 (Q8_0) on cuda
#      against f32 on cuda
#   4. the transformer bench on cuda (scripts/device/transformer-smoke.json: fp16, bf16, int8,
#      25% of the FFN neurons removed), compression on the CPU, evaluation on the GPU
#   5. transformer-summary.json: the acceptance checks (cosines, speed at batch 256, int8 joules
#      at batch 1 and 32, NVML provenance of every GPU window), each pass/fail
# Output (under $OUT): transformer-summary.json, transformer-log.txt, transformer-reports.tar.gz.
# Exit status: 0 when every step ran and every check passes, 1 otherwise.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/transformer-check}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/joulecut-transformer.XXXXXX)
REP=$WORK/reports
mkdir -p "$REP"
exec > >(tee -a "$OUT/transformer-log.txt") 2>&1
DIST=$ROOT/dist-minilm
SWEEP=${JOULECUT_CHECK_SWEEP:-1,32,256}
BENCH=${JOULECUT_CHECK_BENCH:-1}
source "$ROOT/scripts/device/steps.sh"

step "unpack"
(cd "$DIST" && sha256sum --quiet -c SHA256SUMS) || { echo "dist-minilm/ is damaged or incomplete"; exit 1; }
cat "$DIST/BUILD-INFO"
xz -dc "$DIST/joulecut.xz" >"$WORK/joulecut" && chmod +x "$WORK/joulecut"
JC=$WORK/joulecut
source "$ROOT/scripts/device/cuda-libs.sh"
"$JC" --version
nvidia-smi --query-gpu=name,driver_version,memory.total,power.draw,power.limit,clocks.sm \
  --format=csv | tee "$REP/nvidia-smi.csv"

MODEL=$DIST/model
EVAL=$DIST/text/eval.txt
CALIB=$DIST/text/calib.txt

step "quantize int8, calibrated grids (cpu)"
run quantize-int8 "$JC" quantize "$MODEL" -o "$WORK/int8" --dtype int8 --calibration "$CALIB" --json

step "f32: cuda (portable engine) against the cpu (joulecut's kernels)"
run f32-cuda-vs-cpu "$JC" eval-embeddings "$MODEL" "$MODEL" --sentences "$EVAL" \
  --orig-device cpu --device cuda --precision f32 --sweep "$SWEEP" --json
for p in bf16 f16; do
  step "$p against f32, both on cuda"
  run "$p-cuda" "$JC" eval-embeddings "$MODEL" "$MODEL" --sentences "$EVAL" --device cuda \
    --orig-precision f32 --precision "$p" --sweep "$SWEEP" --json
done
step "int8 (Q8_0) against f32, both on cuda"
run int8-cuda "$JC" eval-embeddings "$MODEL" "$WORK/int8" --sentences "$EVAL" --device cuda \
  --orig-precision f32 --sweep "$SWEEP" --json

if [[ $BENCH == 1 ]]; then
  step "transformer bench on cuda (scripts/device/transformer-smoke.json)"
  sed -e "s|@CALIB@|$CALIB|" -e "s|@EVAL@|$EVAL|" "$ROOT/scripts/device/transformer-smoke.json" \
    >"$WORK/suite.json"
  run bench-transformer-cuda "$JC" bench --config "$WORK/suite.json" --model "$MODEL" \
    --device cuda --out "$WORK/bench" --json
  cp -f "$WORK/bench"/report.{md,csv} "$REP/" 2>/dev/null
else
  touch "$REP/bench-skipped"
fi

finish transformer-summary.py "transformer-"
