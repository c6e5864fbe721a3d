"""The HTTP API application factory.

Restcomm conventions handled here, before routing:
- the API is served under ``/2012-04-24`` and ``/restcomm/2012-04-24``;
- any path segment ending in ``.json`` selects JSON and is routed without the suffix
  (``Calls.json``, ``Calls/{sid}.json`` and ``Calls.json/{sid}`` all work);
- otherwise an ``Accept`` header containing ``json`` selects JSON, and everything else gets XML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from callplane import __version__
from callplane.core.clock import Clock, SystemClock
from callplane.core.errors import ApiError
from callplane.core.ids import IdSource
from callplane.engine.control import CallControl
from callplane.store.db import Database

from . import accounts, call_control, calls, notifications, recordings
from .auth import Authenticator
from .errors import api_error_handler, http_error_handler, unexpected_error_handler
from .formats import API_VERSION

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
) -> FastAPI:
    """The API over ``db``. ``control`` is the call engine (POST Calls answers 503 without one); recordings are
    served from ``recordings_dir``."""
    ids = ids or IdSource()
    clock = clock or SystemClock()
    app = FastAPI(
        title="callplane",
        version=__version__,
        description=__doc__,
        generate_unique_id_function=_operation_id,
        docs_url="/docs",
        redoc_url=None,
    )
    auth = Authenticator(db)
    for prefix in PREFIXES:
        app.include_router(accounts.build_router(db, auth, ids, clock), prefix=prefix)
        app.include_router(calls.build_router(db, auth), prefix=prefix)
        app.include_router(call_control.build_router(auth, control), prefix=prefix)
        app.include_router(recordings.build_router(db, auth, recordings_dir), prefix=prefix)
        app.include_router(notifications.build_router(db, auth), prefix=prefix)
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    app.add_middleware(RestcommFormat)
    _document_security(app)
    return app


def _document_security(app: FastAPI) -> None:
    """Every route but the OpenAPI document itself takes HTTP Basic (AccountSid or email : AuthToken)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "basic": {"type": "http", "scheme": "basic", "description": "AccountSid (or email) and AuthToken"}
            }
            schema["security"] = [{"basic": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
