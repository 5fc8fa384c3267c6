#!/usr/bin/env bash
# permessage-deflate on vs off: echo throughput and wire bytes for 1 KiB and 16 KiB JSON-like
# text over loopback, interleaved repeats in one run. Writes bench/results/deflate.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p tether --example deflate_bench
{
  echo "# permessage-deflate on vs off"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m)); one client connection, $((32)) messages in flight,"
  echo "echo server in the same process, loopback. Compare the ratios, not the absolute numbers."
  echo
  ./target/release/examples/deflate_bench
} | tee bench/results/deflate.md
