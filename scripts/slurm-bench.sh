#!/usr/bin/env bash
# Run a joulecut bench suite as a Slurm array job: one shard per array task (`--shard auto` reads
# SLURM_ARRAY_TASK_ID/COUNT), baselines shared through a cache directory on a shared filesystem,
# then merge the shards into one report.
#
#   sbatch --array=0-7 scripts/slurm-bench.sh full /shared/joulecut-sweep
#   sbatch --array=0-1 scripts/slurm-bench.sh my-suite.json /shared/sweep   # a suite config file
#   # when all tasks are done:
#   joulecut report merge /shared/joulecut-sweep/shard-* --out /shared/joulecut-sweep/report
#
# Any array-job runner works the same way: give each task `--shard I/N` (or `auto`) and the same
# `--cache`; scripts/k8s-bench-job.yaml is the Kubernetes Indexed Job version.
#SBATCH --job-name=joulecut-bench
#SBATCH --cpus-per-task=2
#SBATCH --time=02:00:00
set -euo pipefail
suite=${1:-full}
root=${2:-$PWD/joulecut-sweep}
: "${SLURM_ARRAY_TASK_ID:?run under sbatch --array=0-(N-1)}"
bin=${JOULECUT:-joulecut}
if [ -f "$suite" ]; then
  which=(--config "$suite")
else
  which=(--suite "$suite")
fi
mkdir -p "$root"
"$bin" bench "${which[@]}" --shard auto --cache "$root/cache" --out "$root/shard-$SLURM_ARRAY_TASK_ID"
