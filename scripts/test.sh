#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what it needs first:
#   - Python 2.7 (pyenv, on every machine of this project) + virtualenv + autobahntestsuite (pip)
#   - tinyproxy and microsocks (apt): real HTTP CONNECT and SOCKS5 proxies for the client tests
#   - redis-server (apt): the multi-node hub tests start their own on private loopback ports
#   - Chromium (apt), Node `ws`, `playwright-core`, `@stomp/stompjs`, `sockjs-client` (npm ci in
#     interop/), Python `websockets` (pip, into target/interop-venv)
#   - cargo-fuzz (crates.io, when missing), run on the nightly toolchain every machine has
# Steps: format and lint, cargo tests (unit, vectors, properties, simulation, integration,
# CLI), every fuzz target for a bounded time, Autobahn|Testsuite in both roles with a drift
# check, interop with Node, Python and Chromium, and the hub's demo page in Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

started=$SECONDS
step() { printf '\n==== %s (at %d s)\n' "$*" "$((SECONDS - started))"; }

step "format and lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p tether --features axum,http2 --all-targets --locked -- -D warnings

step "proxies for the client tests (tinyproxy, microsocks), redis-server for the hub's nodes"
if ! command -v tinyproxy >/dev/null || ! command -v microsocks >/dev/null || ! command -v redis-server >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy microsocks redis-server >/dev/null
fi
# The proxy tests fail, rather than skip, without them.
export TETHER_TEST_PROXIES=required

step "cargo test --workspace"
cargo test --workspace --locked
# Features off by default, tested on their own: tether::hyper, tether::axum, the HTTP/2 client.
cargo test -p tether --features axum,http2 --locked --test hyper --test axum
cargo test -p tether --features axum,http2 --locked --doc

# 20 s per target here (scripts/fuzz.sh alone runs 30): the whole suite stays under 30 min.
export FUZZ_SECONDS=${FUZZ_SECONDS:-20}
step "fuzz: every target for ${FUZZ_SECONDS} s (cargo-fuzz, nightly)"
./scripts/fuzz.sh

# The release builds from here on (Autobahn, interop, the demo page) need no debug info, and
# build faster without it on two cores; benchmarks keep the profile's `debug = 1` for perf,
# and fuzz builds (above) keep theirs for readable crash reports.
export CARGO_PROFILE_RELEASE_DEBUG=false

step "autobahn|testsuite, server (fuzzingclient) and client (fuzzingserver)"
./autobahn/run.sh

step "interop: node ws, python websockets, chromium"
./interop/run.sh

step "the hub's demo page in chromium (two pages, server API, recovery)"
./web/tests/run.sh

step "all passed in $((SECONDS - started)) s"
