"""CPU per webhook exchange through :class:`~callplane.webhooks.fetch.WebClient` (issue 8: the node's HTTP cost).

    .venv/bin/python bench/webhook_client.py                 # 3 runs of 3000 requests, sequential and 16 at once
    .venv/bin/python bench/webhook_client.py --requests 500 --runs 1   # a quick look

A minimal HTTP/1.1 server (raw asyncio protocol, keep-alive, uvloop) runs in its own process, so its CPU is not
counted. This process sends the two kinds of request a call makes: a GET RCML fetch carrying ~20 call
parameters in the query (a ~60-byte XML answer) and a POST status callback carrying ~20 form parameters (an empty
200 answer).

Printed per run, kind (GET, POST) and client: CPU of this process per request (``time.process_time``, so every
thread counts) and latency median/p99, sequentially (one request at a time) and with ``--concurrency`` requests in
flight. The
same-run baseline is a bare asyncio-streams HTTP/1.1 client doing the same requests (one keep-alive connection per
worker, the same request bytes, Content-Length framing only): the floor for Python on this event loop. With
``--httpcore``, a third client is WebClient on httpx's own transport (httpcore over anyio), as it was before it had
its own.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvloop  # noqa: E402

from bench.common import machine, pct  # noqa: E402
from callplane.webhooks.fetch import WebClient  # noqa: E402

RCML = b'<?xml version="1.0"?><Response><Say>Hello.</Say><Hangup/></Response>'
RCML_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s" % (len(RCML), RCML)
CALLBACK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
PARAMS = (
    ("CallSid", "ID" + "a" * 32 + "-CA" + "b" * 32),
    ("AccountSid", "AC" + "c" * 32),
    ("From", "+15551230001"),
    ("To", "+15551230002"),
    ("CallStatus", "completed"),
    ("ApiVersion", "2012-04-24"),
    ("Direction", "outbound-api"),
    ("ForwardedFrom", ""),
    ("CallerName", ""),
    ("CallDuration", "3"),
    ("Duration", "1"),
    ("Timestamp", "Mon, 30 Nov 2026 07:00:00 +0000"),
    ("CallbackSource", "call-progress-events"),
    ("SequenceNumber", "2"),
    ("SipCallId", "8c6a1f2e4b7d@127.0.0.1"),
    ("SipHeader_Diversion", "<sip:+15550000@example.com>;reason=unconditional"),
    ("FromCity", ""),
    ("FromCountry", "US"),
    ("ToCountry", "US"),
    ("InstanceId", "ID" + "a" * 32),
)


# ------------------------------------------------------------------------------------------------ the server
class _Server(asyncio.Protocol):
    """Keep-alive HTTP/1.1: GET gets the RCML answer, anything else an empty 200. Requests may be pipelined."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self.buf) < total:
                return
            answer = RCML_ANSWER if self.buf.startswith(b"GET ") else CALLBACK_ANSWER
            self.buf = self.buf[total:]
            assert self.transport is not None
            self.transport.write(answer)


def _serve(port: mp.Queue[int]) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Server, "127.0.0.1", 0, backlog=512)
        port.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    uvloop.run(main())


# ------------------------------------------------------------------------------------------------ the clients
Send = Callable[[str, bool], Awaitable[None]]


class BareClient:
    """The baseline: asyncio streams, one keep-alive connection per worker, Content-Length framing only."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def send(self, path: str, get: bool) -> None:
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        query = urlencode(PARAMS)
        if get:
            head = f"GET {path}?{query} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUser-Agent: callplane\r\n\r\n"
            writer.write(head.encode())
        else:
            body = query.encode()
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUser-Agent: callplane\r\n"
                f"Content-Type: application/x-www-form-urlencoded; charset=UTF-8\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        assert status == 200
        self.idle.append(conn)

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def measure(send: Send, base: str, n: int, concurrency: int, get: bool) -> tuple[float, list[float]]:
    """CPU seconds per request and each request's latency, ``n`` requests with ``concurrency`` in flight."""
    latencies: list[float] = []
    todo = iter(range(n))
    url = base + ("/rcml" if get else "/status")

    async def worker() -> None:
        for _ in todo:
            started = time.perf_counter()
            await send(url, get)
            latencies.append(time.perf_counter() - started)

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - cpu) / n, latencies


def webclient_sender(client: WebClient) -> Send:
    async def send(url: str, get: bool) -> None:
        reply = await client.request(url, "GET" if get else "POST", PARAMS)
        assert reply.status == 200

    return send


def stock_transport() -> httpx.AsyncBaseTransport:
    """httpx's own transport (httpcore over anyio), as WebClient used it before it had its own."""
    return httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))


async def run(args: argparse.Namespace, port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    print(f"machine: {machine()}")
    print(f"loop: {type(asyncio.get_running_loop()).__module__}; {args.requests} requests per figure")
    print("CPU per request in us (webclient / bare), latency p50/p99 in ms")
    for run_no in range(1, args.runs + 1):
        for concurrency in (1, args.concurrency):
            for get in (True, False):
                figures: list[str] = []
                cpus: list[float] = []
                for name in ("bare", "webclient", "httpcore")[: 3 if args.httpcore else 2]:
                    send: Send
                    close: Callable[[], Awaitable[None]]
                    if name == "bare":
                        bare = BareClient("127.0.0.1", port)
                        send, close = bare.send, bare.close
                    else:
                        web = WebClient(transport=stock_transport() if name == "httpcore" else None)
                        send, close = webclient_sender(web), web.close
                    await measure(send, base, max(200, concurrency * 10), concurrency, get)  # warm up, fill the pool
                    cpu, lat = await measure(send, base, args.requests, concurrency, get)
                    await close()
                    cpus.append(cpu)
                    p50, p99 = statistics.median(lat) * 1e3, pct(lat, 0.99) * 1e3
                    figures.append(f"{name} {cpu * 1e6:4.0f} us {p50:5.2f}/{p99:5.2f} ms")
                kind = "GET  RCML" if get else "POST callback"
                ratio = cpus[1] / cpus[0]
                line = f"run {run_no} c={concurrency:<3} {kind:<13} webclient/bare {ratio:4.1f}x   "
                print(line + "   ".join(figures))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per figure (default 3000)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight in the concurrent figure")
    parser.add_argument("--httpcore", action="store_true", help="also WebClient on httpx's own transport (before)")
    parser.add_argument("--asyncio", action="store_true", help="the stock asyncio loop instead of uvloop")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    port_q: mp.Queue[int] = ctx.Queue()
    server = ctx.Process(target=_serve, args=(port_q,), daemon=True)
    server.start()
    try:
        port = port_q.get(timeout=10)
        if args.asyncio:
            asyncio.run(run(args, port))
        else:
            uvloop.run(run(args, port))
    finally:
        server.terminate()
        server.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
