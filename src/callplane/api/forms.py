"""Request bodies: ``application/x-www-form-urlencoded`` (what Restcomm and Twilio clients send) or JSON."""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson
from fastapi import Request

from .errors import bad_request

MAX_BODY = 1_000_000


async def form_fields(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise bad_request(f"Request body is larger than {MAX_BODY} bytes")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            data = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as e:
            raise bad_request(f"Body is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise bad_request("JSON body must be an object")
        return {str(k): str(v) for k, v in data.items() if v is not None}
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise bad_request("Body is not UTF-8") from None
    return dict(parse_qsl(text, keep_blank_values=True))
