#!/usr/bin/env python3
"""The hub's WebSocket path before and after a change, in one run: server memory per idle
hub WebSocket connection (HTTP/1.1, at 10,000 connections) and handshakes per server
CPU-second (32 workers opening and closing /ws), for two `tether serve` binaries, repeats
interleaved, hub pinned to core 0 and the loader (`tether bench`) to core 1.

With `--server echo`, the same for `tether echo --no-deflate` at `/`, plus echo throughput
(100 connections, 20-byte binary messages) and messages per server CPU-second.

usage: bench/hub_http.py --base /path/to/old/tether [--server serve|echo] [--repeats 3] [--duration 5]
(the other binary is this checkout's target/release/tether; build both first)

Results: bench/results/hub_http.md (hub_http_echo.md) and .raw.jsonl."""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from procstat import cpu_seconds, spread, write_report  # bench/procstat.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TETHER = os.path.join(ROOT, "target/release/tether")
LOCAL_ADDRS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
PORT = 9311
CONNS = 10_000
WORKERS = 32


class Hub:
    def __init__(self, binary, kind):
        self.url = f"ws://127.0.0.1:{PORT}/ws" if kind == "serve" else f"ws://127.0.0.1:{PORT}/"
        env = dict(os.environ, TETHER_LOG="warn")
        args = [binary, "serve", "--listen", f"127.0.0.1:{PORT}", "--max-connections", "20000",
                "--max-connections-per-ip", "20000"]
        if kind == "echo":
            args = [binary, "echo", "--no-deflate", "--listen", f"127.0.0.1:{PORT}", "--max-connections", "20000"]
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        deadline = time.time() + 10
        while time.time() < deadline:
            probe = subprocess.run([TETHER, "bench", self.url, "--mode", "handshake", "-c", "1", "--count", "1",
                                    "-d", "1", "-q", "--json"], capture_output=True, text=True)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        sys.exit(f"{binary} serve did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def load(hub, extra, timeout):
    args = ["taskset", "-c", "1", TETHER, "bench", hub.url, "--json", "-q"] + extra
    for a in LOCAL_ADDRS:
        args += ["--local-addr", a]
    before_srv = cpu_seconds(hub.proc.pid)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not out.stdout.strip():
        sys.exit(f"bench failed: {out.stderr}")
    r = json.loads(out.stdout)
    r.update(server_cpu_s=round(cpu_seconds(hub.proc.pid) - before_srv, 3),
             loader_cpu_s=round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3))
    return r


def settle_time_wait(limit=20_000, most=30):
    """Waits (at most `most` seconds) until fewer than `limit` sockets are in TIME_WAIT: each
    handshake leaves one, and a loader short of ports measures the port shortage instead of
    the server."""
    deadline = time.time() + most
    while time.time() < deadline:
        with open("/proc/net/sockstat") as f:
            tw = next((int(line.split()[line.split().index("tw") + 1]) for line in f if line.startswith("TCP:")), 0)
        if tw < limit:
            return
        time.sleep(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="the tether binary to compare with")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--server", choices=["serve", "echo"], default="serve")
    opts = ap.parse_args()
    name_out = "hub_http" if opts.server == "serve" else "hub_http_echo"
    builds = {"base": opts.base, "this": TETHER}
    rows = []
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    raw = open(os.path.join(ROOT, f"bench/results/{name_out}.raw.jsonl"), "w")
    for rep in range(opts.repeats):
        for name, binary in builds.items():
            hub = Hub(binary, opts.server)
            try:
                m = load(hub, ["--mode", "ramp", "-c", str(CONNS), "--open-rate", "5000", "-d", "1",
                               "--server-pid", str(hub.proc.pid)], 120)
            finally:
                hub.stop()
            settle_time_wait()
            hub = Hub(binary, opts.server)
            try:
                h = load(hub, ["--mode", "handshake", "-c", str(WORKERS), "-d", str(opts.duration)],
                         opts.duration + 60)
            finally:
                hub.stop()
            e = None
            if opts.server == "echo":
                hub = Hub(binary, opts.server)
                try:
                    e = load(hub, ["-c", "100", "-s", "20", "--binary", "-d", str(opts.duration)], opts.duration + 60)
                finally:
                    hub.stop()
            row = dict(build=name, repeat=rep, open=m["open"], bytes_per_conn=m["server_bytes_per_connection"],
                       memory_errors=m["errors"], handshakes_per_s=h["handshakes_per_s"],
                       handshakes_per_cpu_s=h["handshakes"] / h["server_cpu_s"] if h["server_cpu_s"] else None,
                       server_cpu_pct=100 * h["server_cpu_s"] / h["seconds"],
                       loader_cpu_pct=100 * h["loader_cpu_s"] / h["seconds"], handshake_errors=h["errors"])
            if e:
                row.update(echo_per_s=e["messages_per_s"], echo_per_cpu_s=e["messages"] / e["server_cpu_s"],
                           echo_errors=e["errors"])
            rows.append(row)
            raw.write(json.dumps(row) + "\n")
            raw.flush()
            print(f"{name:>5} rep {rep + 1}: {row['open']} open, {row['bytes_per_conn']} B/conn; "
                  f"{row['handshakes_per_s']:.0f} handshakes/s, {row['handshakes_per_cpu_s']:.0f} per server CPU-s "
                  f"(server {row['server_cpu_pct']:.0f}%, loader {row['loader_cpu_pct']:.0f}%)"
                  + (f"; echo {row['echo_per_s']:.0f} msg/s, {row['echo_per_cpu_s']:.0f} per server CPU-s" if e else ""),
                  flush=True)
    med = lambda name, key: statistics.median(r[key] for r in rows if r["build"] == name)
    what = "`tether serve`, `/ws`" if opts.server == "serve" else "`tether echo --no-deflate`, `/`"
    lines = [f"# {what}: before and after", "",
             f"{what} over HTTP/1.1, {opts.repeats} interleaved repeats, medians (min-max); "
             f"hub on core 0, `tether bench` on core 1. base: `{opts.base}`.", "",
             "| build | bytes per idle connection (10,000) | handshakes/s | handshakes per server CPU-s | server CPU | loader CPU |",
             "|---|---|---|---|---|---|"]
    for name in builds:
        sel = [r for r in rows if r["build"] == name]
        lines.append(f"| {name} | {spread([r['bytes_per_conn'] for r in sel])} | "
                     f"{spread([r['handshakes_per_s'] for r in sel])} | {spread([r['handshakes_per_cpu_s'] for r in sel])} | "
                     f"{spread([r['server_cpu_pct'] for r in sel])}% | {spread([r['loader_cpu_pct'] for r in sel])}% |")
    lines += ["", f"Ratios this/base: memory per connection {med('this', 'bytes_per_conn') / med('base', 'bytes_per_conn'):.3f}, "
              f"handshakes per server CPU-s {med('this', 'handshakes_per_cpu_s') / med('base', 'handshakes_per_cpu_s'):.3f}"
              + (f", echo messages per server CPU-s {med('this', 'echo_per_cpu_s') / med('base', 'echo_per_cpu_s'):.3f} "
                 f"(msg/s {spread([r['echo_per_s'] for r in rows if r['build'] == 'base'])} base, "
                 f"{spread([r['echo_per_s'] for r in rows if r['build'] == 'this'])} this)" if opts.server == "echo" else "")
              + "."]
    write_report(ROOT, name_out, lines)


if __name__ == "__main__":
    main()
