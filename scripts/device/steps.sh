# Sourced by the device check scripts after they set ROOT, OUT, WORK and REP: `step` prints a
# timed heading, `run NAME CMD...` writes CMD's stdout to $REP/NAME.json (stderr to the log),
# records a failure in `failed` and keeps going.
failed=()

step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%T)"; }

run() {
  local name=$1
  shift
  local t0=$SECONDS
  if "$@" >"$REP/$name.json"; then
    echo "[$name] ok in $((SECONDS - t0)) s"
  else
    echo "[$name] FAILED (exit $?) after $((SECONDS - t0)) s: $*"
    failed+=("$name")
  fi
}

# finish SUMMARY_PY PREFIX: records the failed steps, writes $OUT/PREFIXsummary.json with the
# summary script, packs $REP into $OUT/PREFIXreports.tar.gz, removes $WORK, and exits: 1 when a
# step failed, else the summary's status.
finish() {
  local summary=$1 prefix=$2
  step "summary"
  printf '%s\n' "${failed[@]}" >"$REP/failed.txt"
  python3 "$ROOT/scripts/device/$summary" "$REP" >"$OUT/${prefix}summary.json"
  local status=$?
  cat "$OUT/${prefix}summary.json"
  tar -C "$WORK" -czf "$OUT/${prefix}reports.tar.gz" reports
  rm -rf "$WORK"
  if ((${#failed[@]})); then
    echo "failed steps: ${failed[*]}"
    exit 1
  fi
  exit $status
}
