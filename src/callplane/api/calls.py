"""The Calls resource (read side): list with filters, sorting and paging; get one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from callplane.store import calls as store_calls
from callplane.store.calls import SORT_KEYS, STATUSES, CallFilter, CallQuery, CallRecord, UnknownCursor
from callplane.store.db import Database

from .auth import Authenticator
from .errors import bad_request, not_found, wants_json
from .formats import API_VERSION, dumps, iso8601, rfc2822, xml_attrs, xml_document, xml_element
from .listing import render_one
from .paging import Paging, check_page_exists, envelope, list_doc, parse_paging
from .params import parse_instant

_LIST_PARAMS = {
    "To": "Only calls to this number or client identifier (suffix match; % and _ are wildcards)",
    "From": "Only calls from this number or client identifier (suffix match; % and _ are wildcards)",
    "Status": "Only calls in this status: " + ", ".join(STATUSES),
    "StartTime": "Only calls that started at or after this ISO-8601 date (whole day) or date-time",
    "EndTime": "Only calls that ended at or before this ISO-8601 date (whole day) or date-time",
    "ParentCallSid": "Only calls spawned by the call with this Sid",
    "SortBy": "Field[:asc|desc], field one of " + ", ".join(SORT_KEYS) + "; default DateCreated:desc",
}


def calls_uri(account_sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{account_sid}/Calls"


def call_json(call: CallRecord) -> dict[str, object]:
    base = f"{calls_uri(call.account_sid)}/{call.sid}"
    out: dict[str, object] = {"sid": call.sid}
    if call.instance_id:
        out["InstanceId"] = call.instance_id
    optional: list[tuple[str, object]] = [
        ("date_created", rfc2822(call.date_created)),
        ("date_updated", rfc2822(call.date_updated)),
        ("parent_call_sid", call.parent_call_sid),
        ("account_sid", call.account_sid),
        ("to", call.to),
        ("from", call.from_),
        ("phone_number_sid", call.phone_number_sid),
        ("status", call.status),
        ("start_time", iso8601(call.start_time) if call.start_time else None),
        ("end_time", iso8601(call.end_time) if call.end_time else None),
        ("duration", call.duration),
        ("direction", call.direction),
        ("answered_by", call.answered_by),
        ("api_version", call.api_version),
        ("forwarded_from", call.forwarded_from),
        ("caller_name", call.caller_name),
        ("uri", base + ".json"),
        ("ring_duration", call.ring_duration),
    ]
    out.update((k, v) for k, v in optional if v is not None)
    out["subresource_uris"] = {"notifications": base + "/Notifications.json", "recordings": base + "/Recordings.json"}
    return out


def call_xml(call: CallRecord) -> str:
    base = f"{calls_uri(call.account_sid)}/{call.sid}"
    fields: list[tuple[str, object]] = [("Sid", call.sid)]
    if call.instance_id:
        fields.append(("InstanceId", call.instance_id))
    fields += [
        ("DateCreated", rfc2822(call.date_created)),
        ("DateUpdated", rfc2822(call.date_updated)),
        ("ParentCallSid", call.parent_call_sid),
        ("AccountSid", call.account_sid),
        ("To", call.to),
        ("From", call.from_),
        ("PhoneNumberSid", call.phone_number_sid),
        ("Status", call.status),
        ("StartTime", iso8601(call.start_time) if call.start_time else None),
        ("EndTime", iso8601(call.end_time) if call.end_time else None),
        ("Duration", call.duration),
        ("Direction", call.direction),
        ("AnsweredBy", call.answered_by),
        ("ApiVersion", call.api_version),
        ("ForwardedFrom", call.forwarded_from),
        ("CallerName", call.caller_name),
        ("Uri", base),
        ("SubresourceUris", [("Notifications", base + "/Notifications"), ("Recordings", base + "/Recordings")]),
        ("RingDuration", call.ring_duration),
    ]
    return xml_element("Call", fields)


@dataclass(frozen=True, slots=True)
class Sort:
    key: str
    descending: bool


def parse_sort(raw: str | None, keys: Mapping[str, str] = SORT_KEYS, default: Sort | None = None) -> Sort:
    """``SortBy=Field[:asc|desc]`` over ``keys`` (API field -> column); ``default`` (newest first) when absent."""
    if raw is None or raw == "":
        return default or Sort("date_created", True)
    name, sep, direction = raw.partition(":")
    if not name:
        raise bad_request("Error parsing the SortBy parameter: missing field to sort by")
    if name not in keys:
        raise bad_request(f"SortBy field {name!r} is not one of {', '.join(keys)}")
    if sep and direction.lower() not in ("asc", "desc"):
        raise bad_request("Error parsing the SortBy parameter: sort direction needs to be either ASC or DESC")
    return Sort(keys[name], sep != "" and direction.lower() == "desc")


def normalize_status(raw: str) -> str:
    """Any seed status in any case, with ``-`` or ``_`` (Restcomm stored ``NO_ANSWER`` and ``no-answer``)."""
    value = raw.strip().lower().replace("_", "-")
    if value not in STATUSES:
        raise bad_request(f"Status must be one of {', '.join(STATUSES)}, got {raw!r}")
    return value


def parse_filter(request: Request) -> CallFilter:
    q = request.query_params
    started = ended_before = ended_at = None
    if q.get("StartTime"):
        started, _ = parse_instant("StartTime", q["StartTime"])
    if q.get("EndTime"):
        instant, date_only = parse_instant("EndTime", q["EndTime"])
        if date_only:
            ended_before = instant + timedelta(days=1)
        else:
            ended_at = instant
    return CallFilter(
        to=q.get("To") or None,
        from_=q.get("From") or None,
        status=normalize_status(q["Status"]) if q.get("Status") else None,
        started_at_or_after=started,
        ended_before=ended_before,
        ended_at_or_before=ended_at,
        parent_call_sid=q.get("ParentCallSid") or None,
    )


def build_router(db: Database, auth: Authenticator) -> APIRouter:
    router = APIRouter(tags=["Calls"])

    @router.get(
        "/Accounts/{AccountSid}/Calls",
        summary="List calls",
        **list_doc("the account's call records", _LIST_PARAMS),
    )
    async def list_calls(request: Request, AccountSid: str) -> Response:  # noqa: N803 (Restcomm's path name)
        _, account = await auth.authorize(request, AccountSid)
        paging = parse_paging(request)
        sort = parse_sort(request.query_params.get("SortBy"))
        query = CallQuery(
            account_sid=account.sid,
            filter=parse_filter(request),
            sort_key=sort.key,
            descending=sort.descending,
            page=paging.page,
            page_size=paging.page_size,
            limit=paging.limit,
            after_sid=paging.after_sid,
        )
        try:
            page = await store_calls.list_page(db, query)
        except UnknownCursor:
            raise bad_request(f"AfterSid {paging.after_sid!r} is not a call of account {account.sid}") from None
        check_page_exists(paging, page.total)
        return _render_list(request, account.sid, paging, page.total, page.records)

    @router.get("/Accounts/{AccountSid}/Calls/{CallSid}", summary="Get one call")
    async def get_call(request: Request, AccountSid: str, CallSid: str) -> Response:  # noqa: N803
        _, account = await auth.authorize(request, AccountSid)
        call = await store_calls.get(db, CallSid)
        if call is None or call.account_sid != account.sid:
            raise not_found(f"Call {CallSid} was not found in account {account.sid}")
        return render_one(request, call, call_json, call_xml)

    return router


def _render_list(request: Request, account_sid: str, paging: Paging, total: int, records: list[CallRecord]) -> Response:
    fields = envelope(calls_uri(account_sid), paging, total, len(records), records[-1].sid if records else None)
    if wants_json(request):
        body: dict[str, object] = dict(fields)
        body["calls"] = [call_json(c) for c in records]
        return Response(dumps(body), media_type="application/json")
    attrs = [(k.replace("_", ""), v) for k, v in fields]
    inner = "".join(call_xml(c) for c in records)
    return Response(xml_document(f"<Calls{xml_attrs(attrs)}>{inner}</Calls>"), media_type="application/xml")
