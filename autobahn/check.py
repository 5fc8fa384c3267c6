#!/usr/bin/env python3
"""Compare an Autobahn|Testsuite report with the committed expected results.

usage: check.py REPORT_DIR EXPECTED_JSON [--write]

Reads REPORT_DIR/index.json, reduces it to {case: [behavior, behaviorClose]} for the one
agent in it, prints the counts, and fails (exit 1) when:
  - any case is neither OK nor INFORMATIONAL in either column, or
  - the results differ from EXPECTED_JSON (a case added, removed or changed).
--write replaces EXPECTED_JSON with the new results (review the diff before committing).
"""
import json
import sys
from collections import Counter

PASS = {"OK", "INFORMATIONAL"}


def case_key(case):
    return [int(p) for p in case.split(".")]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    report_dir, expected_path = args
    with open(f"{report_dir}/index.json") as f:
        index = json.load(f)
    if len(index) != 1:
        print(f"expected one agent in the report, found {sorted(index)}", file=sys.stderr)
        return 1
    (agent, cases), = index.items()
    results = {
        case: [r["behavior"], r["behaviorClose"]]
        for case, r in sorted(cases.items(), key=lambda kv: case_key(kv[0]))
    }
    counts = Counter(tuple(v) for v in results.values())
    print(f"{expected_path}: {len(results)} cases for agent {agent}")
    for (b, bc), n in sorted(counts.items()):
        print(f"  {n:4d}  behavior={b} behaviorClose={bc}")
    failed = [c for c, (b, bc) in results.items() if b not in PASS or bc not in PASS]
    for c in failed:
        print(f"  NOT PASSING {c}: {results[c]}")
    if "--write" in sys.argv:
        with open(expected_path, "w") as f:
            json.dump(results, f, indent=1, sort_keys=False)
            f.write("\n")
        print(f"wrote {expected_path}")
        return 1 if failed else 0
    try:
        with open(expected_path) as f:
            expected = json.load(f)
    except FileNotFoundError:
        print(f"missing {expected_path}; run with --write to create it", file=sys.stderr)
        return 1
    drift = sorted(set(expected) | set(results), key=case_key)
    drift = [c for c in drift if expected.get(c) != results.get(c)]
    for c in drift:
        print(f"  DRIFT {c}: expected {expected.get(c)} got {results.get(c)}")
    if failed or drift:
        return 1
    print("  matches the expected results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
