#!/usr/bin/env python3
"""Memory per idle hub connection: WebSocket vs SockJS (xhr-streaming and websocket).

Starts `tether serve` (the binary given) with a chat namespace, then for each kind opens N
clients that connect (tether.json, anonymous) and subscribe to one channel each, and reads
the server's resident memory before and after: (RSS after - RSS before) / N. Each kind runs
in a fresh server; the run repeats R times and prints medians and min-max.

  python3 bench/sockjs_memory.py target/release/tether [N=2000] [R=3]

Only loopback; every socket is closed at the end of each kind.
"""
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
R = int(sys.argv[3]) if len(sys.argv) > 3 else 3
CONFIG = """
[namespaces.chat]
allow_publish = true
allow_anonymous = true
[sockjs]
max_sessions = 100000
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_server(config_path):
    proc = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--config", config_path,
                             "--max-connections-per-ip", "100000"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        line = proc.stderr.readline()
        if "http://" in line:
            port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
            # Keep reading its log, so that the server never waits on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, port
    proc.kill()
    raise RuntimeError("server did not start")


def read_until(s, marker):
    buf = b""
    while marker not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError(f"closed before {marker!r}: {buf[-200:]!r}")
        buf += chunk
    return buf


def ws_frame(text):
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    else:
        head += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_open(port, path, protocol):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    proto = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n".encode())
    read_until(s, b"\r\n\r\n")
    return s


def websocket_client(port, i):
    s = ws_open(port, "/ws", "tether.json")
    s.sendall(ws_frame(json.dumps({"id": 1, "connect": {"name": f"u{i}"}})))
    s.sendall(ws_frame(json.dumps({"id": 2, "subscribe": {"channel": f"chat:c{i % 100}"}})))
    read_until(s, b'"id":2')
    return [s]


def sockjs_ws_client(port, i):
    s = ws_open(port, f"/sockjs/0/ws{i}/websocket", None)
    s.sendall(ws_frame(json.dumps([json.dumps({"id": 1, "connect": {"name": f"u{i}"}})])))
    s.sendall(ws_frame(json.dumps([json.dumps({"id": 2, "subscribe": {"channel": f"chat:c{i % 100}"}})])))
    read_until(s, b'\\"id\\":2')
    return [s]


def post(port, path, body):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
              f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    read_until(s, b"\r\n\r\n")
    s.close()


def sockjs_streaming_client(port, i):
    url = f"/sockjs/0/x{i}-{time.time_ns()}"
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST {url}/xhr_streaming HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode())
    read_until(s, b"o\n")
    msgs = [json.dumps({"id": 1, "connect": {"name": f"u{i}"}}),
            json.dumps({"id": 2, "subscribe": {"channel": f"chat:c{i % 100}"}})]
    post(port, f"{url}/xhr_send", json.dumps(msgs))
    read_until(s, b'\\"id\\":2')
    return [s]


def measure(kind, open_one, config_path):
    proc, port = start_server(config_path)
    socks = []
    try:
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        for i in range(N):
            socks += open_one(port, i)
        time.sleep(1.0)
        after = rss_kib(proc.pid)
        return (after - before) * 1024 / N
    finally:
        for s in socks:
            s.close()
        proc.kill()
        proc.wait()


def main():
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(CONFIG)
        config_path = f.name
    kinds = [("WebSocket /ws", websocket_client), ("SockJS websocket", sockjs_ws_client),
             ("SockJS xhr-streaming", sockjs_streaming_client)]
    results = {k: [] for k, _ in kinds}
    for _ in range(R):
        for kind, fn in kinds:
            results[kind].append(measure(kind, fn, config_path))
            time.sleep(0.5)
    print(f"Memory per idle hub connection (connected, subscribed to one channel), {N} clients, {R} runs\n")
    print("| client | bytes per connection, median | min - max |")
    print("|---|---|---|")
    for kind, _ in kinds:
        v = results[kind]
        print(f"| {kind} | {statistics.median(v):,.0f} | {min(v):,.0f} - {max(v):,.0f} |")
    os.unlink(config_path)


main()
