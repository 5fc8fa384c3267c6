#!/usr/bin/env python3
"""Does submitting a publication's sends through io_uring make fan-out cheaper? The floor
server (bench/servers `floor_fanout`: one `send` per subscriber per publication, nothing
else) beside itself with `uring` (the same sends, one io_uring submission per publication),
with the loader and pinning of bench/fanout_compare.py (server on core 0, loader on core 1),
R repeats alternating. Reports deliveries per CPU-second counted two ways: the server's own
CPU (/proc, as the fan-out tables did until 2026-12-02), and that plus core 0's
`ksoftirqd/0`, where the kernel finishes network work that the sending context left (the
loopback's receive side of the sends); and core 0's busy time. Writes
bench/results/uring_check.md, .raw.jsonl and the "Sends through io_uring" section of
bench/RESULTS.md.

usage: bench/uring_check.py [--repeats N] [--duration SECS] [--cases 0,1,...]
(case numbers as in fanout_compare.py; default 0,1,2,3: the four that are not saturated)
"""
import argparse
import datetime
import json
import os
import platform
import subprocess

import fanout_compare as fc
from procstat import replace_section, spread

SERVERS = ["floor", "floor-uring"]


def runs(rows, server, case):
    return [r for r in rows if r["server"] == server and tuple(r["case"]) == case and "failed" not in r]


def own(r):
    """Deliveries per CPU-second of the server's own (/proc)."""
    return r["delivered"] / r["server_cpu_s"]


def with_softirqd(r):
    """Deliveries per CPU-second of the server's own and its core's ksoftirqd."""
    return r["delivered"] / fc.server_cpu(r)


def ratio(key, rs, base_rs):
    """`key` of each run over the floor's in the same repeat: median (min-max)."""
    base = {r["repeat"]: key(r) for r in base_rs}
    pairs = [key(r) / base[r["repeat"]] for r in rs if r["repeat"] in base]
    return spread(pairs, ",.2f") if pairs else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--cases", default="0,1,2,3")
    opts = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "fanout_load", "--bin", "floor_fanout"],
                   check=True, cwd=os.path.join(fc.ROOT, "bench/servers"))
    cases = [fc.CASES[int(i)] for i in opts.cases.split(",") if i]
    rows = []
    for rep in range(opts.repeats):
        for case in cases:
            for server in SERVERS:
                r = fc.measure(server, {}, fc.case_args(case, opts.duration), 240)
                r.update(server=server, repeat=rep, case=list(case), date=str(datetime.date.today()))
                rows.append(r)
                print(json.dumps({k: r.get(k) for k in ("server", "case", "delivered", "server_cpu_s",
                                                         "ksoftirqd_s", "core_busy_s", "failed")}), flush=True)
    raw = os.path.join(fc.ROOT, "bench/results/uring_check.raw.jsonl")
    with open(raw, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    lines = [
        "## Sends through io_uring (the floor server)",
        "",
        f"Measured {max(r['date'] for r in rows)} on {os.cpu_count()} cores ({platform.machine()}), loopback, by "
        f"`bench/uring_check.py`: bench/servers `floor_fanout` (one `send` per subscriber per publication) and "
        "`floor_fanout PORT uring` (the same sends, one io_uring submission per publication, `MSG_DONTWAIT`), "
        "on core 0, the loader of the section above on core 1, "
        f"{opts.repeats} runs of {opts.duration:g} s per case (the light case 15 s), alternating. Deliveries per "
        "CPU-second counted with the server's own CPU (/proc), and with that plus core 0's `ksoftirqd/0`, where "
        "the kernel finishes network work (the loopback's receive side of the sends) that the sending context "
        "left; core 0's busy time over the window beside them. Median (min-max); the ratio is floor-uring's "
        "over the floor's, run by run.",
        "",
        "| subscribers | channels | publications/s | server | per server CPU-s (/proc) | ratio | per CPU-s with "
        "ksoftirqd/0 | ratio | ksoftirqd/0 s | core 0 busy s | delivered/expected | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        base = runs(rows, "floor", case)
        for server in SERVERS:
            rs = runs(rows, server, case)
            if not rs:
                continue
            lines.append(
                f"| {case[0]:,} | {case[1]:,} | {case[2]:,} | {server} | {spread([own(r) for r in rs])} | "
                f"{ratio(own, rs, base)} | {spread([with_softirqd(r) for r in rs])} | "
                f"{ratio(with_softirqd, rs, base)} | "
                f"{spread([r.get('ksoftirqd_s', 0) for r in rs], ',.2f')} | "
                f"{spread([r.get('core_busy_s', 0) for r in rs], ',.2f')} | "
                f"{sum(r['delivered'] for r in rs):,}/{sum(r['expected'] for r in rs):,} | "
                f"{spread([r['latency_ms']['p99'] for r in rs], ',.2f')} |")
    lines += ["", "Raw results: `bench/results/uring_check.raw.jsonl`."]
    with open(os.path.join(fc.ROOT, "bench/results/uring_check.md"), "w") as f:
        f.write("\n".join(lines).replace("## Sends", "# Sends", 1) + "\n")
    replace_section(fc.ROOT, "## Sends through io_uring", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
