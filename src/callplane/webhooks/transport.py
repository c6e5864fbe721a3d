"""An HTTP/1.1 transport for httpx on asyncio protocols: keep-alive pool per origin, httptools parsing.

Theory of operation
-------------------
:class:`PooledTransport` is an :class:`httpx.AsyncBaseTransport` (httpx builds the requests and handles the
responses), and :meth:`PooledTransport.exchange` is the same without httpx's objects: ``fetch`` hands it the request
bytes and reads the response head and body from it. This module moves the bytes. It exists for CPU:
httpx's default stack (httpcore over anyio, h11 in pure Python, a socket-readability poll and a failed
``import sniffio`` on every request) cost ~1.9 ms of CPU per loopback request; this one is a few times cheaper
(``bench/webhook_client.py``).

* Each connection is an :class:`asyncio.Protocol` (C transports under uvloop) feeding an ``httptools`` (llhttp)
  response parser. The protocol learns of a closed connection from the loop (``connection_lost``), so an idle
  connection the server closed leaves the pool at once and no per-request poll is needed.
* Idle connections wait per origin (scheme, host, port), newest first, at most ``max_idle`` per origin and
  ``keepalive_expiry`` seconds; at most ``max_connections`` are open at once (a request waits up to the pool
  timeout for a free slot).
* The response head may not exceed ``MAX_HEAD`` bytes. The body is streamed: reading pauses when ``HIGH_WATER``
  bytes are buffered, so a consumer that stops early (the 1 MiB cap of ``fetch``) has read little more than that.
  A body not read to its end closes the connection; so do ``Connection: close``, HTTP/1.0 and a body delimited by
  the end of the connection.
* Timeouts come from httpx's ``timeout`` extension: connect, read (per wait for data), write (per wait for the
  send buffer), pool (per wait for a slot). Failures are httpx's exceptions: ``ConnectError``/``ConnectTimeout``,
  ``ReadError``/``ReadTimeout``, ``WriteTimeout``, ``PoolTimeout``, ``RemoteProtocolError``.
* A request sent on a reused connection that the server closed before answering a single byte (its keep-alive
  timer raced ours) is sent once more on a fresh connection.
* Cancellation at any point closes the connection in use and frees its slot.
* https uses httpx's default verified context (certifi, ``SSL_CERT_FILE``/``SSL_CERT_DIR``), made on first use.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httptools
import httpx

__all__ = ["DEFAULT_PORTS", "HIGH_WATER", "MAX_HEAD", "Origin", "PooledTransport", "ResponseHead"]

HIGH_WATER = 64 * 1024  # buffered response bytes at which reading pauses
MAX_HEAD = 100 * 1024  # status line and headers (llhttp sets no limit; h11 under httpcore had this one)
DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the response being read on it."""

    def __init__(self, pool: PooledTransport, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.write_paused = False
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.in_exchange = False
        self.received = False
        self.head_size = 0
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.version = "1.1"
        self.until_close = False  # the body ends when the connection does
        self.complete = False
        self.keep_alive = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.error: httpx.TransportError | None = None

    # ---------------------------------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        if not self.in_exchange or self.complete:  # a server talking out of turn is not trusted again
            self.keep_alive = False
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except Exception as e:  # llhttp's errors, and ours raised from a callback
            if not self.complete:  # bytes after a complete answer spoil the connection, not the answer
                self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {e}"))
            self.keep_alive = False
            self.close()
            return
        if not self.headers_done:  # a read is bounded by the loop; a head spread over many reads is bounded here
            self.head_size += len(data)
            if self.head_size > MAX_HEAD:
                self._fail(httpx.RemoteProtocolError(f"response head over {MAX_HEAD} bytes"))
                self.close()
                return
        if self.buffered >= HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    def _ended(self, exc: Exception | None) -> None:
        """The server closed (EOF, then the loss of the connection): ends a close-delimited body, fails others."""
        self.closed = True
        self.pool._forget(self)
        if self.in_exchange and not self.complete and self.error is None:
            if self.headers_done and self.until_close and exc is None:
                self.complete = True
            else:
                reason = f": {exc}" if exc is not None else ""
                if self.headers_done:
                    self.error = httpx.RemoteProtocolError(f"the server closed the connection mid-body{reason}")
                elif self.received:
                    self.error = httpx.RemoteProtocolError(f"the server closed the connection mid-head{reason}")
                else:
                    self.error = httpx.ReadError(f"the server closed the connection without answering{reason}")
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    # ---------------------------------------------------------------------------------------- httptools callbacks
    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_message_begin(self) -> None:
        if self.complete:
            raise ValueError("data after the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                raise ValueError("unexpected protocol switch")
            self.headers = []  # an interim response (100 Continue): the real one follows
            return
        self.status = status
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()
        self.version = self.parser.get_http_version()
        if status not in (204, 304):
            length = chunked = False
            for name, value in self.headers:
                name = name.lower()
                length = length or name == b"content-length"
                chunked = chunked or (name == b"transfer-encoding" and b"chunked" in value.lower())
            self.until_close = not length and not chunked

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.complete = True

    # ---------------------------------------------------------------------------------------- the exchange
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: httpx.TransportError) -> None:
        if self.error is None:
            self.error = error

    async def wait(self, timeout: float | None, on_timeout: type[httpx.TimeoutException]) -> None:
        """Until the protocol has news (data, space to write, the end), at most ``timeout`` seconds."""
        waiter = self.waiter = self.loop.create_future()
        timer = None if timeout is None else self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            raise on_timeout(f"no progress within {timeout:g} s") from None
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    async def send(self, data: bytes, timeouts: dict[str, float | None]) -> None:
        assert self.transport is not None
        self._reset()
        self.in_exchange = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        try:
            if self.closed:
                raise RuntimeError("closed")
            self.transport.write(data)
        except (RuntimeError, OSError) as e:  # closed under us: uvloop raises where asyncio drops the bytes
            raise httpx.WriteError(f"the connection is closed: {e}") from None
        while self.write_paused and not self.closed:
            await self.wait(timeouts.get("write"), httpx.WriteTimeout)

    async def read_head(self, timeouts: dict[str, float | None]) -> None:
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            if self.closed:
                raise httpx.ReadError("the connection is closed")
            await self.wait(timeouts.get("read"), httpx.ReadTimeout)
        if self.error is not None:
            raise self.error

    async def body(self, timeouts: dict[str, float | None]) -> AsyncIterator[bytes]:
        while True:
            while self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.paused and self.buffered < HIGH_WATER // 2 and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                yield chunk
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            if self.closed:
                raise httpx.ReadError("the connection is closed")
            await self.wait(timeouts.get("read"), httpx.ReadTimeout)

    def finished(self) -> bool:
        """Whether the exchange ended cleanly and the connection can carry another one."""
        return self.complete and self.keep_alive and not self.closed and not self.chunks and self.error is None

    def park(self, expiry: float) -> None:
        self._reset()
        self.idle_timer = self.loop.call_later(expiry, self.close)

    def close(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if not self.closed:
            self.closed = True
            self.pool._forget(self)
            if self.transport is not None:
                self.transport.abort()
        self._wake()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Body(httpx.AsyncByteStream):
    """The response body, streamed from the connection; closing it returns the connection or closes it."""

    def __init__(self, pool: PooledTransport, conn: _Connection, timeouts: dict[str, float | None]) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._timeouts = timeouts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._conn is None:
            raise httpx.StreamClosed()
        try:
            async for chunk in self._conn.body(self._timeouts):
                yield chunk
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(conn)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """What :meth:`PooledTransport.exchange` read: the status line and headers (as sent), and the body to stream."""

    status: int
    headers: list[tuple[bytes, bytes]]
    version: str
    reason: bytes
    body: _Body


class PooledTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio protocols with keep-alive connections per origin (see the module docstring)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 200,
        max_idle: int = 50,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._expiry = keepalive_expiry
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def idle_connections(self) -> int:
        return sum(len(v) for v in self._idle.values())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}")
        origin = (scheme, url.raw_host.decode("ascii"), url.port or DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        head = await self.exchange(origin, await _serialise(request), timeouts, head_only=request.method == "HEAD")
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=head.body,
            extensions={"http_version": b"HTTP/" + head.version.encode(), "reason_phrase": head.reason},
        )

    async def exchange(
        self, origin: Origin, data: bytes, timeouts: dict[str, float | None], *, head_only: bool = False
    ) -> ResponseHead:
        """Send ``data`` (a whole serialised request) to ``origin`` and wait for the response head; the body streams
        from :attr:`ResponseHead.body`, whose ``aclose`` gives the connection back. The path without httpx's request
        and response objects (``fetch.WebClient`` builds its own bytes); failures are httpx's exceptions."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        if origin[0] not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported scheme {origin[0]!r}")
        await self._acquire(timeouts.get("pool"))
        conn: _Connection | None = None
        try:
            while True:
                conn = self._take(origin)
                retry = conn is not None
                if conn is None:
                    conn = await self._connect(origin, timeouts.get("connect"))
                try:
                    await conn.send(data, timeouts)
                    await conn.read_head(timeouts)
                    break
                except (httpx.ReadError, httpx.WriteError):
                    if not retry or conn.received:
                        raise
                    # a stale keep-alive connection (the server closed it as we sent): once more on a fresh one
                    conn.close()
                    conn = None
            if head_only:  # llhttp cannot know that this head has no body: end here, never reuse the connection
                conn.complete, conn.keep_alive = True, False
                conn.chunks.clear()
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise
        return ResponseHead(conn.status, conn.headers, conn.version, conn.reason, _Body(self, conn, timeouts))

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._open):
            conn.close()
        self._idle.clear()

    # ---------------------------------------------------------------------------------------- the pool
    async def _acquire(self, timeout: float | None) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # returns at once
            return
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(f"no free connection within {timeout:g} s") from None

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        context = self._context() if scheme == "https" else None
        conn = _Connection(self, origin)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: conn, host, port, ssl=context, server_hostname=host if context else None
                )
        except TimeoutError:
            conn.close()
            raise httpx.ConnectTimeout(f"connecting to {host}:{port}: no answer within {timeout:g} s") from None
        except BaseException as e:
            conn.close()
            if isinstance(e, OSError):  # refused, unreachable, unknown host, TLS handshake or certificate
                raise httpx.ConnectError(f"connecting to {host}:{port}: {e}") from None
            raise
        self._open.add(conn)
        return conn

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
        return self._ssl

    def _release(self, conn: _Connection) -> None:
        self._slots.release()
        idle = self._idle.setdefault(conn.origin, [])
        if conn.finished() and not self._closed and len(idle) < self._max_idle:
            conn.park(self._expiry)
            idle.append(conn)
        else:
            conn.close()

    def _forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)


async def _serialise(request: httpx.Request) -> bytes:
    """The request's bytes: request line, headers as httpx prepared them, the body (framed as the headers say)."""
    try:
        body = request.content
    except httpx.RequestNotRead:
        stream = request.stream
        assert isinstance(stream, httpx.AsyncByteStream), "an async client sends async streams"
        body = b"".join([chunk async for chunk in stream])
    url = request.url
    target = url.raw_path
    lines: list[bytes] = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), target)]
    chunked = False
    for name, value in request.headers.raw:
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name or b":" in name:
            # httpx lets these through (h11 refused them): a CR or LF would smuggle a header or a second request
            raise httpx.LocalProtocolError(f"illegal character in request header {name!r}")
        if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
            chunked = True
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    if chunked:
        lines.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n")
    else:
        lines.append(body)
    return b"".join(lines)
