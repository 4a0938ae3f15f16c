#!/usr/bin/env bash
# Builds joulecut with `--features cuda` on a machine WITHOUT a GPU or a CUDA install, and stages what
# the device script needs under dist-cuda/ (see docs/CUDA.md).
#
# Why each piece (candle 0.11.1, cudarc 0.19.10; ../shared/notes/candle-0.11-findings.md §6):
# * PyPI CUDA 13.0 wheels, pinned: the H100's driver (580) runs CUDA 13.0; PTX from a newer nvcc does
#   not load there, and cudarc 0.19.10 panics on toolkits newer than 13.4.
# * a stub libcuda.so generated from cuda.h: candle links cudarc with `dynamic-linking` (-lcuda ...) and
#   no wheel ships the driver library. The stub is for linking only; the real one comes with the driver.
# * unversioned .so symlinks: the wheels ship only libX.so.N, the linker wants libX.so.
# * CUDA_COMPUTE_CAP=90 (H100/H200): otherwise candle-kernels' build asks nvidia-smi.
# * nvcc on PATH: cudarc reads the toolkit version from `nvcc --version`.
#
# Caches: the venv (.venv-cuda/, ~1.2 GB) and CARGO_TARGET_DIR=target-cuda/ (a clean build takes ~14
# min on 2 cores, mostly nvcc on candle-kernels). Both are gitignored. Re-running is incremental.
#
# Usage: scripts/build-cuda.sh [--check]    (--check: `cargo check --features cuda` only, no staging)
# Env:   PYTHON (default python3), JOULECUT_CUDA_VENV, CARGO_TARGET_DIR, JOULECUT_DATA (dataset to stage).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MODE=build
[[ "${1:-}" == "--check" ]] && MODE=check

PYTHON=${PYTHON:-python3}
VENV=${JOULECUT_CUDA_VENV:-$ROOT/.venv-cuda}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-cuda}
DIST=$ROOT/dist-cuda
DATA=${JOULECUT_DATA:-/usr/share/datasets/fashion-mnist}

# The exact toolchain: change these together, and re-check the driver's CUDA version on the device.
WHEELS=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-cuda-cccl==13.0.85"
  "nvidia-cuda-nvrtc==13.0.88"
  "nvidia-nvvm==13.0.88"
  "nvidia-cublas==13.0.2.14"
  "nvidia-curand==10.4.0.35"
)

log() { printf '[build-cuda] %s\n' "$*" >&2; }

# 1. The venv with the pinned wheels (re-made only when the pin list changes).
STAMP=$VENV/.joulecut-wheels
if [[ ! -f "$STAMP" ]] || [[ "$(cat "$STAMP")" != "$(printf '%s\n' "${WHEELS[@]}")" ]]; then
  log "creating $VENV with ${#WHEELS[@]} pinned CUDA 13.0 wheels"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${WHEELS[@]}"
  printf '%s\n' "${WHEELS[@]}" >"$STAMP"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CU=$SITE/nvidia/cu13 # every cu13 wheel shares bin/ include/ lib/ nvvm/
[[ -x "$CU/bin/nvcc" ]] || { log "no nvcc at $CU/bin/nvcc: is the venv complete?"; exit 1; }

# 2. A CUDA_HOME-shaped root: the wheels' bin/include/nvvm, and lib/ with the stub + symlinks.
CUDAROOT=$VENV/cudaroot
mkdir -p "$CUDAROOT/lib"
for d in bin include nvvm; do ln -sfn "$CU/$d" "$CUDAROOT/$d"; done
if [[ ! -f "$CUDAROOT/lib/libcuda.so" || "$CU/include/cuda.h" -nt "$CUDAROOT/lib/libcuda.so" ]]; then
  log "generating the stub libcuda.so from cuda.h (link-time only)"
  gcc -E -P -I"$CU/include" "$CU/include/cuda.h" |
    grep -oE '\bcu[A-Z][A-Za-z0-9_]*\s*\(' | sed 's/\s*(//' | sort -u |
    awk '{print "int "$1"(void){return 999;}"}' >"$CUDAROOT/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDAROOT/lib/libcuda.so" "$CUDAROOT/stub.c"
fi
link_unversioned() { # libNAME.so -> the wheel's libNAME.so.N
  local name=$1 target
  target=$(ls "$CU/lib/lib$name.so."* 2>/dev/null | sort | head -n1)
  [[ -n "$target" ]] || { log "no lib$name.so.* in $CU/lib"; exit 1; }
  ln -sfn "$target" "$CUDAROOT/lib/lib$name.so"
}
for l in cublas cublasLt cudart nvrtc curand; do link_unversioned "$l"; done

export PATH=$CUDAROOT/bin:$PATH
export CUDA_HOME=$CUDAROOT CUDA_PATH=$CUDAROOT CUDA_ROOT=$CUDAROOT
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$CUDAROOT/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
log "nvcc: $(nvcc --version | tail -n1); CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP; CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

# 3. Compile.
if [[ $MODE == check ]]; then
  cargo check --workspace --all-targets --features cuda
  log "cargo check --features cuda: ok"
  exit 0
fi
start=$(date +%s)
cargo build --release --features cuda --bin joulecut
BIN=$CARGO_TARGET_DIR/release/joulecut
log "built $BIN in $(($(date +%s) - start)) s"

# 4. Stage for the device (one carry path, well under the 64 MiB limit): the binary without debug info,
#    xz-compressed; the dataset; the CPU-side cross-check needs nothing else. The device script finds
#    cuBLAS/cuRAND/cudart in its Python's nvidia/cu13/lib (or /usr/local/cuda) at run time, so no
#    rpath is baked in.
mkdir -p "$DIST/fashion-mnist"
tmp=$(mktemp "$DIST/.joulecut.XXXXXX")
objcopy --strip-debug "$BIN" "$tmp"
xz -T0 -6 -c "$tmp" >"$tmp.xz"
rm -f "$tmp"
mv -f "$tmp.xz" "$DIST/joulecut.xz"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [[ -f "$DATA/$f.gz" ]]; then cp -f "$DATA/$f.gz" "$DIST/fashion-mnist/"; else
    log "dataset file $DATA/$f.gz missing (set JOULECUT_DATA)"; exit 1; fi
done
{
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (dirty)')"
  echo "built $(date -u +%FT%TZ)"
  echo "nvcc $(nvcc --version | tail -n1)"
  echo "CUDA_COMPUTE_CAP $CUDA_COMPUTE_CAP"
  printf 'wheel %s\n' "${WHEELS[@]}"
  echo "needed $(objdump -p "$BIN" | awk '/NEEDED/{print $2}' | tr '\n' ' ')"
} >"$DIST/BUILD-INFO"
(cd "$DIST" && sha256sum joulecut.xz fashion-mnist/* >SHA256SUMS)
log "staged $(du -sh "$DIST" | cut -f1) in $DIST:"
ls -l "$DIST" >&2
