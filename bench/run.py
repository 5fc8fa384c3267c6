#!/usr/bin/env python3
"""tether beside other WebSocket servers, in one run: echo throughput, memory per idle
connection, handshakes per second.

Servers: `tether echo`, and echo servers on tokio-tungstenite, fastwebsockets and
tokio-websockets (bench/servers, each after its crate's echo example, single-threaded
runtime) and Node `ws` (bench/node). Every server is pinned to core 0 (taskset) and the
loader, `tether bench`, to core 1.

Cases:
- echo (connections, bytes): (100, 20), (10, 1024), (10, 16384), (200, 16384), (500, 16384),
  one message in flight per connection, binary;
- idle memory: the server's RSS growth over 10,000 and 19,000 idle connections (a fresh
  server each time; the client sockets spread over 127.0.0.2-127.0.0.5);
- handshakes: connections opened and closed (close handshake) by 32 workers.

Every line carries the server's CPU time (from /proc/PID/stat), the loader's (from the
kernel's rusage of the finished loader process), and work per server CPU-second: on two
cores the loader can saturate before the server does, and then only CPU per message tells
the servers apart. Cases are repeated (--repeats, default 3) with the servers interleaved
inside each repeat; the report gives medians and min-max and each server's ratio to
tether. Writes bench/RESULTS.md, bench/results/echo.svg, bench/results/compare.raw.jsonl
and the console output to bench/results/compare.log.

usage: bench/run.py [--repeats N] [--duration SECS] [--only echo,memory,handshake] [--report-only]
"""
import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from procstat import bar_chart, cpu_seconds, spread  # bench/procstat.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TETHER = os.path.join(ROOT, "target/release/tether")
SERVERS_BIN = os.path.join(ROOT, "bench/servers/target/release")
ECHO_CASES = [(100, 20), (10, 1024), (10, 16384), (200, 16384), (500, 16384)]
MEMORY_CASES = [10_000, 19_000]
HANDSHAKE_WORKERS = 32
LOCAL_ADDRS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
PORT = 9301
SERVERS = {
    # --max-connections: the 19,000-connection memory case is above the default limit
    # (the open-files limit less 1,088); the other servers have no such limit.
    "tether": [TETHER, "echo", "--no-deflate", "--max-connections", "20000", "--listen"],
    "tokio-tungstenite": [os.path.join(SERVERS_BIN, "tungstenite")],
    "fastwebsockets": [os.path.join(SERVERS_BIN, "fastwebsockets")],
    "tokio-websockets": [os.path.join(SERVERS_BIN, "tokio_websockets")],
    "node ws": ["node", os.path.join(ROOT, "bench/node/echo.mjs")],
}


def build():
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tether-cli", "--bin", "tether"],
                   check=True, cwd=ROOT)
    subprocess.run(["cargo", "build", "--release", "--locked"], check=True, cwd=os.path.join(ROOT, "bench/servers"))
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], check=True, cwd=os.path.join(ROOT, "bench/node"),
                   stdout=subprocess.DEVNULL)


def versions():
    lock = open(os.path.join(ROOT, "bench/servers/Cargo.lock")).read()
    out = {}
    for name in ("tokio-tungstenite", "fastwebsockets", "tokio-websockets", "tokio", "hyper"):
        at = lock.find(f'name = "{name}"\nversion = "')
        if at >= 0:
            out[name] = lock[at:].split('"')[3]
    out["node ws"] = json.load(open(os.path.join(ROOT, "bench/node/package.json")))["dependencies"]["ws"]
    out["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return out


class Server:
    def __init__(self, name):
        self.name = name
        self.url = f"ws://127.0.0.1:{PORT}/"
        env = dict(os.environ, TETHER_LOG="warn")
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + SERVERS[name] + [f"127.0.0.1:{PORT}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        deadline = time.time() + 10
        while time.time() < deadline:
            probe = subprocess.run([TETHER, "bench", self.url, "-c", "1", "--count", "1", "-d", "1", "-q", "--json"],
                                   capture_output=True, text=True)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        sys.exit(f"{name} did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def load(server, extra, timeout):
    """Runs `tether bench` on core 1; its JSON plus server and loader CPU seconds."""
    args = ["taskset", "-c", "1", TETHER, "bench", server.url, "--json", "-q"] + extra
    before_srv = cpu_seconds(server.proc.pid)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = cpu_seconds(server.proc.pid) - before_srv
    if not out.stdout.strip():
        sys.exit(f"bench against {server.name} failed: {out.stderr}")
    result = json.loads(out.stdout)
    result.update(server=server.name, server_cpu_s=round(server_cpu, 3),
                  loader_cpu_s=round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3))
    return result


def echo_case(name, conns, size, duration):
    server = Server(name)
    try:
        r = load(server, ["-c", str(conns), "-s", str(size), "--binary", "-d", str(duration)], duration + 60)
    finally:
        server.stop()
    r.update(case="echo", per_server_cpu_s=r["messages"] / r["server_cpu_s"] if r["server_cpu_s"] > 0 else None,
             server_cpu_pct=100 * r["server_cpu_s"] / r["duration_s"], loader_cpu_pct=None)
    print(f"echo {name:>17} c={conns:<3} s={size:<5} {r['messages_per_s']:>10.0f} msg/s  "
          f"server {r['server_cpu_s']:.2f} s cpu  loader {r['loader_cpu_s']:.2f} s cpu  "
          f"p99 {r['latency_ms']['p99']:.3f} ms  errors {r['errors'] or 'none'}", flush=True)
    return r


def memory_case(name, conns):
    server = Server(name)
    try:
        extra = ["--mode", "ramp", "-c", str(conns), "--open-rate", "5000", "-d", "1",
                 "--server-pid", str(server.proc.pid)]
        for a in LOCAL_ADDRS:
            extra += ["--local-addr", a]
        r = load(server, extra, 120)
    finally:
        server.stop()
    r.update(case="memory")
    print(f"memory {name:>15} {conns:>6} conns: {r['open']} open, "
          f"{r['server_bytes_per_connection']} B per connection  errors {r['errors'] or 'none'}", flush=True)
    return r


def handshake_case(name, duration):
    server = Server(name)
    try:
        extra = ["--mode", "handshake", "-c", str(HANDSHAKE_WORKERS), "-d", str(duration)]
        for a in LOCAL_ADDRS:
            extra += ["--local-addr", a]
        r = load(server, extra, duration + 60)
    finally:
        server.stop()
    r.update(case="handshake",
             per_server_cpu_s=r["handshakes"] / r["server_cpu_s"] if r["server_cpu_s"] > 0 else None)
    print(f"handshake {name:>12} {r['handshakes_per_s']:>9.0f}/s  server {r['server_cpu_s']:.2f} s cpu  "
          f"loader {r['loader_cpu_s']:.2f} s cpu  errors {r['errors'] or 'none'}", flush=True)
    return r


def ratio(values, base):
    if not values or not base:
        return "-"
    return f"{statistics.median(values) / statistics.median(base):.2f}"


def report(rows, opts, vers, date=None):
    names = list(SERVERS)
    pick = lambda case, name, key, **kw: [
        r[key] for r in rows if r["case"] == case and r["server"] == name
        and all(r.get(k) == v for k, v in kw.items()) and r.get(key) is not None]
    # Median CPU use in percent of one core: `cpu_key` seconds over the run's `time_key` seconds.
    pct = lambda case, name, cpu_key, time_key, **kw: statistics.median(
        [100 * c / t for c, t in zip(pick(case, name, cpu_key, **kw), pick(case, name, time_key, **kw))])
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    lines = [
        "# tether beside other WebSocket servers",
        "",
        f"Measured {date or datetime.date.today()} on {platform.machine()} ({cpu}), {os.cpu_count()} cores, "
        f"Linux {platform.release()}, loopback. Each server pinned to core 0, the loader (`tether bench`) "
        f"to core 1. {opts.repeats} repeats, servers interleaved within each repeat, a fresh server "
        "process per measurement; median (min-max). Compare ratios within this run, not numbers "
        "across runs. Reproduce: `bench/run.py` (see bench/README.md).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + ".",
        "",
        "Ratios are each server's median over tether's: above 1.00 the other server is ahead, "
        "except for memory, where below 1.00 it is ahead.",
    ]
    if any(r["case"] == "echo" for r in rows):
        lines += ["", f"## Echo throughput ({opts.duration:g} s per run, binary, 1 message in flight per connection)", ""]
        for conns, size in ECHO_CASES:
            base = pick("echo", "tether", "messages_per_s", connections=conns, size=size)
            base_cpu = pick("echo", "tether", "per_server_cpu_s", connections=conns, size=size)
            lines += [f"### {conns} connections, {size} B", "",
                      "| server | msg/s | ratio | msg per server CPU-s | ratio | server CPU % | loader CPU % | p99 ms |",
                      "|---|---|---|---|---|---|---|---|"]
            for n in names:
                kw = dict(connections=conns, size=size)
                mps = pick("echo", n, "messages_per_s", **kw)
                if not mps:
                    continue
                per = pick("echo", n, "per_server_cpu_s", **kw)
                p99 = [lat["p99"] for lat in pick("echo", n, "latency_ms", **kw)]
                lines.append(f"| {n} | {spread(mps)} | {ratio(mps, base)} | {spread(per)} | {ratio(per, base_cpu)} | "
                             f"{pct('echo', n, 'server_cpu_s', 'duration_s', **kw):.0f} | "
                             f"{pct('echo', n, 'loader_cpu_s', 'duration_s', **kw):.0f} | {statistics.median(p99):.3f} |")
            lines.append("")
    if any(r["case"] == "memory" for r in rows):
        lines += ["## Server memory per idle connection (RSS growth / connections held)", "",
                  "| server | " + " | ".join(f"{c:,} conns: bytes/conn | ratio" for c in MEMORY_CASES) + " |",
                  "|---|" + "---|---|" * len(MEMORY_CASES)]
        for n in names:
            cells = []
            for c in MEMORY_CASES:
                v = pick("memory", n, "server_bytes_per_connection", connections=c)
                held = pick("memory", n, "open", connections=c)
                base = pick("memory", "tether", "server_bytes_per_connection", connections=c)
                note = "" if held and min(held) == c else f" (only {min(held) if held else 0:,} opened)"
                cells += [f"{spread(v)}{note}" if v else "-", ratio(v, base)]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    if any(r["case"] == "handshake" for r in rows):
        base = pick("handshake", "tether", "handshakes_per_s")
        base_cpu = pick("handshake", "tether", "per_server_cpu_s")
        lines += [f"## Handshakes ({HANDSHAKE_WORKERS} workers, each: connect, upgrade, close handshake; "
                  f"{opts.duration:g} s per run)", "",
                  "| server | handshakes/s | ratio | handshakes per server CPU-s | ratio | server CPU % | loader CPU % | errors |",
                  "|---|---|---|---|---|---|---|---|"]
        for n in names:
            hs = pick("handshake", n, "handshakes_per_s")
            if not hs:
                continue
            per = pick("handshake", n, "per_server_cpu_s")
            errs = sum(sum(r["errors"].values()) for r in rows if r["case"] == "handshake" and r["server"] == n)
            lines.append(f"| {n} | {spread(hs)} | {ratio(hs, base)} | {spread(per)} | {ratio(per, base_cpu)} | "
                         f"{pct('handshake', n, 'server_cpu_s', 'seconds'):.0f} | "
                         f"{pct('handshake', n, 'loader_cpu_s', 'seconds'):.0f} | {errs} |")
        lines.append("")
    lines += ["Raw results (one JSON object per measurement): `bench/results/compare.raw.jsonl`. "
              "Chart of the echo cases: `bench/results/echo.svg`."]
    path = os.path.join(ROOT, "bench/RESULTS.md")
    # bench/bridge.py's section stays as it was.
    old = open(path).read() if os.path.exists(path) else ""
    kept = old[old.find("\n## Socket bridge"):] if "\n## Socket bridge" in old else ""
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + kept)
    print("\n".join(lines))


def chart(rows, names):
    """bench/results/echo.svg: the echo cases as grouped bars, throughput on top and messages
    per server CPU-second below."""
    groups = [f"{c[0]} x {c[1]} B" for c in ECHO_CASES]
    panels = [(title, {(g, n): [r[key] for r in rows if r["case"] == "echo" and r["server"] == n
                                and (r["connections"], r["size"]) == c and r.get(key)]
                       for g, c in zip(groups, ECHO_CASES) for n in names})
              for title, key in [("messages/s", "messages_per_s"),
                                 ("messages per server CPU-second", "per_server_cpu_s")]]
    bar_chart(os.path.join(ROOT, "bench/results/echo.svg"),
              "Echo: tether beside other servers (bench/RESULTS.md)", groups, names, panels)


class Tee:
    """Writes to several files at once."""

    def __init__(self, *files):
        self.files = files

    def write(self, text):
        for f in self.files:
            f.write(text)

    def flush(self):
        for f in self.files:
            f.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--only", default="echo,memory,handshake")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--report-only", action="store_true",
                    help="write RESULTS.md and the chart again from bench/results/compare.raw.jsonl")
    opts = ap.parse_args()
    raw = os.path.join(ROOT, "bench/results/compare.raw.jsonl")
    if opts.report_only:
        rows = [json.loads(line) for line in open(raw)]
        opts.repeats = 1 + max(r.get("repeat", 0) for r in rows)
        opts.duration = next((r["duration_s"] for r in rows if r["case"] == "echo"), opts.duration)
        report(rows, opts, rows[0].get("versions") or versions(), rows[0].get("date"))
        chart(rows, [n for n in SERVERS if any(r["server"] == n for r in rows)])
        return
    only = set(opts.only.split(","))
    names = [n for n in SERVERS if n in opts.servers.split(",")]
    if not opts.no_build:
        build()
    # The console output goes to bench/results/compare.log as well: the raw record of the run.
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    sys.stdout = Tee(sys.stdout, open(os.path.join(ROOT, "bench/results/compare.log"), "w"))
    vers = versions()
    rows = []
    # Rows go to a side file as they come, so that a run cut short still leaves its data.
    partial = open(raw + ".partial", "w")

    def keep(row):
        row.update(versions=vers, date=str(datetime.date.today()))
        rows.append(row)
        partial.write(json.dumps(row) + "\n")
        partial.flush()

    for rep in range(opts.repeats):
        print(f"--- repeat {rep + 1} of {opts.repeats}", flush=True)
        for n in names:
            if "echo" in only:
                for conns, size in ECHO_CASES:
                    keep(dict(echo_case(n, conns, size, opts.duration), repeat=rep))
            if "memory" in only:
                for conns in MEMORY_CASES:
                    keep(dict(memory_case(n, conns), repeat=rep))
            if "handshake" in only:
                keep(dict(handshake_case(n, opts.duration), repeat=rep))
    partial.close()
    os.replace(raw + ".partial", raw)
    report(rows, opts, vers)
    if any(r["case"] == "echo" for r in rows):
        chart(rows, names)


if __name__ == "__main__":
    main()
