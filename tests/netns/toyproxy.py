#!/usr/bin/env python3
"""A stand-in for a halb node in the harness's own tests: a TCP relay that listens on every
address (so it serves the VIP when its node holds it) and picks the server by a hash of the
client's address, so two of them agree on every client's server the way a replicated stick
table makes two halb nodes agree. It lets the drill and the harness be tested end to end in
namespaces before the pair exists. Not a load balancer: no health, no HTTP awareness.

    toyproxy.py --listen 80=8080 --listen 9000=9000 --servers 10.77.0.21,10.77.0.22,10.77.0.23
"""
import argparse
import asyncio
import signal
import zlib


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(creader, cwriter, servers, port):
    src = cwriter.get_extra_info("peername")[0]
    server = servers[zlib.crc32(src.encode()) % len(servers)]
    try:
        sreader, swriter = await asyncio.wait_for(asyncio.open_connection(server, port), 2.0)
    except (OSError, asyncio.TimeoutError):
        cwriter.close()
        return
    await asyncio.gather(pipe(creader, swriter), pipe(sreader, cwriter))


async def main(args):
    servers = args.servers.split(",")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    listeners = []
    for spec in args.listen:
        lport, _, sport = spec.partition("=")
        listeners.append(await asyncio.start_server(
            lambda r, w, p=int(sport): handle(r, w, servers, p), "0.0.0.0", int(lport),
            reuse_address=True, backlog=1024))
    print(f"toyproxy: {args.listen} -> {servers}", flush=True)
    await stop.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", action="append", required=True)
    ap.add_argument("--servers", required=True)
    asyncio.run(main(ap.parse_args()))
