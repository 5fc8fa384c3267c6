#!/usr/bin/env python3
"""Socket bridges side by side: `tether bridge`, websockify (PyPI) and websocat (crates.io),
each between WebSocket clients and a TCP echo server (bench/servers' tcp_echo).

The bridge runs pinned to core 0; the loader (`tether bench --mode echo`, which counts an echo
as complete when its bytes are back, however the bridge splits them into messages) and the
TCP echo share core 1. Each case runs R times (default 3) per bridge, the bridges interleaved,
a fresh bridge process per run; the bridge's CPU is read from /proc (children included, for
websockify's forked workers). Reports MB/s (each way) or round trips/s, medians (min-max),
and work per bridge CPU-second, with ratios to tether. Writes bench/results/bridge.md, the
"Socket bridge" section of bench/RESULTS.md, and bench/results/bridge.raw.jsonl.

usage: bench/bridge.py [--repeats N] [--duration SECS] [--only tether,websockify,websocat]

Builds what it needs: tether and tcp_echo (cargo), websockify into target/bench-venv (pip,
version below), websocat into target/bench-tools (cargo install, version below; several
minutes the first time). A bridge that cannot be built is left out and the report says so.
"""
import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

from procstat import TICK, spread, write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TETHER = os.path.join(ROOT, "target/release/tether")
TCP_ECHO = os.path.join(ROOT, "bench/servers/target/release/tcp_echo")
VENV = os.path.join(ROOT, "target/bench-venv")
TOOLS = os.path.join(ROOT, "target/bench-tools")
WEBSOCKIFY_VERSION = "0.13.0"
WEBSOCAT_VERSION = "1.14.0"
# (name, connections, message bytes, messages in flight per connection, what counts)
CASES = [
    ("bulk", 4, 65536, 4, "MB/s"),
    ("request/response", 50, 64, 1, "round trips/s"),
]


def build(only):
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tether-cli", "--bin", "tether"],
                   check=True, cwd=ROOT)
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "tcp_echo"], check=True,
                   cwd=os.path.join(ROOT, "bench/servers"))
    have = {"tether": [TETHER]}
    if "websockify" in only:
        if not os.path.exists(os.path.join(VENV, "bin/websockify")):
            subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
            subprocess.run([os.path.join(VENV, "bin/pip"), "install", "-q", f"websockify=={WEBSOCKIFY_VERSION}"],
                           check=False)
        if os.path.exists(os.path.join(VENV, "bin/websockify")):
            have["websockify"] = [os.path.join(VENV, "bin/websockify")]
    if "websocat" in only:
        exe = os.path.join(TOOLS, "bin/websocat")
        if not os.path.exists(exe):
            # Not --locked: its lock file pins traitobject 0.1.0, which today's Rust refuses.
            subprocess.run(["cargo", "install", "websocat", "--version", WEBSOCAT_VERSION, "--root", TOOLS],
                           check=False)
        if os.path.exists(exe):
            have["websocat"] = [exe]
    return have


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"process exited: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}: {proc.args}")


def cpu_with_children(pid):
    """User plus system CPU seconds of `pid` and its children that have exited."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK


def start_bridge(name, exe, port, echo_port):
    target = f"127.0.0.1:{echo_port}"
    if name == "tether":
        args = exe + ["bridge", "--listen", f"ws://127.0.0.1:{port}/", "--to", f"tcp://{target}"]
    elif name == "websockify":
        args = exe + [f"127.0.0.1:{port}", target]
    else:
        args = exe + ["--binary", "ws-l:127.0.0.1:%d" % port, f"tcp:{target}"]
    env = dict(os.environ, TETHER_LOG="warn")
    proc = subprocess.Popen(["taskset", "-c", "0"] + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, cwd=ROOT)
    wait_port(port, proc)
    return proc


def versions(have):
    out = {}
    if "websockify" in have:
        out["websockify"] = WEBSOCKIFY_VERSION
        out["on"] = subprocess.run([os.path.join(VENV, "bin/python"), "--version"], capture_output=True,
                                   text=True).stdout.strip()
    if "websocat" in have:
        out["websocat"] = subprocess.run(have["websocat"] + ["--version"], capture_output=True,
                                         text=True).stdout.strip().removeprefix("websocat ")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--only", default="tether,websockify,websocat")
    opts = ap.parse_args()
    only = opts.only.split(",")
    have = build(only)
    names = [n for n in only if n in have]
    echo_port = free_port()
    echo = subprocess.Popen(["taskset", "-c", "1", TCP_ECHO, f"127.0.0.1:{echo_port}"], stdout=subprocess.DEVNULL)
    wait_port(echo_port, echo)
    rows = []
    try:
        for rep in range(opts.repeats):
            for case, conns, size, in_flight, _ in CASES:
                order = names if rep % 2 == 0 else list(reversed(names))
                for name in order:
                    port = free_port()
                    proc = start_bridge(name, have[name], port, echo_port)
                    try:
                        before = cpu_with_children(proc.pid)
                        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
                        t0 = os.times()
                        out = subprocess.run(
                            ["taskset", "-c", "1", TETHER, "bench", f"ws://127.0.0.1:{port}/", "--mode", "echo",
                             "-c", str(conns), "--size", str(size), "--in-flight", str(in_flight), "--binary",
                             "-d", str(opts.duration), "--json", "-q"],
                            capture_output=True, text=True, timeout=opts.duration + 120, cwd=ROOT, env=env)
                        t1 = os.times()
                        time.sleep(0.3)  # forked workers exit and are counted as children
                        cpu = cpu_with_children(proc.pid) - before
                    finally:
                        proc.kill()
                        proc.wait()
                    if not out.stdout.strip():
                        print(f"{name} {case} rep {rep}: no result: {out.stderr.strip()[:300]}", flush=True)
                        continue
                    r = json.loads(out.stdout)
                    loader = (t1.children_user + t1.children_system) - (t0.children_user + t0.children_system)
                    r.update(bridge=name, case=case, repeat=rep, bridge_cpu_s=round(cpu, 3),
                             loader_cpu_s=round(loader, 3))
                    rows.append(r)
                    mb = r["messages"] * size / r["duration_s"] / 1e6
                    print(f"{name:<10} {case:<17} rep {rep}: {r['messages_per_s']:>10.0f} echoes/s {mb:>8.1f} MB/s  "
                          f"p50 {r['latency_ms']['p50']:.2f} ms  bridge cpu {cpu:.2f} s  loader cpu {loader:.2f} s  "
                          f"errors {r['errors'] or 'none'}", flush=True)
    finally:
        echo.kill()
        echo.wait()
    with open(os.path.join(ROOT, "bench/results/bridge.raw.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    report(rows, names, opts, versions(have), sorted(set(only) - set(have)))


def report(rows, names, opts, vers, missing):
    lines = [
        "## Socket bridge: `tether bridge` beside websockify and websocat",
        "",
        f"Measured {datetime.date.today()} on {os.cpu_count()} cores ({platform.machine()}), loopback, by "
        "`bench/bridge.py`: WebSocket clients (`tether bench --mode echo`, binary) through the bridge to a TCP "
        "echo server (bench/servers `tcp_echo`); the bridge on core 0, loader and echo server on core 1; "
        f"{opts.repeats} runs of {opts.duration:g} s per case and bridge, interleaved, a fresh bridge each run. "
        "An echo counts when all its bytes are back. Median (min-max). Versions: "
        + ", ".join(f"{k} {v}" for k, v in vers.items()) + "."
        + (f" Left out (could not be built here): {', '.join(missing)}." if missing else ""),
        "",
    ]
    for case, conns, size, in_flight, unit in CASES:
        lines += [f"### {case}: {conns} connections, {size} B messages, {in_flight} in flight each", "",
                  f"| bridge | {unit} | vs tether | per bridge CPU-second | vs tether | bridge CPU s per run | loader CPU s per run | p50 ms | errors |",
                  "|---|---|---|---|---|---|---|---|---|"]

        def vals(name, f):
            return [f(r) for r in rows if r["bridge"] == name and r["case"] == case]

        def work(r):
            per_s = r["messages"] / r["duration_s"]
            return per_s * size / 1e6 if unit == "MB/s" else per_s

        def per_cpu(r):
            total = r["messages"] * (size / 1e6 if unit == "MB/s" else 1)
            return total / max(r["bridge_cpu_s"], 0.001)

        base = statistics.median(vals("tether", work) or [0]) or None
        base_cpu = statistics.median(vals("tether", per_cpu) or [0]) or None
        for name in names:
            w, c = vals(name, work), vals(name, per_cpu)
            if not w:
                lines.append(f"| {name} | no result | | | | | | | |")
                continue
            fmt = ",.1f" if unit == "MB/s" else ",.0f"
            ratio = lambda v, b: f"{statistics.median(v) / b:.2f}" if b else "-"
            bcpu = statistics.median(vals(name, lambda r: r["bridge_cpu_s"]))
            lcpu = statistics.median(vals(name, lambda r: r["loader_cpu_s"]))
            p50 = statistics.median(vals(name, lambda r: r["latency_ms"]["p50"]))
            errs = sum(sum(r["errors"].values()) for r in rows if r["bridge"] == name and r["case"] == case)
            lines.append(f"| {name} | {spread(w, fmt)} | {ratio(w, base)} | {spread(c, fmt)} | {ratio(c, base_cpu)} | "
                         f"{bcpu:.2f} | {lcpu:.2f} | {p50:.2f} | {errs} |")
        lines.append("")
    lines.append("Work per bridge CPU-second is bulk MB (each way) or round trips per CPU-second of the bridge "
                 "process, children included (websockify forks a worker per connection), from just before the "
                 "loader starts to just after it ends (connection setup included). Where the loader's core is "
                 "full, throughput ties and that column tells the bridges apart.")
    write_report(ROOT, "bridge", lines)
    # The same section in RESULTS.md (bench/run.py keeps it when it rewrites the file).
    path = os.path.join(ROOT, "bench/RESULTS.md")
    text = open(path).read()
    at = text.find("\n## Socket bridge")
    text = (text if at < 0 else text[:at]).rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    open(path, "w").write(text)


if __name__ == "__main__":
    main()
