#!/usr/bin/env bash
# Streaming quantization at scale (issue 8): generates a ~2 GiB F32 checkpoint (a few hundred
# tensors, the largest ~200 MiB) and a 4-shard copy of it, quantizes both under /usr/bin/time -v,
# and prints throughput (input GB/s) and peak RSS against the largest tensor + 300 MB.
#
#   scripts/scale-bench.sh [WORKDIR]      (default: /tmp/joulecut-scale; needs ~6 GiB free)
#
# Environment: JOULECUT (binary; default: cargo build --release), SCALE_GIB (default 2),
# SCALE_RUNS (default "int8-channel int8-tensor f16 bf16"), RAYON_NUM_THREADS (default 2).
# Runs nice'd. Numbers are for a warm page cache (the input is read once before timing).
set -euo pipefail

WORK=${1:-/tmp/joulecut-scale}
GIB=${SCALE_GIB:-2}
RUNS=${SCALE_RUNS-"int8-channel int8-tensor f16 bf16"}
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK"

if [[ -z "${JOULECUT:-}" ]]; then
  (cd "$ROOT" && nice -n 10 cargo build --release --bin joulecut >&2)
  JOULECUT="$ROOT/target/release/joulecut"
fi

# --- generate (pure Python: a random block tiled with per-tensor offsets; no NaN/Inf) -----------
if [[ ! -f "$WORK/single/model.safetensors" || ! -f "$WORK/sharded/model.safetensors.index.json" ]]; then
  rm -rf "$WORK/single" "$WORK/sharded"
  mkdir -p "$WORK/single" "$WORK/sharded"
  nice -n 10 python3 - "$WORK" "$GIB" <<'PY'
import array, json, os, random, struct, sys

work, gib = sys.argv[1], float(sys.argv[2])
target = int(gib * (1 << 30))
random.seed(8)
block = array.array("f", (random.gauss(0.0, 0.02) for _ in range(1 << 20))).tobytes()  # 4 MiB

tensors = [("model.layers.0.mlp.big_proj.weight", [12800, 4096])]  # 200 MiB, the largest
h = 1536
layer = [("self_attn.q_proj.weight", [h, h]), ("self_attn.k_proj.weight", [h, h]),
         ("self_attn.v_proj.weight", [h, h]), ("self_attn.o_proj.weight", [h, h]),
         ("self_attn.q_proj.bias", [h]), ("self_attn.k_proj.bias", [h]),
         ("self_attn.v_proj.bias", [h]), ("mlp.up_proj.weight", [4 * h, h]),
         ("mlp.down_proj.weight", [h, 4 * h]), ("mlp.up_proj.bias", [4 * h]),
         ("input_layernorm.weight", [h]), ("post_attention_layernorm.weight", [h])]
size = lambda s: 4 * eval("*".join(map(str, s)))
total, l = size(tensors[0][1]), 1
while True:
    add = [(f"model.layers.{l}.{n}", s) for n, s in layer]
    if total + sum(size(s) for _, s in add) > target:
        break
    tensors += add
    total += sum(size(s) for _, s in add)
    l += 1

def data(i, nbytes):
    off = (i * 4096) % len(block)
    rot = block[off:] + block[:off]
    reps, rest = divmod(nbytes, len(rot))
    return reps, rot, rest

def write(path, items, meta):
    header, off = {"__metadata__": meta}, 0
    for name, shape in items:
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + size(shape)]}
        off += size(shape)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for name, shape in items:
            reps, rot, rest = data(hash(name) & 0xFFFF, size(shape))
            for _ in range(reps):
                f.write(rot)
            f.write(rot[:rest])
    return off

meta = {"format": "pt"}
write(f"{work}/single/model.safetensors", tensors, meta)
shards, per, cur, acc = [], total / 4, [], 0
for t in tensors:
    cur.append(t)
    acc += size(t[1])
    if acc >= per * (len(shards) + 1) and len(shards) < 3:
        shards.append(cur)
        cur = []
shards.append(cur)
wm, ts = {}, 0
for k, items in enumerate(shards):
    name = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
    ts += write(f"{work}/sharded/{name}", items, meta)
    wm.update({n: name for n, _ in items})
json.dump({"metadata": {"total_size": ts}, "weight_map": wm},
          open(f"{work}/sharded/model.safetensors.index.json", "w"), indent=2)
json.dump({"model_type": "llama", "hidden_size": h}, open(f"{work}/sharded/config.json", "w"))
print(f"generated {len(tensors)} tensors, {total / 1e9:.3f} GB, largest {size(tensors[0][1]) / 1e6:.1f} MB",
      file=sys.stderr)
PY
fi

IN_BYTES=$(stat -c %s "$WORK/single/model.safetensors")
LARGEST=$((12800 * 4096 * 4))
cat "$WORK/single/model.safetensors" "$WORK"/sharded/*.safetensors > /dev/null  # warm the page cache

run() { # label input output args...
  local label=$1 in=$2 out=$3; shift 3
  rm -rf "$out"
  local log="$WORK/time-$label.txt"
  nice -n 10 /usr/bin/time -v "$JOULECUT" quantize "$in" -o "$out" "$@" > /dev/null 2> "$log"
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  local secs
  secs=$(python3 -c "p='$wall'.split(':'); print(sum(float(x) * 60 ** i for i, x in enumerate(reversed(p))))")
  python3 - "$label" "$IN_BYTES" "$secs" "$rss" "$LARGEST" <<'PY'
import sys
label, n, secs, rss_kb, largest = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rss = rss_kb * 1024
limit = largest + 300e6
print(f"{label:<22} {n / 1e9:6.3f} GB in {secs:6.2f} s = {n / 1e9 / secs:5.2f} GB/s   "
      f"peak RSS {rss / 1e6:7.1f} MB (largest tensor {largest / 1e6:.1f} MB + 300 MB = {limit / 1e6:.1f} MB: "
      f"{'ok' if rss <= limit else 'OVER'})")
PY
  rm -rf "$out"
}

echo "joulecut quantize, RAYON_NUM_THREADS=$RAYON_NUM_THREADS, $(nproc) CPUs, input $(python3 -c "print(f'{$IN_BYTES/1e9:.3f}')") GB"
for r in $RUNS; do
  case $r in
    int8-channel) args=(--dtype int8 --granularity channel) ;;
    int8-tensor) args=(--dtype int8 --granularity tensor) ;;
    f16) args=(--dtype f16) ;;
    bf16) args=(--dtype bf16) ;;
    *) echo "unknown run $r" >&2; exit 2 ;;
  esac
  run "$r" "$WORK/single/model.safetensors" "$WORK/out.safetensors" "${args[@]}"
  run "$r-4shards" "$WORK/sharded" "$WORK/out-sharded" "${args[@]}"
done
