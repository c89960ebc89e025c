#!/usr/bin/env python3
"""A TCP proxy that delays every chunk by DELAY seconds in each direction,
keeping order: a Redis "a network hop away" for rtm-cluster-bench on one
machine (where `tc netem` is not available).

    python3 conformance/tools/delay-proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_SECONDS

Listens on 127.0.0.1 only. Stop it by its PID.
"""
import asyncio, sys, time
LISTEN, UP, DELAY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
async def pipe(reader, writer):
    q = asyncio.Queue()
    async def rd():
        while True:
            data = await reader.read(65536)
            await q.put((time.monotonic() + DELAY, data))
            if not data: return
    async def wr():
        while True:
            at, data = await q.get()
            d = at - time.monotonic()
            if d > 0: await asyncio.sleep(d)
            if not data:
                writer.close(); return
            writer.write(data); await writer.drain()
    await asyncio.gather(rd(), wr())
async def handle(r, w):
    ur, uw = await asyncio.open_connection('127.0.0.1', UP)
    await asyncio.gather(pipe(r, uw), pipe(ur, w), return_exceptions=True)
async def main():
    s = await asyncio.start_server(handle, '127.0.0.1', LISTEN)
    async with s: await s.serve_forever()
asyncio.run(main())
