#!/usr/bin/env bash
# Coverage-guided fuzzing of joulecut's parsers with AFL++ (cargo-afl, stable toolchain): builds the
# targets in fuzz/, runs each for SECONDS (default 600) from its seed corpus in fuzz/seeds/, and
# fails if any target saved a crash (crashes are in fuzz/out/TARGET/default/crashes/). Needs
# `apt-get install afl++` and `cargo install cargo-afl`; `cargo afl config --build` once.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-600}"
targets=(header index encodings idx bench_config)
cargo afl build --release
mkdir -p out
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1
for t in "${targets[@]}"; do
  rm -rf "out/$t"
  # -V: stop after that many seconds; the stats file records executions and crashes
  cargo afl fuzz -V "$secs" -i "seeds/$t" -o "out/$t" "target/release/$t" > "out/$t.log" 2>&1
  stats="out/$t/default/fuzzer_stats"
  execs=$(awk -F': *' '$1 ~ /^execs_done/ {print $2}' "$stats")
  crashes=$(awk -F': *' '$1 ~ /^saved_crashes/ {print $2}' "$stats")
  hangs=$(awk -F': *' '$1 ~ /^saved_hangs/ {print $2}' "$stats")
  echo "fuzz $t: ${secs} s, ${execs} executions, ${crashes} crashes, ${hangs} hangs"
  if [ "$crashes" != "0" ]; then
    echo "crashes saved in fuzz/out/$t/default/crashes/" >&2
    exit 1
  fi
done
