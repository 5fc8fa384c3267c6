"""What the bench scripts share: CPU time of a process from /proc/PID/stat, and result
tables."""
import os
import statistics

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User plus system CPU seconds used so far by `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def spread(values, fmt=",.0f"):
    """`median (min-max)` of a list of numbers."""
    f = lambda v: format(v, fmt)
    return f"{f(statistics.median(values))} ({f(min(values))}-{f(max(values))})"


def write_report(root, name, lines):
    """Writes bench/results/NAME.md (with the raw-results line) and prints it."""
    lines = lines + ["", f"Raw results: `bench/results/{name}.raw.jsonl`. Reproduce: `bench/{name}.py`."]
    with open(os.path.join(root, f"bench/results/{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
