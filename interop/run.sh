#!/usr/bin/env bash
# Interop over loopback, with permessage-deflate negotiated and used:
#   Node `ws`, Python `websockets` and Chromium against `tether echo`;
#   the tether client against Node `ws` and Python `websockets` servers;
#   Chromium loading tether echo's page over https:// and echoing over wss://;
#   @stomp/stompjs in Node and in Chromium against `tether serve` (STOMP, with tether.json);
#   Node's http2 module (WebSocket over HTTP/2, RFC 8441) against `tether serve` and the
#   hyper_echo and axum_chat examples; Node `ws` and Python `websockets` against hyper_echo;
#   sockjs-client in Node and in Chromium against `tether serve` (every transport each has,
#   @stomp/stompjs over SockJS, the fallback when the hub's SockJS WebSocket is off);
#   socket.io-client in Node and in Chromium against tether-socketio's socketio_chat example
#   and against `tether serve` (in Node also two nodes sharing a private redis-server).
# Installs what it needs: Chromium (apt), ws + playwright-core + @stomp/stompjs + sockjs-client
# + socket.io-client (npm ci),
# websockets (pip, venv).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d interop/node_modules/ws ] || [ ! -d interop/node_modules/playwright-core ] \
  || [ ! -d interop/node_modules/@stomp/stompjs ] || [ ! -d interop/node_modules/sockjs-client ] \
  || [ ! -d interop/node_modules/socket.io-client ] \
  || [ interop/package-lock.json -nt interop/node_modules ]; then
  (cd interop && npm ci --no-audit --no-fund --loglevel=error)
fi
venv=target/interop-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import websockets' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r interop/requirements.txt
fi
cargo build --release --locked -p tether-cli --bin tether
cargo build --release --locked -p tether --example interop_client --example gen_cert
cargo build --release --locked -p tether --features axum --example hyper_echo --example axum_chat
cargo build --release --locked -p tether-socketio --example socketio_chat
./target/release/examples/gen_cert target/tls >/dev/null

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Starts a server that prints its URL first (on stdout, or in a log line on stderr for tether);
# `scheme=http start ...` for a server that prints an http:// URL.
start() { # name command...
  local name=$1 log=target/interop-$1.log; shift
  "$@" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    url=$(grep -Eo "${scheme:-wss?}://127\.0\.0\.1:[0-9]+" "$log" | head -n1 || true)
    [ -n "$url" ] && return 0
    sleep 0.1
  done
  echo "interop: $name did not start:"; cat "$log"; return 1
}

start tether-echo ./target/release/tether echo --listen 127.0.0.1:0
echo "== node ws client -> tether echo ($url)"
node interop/node_client.mjs "$url/node"
echo "== python websockets client -> tether echo ($url)"
"$venv/bin/python" interop/py_client.py "$url/python"
echo "== chromium -> tether echo ($url)"
node interop/chromium.mjs "$url/chromium"
sleep 0.3 # let the echo server log the last close
echo "== compression used, from tether echo's log"
python3 interop/check_echo_log.py target/interop-tether-echo.log /node /python /chromium

start node-server node interop/node_server.mjs
echo "== tether client -> node ws server ($url)"
./target/release/examples/interop_client "$url"

start python-server "$venv/bin/python" -u interop/py_server.py
echo "== tether client -> python websockets server ($url)"
./target/release/examples/interop_client "$url"
echo "== over TLS (wss://), with a throwaway CA"
start tether-echo-tls ./target/release/tether echo --listen 127.0.0.1:0 --tls-cert target/tls/cert.pem --tls-key target/tls/key.pem
node interop/node_client.mjs "$url/node-tls" target/tls/ca.pem
"$venv/bin/python" interop/py_client.py "$url/python-tls" target/tls/ca.pem
echo "== chromium loads the page from tether's https:// origin and echoes over wss://"
node interop/chromium_https.mjs "https://localhost:${url##*:}/" target/tls/cert.pem target/interop-chromium-https.png
sleep 0.3
python3 interop/check_echo_log.py target/interop-tether-echo-tls.log /node-tls /python-tls
start node-server-tls node interop/node_server.mjs target/tls/cert.pem target/tls/key.pem
echo "== tether client -> node ws server over TLS ($url)"
./target/release/examples/interop_client "$url" target/tls/ca.pem
start python-server-tls "$venv/bin/python" -u interop/py_server.py target/tls/cert.pem target/tls/key.pem
echo "== tether client -> python websockets server over TLS ($url)"
./target/release/examples/interop_client "$url" target/tls/ca.pem
start tether-hub ./target/release/tether serve --listen 127.0.0.1:0 --config interop/stomp-hub.toml
echo "== @stomp/stompjs in node -> tether serve ($url)"
node interop/stomp_node.mjs "$url"
echo "== @stomp/stompjs in chromium -> tether serve (http://${url#ws://}/)"
node interop/stomp_chromium.mjs "http://${url#ws://}/"
echo "== node http2 (RFC 8441 extended CONNECT, h2c) -> tether serve (http://${url#ws://}/)"
node interop/h2_client.mjs hub "http://${url#ws://}"
hub="http://${url#ws://}"
start tether-hub-sockjs-off ./target/release/tether serve --listen 127.0.0.1:0 --config interop/sockjs-off.toml
off="http://${url#ws://}"
echo "== sockjs-client in node -> tether serve ($hub/sockjs, /stomp-sockjs; WebSocket off: $off)"
node interop/sockjs_node.mjs "$hub" "$off"
echo "== sockjs-client in chromium -> tether serve ($hub/sockjs, /stomp-sockjs; WebSocket off: $off)"
node interop/sockjs_chromium.mjs "$hub" "$off"
start hyper-echo ./target/release/examples/hyper_echo 127.0.0.1:0
echo "== node ws and python websockets clients (HTTP/1.1) -> the hyper_echo example ($url/ws)"
node interop/node_client.mjs "$url/ws"
"$venv/bin/python" interop/py_client.py "$url/ws"
echo "== node http2 (RFC 8441 extended CONNECT, h2c) -> the hyper_echo example (tether::hyper, http://${url#ws://}/)"
node interop/h2_client.mjs echo "http://${url#ws://}"
start axum-chat ./target/release/examples/axum_chat 127.0.0.1:0
echo "== node http2 (RFC 8441 extended CONNECT, h2c) -> the axum_chat example (tether::axum under axum::serve, http://${url#ws://}/)"
node interop/h2_client.mjs chat "http://${url#ws://}"
echo "== socket.io-client in node -> tether serve ($hub/socket.io/)"
node interop/socketio_hub.mjs "$hub"
# Two hubs sharing a private Redis: socket.io-client on both.
redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >target/interop-redis.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break; sleep 0.1; done
start tether-hub-redis-a ./target/release/tether serve --listen 127.0.0.1:0 --config interop/stomp-hub.toml --broker "redis://127.0.0.1:$redis_port"
node_a="http://${url#ws://}"
start tether-hub-redis-b ./target/release/tether serve --listen 127.0.0.1:0 --config interop/stomp-hub.toml --broker "redis://127.0.0.1:$redis_port"
node_b="http://${url#ws://}"
echo "== socket.io-client in node -> two tether serve nodes over Redis ($node_a, $node_b)"
node interop/socketio_hub.mjs "$node_a" "$node_b"
scheme=http start socketio-chat ./target/release/examples/socketio_chat 127.0.0.1:0
echo "== socket.io-client in node -> the socketio_chat example (tether-socketio, $url)"
node interop/socketio_node.mjs "$url"
echo "== socket.io-client in chromium -> the socketio_chat example ($url) and tether serve ($hub)"
node interop/socketio_chromium.mjs "$url" "$hub"
echo "interop: all passed"
