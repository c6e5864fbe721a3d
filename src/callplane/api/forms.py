"""Request bodies: ``application/x-www-form-urlencoded`` only (what Restcomm and Twilio clients send).

The body is read as a stream and refused with 413 as soon as it passes :data:`MAX_BODY`, so an oversized upload
never sits whole in memory. Any other media type is refused with 415: JSON values have no faithful form encoding
(``true``, lists, objects), and guessing would store something the client did not send.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request

from callplane.core.errors import ApiError

from .errors import BAD_REQUEST, bad_request

MAX_BODY = 64 * 1024  # every form of the API fits in a few kilobytes
FORM = "application/x-www-form-urlencoded"


def too_large() -> ApiError:
    return ApiError(413, f"Request body is larger than {MAX_BODY} bytes", BAD_REQUEST)


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, read chunk by chunk; 413 once it exceeds ``limit`` bytes (or announces that it will)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


async def form_fields(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request)
    if body and ctype != FORM:
        got = f"Content-Type {ctype}" if ctype else "no Content-Type"
        raise ApiError(415, f"Send the parameters as {FORM} form fields (got {got})", BAD_REQUEST)
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise bad_request("Body is not UTF-8") from None
    fields = dict(parse_qsl(text, keep_blank_values=True))
    for name, value in fields.items():
        if "\x00" in name or "\x00" in value:
            # Never meaningful, and PostgreSQL refuses a NUL in text (a 500 instead of an answer).
            raise bad_request(f"Parameter {name.replace(chr(0), '%00')!r} contains a NUL character")
    return fields
