"""PooledTransport against real loopback servers that misbehave on purpose: reuse, closes, framing, limits, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from callplane.webhooks import fetch
from callplane.webhooks.fetch import FetchError, Limits, WebClient
from callplane.webhooks.transport import HIGH_WATER, PooledTransport

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Exchange:
    """One request as the raw server read it, and the connection it came on (numbered from 0)."""

    conn: int
    head: bytes
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


Script = Callable[[Exchange], Awaitable[bool]]  # answers; False closes the connection


@dataclass
class RawServer:
    """An HTTP/1.1 server on loopback written byte by byte by the test's script (Content-Length bodies only)."""

    script: Script
    tls: ssl.SSLContext | None = None
    port: int = 0
    connections: int = 0
    seen: list[Exchange] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.connections
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                exchange = Exchange(conn, head, body, reader, writer)
                self.seen.append(exchange)
                if not await self.script(exchange):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self.closed.append(conn)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RawServer]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self
            server.close()

    def url(self, path: str = "/x", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


def answer(data: bytes, keep: bool = True) -> Script:
    async def script(ex: Exchange) -> bool:
        ex.writer.write(data)
        await ex.writer.drain()
        return keep

    return script


@pytest.fixture
async def transport() -> AsyncIterator[PooledTransport]:
    t = PooledTransport()
    yield t
    await t.aclose()


async def get(client: httpx.AsyncClient, url: str) -> httpx.Response:
    response = await client.get(url)
    await response.aclose()
    return response


async def test_keep_alive_connection_is_reused(transport: PooledTransport) -> None:
    async with RawServer(answer(OK)).running() as server, httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            assert (await client.get(server.url())).content == b"ok"
        assert server.connections == 1
        assert (transport.open_connections, transport.idle_connections) == (1, 1)
        assert [ex.head.split(b"\r\n")[0] for ex in server.seen] == [b"GET /x HTTP/1.1"] * 3


async def test_request_bytes_carry_headers_and_body(transport: PooledTransport) -> None:
    async with RawServer(answer(OK)).running() as server, httpx.AsyncClient(transport=transport) as client:
        await client.post(server.url("/p?a=1"), content=b"k=v", headers={"Content-Type": "text/plain"})
        (ex,) = server.seen
        lines = ex.head.split(b"\r\n")
        assert lines[0] == b"POST /p?a=1 HTTP/1.1"
        assert f"Host: 127.0.0.1:{server.port}".encode() in lines
        assert b"Content-Length: 3" in lines and b"Content-Type: text/plain" in lines
        assert ex.body == b"k=v"


@pytest.mark.parametrize("header", [("X-A", "1\r\nX-B: 2"), ("X-A", "1\nX-B: 2"), ("X-A", "1\r"), ("X-A:B", "1")])
async def test_header_smuggling_another_is_refused(transport: PooledTransport, header: tuple[str, str]) -> None:
    async with RawServer(answer(OK)).running() as server, httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.LocalProtocolError):
            await client.get(server.url(), headers=[header])
        assert server.seen == [] and server.connections == 0


async def test_connection_close_answer_is_not_reused(transport: PooledTransport) -> None:
    reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with RawServer(answer(reply, keep=False)).running() as server, httpx.AsyncClient(transport=transport) as c:
        assert (await c.get(server.url())).content == b"ok"
        assert (await c.get(server.url())).content == b"ok"
        assert server.connections == 2
        assert transport.open_connections == 0


async def test_idle_connection_closed_by_the_server_leaves_the_pool(transport: PooledTransport) -> None:
    async with RawServer(answer(OK, keep=False)).running() as server, httpx.AsyncClient(transport=transport) as c:
        assert (await c.get(server.url())).content == b"ok"  # no "Connection: close": pooled, then closed under it
        for _ in range(50):
            if transport.idle_connections == 0:
                break
            await asyncio.sleep(0.01)
        assert transport.idle_connections == 0
        assert (await c.get(server.url())).content == b"ok"
        assert server.connections == 2


async def test_request_on_a_connection_closed_as_it_was_sent_is_sent_again(transport: PooledTransport) -> None:
    async def first_answer_then_hang_up(ex: Exchange) -> bool:
        if len(server.seen) == 2:  # the second request, on the reused connection: closed unanswered
            return False
        ex.writer.write(OK)
        return True

    server = RawServer(first_answer_then_hang_up)
    async with server.running(), httpx.AsyncClient(transport=transport) as client:
        assert (await client.post(server.url(), content=b"1")).content == b"ok"
        assert (await client.post(server.url(), content=b"2")).content == b"ok"
        assert [(ex.conn, ex.body) for ex in server.seen] == [(0, b"1"), (0, b"2"), (1, b"2")]


async def test_fresh_connection_closed_unanswered_is_a_read_error(transport: PooledTransport) -> None:
    async with RawServer(answer(b"", keep=False)).running() as server, httpx.AsyncClient(transport=transport) as c:
        with pytest.raises(httpx.ReadError):
            await c.get(server.url())
        assert len(server.seen) == 1  # not retried: the connection was new
        assert transport.open_connections == 0


async def test_chunked_body_in_pieces(transport: PooledTransport) -> None:
    async def chunked(ex: Exchange) -> bool:
        ex.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHello\r\n")
        await ex.writer.drain()
        await asyncio.sleep(0.01)
        ex.writer.write(b"1\r\n,\r\n6\r\n world\r\n0\r\n\r\n")
        return True

    async with RawServer(chunked).running() as server, httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(server.url())).content == b"Hello, world"
        assert (await client.get(server.url())).content == b"Hello, world"
        assert server.connections == 1


async def test_body_delimited_by_the_end_of_the_connection(transport: PooledTransport) -> None:
    reply = b"HTTP/1.0 200 Fine\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    async with RawServer(answer(reply, keep=False)).running() as server, httpx.AsyncClient(transport=transport) as c:
        response = await c.get(server.url())
        assert response.content == b"until the end"
        assert (response.http_version, response.reason_phrase) == ("HTTP/1.0", "Fine")
        assert transport.open_connections == 0


async def test_connection_closed_mid_body_is_an_error(transport: PooledTransport) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"
    async with RawServer(answer(reply, keep=False)).running() as server, httpx.AsyncClient(transport=transport) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(server.url())
        assert transport.open_connections == 0


async def test_interim_100_continue_is_skipped(transport: PooledTransport) -> None:
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok"
    async with RawServer(answer(reply)).running() as server, httpx.AsyncClient(transport=transport) as client:
        response = await client.get(server.url())
        assert (response.status_code, response.headers["x-a"], response.content) == (201, "1", b"ok")
        assert (response.reason_phrase, response.http_version) == ("Created", "HTTP/1.1")


async def test_malformed_response_is_a_protocol_error(transport: PooledTransport) -> None:
    bad = RawServer(answer(b"HTTP/1.1 abc\r\n\r\n"))
    async with bad.running() as server, httpx.AsyncClient(transport=transport) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(server.url())
        assert transport.open_connections == 0


async def test_body_over_the_cap_stops_reading_and_closes() -> None:
    server_saw_close = asyncio.Event()

    async def endless(ex: Exchange) -> bool:
        ex.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (4096, b"x" * 4096)
        try:
            for _ in range(100_000):  # 400 MiB if nobody stops it
                ex.writer.write(chunk)
                await ex.writer.drain()
        except ConnectionError:
            server_saw_close.set()
        return False

    web = WebClient(Limits(connect_timeout=1.0, total_timeout=5.0, max_body=1 << 20))
    try:
        async with RawServer(endless).running() as server:
            with pytest.raises(FetchError) as err:
                await web.request(server.url(), "GET")
            assert err.value.code == fetch.TOO_LARGE
            await asyncio.wait_for(server_saw_close.wait(), 5.0)
    finally:
        await web.close()


async def test_reading_pauses_while_the_consumer_does_not_read(transport: PooledTransport) -> None:
    body = b"y" * (8 * HIGH_WATER)
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    async with RawServer(answer(reply)).running() as server, httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", server.url()) as response:
            await asyncio.sleep(0.1)  # the server has written it all; the kernel and our buffer hold what came
            (conn,) = transport._open
            assert conn.buffered < 2 * HIGH_WATER
            assert len(await response.aread()) == len(body)
        assert transport.idle_connections == 1


async def test_body_not_read_to_the_end_closes_the_connection(transport: PooledTransport) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"z" * 200000
    async with RawServer(answer(reply)).running() as server, httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", server.url()) as response:
            async for _ in response.aiter_raw():
                break
        assert transport.open_connections == 0
        assert (await client.get(server.url())).content == b"z" * 200000
        assert server.connections == 2


async def test_connect_refused(transport: PooledTransport) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")
    assert transport.open_connections == 0


async def test_connect_timeout(transport: PooledTransport) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # never accepted: once its queue is full, the kernel drops further SYNs
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        try:
            for f in fillers:
                f.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    f.connect(("127.0.0.1", port))
            async with httpx.AsyncClient(transport=transport) as client:
                with pytest.raises(httpx.ConnectTimeout):
                    request = client.get(f"http://127.0.0.1:{port}/", timeout=httpx.Timeout(5.0, connect=0.3))
                    await asyncio.wait_for(request, 3.0)  # a TimeoutError here: the connect limit did not hold
            assert transport.open_connections == 0
        finally:
            for f in fillers:
                f.close()


async def test_read_timeout(transport: PooledTransport) -> None:
    async def silent(ex: Exchange) -> bool:
        await asyncio.sleep(5)
        return False

    async with RawServer(silent).running() as server, httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(server.url(), timeout=httpx.Timeout(5.0, read=0.2))
        assert transport.open_connections == 0


async def test_cancelled_request_frees_its_connection_and_slot() -> None:
    transport = PooledTransport(max_connections=1)

    async def slow_first(ex: Exchange) -> bool:
        if ex.conn == 0:
            await asyncio.sleep(5)
        ex.writer.write(OK)
        return True

    try:
        async with RawServer(slow_first).running() as server, httpx.AsyncClient(transport=transport) as client:
            task = asyncio.create_task(client.get(server.url()))
            while not server.seen:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert transport.open_connections == 0
            response = await client.get(server.url(), timeout=1.0)  # the one slot is free again
            assert response.content == b"ok"
    finally:
        await transport.aclose()


async def test_pool_timeout_when_every_slot_is_busy() -> None:
    transport = PooledTransport(max_connections=1)
    try:
        async with RawServer(answer(OK)).running() as server, httpx.AsyncClient(transport=transport) as client:
            async with client.stream("GET", server.url()):
                with pytest.raises(httpx.PoolTimeout):
                    await client.get(server.url(), timeout=httpx.Timeout(5.0, pool=0.1))
            assert (await client.get(server.url())).content == b"ok"
    finally:
        await transport.aclose()


# ------------------------------------------------------------------------------------------------ TLS
@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*certificate)
    return ctx


async def test_https_with_a_trusted_certificate(certificate: tuple[Path, Path]) -> None:
    transport = PooledTransport(ssl_context=ssl.create_default_context(cafile=str(certificate[0])))
    server = RawServer(answer(OK), tls=server_context(certificate))
    try:
        async with server.running(), httpx.AsyncClient(transport=transport) as client:
            for host in ("127.0.0.1", "localhost"):
                response = await client.get(f"https://{host}:{server.port}/x")
                assert response.content == b"ok"
            assert (await client.get(server.url(scheme="https"))).content == b"ok"
            assert server.connections == 2  # one per origin, reused
    finally:
        await transport.aclose()


async def test_https_with_an_untrusted_certificate_is_refused(
    certificate: tuple[Path, Path], transport: PooledTransport
) -> None:
    server = RawServer(answer(OK), tls=server_context(certificate))
    async with server.running(), httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(server.url(scheme="https"))
        assert server.seen == []
        assert transport.open_connections == 0


# ------------------------------------------------------------------------------------------------ through WebClient
async def test_web_client_reuses_one_connection_for_successive_webhooks() -> None:
    web = WebClient()
    try:
        async with RawServer(answer(OK)).running() as server:
            for method in ("POST", "GET", "POST"):
                assert (await web.request(server.url(), method, (("CallSid", "CA1"),))).body == b"ok"
            assert server.connections == 1
    finally:
        await web.close()


async def test_web_client_honours_a_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    async with RawServer(answer(OK)).running() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        web = WebClient()
        try:
            assert (await web.request("http://callbacks.invalid/status", "POST", (("a", "1"),))).body == b"ok"
        finally:
            await web.close()
        (ex,) = proxy.seen
        assert ex.head.startswith(b"POST http://callbacks.invalid/status HTTP/1.1\r\n")


async def test_endless_response_head_is_refused(transport: PooledTransport) -> None:
    async def endless_headers(ex: Exchange) -> bool:
        ex.writer.write(b"HTTP/1.1 200 OK\r\n")
        try:
            for i in range(100_000):
                ex.writer.write(b"X-Filler-%d: %s\r\n" % (i, b"f" * 100))
                await ex.writer.drain()
        except ConnectionError:
            pass
        return False

    async with RawServer(endless_headers).running() as server, httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="head over"):
            await client.get(server.url())
        assert transport.open_connections == 0


SEEDS = [
    OK,
    b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 27\r\n\r\n<Response><Hangup/></Response>",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nHello\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(5)
        at = rng.randrange(len(b) + 1)
        if kind == 0:
            del b[at:]
        elif kind == 1 and b:
            b[min(at, len(b) - 1)] = rng.randrange(256)
        elif kind == 2:
            b[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 3:
            b[at:at] = rng.choice([b"\r\n", b"\r\n\r\n", b":", b" ", b"0", b"ffffffff", b"-1", b"\x00"])
        else:
            b[at:at] = b[at : at + rng.randint(1, 40)]
    return bytes(b)


async def test_mangled_answers_give_a_reply_or_a_fetch_error_and_leak_nothing() -> None:
    rng = random.Random(8)
    transport = PooledTransport()
    web = WebClient(Limits(connect_timeout=1.0, total_timeout=1.0, max_body=4096), transport=transport)
    current = b""

    async def mangled(ex: Exchange) -> bool:
        data = current
        while data:  # in pieces, so the parser is fed across reads
            cut = rng.randint(1, len(data))
            ex.writer.write(data[:cut])
            await ex.writer.drain()
            data = data[cut:]
        return False

    outcomes: dict[str, int] = {}
    try:
        async with RawServer(mangled).running() as server:
            for _ in range(300):
                current = mutate(rng, rng.choice(SEEDS))
                try:
                    reply = await web.request(server.url(), rng.choice(["GET", "POST"]), (("CallSid", "CA1"),))
                    key = f"reply {reply.status}"
                except FetchError as e:
                    key = f"error {e.code}"
                outcomes[key] = outcomes.get(key, 0) + 1
            for _ in range(100):
                if transport.open_connections == 0:
                    break
                await asyncio.sleep(0.01)
            assert transport.open_connections == 0
    finally:
        await web.close()
    assert outcomes.get("error 11206", 0) > 0 and outcomes.get("reply 200", 0) > 0, outcomes


async def test_bytes_after_a_complete_answer_spoil_the_connection_not_the_answer(transport: PooledTransport) -> None:
    async with RawServer(answer(OK + b"garbage")).running() as server, httpx.AsyncClient(transport=transport) as c:
        assert (await c.get(server.url())).content == b"ok"
        assert (await c.get(server.url())).content == b"ok"
        assert server.connections == 2
