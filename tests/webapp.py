"""A real web application for tests: a developer's server that serves RCML and receives callbacks.

It runs under uvicorn on 127.0.0.1 (a free port) inside the test's event loop and records every request it gets.
Each path answers from a script: a fixed :class:`Answer`, a list of answers used in turn (the last one repeats), or
a function of the request. An answer can delay, redirect, or return any status, content type and body.

::

    async with WebApp() as app:
        app.route("/rcml", Answer.xml("<Response><Hangup/></Response>"))
        app.route("/status", [Answer(500), Answer(200)])
        ...  # point callplane at app.url("/rcml")
        await app.wait_for("/status", count=2)
        app.requests("/status")[0].form      # [("CallSid", "..."), ...] in the order sent
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import parse_qsl

import uvicorn
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["Answer", "Seen", "WebApp"]


@dataclass(frozen=True)
class Answer:
    """What the app answers: status, body, content type, extra headers, and a delay before answering."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0

    @classmethod
    def xml(cls, text: str, status: int = 200) -> Answer:
        return cls(status, text.encode(), "application/xml")

    @classmethod
    def redirect(cls, location: str, status: int = 307) -> Answer:
        return cls(status, headers=(("Location", location),))


@dataclass(frozen=True)
class Seen:
    """One request as the app received it: parameters keep their order and repeats."""

    method: str
    path: str
    query: list[tuple[str, str]]
    form: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    @property
    def params(self) -> list[tuple[str, str]]:
        """The webhook parameters, whichever way they came (query for GET, form body for POST)."""
        return self.query if self.method == "GET" else self.form

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)


Script = Answer | Sequence[Answer] | Callable[[Seen], Answer]


@dataclass
class WebApp:
    host: str = "127.0.0.1"
    port: int = 0
    _routes: dict[str, Script] = field(default_factory=dict)
    _count: dict[str, int] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    _changed: asyncio.Condition | None = None
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    def route(self, path: str, script: Script) -> None:
        self._routes[path] = script
        self._count[path] = 0

    def url(self, path: str, *, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}{self.host}:{self.port}{path}"

    def requests(self, path: str | None = None) -> list[Seen]:
        return [s for s in self.seen if path is None or s.path == path]

    async def wait_for(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Seen]:
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.requests(path)) >= count)
        return self.requests(path)

    async def _app(self, scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)  # type: ignore[arg-type]
        body = await request.body()
        form = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = []
        seen = Seen(
            method=request.method,
            path=request.url.path,
            query=parse_qsl(request.url.query, keep_blank_values=True),
            form=form,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        self.seen.append(seen)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        answer = self._answer(seen)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        headers = dict(answer.headers)
        response = Response(answer.body, status_code=answer.status, media_type=answer.content_type, headers=headers)
        await response(scope, receive, send)  # type: ignore[arg-type]

    def _answer(self, seen: Seen) -> Answer:
        script = self._routes.get(seen.path)
        if script is None:
            return Answer(404, b"no such route")
        n = self._count[seen.path]
        self._count[seen.path] = n + 1
        if isinstance(script, Answer):
            return script
        if callable(script):
            return script(seen)
        return script[min(n, len(script) - 1)]

    async def __aenter__(self) -> WebApp:
        self._changed = asyncio.Condition()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app, log_level="warning", lifespan="off", access_log=False, interface="asgi3")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        self._server.force_exit = True
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(5):
                await self._task
