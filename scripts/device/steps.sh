# Sourced by the device check scripts after they set REP (the reports folder): `step` prints a
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
