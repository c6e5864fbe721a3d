"""Error bodies: JSON ``{"code","message","more_info","status"}`` or XML ``<RestException>``; never a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import Request
from fastapi.responses import Response

from callplane.api.formats import dumps, xml_document, xml_element
from callplane.core.errors import ApiError

log = logging.getLogger("callplane.api")

# Twilio-compatible codes, so Twilio SDKs raise meaningful exceptions.
BAD_REQUEST = 20001
AUTH_FAILED = 20003
FORBIDDEN = 20403
NOT_FOUND = 20404
METHOD_NOT_ALLOWED = 20004
INTERNAL = 20500

_DEFAULT_CODES = {400: BAD_REQUEST, 401: AUTH_FAILED, 403: FORBIDDEN, 404: NOT_FOUND, 405: METHOD_NOT_ALLOWED}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, BAD_REQUEST)


def not_found(message: str) -> ApiError:
    return ApiError(404, message, NOT_FOUND)


def forbidden(message: str) -> ApiError:
    return ApiError(403, message, FORBIDDEN)


def wants_json(request: Request) -> bool:
    return bool(request.scope.get("callplane.json", False))


def error_response(
    request: Request, status: int, message: str, code: int | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    code = code if code is not None and code != status else _DEFAULT_CODES.get(status, INTERNAL)
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    all_headers = dict(headers or {})
    if status == 401:
        all_headers["WWW-Authenticate"] = 'Basic realm="callplane"'
    if wants_json(request):
        body = dumps({"code": code, "message": message, "more_info": more_info, "status": status})
        return Response(body, status, headers=all_headers, media_type="application/json")
    fields: list[tuple[str, object]] = [
        ("Code", code),
        ("Message", message),
        ("MoreInfo", more_info),
        ("Status", status),
    ]
    return Response(
        xml_document(xml_element("RestException", fields)), status, headers=all_headers, media_type="application/xml"
    )


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request, exc.status, exc.message, exc.code)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    status = int(getattr(exc, "status_code", 500))
    detail = getattr(exc, "detail", None)
    message = (
        detail if isinstance(detail, str) else {404: "No such resource", 405: "Method not allowed"}.get(status, "Error")
    )
    headers: Mapping[str, str] | None = getattr(exc, "headers", None)  # Starlette's 405 names the methods in Allow
    return error_response(request, status, message, headers=headers)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(request, 500, "Internal error; the failure was logged", INTERNAL)
