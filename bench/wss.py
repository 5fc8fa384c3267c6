#!/usr/bin/env python3
"""wss:// vs ws://: echo throughput of `tether echo` over TLS and over plain TCP, measured by
`tether bench`, at (100 connections, 20 B) and (10 connections, 16 KiB).

The server is pinned to core 0 and the loader to core 1 (taskset); the cases and the two
transports are interleaved, each run repeated (default 3), and every line carries the
server's CPU time (from /proc/PID/stat) and messages per server CPU-second. Writes
bench/results/wss.md with medians, min-max and the wss/ws ratio, and the raw JSON lines
to bench/results/wss.raw.jsonl.

usage: bench/wss.py [--repeats N] [--duration SECS]
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
CASES = [(100, 20), (10, 16384)]


def start_echo(tls):
    args = ["taskset", "-c", "0", TETHER, "echo", "--listen", "127.0.0.1:0", "--no-deflate"]
    if tls:
        args += ["--tls-cert", "target/tls/cert.pem", "--tls-key", "target/tls/key.pem"]
    log = open(f"target/bench-wss-echo-{'tls' if tls else 'plain'}.log", "w+")
    env = dict(os.environ, TETHER_LOG="warn,tether=info")
    proc = subprocess.Popen(args, stderr=log, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
    for _ in range(100):
        log.seek(0)
        m = re.search(r"wss?://127\.0\.0\.1:\d+", log.read())
        if m:
            return proc, m.group(0).replace("127.0.0.1", "localhost") + "/"
        time.sleep(0.05)
    proc.kill()
    sys.exit("echo server did not start")


def run(url, conns, size, duration):
    args = ["taskset", "-c", "1", TETHER, "bench", url, "-c", str(conns), "-s", str(size),
            "-d", str(duration), "--json", "-q"]
    if url.startswith("wss"):
        args += ["--ca", "target/tls/ca.pem"]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60, cwd=ROOT, env=env)
    if out.returncode != 0:
        sys.exit(f"bench failed: {out.stderr}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    opts = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tether-cli", "--bin", "tether",
                    "-p", "tether", "--example", "gen_cert"], check=True, cwd=ROOT)
    subprocess.run([os.path.join(ROOT, "target/release/examples/gen_cert"), "target/tls"], check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL)
    servers = {"ws": start_echo(False), "wss": start_echo(True)}
    rows = []
    try:
        for rep in range(opts.repeats):
            for conns, size in CASES:
                for transport in ("ws", "wss"):
                    proc, url = servers[transport]
                    before = cpu_seconds(proc.pid)
                    result = run(url, conns, size, opts.duration)
                    cpu = cpu_seconds(proc.pid) - before
                    result.update(transport=transport, repeat=rep, server_cpu_s=round(cpu, 2),
                                  msgs_per_server_cpu_s=round(result["messages"] / cpu) if cpu > 0 else None)
                    rows.append(result)
                    print(f"{transport:>3} c={conns:<3} s={size:<5} rep {rep}: "
                          f"{result['messages_per_s']:>10.0f} msg/s  {result['mb_per_s']:>8.1f} MB/s  "
                          f"p99 {result['latency_ms']['p99']:.3f} ms  server cpu {cpu:.2f} s  "
                          f"errors {result['errors'] or 'none'}", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.kill()
            proc.wait()

    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results/wss.raw.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    lines = [
        "# wss:// vs ws:// echo throughput (tether echo, measured by tether bench)",
        "",
        f"Measured {datetime.date.today()} on {os.cpu_count()} cores ({platform.machine()}), loopback; "
        f"server on core 0, loader on core 1; {opts.repeats} interleaved repeats of {opts.duration:g} s; "
        "TLS 1.3 (rustls, ring), no compression. Median (min-max). Compare the ratios, not the absolute numbers.",
        "",
        "| connections | bytes | ws msg/s | wss msg/s | wss/ws | ws msg per server CPU-s | wss msg per server CPU-s | wss/ws (CPU) | wss p99 ms | ws p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for conns, size in CASES:
        def pick(transport, key):
            return [r[key] for r in rows if r["transport"] == transport and r["connections"] == conns
                    and r["size"] == size]
        ws, wss = pick("ws", "messages_per_s"), pick("wss", "messages_per_s")
        wcpu, scpu = pick("ws", "msgs_per_server_cpu_s"), pick("wss", "msgs_per_server_cpu_s")
        wp99 = [r["latency_ms"]["p99"] for r in rows if r["transport"] == "ws" and r["connections"] == conns and r["size"] == size]
        sp99 = [r["latency_ms"]["p99"] for r in rows if r["transport"] == "wss" and r["connections"] == conns and r["size"] == size]
        lines.append(
            f"| {conns} | {size} | {spread(ws)} | {spread(wss)} | {statistics.median(wss) / statistics.median(ws):.2f} | "
            f"{spread(wcpu)} | {spread(scpu)} | {statistics.median(scpu) / statistics.median(wcpu):.2f} | "
            f"{statistics.median(sp99):.3f} | {statistics.median(wp99):.3f} |")
    write_report(ROOT, "wss", lines)


if __name__ == "__main__":
    main()
