"""Checks `tether echo`'s log: each named connection used permessage-deflate.

usage: check_echo_log.py LOG PATH [PATH ...]

For every PATH (the request path a client connected with), the echo server's "closed" line
must show compressed messages received (compressed_in >= 1) and far fewer bytes on the wire
than in the messages (wire_in * 4 < payload_in, and the same for what it sent back).
"""
import re
import sys


def fields(line):
    return dict(re.findall(r"(\w+)=(\S*)", line))


def main():
    log, paths = sys.argv[1], sys.argv[2:]
    closed = [fields(l) for l in open(log) if " closed " in l]
    status = 0
    for path in paths:
        matches = [f for f in closed if f.get("path") == path]
        if not matches:
            print(f"echo log: no closed connection for {path}")
            status = 1
            continue
        f = {k: int(v) for k, v in matches[-1].items() if v.isdigit()}
        ok = f["compressed_in"] >= 1 and f["wire_in"] * 4 < f["payload_in"] and f["wire_out"] * 4 < f["payload_out"]
        print(
            f"echo log {path}: {'ok' if ok else 'NOT COMPRESSED'} compressed_in={f['compressed_in']} "
            f"payload_in={f['payload_in']} wire_in={f['wire_in']} payload_out={f['payload_out']} wire_out={f['wire_out']}"
        )
        status |= 0 if ok else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
