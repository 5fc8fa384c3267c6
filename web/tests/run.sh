#!/usr/bin/env bash
# The demo page in Chromium against `tether serve` on a free loopback port: over plain
# http:// (HTTP/1.1, WebSocket upgrades), then on the same hub with WebSockets blocked in the
# browser (the page on SockJS, ?transport=sockjs), then over https:// with a certificate
# from a throwaway test CA (the page over HTTP/2, its WebSockets over that connection, RFC 8441).
# Needs what interop/run.sh installs (Chromium, playwright-core).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p tether-cli --bin tether
cargo build --release --locked -p tether --example gen_cert
key="web-test-key-$RANDOM$RANDOM$RANDOM"
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT

# Starts the hub with the extra flags given; sets $url.
start_hub() {
  local log=target/web-serve-$1.log
  shift
  ./target/release/tether serve --listen 127.0.0.1:0 --api-key "$key" --demo "$@" >"$log" 2>&1 &
  pid=$!
  url=
  for _ in $(seq 1 100); do
    url=$(grep -Eo 'https?://127\.0\.0\.1:[0-9]+/' "$log" | head -n1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "tether serve did not start:"; cat "$log"; exit 1; }
}

start_hub http
echo "== chromium: two pages, the server API and recovery on $url"
node web/tests/chat.mjs "$url" "$key"
echo "== chromium with WebSockets blocked: the same over SockJS (?transport=sockjs) on $url"
node web/tests/chat.mjs "$url" "$key" sockjs
kill $pid
wait $pid 2>/dev/null || true

./target/release/examples/gen_cert "$tmp" >/dev/null
start_hub https --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem"
echo "== chromium over HTTPS and HTTP/2: the same, every WebSocket over the page's HTTP/2 connection, on $url"
NODE_EXTRA_CA_CERTS="$tmp/ca.pem" node web/tests/chat.mjs "$url" "$key"
