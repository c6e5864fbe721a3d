"""The HTTP API application factory.

Restcomm conventions handled here, before routing:
- the API is served under ``/2012-04-24`` and ``/restcomm/2012-04-24``;
- any path segment ending in ``.json`` selects JSON and is routed without the suffix
  (``Calls.json``, ``Calls/{sid}.json`` and ``Calls.json/{sid}`` all work);
- otherwise an ``Accept`` header containing ``json`` selects JSON, and everything else gets XML.

Outside the API: ``/`` is a small index (HTML for browsers, JSON otherwise) linking ``/docs`` (Swagger UI, served
from the ``fastapi-offline`` package's files, so it works with no network), ``/openapi.json`` and the API root.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from html import escape
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from callplane import __version__
from callplane.core.clock import Clock, SystemClock
from callplane.core.errors import ApiError
from callplane.core.ids import IdSource
from callplane.engine.control import CallControl
from callplane.store.db import Database

from . import accounts, call_control, calls, clients, notifications, numbers, recordings
from .auth import Authenticator
from .errors import BAD_REQUEST, api_error_handler, error_response, http_error_handler, unexpected_error_handler
from .formats import API_VERSION
from .forward import Forwarder
from .openapi import DESCRIPTION, install_openapi

PREFIXES = (f"/{API_VERSION}", f"/restcomm/{API_VERSION}")


class RestcommFormat:
    """ASGI middleware: strips ``.json`` from path segments and records the chosen representation in the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            as_json = False
            if ".json" in path and path != "/openapi.json":
                segments = path.split("/")
                stripped = [s[:-5] if s.endswith(".json") and len(s) > 5 else s for s in segments]
                as_json = stripped != segments
                if as_json:
                    path = "/".join(stripped)
                    scope = dict(scope, path=path, raw_path=path.encode())
            if not as_json:
                accept = next((v for k, v in scope["headers"] if k == b"accept"), b"")
                as_json = b"json" in accept.lower()
            scope = dict(scope)
            scope["callplane.json"] = as_json
            if b"%00" in scope.get("query_string", b""):
                # No parameter of the API may hold a NUL (PostgreSQL refuses one in text, with a 500).
                message = "Query parameters may not contain a NUL character (%00)"
                response = error_response(Request(scope), 400, message, BAD_REQUEST)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _operation_id(route: APIRoute) -> str:
    prefix = "restcomm_" if route.path.startswith("/restcomm/") else ""
    return f"{prefix}{route.name}"


def create_app(
    db: Database,
    *,
    ids: IdSource | None = None,
    clock: Clock | None = None,
    control: CallControl | None = None,
    recordings_dir: Path | None = None,
    forwarder: Forwarder | None = None,
    sip_realm: str = "callplane",
) -> FastAPI:
    """The API over ``db``. ``control`` is the call engine (POST Calls answers 503 without one); recordings are
    served from ``recordings_dir``; ``forwarder`` replays requests for calls that run in another process;
    ``sip_realm`` is the registrar's digest realm, which Clients' passwords are hashed for."""
    ids = ids or IdSource()
    clock = clock or SystemClock()
    app = FastAPIOffline(
        title="callplane",
        version=__version__,
        description=DESCRIPTION,
        generate_unique_id_function=_operation_id,
        docs_url="/docs",
        redoc_url=None,
        static_url="/docs/static",
    )
    app.add_api_route("/", _index, methods=["GET"], include_in_schema=False)
    auth = Authenticator(db, clock)
    for prefix in PREFIXES:
        app.include_router(accounts.build_router(db, auth, ids, clock), prefix=prefix)
        app.include_router(calls.build_router(db, auth), prefix=prefix)
        app.include_router(call_control.build_router(auth, control, forwarder), prefix=prefix)
        app.include_router(recordings.build_router(db, auth, recordings_dir), prefix=prefix)
        app.include_router(notifications.build_router(db, auth), prefix=prefix)
        app.include_router(clients.build_router(db, auth, ids, clock, sip_realm), prefix=prefix)
        app.include_router(numbers.build_router(db, auth, ids, clock), prefix=prefix)
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, _with_allow(app))
    app.add_exception_handler(Exception, unexpected_error_handler)
    app.add_middleware(RestcommFormat)
    install_openapi(app)
    return app


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _with_allow(app: FastAPI) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The HTTP error handler, with a 405's ``Allow`` naming every method of the path.

    Starlette reports only the first route whose path matched (GET and POST of one path are two routes), so its
    own ``Allow`` would leave POST out. Each method is tried against the routes instead.
    """

    async def handler(request: Request, exc: Exception) -> Response:
        if isinstance(exc, StarletteHTTPException) and exc.status_code == 405:
            allowed = [
                method
                for method in _METHODS
                if any(r.matches(dict(request.scope, method=method))[0] is Match.FULL for r in app.router.routes)
            ]
            exc.headers = {"Allow": ", ".join(allowed)}
        return await http_error_handler(request, exc)

    return handler


_LINKS = {
    "docs": ("/docs", "the API browsable in Swagger UI"),
    "openapi": ("/openapi.json", "the OpenAPI document"),
    "api": (f"/{API_VERSION}/Accounts.json", "the API root: your account (HTTP Basic, AccountSid:AuthToken)"),
}


async def _index(request: Request) -> Response:
    """Where a person who opens the node's address lands."""
    if "text/html" in request.headers.get("accept", ""):
        items = "".join(
            f'<li><a href="{href}">{escape(href)}</a>: {escape(text)}</li>' for href, text in _LINKS.values()
        )
        return HTMLResponse(
            f"<!doctype html><title>callplane {__version__}</title><h1>callplane {__version__}</h1><ul>{items}</ul>"
        )
    return JSONResponse(
        {"name": "callplane", "version": __version__, "api_version": API_VERSION}
        | {key: href for key, (href, _) in _LINKS.items()}
    )
