"""Restcomm list paging: parameter parsing and the envelope arithmetic of the 2012-04-24 seed.

The seed's four examples fix the arithmetic (reproduced exactly, quirks included):
- ``total`` = matching records capped at ``Limit``; ``num_pages`` = ``total // page_size`` (the last page's index);
- ``start`` = ``page * page_size``; ``end`` = ``start + items`` on the last page, ``start + page_size - 1`` before it;
  both are strings;
- ``previous_page_uri`` / ``next_page_uri`` are the string ``"null"`` at either end; ``next_page_uri`` carries the
  ``AfterSid`` of the page's last item; page URIs carry ``Page``, ``PageSize`` (``AfterSid``) and ``Limit`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from .errors import bad_request

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000  # the count behind `total` stops at Limit: this bounds the work of one list request


PAGING_PARAMS = {
    "Page": "Zero-based page number (default 0)",
    "PageSize": f"Records per page, 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE})",
    "Limit": f"Maximum number of matching records the whole listing spans, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
    "AfterSid": "Cursor: list the records that follow the one with this Sid in the chosen order",
}


def list_doc(what: str, params: dict[str, str]) -> dict[str, Any]:
    """Route keywords documenting a list's query parameters ``params`` (name -> meaning) and :data:`PAGING_PARAMS`;
    the router parses them itself, so FastAPI cannot infer them."""
    every = params | PAGING_PARAMS
    return {
        "description": f"Filter, sort and page {what}. Query parameters: "
        + "; ".join(f"{k}: {v}" for k, v in every.items())
        + ". Parameter names are case-sensitive.",
        "openapi_extra": {
            "parameters": [
                {"name": k, "in": "query", "required": False, "schema": {"type": "string"}, "description": v}
                for k, v in every.items()
            ]
        },
    }


@dataclass(frozen=True, slots=True)
class Paging:
    page: int
    page_size: int
    limit: int
    after_sid: str | None


def _int_param(request: Request, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not text.isdigit():
        raise bad_request(f"{name} must be a non-negative integer, got {raw!r}")
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise bad_request(f"{name} must be {bounds}, got {value}")
    return value


def parse_paging(request: Request) -> Paging:
    page = _int_param(request, "Page", 0, minimum=0)
    page_size = _int_param(request, "PageSize", DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
    limit = _int_param(request, "Limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    after = request.query_params.get("AfterSid") or None
    return Paging(page=page, page_size=page_size, limit=limit, after_sid=after)


def check_page_exists(paging: Paging, total: int) -> None:
    last = total // paging.page_size
    if paging.page > last:
        raise bad_request(f"Page {paging.page} is beyond the last page ({last}) of this list")


def envelope(base_uri: str, paging: Paging, total: int, items: int, last_sid: str | None) -> list[tuple[str, object]]:
    """The envelope fields in the seed's key order (``calls`` or another list key follows them)."""
    size, page = paging.page_size, paging.page
    num_pages = total // size
    start = page * size
    end = start + items if page == num_pages else start + size - 1
    tail = f"&Limit={paging.limit}"

    def page_uri(n: int, after: str | None = None) -> str:
        cursor = f"&AfterSid={after}" if after else ""
        return f"{base_uri}?Page={n}&PageSize={size}{cursor}{tail}"

    return [
        ("page", page),
        ("num_pages", num_pages),
        ("page_size", size),
        ("total", total),
        ("limit", paging.limit),
        ("start", str(start)),
        ("end", str(end)),
        ("uri", base_uri),
        ("first_page_uri", page_uri(0)),
        ("previous_page_uri", "null" if page == 0 else page_uri(page - 1)),
        ("next_page_uri", "null" if page >= num_pages else page_uri(page + 1, last_sid)),
        ("last_page_uri", page_uri(num_pages)),
    ]
