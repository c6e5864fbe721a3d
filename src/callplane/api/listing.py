"""Rendering of a paged list in Restcomm's envelope, JSON or XML, for any resource."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response

from .errors import wants_json
from .formats import dumps, xml_attrs, xml_document
from .paging import Paging, envelope

T = TypeVar("T")


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
