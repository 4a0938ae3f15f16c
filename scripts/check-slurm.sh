#!/usr/bin/env bash
# Checks `--shard auto` and scripts/slurm-bench.sh on a real Slurm: brings up a single-node cluster
# on this machine (Debian's slurm-wlm and munge, a private config and state directory), submits
# slurm-bench.sh as a 2-task array over a tiny suite, waits, merges the shards, runs the same suite
# unsharded against the same baseline cache, and compares the two reports run by run.
#
#   scripts/check-slurm.sh [JOULECUT_BINARY]     # as root; default target/debug/joulecut
#
# Needs the Fashion-MNIST dataset (Debian's dataset-fashion-mnist). Leaves the cluster stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/joulecut}")
[ -x "$bin" ] || { echo "no joulecut binary at $bin (cargo build first)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root: it starts munged, slurmctld and slurmd" >&2; exit 2; }
command -v slurmctld >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge

work=$(mktemp -d /tmp/joulecut-slurm.XXXXXX)
conf=$work/etc
mkdir -p "$conf" "$work/state" "$work/spool" "$work/log" "$work/sweep"
node=$(hostname -s)
export SLURM_CONF=$conf/slurm.conf
cat > "$SLURM_CONF" <<CONF
ClusterName=joulecut-check
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$node CPUs=$(nproc) State=UNKNOWN
PartitionName=check Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF

cleanup() {
  kill "$(cat "$work/slurmd.pid" 2>/dev/null)" "$(cat "$work/slurmctld.pid" 2>/dev/null)" 2>/dev/null || true
}
trap cleanup EXIT

# munge: one key, one daemon (a running munged is reused)
if ! pgrep -x munged >/dev/null; then
  [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
  chown -R munge:munge /etc/munge 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- munged
fi
slurmctld -i
slurmd
for _ in $(seq 60); do
  sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix)' && break
  sleep 1
done
sinfo

# A tiny suite: one small MLP, 1 epoch, two compressed variants, two seeds (4 runs of variants,
# 2 baselines), so each of the two shards trains one baseline and compresses it.
cat > "$work/tiny.json" <<'JSON'
{
  "name": "slurm-check",
  "models": ["mlp:784-32-10"],
  "seeds": [0, 1],
  "baseline": { "epochs": 1, "batch_size": 128, "lr": 0.003 },
  "eval": { "batch_size": 256, "repeats": 1, "latency_iters": 20 },
  "variants": [
    { "name": "int8", "steps": [ { "op": "quantize", "dtype": "int8" } ] },
    { "name": "prune50", "steps": [ { "op": "prune", "sparsity": 0.5, "granularity": "unstructured" } ] }
  ]
}
JSON

start=$(date +%s)
JOULECUT=$bin sbatch --wait --array=0-1 --output="$work/log/task-%a.out" \
  scripts/slurm-bench.sh "$work/tiny.json" "$work/sweep"
echo "array job finished in $(( $(date +%s) - start )) s"
for f in "$work"/log/task-*.out; do echo "--- $f"; tail -3 "$f"; done
"$bin" report merge "$work"/sweep/shard-0 "$work"/sweep/shard-1 --out "$work/merged" >/dev/null
"$bin" bench --config "$work/tiny.json" --cache "$work/sweep/cache" --out "$work/single" >/dev/null 2>&1

python3 - "$work/merged/report.json" "$work/single/report.json" <<'PY'
import json, sys
def rows(p):
    r = json.load(open(p))
    return {(x["model"], x["variant"], x["seed"]): x for x in r["rows"]}
merged, single = rows(sys.argv[1]), rows(sys.argv[2])
assert merged.keys() == single.keys(), (sorted(merged), sorted(single))
for k in sorted(merged):
    a, b = merged[k], single[k]
    for f in ("accuracy", "bytes", "weight_sparsity"):
        assert a[f] == b[f], (k, f, a[f], b[f])
    print(f"{k[0]} seed {k[2]} {k[1]:<9} accuracy {a['accuracy']:.4f} = {b['accuracy']:.4f}, {a['bytes']} bytes")
print(f"slurm check: OK, {len(merged)} runs; the merged 2-task array report equals the unsharded run")
PY
