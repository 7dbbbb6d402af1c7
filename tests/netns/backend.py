#!/usr/bin/env python3
"""A test backend for the namespace tests: an HTTP/1.1 server that says who it is, and a TCP
echo server, in one asyncio process (no thread per connection, so thousands of keep-alive and
long-lived connections cost little).

HTTP: every response carries `X-Backend: NAME` and the body `NAME\\n`; keep-alive unless the
client sends `Connection: close` (or speaks HTTP/1.0). With --session-cookie SESSIONID a
response to a request without that cookie sets one (an application session, for app_cookie
stickiness). /healthz answers 200 "ok". `?delay_ms=N` delays the response (busy connections).
Echo: every byte read is written back.

Ends cleanly on SIGTERM/SIGINT, printing its counters.
"""
import argparse
import asyncio
import os
import signal
import sys

MAX_HEAD = 64 * 1024
IDLE_TIMEOUT = 60.0

stats = {"http_conns": 0, "requests": 0, "echo_conns": 0, "echo_bytes": 0, "bad": 0}


def parse_addr(text):
    host, _, port = text.rpartition(":")
    return host or "0.0.0.0", int(port)


async def handle_http(reader, writer, name, cookie):
    stats["http_conns"] += 1
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                stats["bad"] += 1
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                stats["bad"] += 1
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            method, target, version = parts
            headers = {}
            for h in lines[1:]:
                if not h:
                    continue
                k, _, v = h.partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            path, _, query = target.partition("?")
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            delay = int(params.get("delay_ms", "0") or 0)
            if delay:
                await asyncio.sleep(min(delay, 10000) / 1000.0)
            body = b"ok\n" if path == "/healthz" else f"{name}\n".encode()
            out = [f"HTTP/1.1 200 OK", f"X-Backend: {name}", f"Content-Length: {len(body)}",
                   "Content-Type: text/plain"]
            if cookie and path != "/healthz":
                have = headers.get("cookie", "")
                if f"{cookie}=" not in have:
                    out.append(f"Set-Cookie: {cookie}={name}-{os.urandom(6).hex()}; Path=/")
            if not keep:
                out.append("Connection: close")
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
            stats["requests"] += 1
            if not keep:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def handle_echo(reader, writer):
    stats["echo_conns"] += 1
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            stats["echo_bytes"] += len(data)
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        return
    finally:
        writer.close()


async def main(args):
    servers = []
    if args.http:
        host, port = parse_addr(args.http)
        servers.append(await asyncio.start_server(
            lambda r, w: handle_http(r, w, args.name, args.session_cookie), host, port,
            reuse_address=True, backlog=1024, limit=MAX_HEAD))
    if args.echo:
        host, port = parse_addr(args.echo)
        servers.append(await asyncio.start_server(handle_echo, host, port, reuse_address=True,
                                                  backlog=1024))
    print(f"backend {args.name}: http={args.http} echo={args.echo} pid={os.getpid()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    for s in servers:
        s.close()
    print(f"backend {args.name}: stopping {stats}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--http", default="")
    ap.add_argument("--echo", default="")
    ap.add_argument("--session-cookie", default="")
    a = ap.parse_args()
    asyncio.run(main(a))
    sys.exit(0)
