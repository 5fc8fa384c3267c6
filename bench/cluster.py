#!/usr/bin/env python3
"""Hub fan-out across nodes: `tether serve` with the memory broker (one node), and with the
Redis broker on one and on three nodes over one private redis-server. N subscribers are
spread over the nodes (`tether bench --mode fanout --subscribe-url ...`); one publisher posts
through node 0's server API at a fixed rate, so with three nodes two thirds of every
delivery crosses Redis. Reports deliveries/s, publish-to-delivery latency (median of runs,
min-max), and the CPU seconds of the hub nodes and of Redis. Writes
bench/results/cluster.md and cluster.raw.jsonl.

On these 2-core machines the nodes, Redis and the loader share both cores (no pinning: three
nodes cannot each have a core), so the numbers say what Redis costs per delivery and in
latency, not how far three machines would scale.

usage: bench/cluster.py [--repeats N] [--duration SECS]
"""
import argparse
import datetime
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time

from procstat import cpu_seconds, spread, write_report  # bench/procstat.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TETHER = os.path.join(ROOT, "target/release/tether")
KEY = "cluster-bench-key-0123456789"
# (subscribers, channels, publications per second)
CASES = [(1000, 1, 200), (3000, 10, 500)]
SETUPS = [("memory", 1), ("redis", 1), ("redis", 3)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis():
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit("redis-server did not start")


def start_node(i, broker):
    log = open(os.path.join(ROOT, f"target/bench-cluster-node{i}.log"), "w+")
    args = [TETHER, "serve", "--listen", "127.0.0.1:0", "--api-key", KEY,
            "--max-connections-per-ip", "20000", "--max-connections", "20000",
            "--config", os.path.join(ROOT, "bench/hub.toml")]
    if broker:
        args += ["--broker", broker]
    proc = subprocess.Popen(args, stderr=log, stdout=subprocess.DEVNULL, cwd=ROOT,
                            env=dict(os.environ, TETHER_LOG="warn,info"))
    for _ in range(200):
        log.seek(0)
        text = log.read()
        m = re.search(r"ws://127\.0\.0\.1:\d+/ws", text)
        if m and (not broker or "redis: connected" in text):
            return proc, m.group(0)
        time.sleep(0.05)
    proc.kill()
    sys.exit(f"tether serve did not start: {text}")


def run_case(setup, nodes_n, subs, channels, rate, duration):
    redis, broker = (None, None)
    if setup == "redis":
        redis, port = start_redis()
        broker = f"redis://127.0.0.1:{port}"
    nodes = [start_node(i, broker) for i in range(nodes_n)]
    procs = [p for p, _ in nodes] + ([redis] if redis else [])
    try:
        before = [cpu_seconds(p.pid) for p in procs]
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        urls = [u for _, u in nodes]
        extra = [a for u in urls for a in ("--subscribe-url", u)] if nodes_n > 1 else []
        out = subprocess.run(
            [TETHER, "bench", urls[0], "--mode", "fanout", "-c", str(subs), "--channels", str(channels),
             "--rate", str(rate), "-d", str(duration), "--api-key", KEY, "--json", "-q"] + extra,
            capture_output=True, text=True, timeout=duration + 180, cwd=ROOT, env=env)
        cpu = [cpu_seconds(p.pid) - b for p, b in zip(procs, before)]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    if not out.stdout.strip():
        sys.exit(f"bench failed: {out.stderr}")
    r = json.loads(out.stdout)
    r.update(setup=setup, nodes=nodes_n, rate=rate, nodes_cpu_s=round(sum(cpu[:nodes_n]), 2),
             redis_cpu_s=round(cpu[nodes_n], 2) if redis else 0.0)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    opts = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tether-cli", "--bin", "tether"],
                   check=True, cwd=ROOT)
    rows = []
    for rep in range(opts.repeats):
        for (subs, channels, rate) in CASES:
            for setup, n in SETUPS:
                r = run_case(setup, n, subs, channels, rate, opts.duration)
                r["repeat"] = rep
                rows.append(r)
                print(f"{setup:<6} nodes={n} subs={subs:<5} channels={channels:<3} rate={rate:<4} rep {rep}: "
                      f"{r['deliveries_per_s']:>9.0f} deliveries/s  {r['delivered']}/{r['expected']}  "
                      f"p50 {r['latency_ms']['p50']:.2f} ms  p99 {r['latency_ms']['p99']:.2f} ms  "
                      f"nodes cpu {r['nodes_cpu_s']:.2f} s  redis cpu {r['redis_cpu_s']:.2f} s  "
                      f"errors {r['errors'] or 'none'}", flush=True)
    with open(os.path.join(ROOT, "bench/results/cluster.raw.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    lines = [
        "# Hub fan-out across nodes (memory broker; Redis broker on 1 and 3 nodes)",
        "",
        f"Measured {datetime.date.today()} on {os.cpu_count()} cores ({platform.machine()}), loopback, "
        f"redis-server {redis_version()}; nodes, Redis and the loader share the cores; {opts.repeats} runs "
        f"of {opts.duration:g} s per case, fresh nodes and a fresh Redis each run. Subscribers (tether.json) "
        "are spread evenly over the nodes; one publisher posts through node 0's server API, waiting for each "
        "answer. Median (min-max). Latency is from the publisher's clock before the POST to the subscriber's "
        "receipt.",
        "",
        "| subscribers | channels | publications/s | broker | nodes | deliveries/s | delivered/expected (all runs) | p50 ms | p99 ms | node CPU s | Redis CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    import statistics
    for (subs, channels, rate) in CASES:
        for setup, n in SETUPS:
            rs = [r for r in rows if r["subscribers"] == subs and r["channels"] == channels
                  and r["setup"] == setup and r["nodes"] == n]
            d = [r["deliveries_per_s"] for r in rs]
            p50 = [r["latency_ms"]["p50"] for r in rs]
            p99 = [r["latency_ms"]["p99"] for r in rs]
            got = sum(r["delivered"] for r in rs)
            want = sum(r["expected"] for r in rs)
            lines.append(
                f"| {subs:,} | {channels} | {rate} | {setup} | {n} | {spread(d)} | {got:,}/{want:,} | "
                f"{spread(p50, '.2f')} | {spread(p99, '.2f')} | "
                f"{statistics.median(r['nodes_cpu_s'] for r in rs):.2f} | "
                f"{statistics.median(r['redis_cpu_s'] for r in rs):.2f} |")
    write_report(ROOT, "cluster", lines)


def redis_version():
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"v=(\S+)", out)
    return m.group(1) if m else "?"


if __name__ == "__main__":
    main()
