"""Lean HTTP/1.1 for the benchmark rig: a keep-alive client pool and a small server, on raw asyncio protocols.

The rig plays the outside world (the user's API client and web app), so it may be as lean as a real load tool:
no ASGI, no header objects, requests built once as bytes. What it does speak is plain HTTP/1.1: a request or status
line, headers, a ``Content-Length`` (or chunked) body, keep-alive unless ``Connection: close``, and pipelined
requests answered in order. Anything else is answered 400 and the connection closed, so a fault is visible.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qsl, urlencode

__all__ = ["HttpClient", "HttpError", "Request", "Response", "build_request", "response_bytes", "start_server"]

MAX_HEAD = 64 * 1024
MAX_BODY = 1 << 20


class HttpError(Exception):
    """The peer broke HTTP/1.1 (or closed the connection before answering)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def params(self) -> list[tuple[str, str]]:
        """Webhook parameters: the query string for GET, the form body for POST."""
        if self.method == "GET":
            return parse_qsl(self.query, keep_blank_values=True)
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return parse_qsl(self.body.decode("latin-1"), keep_blank_values=True)
        return []


def _head(buf: bytearray, end: int) -> tuple[str, dict[str, str]]:
    """The first line and the headers (names lower-cased; a repeated header keeps its last value)."""
    lines = buf[:end].decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _body(buf: bytearray, start: int, headers: dict[str, str]) -> tuple[bytes, int] | None:
    """The body that starts at ``start`` and the offset after it; None while incomplete."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        pos = start
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            if len(buf) < eol + 2 + size + 2:
                return None
            if size == 0:  # no trailers expected; the last chunk ends with an empty line
                return b"".join(chunks), eol + 4
            chunks.append(bytes(buf[eol + 2 : eol + 2 + size]))
            pos = eol + 2 + size + 2
    length = int(headers.get("content-length", "0"))
    if length < 0 or length > MAX_BODY:
        raise HttpError(f"bad Content-Length {length}")
    if len(buf) < start + length:
        return None
    return bytes(buf[start : start + length]), start + length


def build_request(
    method: str, target: str, host: str, *, auth: tuple[str, str] | None = None, form: dict[str, str] | None = None
) -> bytes:
    """A whole request as bytes, so a load loop that sends the same request builds it once."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept: */*"]
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        lines.append(f"Authorization: Basic {token}")
    body = urlencode(form).encode() if form is not None else b""
    if form is not None:
        lines.append("Content-Type: application/x-www-form-urlencoded")
    if form is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ------------------------------------------------------------------------------------------------------ client
class _ClientConnection(asyncio.Protocol):
    """One keep-alive connection: one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection closed before the response ({exc!r})"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    raise HttpError("response head too long")
                return
            first, headers = _head(self.buf, end)
            parts = first.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                raise HttpError(f"bad status line {first[:80]!r}")
            status = int(parts[1])
            got = (b"", end + 4) if status in (204, 304) else _body(self.buf, end + 4, headers)
            if got is None:
                return
        except (HttpError, ValueError) as e:
            waiter.set_exception(e if isinstance(e, HttpError) else HttpError(str(e)))
            self.close()
            return
        body, used = got
        del self.buf[:used]
        if headers.get("connection", "").lower() == "close":
            self.close()
        waiter.set_result(Response(status, headers, body))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """A pool of keep-alive connections to one host and port; at most ``max_connections`` requests in flight."""

    def __init__(self, host: str, port: int, max_connections: int = 256, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: list[_ClientConnection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self.opened = 0

    async def send(self, raw: bytes) -> Response:
        """Send one whole request (from :func:`build_request`) and read its response."""
        async with self._slots:
            conn = None
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    break
                conn = None
            if conn is None:
                loop = asyncio.get_running_loop()
                _, conn = await loop.create_connection(_ClientConnection, self.host, self.port)
                self.opened += 1
            assert conn.transport is not None
            conn.waiter = asyncio.get_running_loop().create_future()
            conn.transport.write(raw)
            try:
                async with asyncio.timeout(self.timeout):
                    response = await conn.waiter
            except BaseException:
                conn.close()
                raise
            finally:
                conn.waiter = None
            if not conn.closed:
                self._idle.append(conn)
            return response

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


# ------------------------------------------------------------------------------------------------------ server
_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found"}


def response_bytes(status: int, body: bytes = b"", content_type: str = "text/plain") -> bytes:
    """A whole response as bytes (a server that answers the same thing builds it once)."""
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
    if status != 204:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("latin-1") + body


_BAD_REQUEST = response_bytes(400, b"bad request")

Handler = Callable[[Request], bytes]


class _ServerConnection(asyncio.Protocol):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        out: list[bytes] = []
        close = False
        while not close:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                close = len(self.buf) > MAX_HEAD
                if close:
                    out.append(_BAD_REQUEST)
                break
            try:
                first, headers = _head(self.buf, end)
                method, target, version = first.split(" ")
                if not version.startswith("HTTP/1."):
                    raise HttpError(f"bad version {version!r}")
                got = _body(self.buf, end + 4, headers)
            except (HttpError, ValueError):
                out.append(_BAD_REQUEST)
                close = True
                break
            if got is None:
                break
            body, used = got
            del self.buf[:used]
            path, _, query = target.partition("?")
            out.append(self.handler(Request(method, path, query, headers, body)))
            close = headers.get("connection", "").lower() == "close"
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.close()


async def start_server(
    handler: Handler, host: str, port: int = 0, *, on_connect: Callable[[], object] | None = None
) -> tuple[asyncio.Server, int]:
    """Serve ``handler`` (request -> whole response bytes) on ``host``; returns the server and its port.
    ``on_connect`` is called for each new connection."""

    def connection() -> _ServerConnection:
        if on_connect is not None:
            on_connect()
        return _ServerConnection(handler)

    server = await asyncio.get_running_loop().create_server(connection, host, port, backlog=1024)
    return server, int(server.sockets[0].getsockname()[1])
