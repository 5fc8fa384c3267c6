#!/usr/bin/env python3
"""Fan-out beside other servers: `tether serve` (tether.json and STOMP subscribers),
uWebSockets' topic pub/sub (C++, built from a checkout given with --uws; skipped with a
notice without it), Node `ws` (a broadcast loop), Node socket.io (a room broadcast) and
the floor (bench/servers `floor_fanout`: one `send` per subscriber per publication and
nothing else, what the system calls alone cost), each pinned to core 0, a fresh process
per run; the loader is bench/servers `fanout_load` (one thread on epoll, raw frames)
pinned to core 1. Six cases of (subscribers, channels, publications/s), R repeats with the
servers alternating inside each; deliveries per server CPU-second (the comparison), deliveries/s, loss and order,
p50/p99 latency, server and loader CPU. Then memory per idle subscribed connection (RSS
growth / connections) at 10,000 and 19,000 connections. Writes
bench/results/fanout_compare.md, .raw.jsonl, fanout_compare.svg and the "Fan-out beside
uWebSockets" section of bench/RESULTS.md.

usage: bench/fanout_compare.py [--uws PATH/TO/uWebSockets] [--base OLD_TETHER_BINARY]
         [--repeats N] [--duration SECS] [--servers tether,tether-linger,tether-stomp,uws,floor,ws,socketio]
         [--cases 0,1,...] [--no-memory] [--deflate [--size BYTES]] [--report]

--deflate measures permessage-deflate instead: `tether serve --deflate` and uWebSockets with
its shared compressor, each beside itself without compression, every subscriber offering
permessage-deflate, publications of --size (512) bytes padded with words, cases 1 and 4 unless
--cases; deliveries per server CPU-second and wire bytes per delivery, into
bench/results/fanout_deflate.{md,raw.jsonl} and the "Fan-out with permessage-deflate" section
of bench/RESULTS.md.

PATH/TO/uWebSockets is a checkout of github.com/uNetworking/uWebSockets with
github.com/uNetworking/uSockets in its uSockets/ folder (its submodule); the script
builds uSockets there (make) and bench/uws/fanout.cpp against it into target/bench-uws/.
--base adds a second tether build (`tether-base`) to every case, for A/B of a change.
--report measures nothing: it writes the tables and the chart again from the last run's raw
results (with --deflate, the deflate run's), after a change to the report.
"""
import argparse
import datetime
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time

from procstat import bar_chart, replace_section, spread

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TETHER = os.path.join(ROOT, "target/release/tether")
LOADER = os.path.join(ROOT, "bench/servers/target/release/fanout_load")
UWS_BIN = os.path.join(ROOT, "target/bench-uws/uws_fanout")
FLOOR = os.path.join(ROOT, "bench/servers/target/release/floor_fanout")
NODE_DIR = os.path.join(ROOT, "bench/node")
KEY = "fanout-bench-key-0123456789"
# (subscribers, channels, publications per second): the six cases of the issue.
CASES = [(1000, 1, 10), (1000, 1, 200), (10000, 1000, 2000), (10000, 1, 20), (10000, 1, 100), (10000, 1, 300)]
MEMORY = [10000, 19000]
SERVERS = ["tether", "tether-linger", "tether-stomp", "uws", "floor", "ws", "socketio"]
# What `tether-linger` adds: the fan-out's writes may wait up to 20 ms under load.
LINGER_MS = 20
# Memory only: each tether server again with signed-in subscribers (`-signed`: a token that
# expires, so the hub keeps a deadline per connection; STOMP with heart-beats both ways at
# 10 s, what stomp.js asks for by default).
SECRET = "fanout-bench-token-secret-0123456789abcdef"
STOMP_HEART_BEAT = "10000,10000"


def case_duration(case, duration):
    """Seconds of publishing for `case`: the light case runs at least 15 s, since a server
    spends only about 0.07 s of CPU per second there and /proc counts CPU in 10 ms ticks."""
    return max(duration, 15.0) if case == CASES[0] else duration


def case_args(case, duration):
    """The loader's arguments for `case` (subscribers, channels, publications/s)."""
    subs, channels, rate = case
    return ["--connections", str(subs), "--channels", str(channels), "--rate", str(rate),
            "--duration", str(case_duration(case, duration))]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_uws(path):
    """Builds the uWebSockets server; None (and a notice) when there is no checkout."""
    if not path or not os.path.isfile(os.path.join(path, "src/App.h")) \
            or not os.path.isfile(os.path.join(path, "uSockets/src/libusockets.h")):
        print("uWebSockets skipped: pass --uws PATH, a checkout of uNetworking/uWebSockets with "
              "uNetworking/uSockets in its uSockets/ folder", file=sys.stderr)
        return None
    subprocess.run(["make", "-s", "-C", os.path.join(path, "uSockets")], check=True)
    os.makedirs(os.path.dirname(UWS_BIN), exist_ok=True)
    objs = [os.path.join(path, "uSockets", f) for f in sorted(os.listdir(os.path.join(path, "uSockets")))
            if f.endswith(".o")]
    subprocess.run(["g++", "-O3", "-march=native", "-flto=auto", "-std=c++2b",
                    "-I", os.path.join(path, "src"), "-I", os.path.join(path, "uSockets/src"),
                    os.path.join(ROOT, "bench/uws/fanout.cpp"), *objs, "-lz", "-o", UWS_BIN], check=True)
    return uws_revision(path)


def uws_revision(path):
    """The uWebSockets checkout's commit and date (the raw results do not record it)."""
    rev = subprocess.run(["git", "-C", path, "log", "-1", "--format=%h %cs"], capture_output=True, text=True)
    return rev.stdout.strip() or "unknown revision"


def node_version():
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


def raw_path(opts):
    """The run's raw results: the deflate run's with --deflate."""
    name = "fanout_deflate" if opts.deflate else "fanout_compare"
    return os.path.join(ROOT, f"bench/results/{name}.raw.jsonl")


def start(server, port, tethers):
    """Starts `server` on `port` pinned to core 0; returns the process once it listens."""
    env = dict(os.environ, TETHER_LOG="warn")
    if server.endswith("-signed"):
        env["TETHER_TOKEN_HMAC_SECRET"] = SECRET
    if server.startswith("tether"):
        binary = tethers["tether-base" if server.startswith("tether-base") else "tether"]
        cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--api-key", KEY,
               "--max-connections-per-ip", "20000", "--max-connections", "20000",
               "--config", os.path.join(ROOT, "bench/hub.toml")]
        if server.endswith("-deflate"):
            cmd.append("--deflate")
        if server == "tether-linger":
            cmd += ["--fanout-linger-ms", str(LINGER_MS)]
    elif server.startswith("uws"):
        cmd = [UWS_BIN, str(port)] + (["deflate"] if server.endswith("-deflate") else [])
    elif server.startswith("floor"):
        cmd = [FLOOR, str(port)] + (["uring"] if server == "floor-uring" else [])
    elif server == "ws":
        cmd = ["node", os.path.join(NODE_DIR, "ws_fanout.mjs"), str(port)]
    else:
        cmd = ["node", os.path.join(NODE_DIR, "socketio_fanout.mjs"), str(port)]
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit(f"{server} did not start")


def loader_args(server, tethers):
    server = server.removesuffix("-deflate")
    if server in ("uws", "floor", "floor-uring", "ws"):
        return ["--proto", "raw", "--publish", "raw", "--path", "/"]
    if server == "socketio":
        return ["--proto", "socketio", "--publish", "api"]
    stomp = "stomp" in server
    args = ["--proto", "stomp" if stomp else "json", "--publish", "api", "--api-key", KEY]
    if server.endswith("-signed"):
        token = subprocess.run([tethers["tether"], "token", "--user", "bench-user", "--expires-in", "3600",
                                "--token-hmac-secret", SECRET], capture_output=True, text=True, check=True)
        args += ["--token", token.stdout.strip()]
        if stomp:
            args += ["--heart-beat", STOMP_HEART_BEAT]
    return args


def server_cpu(r):
    """The server's CPU over the window: its own (/proc), and its core's ksoftirqd, which
    finishes the network work of its sends that the sending context left (the loopback's
    receive side): the server caused it, though /proc does not count it as the server's."""
    return r["server_cpu_s"] + r.get("ksoftirqd_s", 0.0)


def measure(server, tethers, extra, timeout):
    port = free_port()
    proc = start(server, port, tethers)
    try:
        out = subprocess.run(["taskset", "-c", "1", LOADER, "--addr", f"127.0.0.1:{port}",
                              "--server-pid", str(proc.pid), "--server-core", "0",
                              *loader_args(server, tethers), *extra],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            return {"failed": out.stderr.strip()[-300:]}
        return json.loads(out.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"failed": "loader timed out"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uws")
    ap.add_argument("--base")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--cases", default=",".join(str(i) for i in range(len(CASES))))
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--deflate", action="store_true")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--report", action="store_true",
                    help="only write the tables and chart again from the last run's raw results")
    opts = ap.parse_args()
    if opts.deflate:
        if opts.servers == ",".join(SERVERS):
            opts.servers = "tether,tether-deflate,uws,uws-deflate"
        if opts.cases == ",".join(str(i) for i in range(len(CASES))):
            opts.cases = "1,4"
        opts.no_memory = True
    if opts.report:
        return report_again(opts)
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tether-cli", "--bin", "tether"],
                   check=True, cwd=ROOT)
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "fanout_load", "--bin", "floor_fanout"],
                   check=True, cwd=os.path.join(ROOT, "bench/servers"))
    servers = opts.servers.split(",")
    uws = build_uws(opts.uws) if any(s.startswith("uws") for s in servers) else None
    if uws is None:
        servers = [s for s in servers if not s.startswith("uws")]
    if any(s in servers for s in ("ws", "socketio")) and not os.path.isdir(os.path.join(NODE_DIR, "node_modules")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], check=True, cwd=NODE_DIR)
    tethers = {"tether": TETHER}
    if opts.base:
        tethers["tether-base"] = os.path.abspath(opts.base)
        servers[1:1] = ["tether-base"]
    node = node_version()
    cases = [CASES[int(i)] for i in opts.cases.split(",") if i]
    raw = raw_path(opts)
    rows = []
    with open(raw + ".partial", "w") as partial:
        def keep(row):
            row["date"] = str(datetime.date.today())
            rows.append(row)
            partial.write(json.dumps(row) + "\n")
            partial.flush()
            r = row.get("deliveries_per_s")
            print(f"{row['kind']} {row['server']} {row.get('subscribers')}/{row.get('channels')}/"
                  f"{row.get('rate', '')}: " + (f"{r:,.0f}/s, {row['per_server_cpu_s']:,.0f} per server CPU-s, "
                  f"loader {row['loader_cpu_pct']:.0f}%" if r else json.dumps(row)), flush=True)

        for rep in range(opts.repeats):
            for subs, channels, rate in cases:
                for server in servers:
                    extra = case_args((subs, channels, rate), opts.duration)
                    if opts.deflate:
                        extra += ["--deflate", "--size", str(opts.size)]
                    r = measure(server, tethers, extra, 240)
                    r.update(kind="fanout", server=server, repeat=rep, subscribers=subs, channels=channels, rate=rate)
                    if "failed" not in r and r["server_cpu_s"] > 0:
                        r["per_server_cpu_s"] = r["delivered"] / server_cpu(r)
                    keep(r)
        if not opts.no_memory:
            memory_servers = []
            for server in servers:
                if server != "tether-linger":
                    memory_servers.append(server)
                if server in ("tether", "tether-base", "tether-stomp"):
                    memory_servers.append(server + "-signed")
            for rep in range(opts.repeats):
                for n in MEMORY:
                    for server in memory_servers:
                        r = measure(server, tethers, ["--connections", str(n), "--channels", "1", "--memory"], 300)
                        r.update(kind="memory", server=server, repeat=rep, subscribers=n)
                        keep(r)
    os.replace(raw + ".partial", raw)
    if opts.deflate:
        report_deflate(rows, servers, opts, uws)
    else:
        report(rows, servers, opts, uws, node)


def report_again(opts):
    """Writes the report of the last run (its raw results) again: for a change to the report
    itself. `--repeats` is taken from the results; `--duration` and `--size` are as given."""
    with open(raw_path(opts)) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    servers = list(dict.fromkeys(r["server"] for r in rows))
    opts.repeats = max(r["repeat"] for r in rows) + 1
    uws = None
    if any(s.startswith("uws") for s in servers):
        uws = uws_revision(opts.uws) if opts.uws else "(revision not given: --uws PATH)"
    if opts.deflate:
        report_deflate(rows, servers, opts, uws)
    else:
        report(rows, servers, opts, uws, node_version())


def report_deflate(rows, servers, opts, uws):
    name = "fanout_deflate"

    def runs(server, case):
        return [r for r in rows if r["server"] == server and "failed" not in r
                and (r["subscribers"], r["channels"], r["rate"]) == case]

    cases = sorted({(r["subscribers"], r["channels"], r["rate"]) for r in rows}, key=CASES.index)
    lines = [
        "## Fan-out with permessage-deflate",
        "",
        f"Measured {measured(rows, name)} on {os.cpu_count()} cores ({platform.machine()}), loopback, by "
        f"`bench/fanout_compare.py --deflate`: the same servers, loader and pinning as the section above; "
        f"{opts.repeats} runs of {opts.duration:g} s per case and server. Every subscriber offers "
        "permessage-deflate (`client_max_window_bits`); `tether-deflate` is `tether serve --deflate` (it "
        "answers `server_no_context_takeover; client_no_context_takeover` and compresses each publication "
        "once), `uws-deflate` is uWebSockets "
        f"{uws or '(not measured)'} with its shared compressor, publishing with compression; `tether` and "
        f"`uws` decline the offer. Publications of {opts.size} bytes of JSON data padded with words "
        "(compressible about as JSON is); tether.json wraps each in its envelope, uWebSockets delivers the "
        "body as is. Wire bytes per delivery: frame bytes received by the subscribers after subscribing, "
        "divided by deliveries. Median (min-max).",
        "",
        "| subscribers | channels | publications/s | server | deliveries per server CPU-s | ratio to itself "
        "without deflate | deliveries/s | delivered/expected, gaps, reordered (all runs) | wire bytes per delivery "
        "| compressed | p50 ms | p99 ms | server CPU % | loader CPU % (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        for s in servers:
            rs = runs(s, case)
            if not rs:
                continue
            base = [r["per_server_cpu_s"] for r in runs(s.removesuffix("-deflate"), case)]
            per = [r["per_server_cpu_s"] for r in rs]
            ratio = f"{statistics.median(per) / statistics.median(base):.2f}" if base else "-"
            delivered = sum(r["delivered"] for r in rs)
            lines.append(
                f"| {case[0]:,} | {case[1]:,} | {case[2]:,} | {s} | {spread(per)} | {ratio} | "
                f"{spread([r['deliveries_per_s'] for r in rs])} | "
                f"{delivered:,}/{sum(r['expected'] for r in rs):,}, "
                f"{sum(r['gaps'] for r in rs)}, {sum(r['reordered'] for r in rs)} | "
                f"{spread([r['wire_bytes'] / max(r['delivered'], 1) for r in rs], ',.0f')} | "
                f"{100 * sum(r['compressed'] for r in rs) / max(delivered, 1):.0f}% | "
                f"{spread([r['latency_ms']['p50'] for r in rs], ',.2f')} | "
                f"{spread([r['latency_ms']['p99'] for r in rs], ',.2f')} | "
                f"{statistics.median(r['server_cpu_pct'] for r in rs):.0f} | "
                f"{max(r['loader_cpu_pct'] for r in rs):.0f} |")
    lines += ["", "Raw results: `bench/results/fanout_deflate.raw.jsonl`."]
    with open(os.path.join(ROOT, "bench/results/fanout_deflate.md"), "w") as f:
        f.write("\n".join(lines).replace("## Fan-out", "# Fan-out", 1) + "\n")
    replace_section(ROOT, "## Fan-out with permessage-deflate", "\n".join(lines))
    print("\n".join(lines))


def measured(rows, name):
    """When the rows were measured: their own date, or for rows from before they carried one,
    the date the report of `name` already gives."""
    dates = {r["date"] for r in rows if "date" in r}
    if dates:
        return max(dates)
    try:
        with open(os.path.join(ROOT, f"bench/results/{name}.md")) as f:
            m = re.search(r"Measured (\d{4}-\d{2}-\d{2})", f.read())
    except OSError:
        m = None
    return m.group(1) if m else "(date not recorded)"


def cpu_split(rs):
    """Median server CPU per delivery in µs, user space and kernel ("" for runs from before
    the loader reported user time)."""
    rs = [r for r in rs if "server_user_s" in r and r["delivered"]]
    if not rs:
        return ""
    user = statistics.median(1e6 * r["server_user_s"] / r["delivered"] for r in rs)
    kernel = statistics.median(1e6 * (r["server_cpu_s"] - r["server_user_s"]) / r["delivered"] for r in rs)
    if not all("ksoftirqd_s" in r for r in rs):
        return f"{user:.2f}, {kernel:.2f}"
    softirqd = statistics.median(1e6 * r["ksoftirqd_s"] / r["delivered"] for r in rs)
    return f"{user:.2f}, {kernel:.2f}, {softirqd:.2f}"


def report(rows, servers, opts, uws, node):
    name = "fanout_compare"

    def runs(kind, server, case=None, n=None):
        return [r for r in rows if r["kind"] == kind and r["server"] == server and "failed" not in r
                and (case is None or (r["subscribers"], r["channels"], r["rate"]) == case)
                and (n is None or r["subscribers"] == n)]

    def ratio(rs, base_rs):
        """Each run's deliveries per CPU-second over uWebSockets' in the same repeat (the two
        ran minutes apart at most, so the machine's slower drifts cancel): median (min-max)."""
        base = {r["repeat"]: r["per_server_cpu_s"] for r in base_rs}
        pairs = [r["per_server_cpu_s"] / base[r["repeat"]] for r in rs if r["repeat"] in base]
        return spread(pairs, ",.2f") if pairs else "-"

    cases = sorted({(r["subscribers"], r["channels"], r["rate"]) for r in rows if r["kind"] == "fanout"},
                   key=CASES.index)
    uws_line = f"uWebSockets {uws} (C++, g++ -O3, no compression)" if uws else "uWebSockets not measured (no --uws)"
    base_line = "; `tether-base`: another build of tether beside it, given with `--base`, for an A/B" \
        if "tether-base" in servers else ""
    lines = [
        "## Fan-out beside uWebSockets, Node ws and Node socket.io",
        "",
        f"Measured {measured(rows, name)} on {os.cpu_count()} cores ({platform.machine()}), loopback, by "
        f"`bench/fanout_compare.py`: each server on core 0, a fresh process per run; the loader "
        f"(bench/servers `fanout_load`: one thread on epoll, raw WebSocket frames) on core 1. "
        f"{opts.repeats} runs of {opts.duration:g} s per case and server (the light case, "
        f"{CASES[0][0]:,}/{CASES[0][1]}/{CASES[0][2]}: {case_duration(CASES[0], opts.duration):g} s), "
        "the servers alternating inside each run. "
        f"Servers: `tether serve` (tether.json subscribers at /ws, and STOMP 1.2: `tether-stomp`; "
        f"`tether-linger`: tether.json with `--fanout-linger-ms {LINGER_MS}`, writes held back under load"
        f"{base_line}); {uws_line}, "
        f"its topic publish; `floor`: bench/servers `floor_fanout`, uWebSockets' protocol on one epoll thread "
        "doing nothing but one `send` per subscriber per publication (each publication framed once, written "
        "from the publishing request; the answers to one read in one write; no batching of publications, "
        "no history, no authentication), so its CPU is about what those system calls cost; Node `ws` 8.23.0 "
        "(a send loop over the topic's subscribers) and socket.io 4.8.4 "
        f"(a room broadcast) on Node {node}. Logging at warn or off, no compression. One publisher POSTs "
        "about 40 B of data on one keep-alive HTTP connection at the case's rate, pipelined (at most 64 "
        "unanswered; tether and socket.io: "
        "`/api/publish` with `{channel, data}`, delivered inside each server's envelope; uWebSockets and ws: "
        "`/publish/<topic>`, delivered as is). Where a server is saturated the offered rate is not reached: "
        "deliveries per server CPU-second (server CPU from /proc over the publishing window, plus the CPU of "
        "core 0's `ksoftirqd/0`, which finishes the network work of the server's sends that their context "
        "left, when the loader reports it) is the column that "
        "compares. Latency: publisher's clock before the POST to the loader's receipt. The server's CPU per "
        "delivery is split into user space and the kernel (/proc's utime and stime, 10 ms ticks), and "
        "ksoftirqd/0 where measured: the kernel's "
        "share is mostly the `send`s, the same work for every server. Median (min-max); the ratio to "
        "uWebSockets is taken run by run, each run against uWebSockets' run of the same repeat.",
        "",
        "| subscribers | channels | publications/s | server | deliveries per server CPU-s | ratio to uWebSockets "
        "| deliveries/s | delivered/expected, gaps, reordered (all runs) | p50 ms | p99 ms | server CPU % "
        "| server µs per delivery: user, kernel(, ksoftirqd/0) | loader CPU % (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        base = runs("fanout", "uws", case)
        for s in servers:
            rs = runs("fanout", s, case)
            failed = [r for r in rows if r["kind"] == "fanout" and r["server"] == s and "failed" in r
                      and (r["subscribers"], r["channels"], r["rate"]) == case]
            if not rs:
                if failed:
                    lines.append(f"| {case[0]:,} | {case[1]:,} | {case[2]:,} | {s} | failed: "
                                 f"{failed[0]['failed'][:80]} | | | | | | | | |")
                continue
            per = [r["per_server_cpu_s"] for r in rs]
            lines.append(
                f"| {case[0]:,} | {case[1]:,} | {case[2]:,} | {s} | {spread(per)} | {ratio(rs, base)} | "
                f"{spread([r['deliveries_per_s'] for r in rs])} | "
                f"{sum(r['delivered'] for r in rs):,}/{sum(r['expected'] for r in rs):,}, "
                f"{sum(r['gaps'] for r in rs)}, {sum(r['reordered'] for r in rs)}"
                f"{f' ({len(failed)} runs failed)' if failed else ''} | "
                f"{spread([r['latency_ms']['p50'] for r in rs], ',.2f')} | "
                f"{spread([r['latency_ms']['p99'] for r in rs], ',.2f')} | "
                f"{statistics.median(r['server_cpu_pct'] for r in rs):.0f} | {cpu_split(rs)} | "
                f"{max(r['loader_cpu_pct'] for r in rs):.0f} |")
    mem = [r for r in rows if r["kind"] == "memory" and "failed" not in r]
    if mem:
        lines += ["", "Memory per idle subscribed connection: N connections, each subscribed to one channel "
                  "(tether: connected with tether.json and subscribed; tether-stomp: STOMP 1.2, CONNECT and "
                  "SUBSCRIBE; both anonymous, as the fan-out cases; `-signed`: the same, connected with a token "
                  f"that expires in an hour, and STOMP asking for heart-beats of {STOMP_HEART_BEAT} ms, "
                  "what stomp.js asks for by default), RSS growth from before the first connection to 1 s "
                  "after the last subscription, divided by N.", "",
                  "| connections | server | KiB per connection | server RSS MiB at the end |", "|---|---|---|---|"]
        for n in MEMORY:
            for s in dict.fromkeys(r["server"] for r in mem):
                rs = runs("memory", s, n=n)
                if rs:
                    lines.append(f"| {n:,} | {s} | {spread([r['rss_per_conn'] / 1024 for r in rs], ',.2f')} | "
                                 f"{statistics.median(r['rss_after'] for r in rs) / 2**20:,.1f} |")
    lines += ["", "Chart: `bench/results/fanout_compare.svg`. Raw results: `bench/results/fanout_compare.raw.jsonl`."]
    with open(os.path.join(ROOT, "bench/results/fanout_compare.md"), "w") as f:
        f.write("\n".join(lines).replace("## Fan-out", "# Fan-out", 1) + "\n")
    replace_section(ROOT, "## Fan-out beside uWebSockets", "\n".join(lines))
    groups = [f"{c[0] // 1000}k/{c[1]}/{c[2]}" for c in cases]
    values = {(g, s): [r["per_server_cpu_s"] for r in runs("fanout", s, c)] for g, c in zip(groups, cases)
              for s in servers}
    bar_chart(os.path.join(ROOT, "bench/results/fanout_compare.svg"),
              "Fan-out: deliveries per server CPU-second (subscribers/channels/publications per s)",
              groups, servers, [("deliveries per server CPU-second", values)])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
