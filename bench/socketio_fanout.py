#!/usr/bin/env python3
"""Socket.IO fan-out: `tether serve` beside the Node `socket.io` server (npm, pinned in
bench/node/package.json; bench/node/socketio_fanout.mjs) doing the same broadcast, each
pinned to core 0, with N Socket.IO subscribers over WebSocket on C channels (rooms) and one
publisher posting through an HTTP API at a fixed rate, all from `tether bench --mode fanout
--socketio` pinned to core 1. The servers alternate within each repeat, a fresh process per
run. Reports deliveries/s, publish-to-delivery latency, the server's and the loader's CPU,
and deliveries per server CPU-second with Node's ratio to tether. Writes
bench/results/socketio_fanout.md and socketio_fanout.raw.jsonl.

usage: bench/socketio_fanout.py [--repeats N] [--duration SECS]
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

from procstat import cpu_seconds, spread, write_report  # bench/procstat.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TETHER = os.path.join(ROOT, "target/release/tether")
KEY = "fanout-bench-key-0123456789"
# (subscribers, channels, publications per second)
CASES = [(1000, 1, 200), (10000, 1, 20), (10000, 1000, 2000)]
SERVERS = ["tether", "node socket.io"]


def start(server):
    log = open(os.path.join(ROOT, f"target/bench-socketio-{server.replace(' ', '-')}.log"), "w+")
    if server == "tether":
        cmd = [TETHER, "serve", "--listen", "127.0.0.1:0", "--api-key", KEY, "--max-connections-per-ip", "20000",
               "--max-connections", "20000", "--socketio-max-sessions", "20000",
               "--config", os.path.join(ROOT, "bench/hub.toml")]
        env = dict(os.environ, TETHER_LOG="warn,info")
    else:
        cmd = ["node", os.path.join(ROOT, "bench/node/socketio_fanout.mjs")]
        env = dict(os.environ)
    proc = subprocess.Popen(["taskset", "-c", "0"] + cmd, stderr=log, stdout=log, cwd=ROOT, env=env)
    for _ in range(200):
        log.seek(0)
        m = re.search(r"(?:ws|http)://127\.0\.0\.1:(\d+)", log.read())
        if m:
            return proc, f"ws://127.0.0.1:{m.group(1)}/"
        time.sleep(0.05)
    proc.kill()
    sys.exit(f"{server} did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    opts = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tether-cli", "--bin", "tether"],
                   check=True, cwd=ROOT)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], check=True,
                   cwd=os.path.join(ROOT, "bench/node"))
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    rows = []
    for rep in range(opts.repeats):
        for (subs, channels, rate), server in [(c, s) for c in CASES for s in SERVERS]:
            proc, url = start(server)
            try:
                before = cpu_seconds(proc.pid)
                loader_before = resource.getrusage(resource.RUSAGE_CHILDREN)
                wall = time.monotonic()
                env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
                out = subprocess.run(
                    ["taskset", "-c", "1", TETHER, "bench", url, "--mode", "fanout", "--socketio", "-c", str(subs),
                     "--channels", str(channels), "--rate", str(rate), "-d", str(opts.duration),
                     "--channel-prefix", "ticker:bench", "--api-key", KEY, "--json", "-q"],
                    capture_output=True, text=True, timeout=opts.duration + 240, cwd=ROOT, env=env)
                wall = time.monotonic() - wall
                loader = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = cpu_seconds(proc.pid) - before
            finally:
                proc.kill()
                proc.wait()
            if not out.stdout.strip():
                sys.exit(f"bench failed against {server}: {out.stderr}")
            r = json.loads(out.stdout)
            loader_cpu = (loader.ru_utime + loader.ru_stime) - (loader_before.ru_utime + loader_before.ru_stime)
            r.update(server=server, repeat=rep, rate=rate, server_cpu_s=round(cpu, 2),
                     loader_cpu_pct=round(100 * loader_cpu / wall, 1))
            rows.append(r)
            print(f"{server:<15} subs={subs:<6} channels={channels:<5} rate={rate:<5} rep {rep}: "
                  f"{r['deliveries_per_s']:>10.0f} deliveries/s  {r['delivered']}/{r['expected']}  "
                  f"p50 {r['latency_ms']['p50']:.2f} ms  p99 {r['latency_ms']['p99']:.2f} ms  "
                  f"server cpu {cpu:.2f} s  loader {r['loader_cpu_pct']}%  errors {r['errors'] or 'none'}", flush=True)
    with open(os.path.join(ROOT, "bench/results/socketio_fanout.raw.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    lines = [
        "# Socket.IO fan-out: tether serve beside Node socket.io",
        "",
        f"Measured {datetime.date.today()} on {os.cpu_count()} cores ({platform.machine()}), loopback; each server "
        f"on core 0, the loader (`tether bench --mode fanout --socketio`: Socket.IO subscribers over WebSocket "
        f"and the publisher) on core 1; {opts.repeats} runs of {opts.duration:g} s per case and server, the "
        "servers alternating, a fresh process each run. Both servers: no compression, logging at warn or off; "
        f"socket.io 4.8.4 on Node {node}. Each subscriber joins one channel (a room) with the event `subscribe` "
        "and gets `publication` events, the same frames from both servers "
        "(`42[\"publication\",\"<channel>\",{\"offset\":N,\"data\":{…}}]`); one publisher POSTs "
        "`{channel, data}` (about 40 B of data) on one keep-alive HTTP connection, waiting for each answer. "
        "Median (min-max). Latency is from the publisher's clock before the POST to the subscriber's receipt. "
        "Loader CPU is over its whole run (connecting included).",
        "",
        "| subscribers | channels | publications/s | server | deliveries/s | delivered/expected (all runs) | p50 ms | p99 ms | server CPU s per run | deliveries per server CPU-s | ratio to tether | loader CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for subs, channels, rate in CASES:
        base = None
        for server in SERVERS:
            rs = [r for r in rows if r["subscribers"] == subs and r["channels"] == channels and r["server"] == server]
            d = [r["deliveries_per_s"] for r in rs]
            p50 = [r["latency_ms"]["p50"] for r in rs]
            p99 = [r["latency_ms"]["p99"] for r in rs]
            got = sum(r["delivered"] for r in rs)
            want = sum(r["expected"] for r in rs)
            cpu = statistics.median(r["server_cpu_s"] for r in rs)
            eff_all = [r["delivered"] / max(r["server_cpu_s"], 0.01) for r in rs]
            eff = statistics.median(eff_all)
            base = base or eff
            loader = max(r["loader_cpu_pct"] for r in rs)
            lines.append(
                f"| {subs:,} | {channels:,} | {rate:,} | {server} | {spread(d)} | {got:,}/{want:,} | "
                f"{spread(p50, '.2f')} | {spread(p99, '.2f')} | {cpu:.2f} | {spread(eff_all)} | {eff / base:.2f} | "
                f"{loader:.0f} (max) |")
    write_report(ROOT, "socketio_fanout", lines)


if __name__ == "__main__":
    main()
