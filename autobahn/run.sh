#!/usr/bin/env bash
# Runs Autobahn|Testsuite against tether in both roles, over ws:// and wss://, side by side, and
# fails on any case that is not OK/INFORMATIONAL or that differs from the expected files.
#   fuzzingclient (the suite is the client) -> `tether echo`            -> expected-server.json
#   fuzzingserver (the suite is the server) -> examples/autobahn_client -> expected-client.json
#   the same over TLS, cases 1-10, with a throwaway CA -> expected-{server,client}-tls.json
# Pass --write to refresh the expected files from this run (then review `git diff`).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}

venv=target/autobahn-venv
if [ ! -x "$venv/bin/wstest" ] || [ autobahn/requirements.txt -nt "$venv/bin/wstest" ]; then
  echo "autobahn: installing autobahntestsuite into $venv (Python 2.7 from pyenv)"
  PY2=$(PYENV_VERSION=2.7.18 pyenv which python)
  "$PY2" -m pip install -q "virtualenv<20.22"
  "$PY2" -m virtualenv -q "$venv"
  "$venv/bin/pip" install -q -r autobahn/requirements.txt
fi

cargo build --release --locked -p tether-cli --bin tether
cargo build --release --locked -p tether --example autobahn_client --example gen_cert
./target/release/examples/gen_cert target/tls >/dev/null
rm -rf target/autobahn
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { # host port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "autobahn: nothing listening on $1:$2" >&2
  return 1
}

./target/release/tether echo --listen 127.0.0.1:9002 2>target/autobahn-echo.log &
pids+=($!)
"$venv/bin/wstest" -m fuzzingserver --webport 0 -s autobahn/fuzzingserver.json >target/autobahn-fuzzingserver.log 2>&1 &
pids+=($!)
./target/release/tether echo --listen 127.0.0.1:9012 --tls-cert target/tls/cert.pem --tls-key target/tls/key.pem \
  2>target/autobahn-echo-tls.log &
pids+=($!)
"$venv/bin/wstest" -m fuzzingserver --webport 0 -s autobahn/fuzzingserver-tls.json >target/autobahn-fuzzingserver-tls.log 2>&1 &
pids+=($!)
for port in 9002 9003 9012 9013; do wait_port 127.0.0.1 $port; done

# The TLS runs (cases 1-10, about 20 s each) go alongside the long plain ones. Each run is
# stopped after 30 minutes (a hung peer); the plain ones take 7-9 minutes on these machines
# on a normal day and went past 15 on a slow one (both cores busy with wstest throughout).
timeout 1800 "$venv/bin/wstest" -m fuzzingclient -s autobahn/fuzzingclient-tls.json >target/autobahn-fuzzingclient-tls.log 2>&1 &
fc_tls=$!
timeout 1800 ./target/release/examples/autobahn_client wss://127.0.0.1:9013 tether target/tls/ca.pem &
client_tls=$!

timeout 1800 "$venv/bin/wstest" -m fuzzingclient -s autobahn/fuzzingclient.json >target/autobahn-fuzzingclient.log 2>&1 &
fc=$!
timeout 1800 ./target/release/examples/autobahn_client ws://127.0.0.1:9003 tether
wait "$fc"
wait "$fc_tls"
wait "$client_tls"

status=0
python3 autobahn/check.py target/autobahn/server autobahn/expected-server.json $mode || status=1
python3 autobahn/check.py target/autobahn/client autobahn/expected-client.json $mode || status=1
python3 autobahn/check.py target/autobahn/server-tls autobahn/expected-server-tls.json $mode || status=1
python3 autobahn/check.py target/autobahn/client-tls autobahn/expected-client-tls.json $mode || status=1
exit $status
