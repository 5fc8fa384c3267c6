#!/usr/bin/env bash
# Runs Autobahn|Testsuite against tether in both roles, side by side, and fails on any case
# that is not OK/INFORMATIONAL or that differs from autobahn/expected-{server,client}.json.
#   fuzzingclient (the suite is the client) -> `tether echo`       -> expected-server.json
#   fuzzingserver (the suite is the server) -> examples/autobahn_client -> expected-client.json
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
cargo build --release --locked -p tether --example autobahn_client
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
"$venv/bin/wstest" -m fuzzingserver -s autobahn/fuzzingserver.json >target/autobahn-fuzzingserver.log 2>&1 &
pids+=($!)
wait_port 127.0.0.1 9002
wait_port 127.0.0.1 9003

timeout 900 "$venv/bin/wstest" -m fuzzingclient -s autobahn/fuzzingclient.json >target/autobahn-fuzzingclient.log 2>&1 &
fc=$!
timeout 900 ./target/release/examples/autobahn_client ws://127.0.0.1:9003 tether
wait "$fc"

status=0
python3 autobahn/check.py target/autobahn/server autobahn/expected-server.json $mode || status=1
python3 autobahn/check.py target/autobahn/client autobahn/expected-client.json $mode || status=1
exit $status
