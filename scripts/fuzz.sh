#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: FUZZ_SECONDS each (default 30), two at a time
# (these machines have two cores). Installs cargo-fuzz from crates.io if it is missing; needs
# the nightly toolchain (on every machine of this project). Each target starts from its
# committed seeds (fuzz/seeds/TARGET, read only) and keeps what it finds in
# target/fuzz-corpus/TARGET. A crash fails the run: the input is in fuzz/artifacts/TARGET/
# and the last lines of the target's log are printed. Longer campaigns: fuzz/README.md.
# Built without a sanitizer (`-s none`): the code under test is safe Rust but for one block,
# which has its own property test, and without AddressSanitizer a target runs about five
# times as many inputs in its 30 s (and builds in 1.5 minutes instead of 2.2).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-30}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cd fuzz
cargo +nightly fuzz build -O -s none
mkdir -p ../target/fuzz-logs
targets=$(cargo +nightly fuzz list)

run_one() {
  local t=$1
  mkdir -p "../target/fuzz-corpus/$t"
  if cargo +nightly fuzz run -O -s none "$t" "../target/fuzz-corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"../target/fuzz-logs/$t.log" 2>&1; then
    printf '%-18s ok   %s\n' "$t" "$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "../target/fuzz-logs/$t.log" | grep -o '[0-9]*$') runs"
  else
    printf '%-18s FAILED (log: target/fuzz-logs/%s.log)\n' "$t" "$t"
    tail -n 40 "../target/fuzz-logs/$t.log"
    return 1
  fi
}

failed=0
set -- $targets
while [ $# -gt 0 ]; do
  pids=()
  for t in "$1" "${2:-}"; do
    [ -n "$t" ] || continue
    run_one "$t" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  shift; [ $# -gt 0 ] && shift
done
exit $failed
