#!/usr/bin/env bash
# The demo page in Chromium against `tether serve` on a free loopback port.
# Needs what interop/run.sh installs (Chromium, playwright-core).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p tether-cli --bin tether
key="web-test-key-$RANDOM$RANDOM$RANDOM"
log=target/web-serve.log
./target/release/tether serve --listen 127.0.0.1:0 --api-key "$key" --demo >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  url=$(grep -Eo 'http://127\.0\.0\.1:[0-9]+/' "$log" | head -n1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "tether serve did not start:"; cat "$log"; exit 1; }
echo "== chromium: two pages, the server API and recovery on $url"
node web/tests/chat.mjs "$url" "$key"
