"""Rendering of API answers, JSON or XML as the request asks: one resource, an unpaged array (Accounts, Clients),
or a paged list in Restcomm's envelope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response

from callplane.store.listing import ListQuery, UnknownCursor

from .auth import Authenticator
from .errors import bad_request, wants_json
from .formats import API_VERSION, dumps, xml_attrs, xml_document
from .paging import Paging, check_page_exists, envelope, parse_paging

T = TypeVar("T")


def render_one(request: Request, item: T, as_json: Callable[[T], object], as_xml: Callable[[T], str]) -> Response:
    """One resource."""
    if wants_json(request):
        return Response(dumps(as_json(item)), media_type="application/json")
    return Response(xml_document(as_xml(item)), media_type="application/xml")


def render_array(
    request: Request,
    xml_root: str,
    items: Sequence[T],
    as_json: Callable[[T], dict[str, object]],
    as_xml: Callable[[T], str],
) -> Response:
    """An unpaged list: a JSON array, or the items' elements under ``xml_root``."""
    if wants_json(request):
        return Response(dumps([as_json(i) for i in items]), media_type="application/json")
    inner = "".join(as_xml(i) for i in items)
    return Response(xml_document(f"<{xml_root}>{inner}</{xml_root}>"), media_type="application/xml")


def render_list(
    request: Request,
    *,
    base_uri: str,
    key: str,
    xml_root: str,
    paging: Paging,
    total: int,
    items: Sequence[T],
    sid: Callable[[T], str],
    as_json: Callable[[T], dict[str, object]],
    as_xml: Callable[[T], str],
) -> Response:
    fields = envelope(base_uri, paging, total, len(items), sid(items[-1]) if items else None)
    if wants_json(request):
        body: dict[str, object] = dict(fields)
        body[key] = [as_json(i) for i in items]
        return Response(dumps(body), media_type="application/json")
    attrs = [(k.replace("_", ""), v) for k, v in fields]
    inner = "".join(as_xml(i) for i in items)
    return Response(xml_document(f"<{xml_root}{xml_attrs(attrs)}>{inner}</{xml_root}>"), media_type="application/xml")


Fetch = Callable[[str, ListQuery, str | None], Awaitable[tuple[int, list[T]]]]


async def list_response(
    request: Request,
    auth: Authenticator,
    account_sid: str,
    call_sid: str | None,
    *,
    resource: str,
    fetch: Fetch[T],
    sid: Callable[[T], str],
    as_json: Callable[[T], dict[str, object]],
    as_xml: Callable[[T], str],
) -> Response:
    """``GET /Accounts/{AccountSid}[/Calls/{CallSid}]/{resource}``: authorize, page, fetch, render."""
    _, account = await auth.authorize(request, account_sid)
    paging = parse_paging(request)
    query = ListQuery(paging.page, paging.page_size, paging.limit, paging.after_sid)
    try:
        total, items = await fetch(account.sid, query, call_sid)
    except UnknownCursor:
        raise bad_request(f"AfterSid {paging.after_sid!r} is not in this list") from None
    check_page_exists(paging, total)
    scope = f"/Calls/{call_sid}" if call_sid else ""
    return render_list(
        request,
        base_uri=f"/{API_VERSION}/Accounts/{account.sid}{scope}/{resource}",
        key=resource.lower(),
        xml_root=resource,
        paging=paging,
        total=total,
        items=items,
        sid=sid,
        as_json=as_json,
        as_xml=as_xml,
    )
