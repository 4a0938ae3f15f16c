#!/usr/bin/env bash
# Run a joulecut bench suite as a Slurm array job: one shard per array task, baselines shared
# through a cache directory on a shared filesystem, then merge the shards into one report.
#
#   sbatch --array=0-7 scripts/slurm-bench.sh full /shared/joulecut-sweep
#   # when all tasks are done:
#   joulecut report merge /shared/joulecut-sweep/shard-* --out /shared/joulecut-sweep/report
#
# Any array-job runner works the same way: give each task `--shard I/N` and the same `--cache`.
#SBATCH --job-name=joulecut-bench
#SBATCH --cpus-per-task=2
#SBATCH --time=02:00:00
set -euo pipefail
suite=${1:-full}
root=${2:-$PWD/joulecut-sweep}
i=${SLURM_ARRAY_TASK_ID:?run under sbatch --array=0-(N-1)}
n=${SLURM_ARRAY_TASK_COUNT:?run under sbatch --array}
bin=${JOULECUT:-joulecut}
mkdir -p "$root"
"$bin" bench --suite "$suite" --shard "$i/$n" --cache "$root/cache" --out "$root/shard-$i"
