"""Python `websockets` client against a tether server: text, binary, 1 MiB, ping, close.

usage: python py_client.py ws://127.0.0.1:PORT/path [ca.pem for wss://]
"""
import asyncio
import ssl
import sys

from websockets.asyncio.client import connect


async def main(url, ca=None):
    context = ssl.create_default_context(cafile=ca) if ca else None
    async with connect(url, max_size=1 << 24, ssl=context) as ws:
        # websockets offers permessage-deflate by default; the server must have accepted it.
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in extensions, extensions
        print(f"python client: negotiated {extensions}")
        await ws.send("héllo from python")
        assert await ws.recv() == "héllo from python"
        print("python client: text ok")
        await ws.send(bytes([0, 1, 2, 255]))
        assert await ws.recv() == bytes([0, 1, 2, 255])
        print("python client: binary ok")
        big = bytes(i % 251 for i in range(1 << 20))
        await ws.send(big)
        assert await ws.recv() == big
        print("python client: 1 MiB ok")
        pong = await ws.ping(b"ping-payload")
        await asyncio.wait_for(pong, 5)
        print("python client: ping ok")
        await ws.close(4000, "done")
        assert ws.close_code == 4000, ws.close_code
        print(f"python client: close ok ({ws.close_code})")


asyncio.run(asyncio.wait_for(main(*sys.argv[1:3]), 15))
