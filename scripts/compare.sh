#!/usr/bin/env bash
# Side-by-side speed of PyTorch, ONNX Runtime and joulecut (issues 9 and 5): creates or reuses a
# virtual environment in .venv-compare/ with torch, onnx, onnxruntime and numpy from PyPI, builds
# joulecut in release mode, then runs scripts/compare_pytorch.py with the arguments given here.
# Run it on a quiet machine; docs/COMPARE.md explains the table.
#
# usage: scripts/compare.sh [--epochs 1] [--repeats 3] [--threads 2] [--out compare.json] ...
#        (env: PYTHON=python3 to create the venv; JOULECUT=path skips the cargo build)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-compare
req=scripts/requirements-compare.txt
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
# Reinstall only when the requirements change.
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --upgrade pip >&2
  "$venv/bin/python" -m pip install -r "$req" >&2
  echo "$want" > "$stamp"
fi
if [ -z "${JOULECUT:-}" ]; then
  cargo build --release >&2
  # A private copy: a rebuild of target/ during the run must not swap binaries between arms.
  cp target/release/joulecut "$venv/bin/joulecut-compare"
  export JOULECUT=$venv/bin/joulecut-compare
fi
exec "$venv/bin/python" scripts/compare_pytorch.py "$@"
