#!/usr/bin/env bash
# Reproduces the distillation experiment of docs/DISTILLATION.md: for each student, the student
# trained alone and distilled with each KD setting, same seeds (so the same init and batch order),
# same epochs; medians over the seeds of test accuracy and training joules.
#
#   scripts/distill_experiment.sh                       # defaults below
#   TEACHER=/tmp/t.safetensors STUDENTS="mlp:784-32-10" CONFIGS="2:0.5 4:0.9" SEEDS="0 1 2" \
#     scripts/distill_experiment.sh
#   TEACHERS="/tmp/a.safetensors /tmp/b.safetensors" scripts/distill_experiment.sh  # mean of logits
#
# Env: JOULECUT (binary; default target/release/joulecut, else target/debug/joulecut), TEACHER (a
# teacher checkpoint; trained with TEACHER_RECIPE and TEACHER_SCHEDULE if missing), TEACHERS (instead of TEACHER: several
# existing checkpoints, one `--teacher` each, the student learns their mean logits), STUDENTS, CONFIGS (space-separated
# T:alpha[:label_smoothing]), SEEDS, EPOCHS, OUT (results directory), DATA (dataset directory).
# Every run's JSON is kept in $OUT/runs; the table goes to stdout and $OUT/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
JOULECUT=${JOULECUT:-$( [ -x target/release/joulecut ] && echo target/release/joulecut || echo target/debug/joulecut )}
OUT=${OUT:-/tmp/joulecut-distill-experiment}
TEACHER=${TEACHER:-$OUT/teacher.safetensors}
# The teacher: joulecut's default recipe (Adam 1e-3, batch 128, 5 epochs), then 5 more epochs at
# lr 1e-4 (docs/DISTILLATION.md: the 5-epoch teacher is too noisy to teach), each stage at a constant
# learning rate (TEACHER_SCHEDULE): the `teacher10` of the docs' tables, made before lr schedules.
TEACHER_RECIPE=${TEACHER_RECIPE:-"5:1e-3 5:1e-4"}
TEACHER_SCHEDULE=${TEACHER_SCHEDULE:-constant}
STUDENTS=${STUDENTS:-"mlp:784-64-10 mlp:784-32-10 lenet-300-100"}
CONFIGS=${CONFIGS:-"4:0.9 2:0.5 1:0.5 1:0.9"}
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-5}
DATA_ARGS=()
[ -n "${DATA:-}" ] && DATA_ARGS=(--data "$DATA")
mkdir -p "$OUT/runs"

if [ -n "${TEACHERS:-}" ]; then
  TEACHER_ARGS=()
  names=()
  for t in $TEACHERS; do
    TEACHER_ARGS+=(--teacher "$t")
    names+=("$(basename "$t" .safetensors)")
  done
  TNAME=$(IFS=+; echo "${names[*]}")
elif [ ! -f "$TEACHER" ]; then
  init=()
  stage=0
  for st in $TEACHER_RECIPE; do
    stage=$((stage + 1))
    ep=${st%%:*}; lr=${st##*:}
    out="$OUT/teacher-stage$stage.safetensors"
    if [ ${#init[@]} -eq 0 ]; then
      "$JOULECUT" train --model teacher-mlp --epochs "$ep" --lr "$lr" --lr-schedule "$TEACHER_SCHEDULE" --seed 0 -o "$out" --json "${DATA_ARGS[@]}" -q > "$OUT/runs/teacher-stage$stage.json"
    else
      "$JOULECUT" train "${init[@]}" --epochs "$ep" --lr "$lr" --lr-schedule "$TEACHER_SCHEDULE" --seed "$((stage - 1))" -o "$out" --json "${DATA_ARGS[@]}" -q > "$OUT/runs/teacher-stage$stage.json"
    fi
    init=(--init "$out")
    echo "teacher stage $stage ($ep epochs, lr $lr): accuracy $(jq .accuracy "$OUT/runs/teacher-stage$stage.json")" >&2
  done
  cp "$out" "$TEACHER"
fi
if [ -z "${TEACHERS:-}" ]; then
  TEACHER_ARGS=(--teacher "$TEACHER")
  TNAME=$(basename "$TEACHER" .safetensors)
fi
LOGITS="$OUT/teacher-logits-$TNAME.safetensors"

safe() { echo "$1" | tr ':/' '__'; }
for student in $STUDENTS; do
  for seed in $SEEDS; do
    f="$OUT/runs/$(safe "$student")-alone-e$EPOCHS-s$seed.json"
    [ -s "$f" ] || "$JOULECUT" train --model "$student" --epochs "$EPOCHS" --seed "$seed" \
      -o "$OUT/student.safetensors" --json "${DATA_ARGS[@]}" > "$f"
    echo "$student alone seed $seed: $(jq .accuracy "$f")" >&2
    for cfg in $CONFIGS; do
      IFS=: read -r t a ls <<< "$cfg"
      ls=${ls:-0}
      f="$OUT/runs/$(safe "$student")-kd-T$t-a$a-ls$ls-$TNAME-e$EPOCHS-s$seed.json"
      [ -s "$f" ] || "$JOULECUT" distill "${TEACHER_ARGS[@]}" --student "$student" --temperature "$t" \
        --alpha "$a" --label-smoothing "$ls" --epochs "$EPOCHS" --seed "$seed" \
        --teacher-logits "$LOGITS" -o "$OUT/student.safetensors" --json "${DATA_ARGS[@]}" > "$f"
      echo "$student T=$t alpha=$a ls=$ls seed $seed: $(jq .accuracy "$f")" >&2
    done
  done
done

# The table: median accuracy and median training joules per arm.
python3 - "$OUT" "$EPOCHS" "$TNAME" "$STUDENTS" "$CONFIGS" "$SEEDS" <<'PY' | tee "$OUT/table.md"
import json, os, statistics, sys
out, epochs, tname, students, configs, seeds = sys.argv[1:]
safe = lambda s: s.replace(":", "_").replace("/", "_")
def load(p):
    with open(os.path.join(out, "runs", p)) as f:
        return json.load(f)
def cfg(c):
    t, a, ls = (c.split(":") + ["0"])[:3]
    return t, a, ls
def kd(st, c, s):
    t, a, ls = cfg(c)
    return load(f"{safe(st)}-kd-T{t}-a{a}-ls{ls}-{tname}-e{epochs}-s{s}.json")
teacher = kd(students.split()[0], configs.split()[0], seeds.split()[0])
print(f"teacher: {tname} (test accuracy {teacher['teacher_accuracy']:.4f}); {epochs} epochs; seeds {seeds}; energy is whatever the meter reports (see provenance)\n")
print("| student | arm | T | alpha | LS | acc per seed | median acc | Δ vs alone (pt) | median train J | J ratio | provenance |")
print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|")
for st in students.split():
    alone = [load(f"{safe(st)}-alone-e{epochs}-s{s}.json") for s in seeds.split()]
    acc0 = statistics.median(r["accuracy"] for r in alone)
    j0 = statistics.median(r["energy"]["joules"] for r in alone)
    accs = " ".join(f"{r['accuracy']:.4f}" for r in alone)
    print(f"| {st} | alone | | | | {accs} | {acc0:.4f} | | {j0:.1f} | 1.00 | {alone[0]['energy']['provenance']} |")
    for c in configs.split():
        t, a, ls = cfg(c)
        runs = [kd(st, c, s) for s in seeds.split()]
        acc = statistics.median(r["accuracy"] for r in runs)
        j = statistics.median(r["energy"]["joules"] for r in runs)
        accs = " ".join(f"{r['accuracy']:.4f}" for r in runs)
        print(f"| {st} | KD | {t} | {a} | {ls} | {accs} | {acc:.4f} | {100*(acc-acc0):+.2f} | {j:.1f} | {j/j0:.2f} | {runs[0]['energy']['provenance']} |")
PY
