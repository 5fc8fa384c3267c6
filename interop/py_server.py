"""Python `websockets` echo server for the tether client. "close-me" closes with 4001 "bye".

Prints its URL on the first line of stdout.
"""
import asyncio

from websockets.asyncio.server import serve


async def echo(ws):
    async for msg in ws:
        if msg == "close-me":
            await ws.close(4001, "bye")
        else:
            await ws.send(msg)


async def main():
    async with serve(echo, "127.0.0.1", 0, max_size=1 << 24) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"ws://127.0.0.1:{port}", flush=True)
        await asyncio.sleep(60)


asyncio.run(main())
