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


COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]


def bar_chart(path, title, groups, names, panels):
    """A plain SVG of grouped bars (median, with a min-max line), one panel per
    `(panel title, {(group, name): [values]})`, no plotting library."""
    bar, gap, left, top, height = 14, 18, 70, 40, 200
    group = bar * len(names) + gap
    width = max(left + group * len(groups) + 20, 520)
    total = top + len(panels) * (height + 70) + 20 * len(names)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{total}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="14">{title}</text>']
    for p, (panel, vals) in enumerate(panels):
        y0 = top + p * (height + 70)
        peak = max((max(v) for v in vals.values() if v), default=1)
        out.append(f'<text x="{left}" y="{y0 + 12}">{panel} (median, line: min-max)</text>')
        base = y0 + 20 + height
        out.append(f'<line x1="{left}" y1="{base}" x2="{width - 10}" y2="{base}" stroke="black"/>')
        for tick in range(0, 5):
            v = peak * tick / 4
            y = base - height * tick / 4
            out.append(f'<text x="{left - 6}" y="{y + 4:.0f}" text-anchor="end">{v / 1000:,.0f}k</text>')
        for i, g in enumerate(groups):
            x0 = left + 10 + i * group
            for j, n in enumerate(names):
                v = vals.get((g, n))
                if not v:
                    continue
                x = x0 + j * bar
                h = height * statistics.median(v) / peak
                out.append(f'<rect x="{x}" y="{base - h:.1f}" width="{bar - 2}" height="{h:.1f}" '
                           f'fill="{COLORS[j % len(COLORS)]}"><title>{n}: {statistics.median(v):,.0f}</title></rect>')
                lo, hi = (base - height * m / peak for m in (min(v), max(v)))
                mid = x + (bar - 2) / 2
                out.append(f'<line x1="{mid}" y1="{lo:.1f}" x2="{mid}" y2="{hi:.1f}" stroke="black"/>')
            out.append(f'<text x="{x0 + bar * len(names) / 2:.0f}" y="{base + 14}" text-anchor="middle">{g}</text>')
    y = top + len(panels) * (height + 70) - 30
    for j, n in enumerate(names):
        out.append(f'<rect x="{left}" y="{y + 20 * j}" width="12" height="12" fill="{COLORS[j % len(COLORS)]}"/>'
                   f'<text x="{left + 18}" y="{y + 20 * j + 10}">{n}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def replace_section(root, heading, text):
    """Puts `text` (starting with `heading`, a `## ` line) in bench/RESULTS.md in place of
    the section with that heading, or at the end; the other sections stay as they are."""
    path = os.path.join(root, "bench/RESULTS.md")
    old = open(path).read() if os.path.exists(path) else ""
    start = old.find("\n" + heading)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    else:
        end = old.find("\n## ", start + 1)
        new = old[:start + 1] + text + "\n" + (old[end:] if end >= 0 else "")
    with open(path, "w") as f:
        f.write(new)
