"""Python `websockets` echo server for the tether client. "close-me" closes with 4001 "bye".

Prints its URL on the first line of stdout. With CERT and KEY (PEM files) it serves wss://.
usage: python py_server.py [cert.pem key.pem]
"""
import asyncio
import ssl
import sys

from websockets.asyncio.server import serve


async def echo(ws):
    async for msg in ws:
        if msg == "close-me":
            await ws.close(4001, "bye")
        else:
            await ws.send(msg)


async def main(cert=None, key=None):
    context = None
    if cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    async with serve(echo, "127.0.0.1", 0, max_size=1 << 24, ssl=context) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"{'wss' if context else 'ws'}://127.0.0.1:{port}", flush=True)
        await asyncio.sleep(60)


asyncio.run(main(*sys.argv[1:3]))
