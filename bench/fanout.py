#!/usr/bin/env python3
"""Hub fan-out: `tether serve` (pinned to core 0) with N subscribers over C channels, one
publisher posting through the server API at a fixed rate, measured by
`tether bench --mode fanout` (pinned to core 1). Subscribers speak tether.json, and then
STOMP 1.2 (`--stomp`). Each case runs R times (default 3), the protocols interleaved;
reports deliveries/s and publish-to-delivery latency (median of runs, min-max), the
server's CPU, and deliveries per server CPU-second with STOMP's ratio to JSON. Writes
bench/results/fanout.md and fanout.raw.jsonl.

usage: bench/fanout.py [--repeats N] [--duration SECS] [--protocols tether.json,stomp]
"""
import argparse
import datetime
import json
import os
import platform
import re
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


def start_hub():
    log = open(os.path.join(ROOT, "target/bench-fanout-serve.log"), "w+")
    proc = subprocess.Popen(
        ["taskset", "-c", "0", TETHER, "serve", "--listen", "127.0.0.1:0", "--api-key", KEY,
         "--max-connections-per-ip", "20000", "--max-connections", "20000",
         "--config", os.path.join(ROOT, "bench/hub.toml")],
        stderr=log, stdout=subprocess.DEVNULL, cwd=ROOT, env=dict(os.environ, TETHER_LOG="warn,info"))
    for _ in range(100):
        log.seek(0)
        m = re.search(r"ws://127\.0\.0\.1:\d+/ws", log.read())
        if m:
            return proc, m.group(0)
        time.sleep(0.05)
    proc.kill()
    sys.exit("tether serve did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--protocols", default="tether.json,stomp")
    opts = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tether-cli", "--bin", "tether"],
                   check=True, cwd=ROOT)
    rows = []
    for rep in range(opts.repeats):
        for (subs, channels, rate), protocol in [(c, p) for c in CASES for p in opts.protocols.split(",")]:
            proc, url = start_hub()  # a fresh hub per run: no channel state carried over
            try:
                before = cpu_seconds(proc.pid)
                env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
                out = subprocess.run(
                    ["taskset", "-c", "1", TETHER, "bench", url, "--mode", "fanout", "-c", str(subs),
                     "--channels", str(channels), "--rate", str(rate), "-d", str(opts.duration),
                     "--api-key", KEY, "--json", "-q"] + (["--stomp"] if protocol == "stomp" else []),
                    capture_output=True, text=True, timeout=opts.duration + 180, cwd=ROOT, env=env)
                cpu = cpu_seconds(proc.pid) - before
            finally:
                proc.kill()
                proc.wait()
            if not out.stdout.strip():
                sys.exit(f"bench failed: {out.stderr}")
            r = json.loads(out.stdout)
            r.update(repeat=rep, rate=rate, server_cpu_s=round(cpu, 2))
            rows.append(r)
            print(f"{protocol:<11} subs={subs:<6} channels={channels:<5} rate={rate:<5} rep {rep}: "
                  f"{r['deliveries_per_s']:>10.0f} deliveries/s  {r['delivered']}/{r['expected']}  "
                  f"p50 {r['latency_ms']['p50']:.2f} ms  p99 {r['latency_ms']['p99']:.2f} ms  "
                  f"server cpu {cpu:.2f} s  errors {r['errors'] or 'none'}", flush=True)
    with open(os.path.join(ROOT, "bench/results/fanout.raw.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    lines = [
        "# Hub fan-out (tether serve, measured by tether bench --mode fanout)",
        "",
        f"Measured {datetime.date.today()} on {os.cpu_count()} cores ({platform.machine()}), loopback; hub on "
        f"core 0, subscribers and publisher on core 1; {opts.repeats} runs of {opts.duration:g} s per case, "
        "a fresh hub each run. One publisher posts through the server API (one keep-alive HTTP connection, "
        "waiting for each answer); payload about 40 B. Median (min-max). Latency is from the publisher's "
        "clock before the POST to the subscriber's receipt, both on this machine.",
        "",
        "| subscribers | channels | publications/s | protocol | deliveries/s | delivered/expected (all runs) | p50 ms | p99 ms | hub CPU s per run | deliveries per hub CPU-s | vs tether.json |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_cpu = {}
    for (subs, channels, rate), protocol in [(c, p) for c in CASES for p in opts.protocols.split(",")]:
        rs = [r for r in rows if r["subscribers"] == subs and r["channels"] == channels
              and r.get("protocol", "tether.json") == protocol]
        d = [r["deliveries_per_s"] for r in rs]
        p50 = [r["latency_ms"]["p50"] for r in rs]
        p99 = [r["latency_ms"]["p99"] for r in rs]
        got = sum(r["delivered"] for r in rs)
        want = sum(r["expected"] for r in rs)
        cpu = statistics.median(r["server_cpu_s"] for r in rs)
        eff = statistics.median(r["delivered"] / max(r["server_cpu_s"], 0.01) for r in rs)
        per_cpu[(subs, channels, protocol)] = eff
        base = per_cpu.get((subs, channels, "tether.json"))
        ratio = f"{eff / base:.2f}" if base else "-"
        lines.append(
            f"| {subs:,} | {channels:,} | {rate:,} | {protocol} | {spread(d)} | "
            f"{got:,}/{want:,} | {spread(p50, '.2f')} | {spread(p99, '.2f')} | {cpu:.2f} | {eff:,.0f} | {ratio} |")
    write_report(ROOT, "fanout", lines)


if __name__ == "__main__":
    main()
