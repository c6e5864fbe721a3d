"""The IncomingPhoneNumbers resource: the numbers the trunk delivers to this cluster, and the application that answers
each (issue 9; restcomm-behaviour §6).

No purchasing: POST provisions a number (``/Local``, ``/TollFree`` and ``/Mobile`` are aliases of it). Numbers are
stored in E.164 and are unique on the cluster: a number another account holds is a 409. Update (POST or PUT on the
number) writes only the fields it is given; an empty URL or application field clears it, an empty method resets it
to POST. Every bad value is a 400 naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from fastapi import APIRouter, Request
from fastapi.responses import Response

from callplane.core.clock import Clock
from callplane.core.errors import ApiError, Conflict
from callplane.core.ids import IdSource
from callplane.core.phone import compact, to_e164
from callplane.store import numbers as store_numbers
from callplane.store.db import Database
from callplane.store.listing import ListQuery, UnknownCursor
from callplane.store.numbers import SORT_KEYS, NumberFilter, NumberRecord

from .auth import Authenticator
from .calls import Sort, parse_sort
from .errors import bad_request, not_found
from .formats import API_VERSION, rfc2822, xml_element, xml_fields
from .forms import form_fields
from .listing import render_list, render_one
from .paging import check_page_exists, list_doc, parse_paging
from .params import method_param, url_param

__all__ = [
    "APPLICATION_FIELDS",
    "FLAG_FIELDS",
    "METHOD_FIELDS",
    "URL_FIELDS",
    "build_router",
    "number_json",
    "number_xml",
    "parse_changes",
]

CONFLICT = 20409
MAX_NAME = 256
# Form field -> record field, by kind of value.
URL_FIELDS = {
    "VoiceUrl": "voice_url",
    "VoiceFallbackUrl": "voice_fallback_url",
    "StatusCallback": "status_callback",
    "SmsUrl": "sms_url",
    "SmsFallbackUrl": "sms_fallback_url",
    "UssdUrl": "ussd_url",
    "UssdFallbackUrl": "ussd_fallback_url",
    "ReferUrl": "refer_url",
}
METHOD_FIELDS = {
    "VoiceMethod": "voice_method",
    "VoiceFallbackMethod": "voice_fallback_method",
    "StatusCallbackMethod": "status_callback_method",
    "SmsMethod": "sms_method",
    "SmsFallbackMethod": "sms_fallback_method",
    "UssdMethod": "ussd_method",
    "UssdFallbackMethod": "ussd_fallback_method",
    "ReferMethod": "refer_method",
}
APPLICATION_FIELDS = {
    "VoiceApplicationSid": "voice_application_sid",
    "SmsApplicationSid": "sms_application_sid",
    "UssdApplicationSid": "ussd_application_sid",
    "ReferApplicationSid": "refer_application_sid",
}
FLAG_FIELDS = {
    "VoiceCallerIdLookup": "voice_caller_id_lookup",
    "VoiceCapable": "voice_capable",
    "SmsCapable": "sms_capable",
    "MmsCapable": "mms_capable",
    "FaxCapable": "fax_capable",
}
_APPLICATION_SID = re.compile(r"AP[0-9a-fA-F]{32}")
_FILTER_NUMBER = re.compile(r"\+?[0-9*]{1,15}")
_LIST_PARAMS = {
    "PhoneNumber": "Only numbers containing these digits (separators ignored; * is any one digit); "
    "a leading + matches from the start of the E.164 number",
    "FriendlyName": "Only numbers with exactly this name (case-sensitive; % and _ are wildcards)",
    "SortBy": "PhoneNumber or FriendlyName, optionally :asc or :desc; default PhoneNumber:asc",
    "Reverse": "true reverses the order",
}


def numbers_uri(account_sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{account_sid}/IncomingPhoneNumbers"


def _fields(n: NumberRecord) -> list[tuple[str, object]]:
    """The §6 attributes in order, up to ``capabilities`` (the caller adds it, ``api_version`` and ``uri``)."""
    return [
        ("sid", n.sid),
        ("account_sid", n.account_sid),
        ("friendly_name", n.friendly_name),
        ("phone_number", n.phone_number),
        ("voice_url", n.voice_url),
        ("voice_method", n.voice_method),
        ("voice_fallback_url", n.voice_fallback_url),
        ("voice_fallback_method", n.voice_fallback_method),
        ("status_callback", n.status_callback),
        ("status_callback_method", n.status_callback_method),
        ("voice_caller_id_lookup", n.voice_caller_id_lookup),
        ("voice_application_sid", n.voice_application_sid),
        ("date_created", rfc2822(n.date_created)),
        ("date_updated", rfc2822(n.date_updated)),
        ("sms_url", n.sms_url),
        ("sms_method", n.sms_method),
        ("sms_fallback_url", n.sms_fallback_url),
        ("sms_fallback_method", n.sms_fallback_method),
        ("sms_application_sid", n.sms_application_sid),
        ("ussd_url", n.ussd_url),
        ("ussd_method", n.ussd_method),
        ("ussd_fallback_url", n.ussd_fallback_url),
        ("ussd_fallback_method", n.ussd_fallback_method),
        ("ussd_application_sid", n.ussd_application_sid),
        ("refer_url", n.refer_url),
        ("refer_method", n.refer_method),
        ("refer_application_sid", n.refer_application_sid),
    ]


def _capabilities(n: NumberRecord) -> list[tuple[str, object]]:
    return [
        ("voice_capable", n.voice_capable),
        ("sms_capable", n.sms_capable),
        ("mms_capable", n.mms_capable),
        ("fax_capable", n.fax_capable),
    ]


def number_json(n: NumberRecord) -> dict[str, object]:
    out: dict[str, object] = {k: v for k, v in _fields(n) if v is not None}
    out["capabilities"] = dict(_capabilities(n))
    out["api_version"] = n.api_version
    out["uri"] = f"{numbers_uri(n.account_sid)}/{n.sid}.json"
    return out


def number_xml(n: NumberRecord) -> str:
    fields = [
        *xml_fields(_fields(n)),
        ("Capabilities", xml_fields(_capabilities(n))),
        ("ApiVersion", n.api_version),
        ("Uri", f"{numbers_uri(n.account_sid)}/{n.sid}"),
    ]
    return xml_element("IncomingPhoneNumber", fields)


def _one(request: Request, n: NumberRecord) -> Response:
    return render_one(request, n, number_json, number_xml)


def phone_number(raw: str) -> str:
    """A PhoneNumber field in E.164, or a 400 that says what is accepted."""
    e164 = to_e164(raw)
    if e164 is None:
        raise bad_request(
            f"PhoneNumber {raw!r} is not a phone number: give it in E.164 (+, the country code and the number, "
            "at most 15 digits; spaces, dashes, dots and parentheses are ignored)"
        )
    return e164


def _flag(fields: Mapping[str, str], name: str) -> bool:
    raw = fields[name].strip().lower()
    if raw not in ("true", "false"):
        raise bad_request(f"{name} must be true or false, got {fields[name]!r}")
    return raw == "true"


def _application(fields: Mapping[str, str], name: str) -> str | None:
    raw = fields[name].strip()
    if raw and not _APPLICATION_SID.fullmatch(raw):
        raise bad_request(f"{name} must be an application Sid (AP and 32 hex digits), got {fields[name]!r}")
    return raw or None


def _friendly_name(raw: str) -> str:
    name = raw.strip()
    if not name or len(name) > MAX_NAME:
        raise bad_request(f"FriendlyName must be 1 to {MAX_NAME} characters")
    return name


_PARSERS: list[tuple[Mapping[str, str], Callable[[dict[str, str], str], object]]] = [
    (URL_FIELDS, url_param),
    (METHOD_FIELDS, method_param),
    (APPLICATION_FIELDS, _application),
    (FLAG_FIELDS, _flag),
]


def parse_changes(fields: dict[str, str]) -> dict[str, object]:
    """The record fields that the form sets (all but PhoneNumber), validated. Unknown form fields are ignored."""
    changes: dict[str, object] = {}
    if "FriendlyName" in fields:
        changes["friendly_name"] = _friendly_name(fields["FriendlyName"])
    for names, parse in _PARSERS:
        for name, column in names.items():
            if name in fields:
                changes[column] = parse(fields, name)
    return changes


def _number_filter(request: Request) -> NumberFilter:
    q = request.query_params
    number = None
    if q.get("PhoneNumber"):
        number = compact(q["PhoneNumber"])
        if not _FILTER_NUMBER.fullmatch(number):
            raise bad_request(
                f"PhoneNumber filter must be up to 15 digits, optionally after +, with * for any one digit; "
                f"got {q['PhoneNumber']!r}"
            )
    name = q.get("FriendlyName") or None  # a NUL never gets here (api.app refuses it in any query)
    return NumberFilter(phone_number=number, friendly_name=name)


def _order(request: Request) -> Sort:
    sort = parse_sort(request.query_params.get("SortBy"), SORT_KEYS, Sort("phone_number", False))
    raw = request.query_params.get("Reverse", "").strip().lower()
    if raw not in ("", "true", "false"):
        raise bad_request(f"Reverse must be true or false, got {request.query_params['Reverse']!r}")
    return Sort(sort.key, sort.descending != (raw == "true"))


def build_router(db: Database, auth: Authenticator, ids: IdSource, clock: Clock) -> APIRouter:
    router = APIRouter(tags=["IncomingPhoneNumbers"])
    collection = "/Accounts/{AccountSid}/IncomingPhoneNumbers"
    one = collection + "/{PhoneNumberSid}"

    async def lookup(request: Request, account_sid: str, sid: str) -> NumberRecord:
        _, account = await auth.authorize(request, account_sid)
        number = await store_numbers.get(db, sid)
        if number is None or number.account_sid != account.sid:
            raise not_found(f"IncomingPhoneNumber {sid} was not found in account {account.sid}")
        return number

    @router.get(
        collection,
        summary="List incoming phone numbers",
        **list_doc("the account's numbers", _LIST_PARAMS),
    )
    async def list_incoming_numbers(request: Request, AccountSid: str) -> Response:  # noqa: N803
        _, account = await auth.authorize(request, AccountSid)
        paging = parse_paging(request)
        number_filter, order = _number_filter(request), _order(request)
        query = ListQuery(paging.page, paging.page_size, paging.limit, paging.after_sid)
        try:
            total, items = await store_numbers.list_page(
                db, account.sid, query, number_filter, sort_key=order.key, descending=order.descending
            )
        except UnknownCursor:
            raise bad_request(f"AfterSid {paging.after_sid!r} is not in this list") from None
        check_page_exists(paging, total)
        return render_list(
            request,
            base_uri=numbers_uri(account.sid),
            key="incomingPhoneNumbers",
            xml_root="IncomingPhoneNumbers",
            paging=paging,
            total=total,
            items=items,
            sid=lambda n: n.sid,
            as_json=number_json,
            as_xml=number_xml,
        )

    async def create(request: Request, AccountSid: str) -> Response:  # noqa: N803
        _, account = await auth.authorize(request, AccountSid)
        fields = await form_fields(request)
        changes = parse_changes(fields)
        raw = fields.get("PhoneNumber", "")
        if not raw.strip():
            raise bad_request("PhoneNumber is required")
        e164 = phone_number(raw)
        now = clock.wall()
        changes.setdefault("friendly_name", e164)
        record = NumberRecord(
            sid=ids.phone_number_sid(),
            account_sid=account.sid,
            date_created=now,
            date_updated=now,
            phone_number=e164,
            **changes,  # type: ignore[arg-type]
        )
        try:
            await store_numbers.add(db, record)
        except Conflict:
            raise ApiError(409, f"PhoneNumber {e164} is already provisioned", CONFLICT) from None
        return _one(request, record)

    create_doc = (
        "Provision a number the trunk delivers to this cluster (no purchasing). Form fields: PhoneNumber "
        "(required, stored in E.164; unique on the cluster: 409 when provisioned already), FriendlyName (default: "
        "the E.164 number), Voice/Sms/Ussd/Refer URLs, methods and application Sids, StatusCallback(Method), "
        "VoiceCallerIdLookup and the capability flags (true/false)."
    )

    @router.post(collection, summary="Provision an incoming phone number", description=create_doc)
    async def create_incoming_number(request: Request, AccountSid: str) -> Response:  # noqa: N803
        return await create(request, AccountSid)

    for kind in ("Local", "TollFree", "Mobile"):
        router.add_api_route(
            f"{collection}/{kind}",
            create,
            methods=["POST"],
            name=f"create_{kind.lower()}_incoming_number",
            summary=f"Provision an incoming phone number ({kind}: an alias of the collection's POST)",
            description=create_doc,
        )

    @router.get(one, summary="Get an incoming phone number")
    async def get_incoming_number(request: Request, AccountSid: str, PhoneNumberSid: str) -> Response:  # noqa: N803
        return _one(request, await lookup(request, AccountSid, PhoneNumberSid))

    async def update(request: Request, AccountSid: str, PhoneNumberSid: str) -> Response:  # noqa: N803
        number = await lookup(request, AccountSid, PhoneNumberSid)
        fields = await form_fields(request)
        changes = parse_changes(fields)
        if fields.get("PhoneNumber", "").strip() and phone_number(fields["PhoneNumber"]) != number.phone_number:
            raise bad_request("PhoneNumber cannot be changed: delete this number and provision the new one")
        changes = {k: v for k, v in changes.items() if getattr(number, k) != v}
        if not changes:
            return _one(request, number)
        changed = await store_numbers.update_number(db, number.sid, {**changes, "date_updated": clock.wall()})
        if changed is None:  # deleted meanwhile
            raise not_found(f"IncomingPhoneNumber {number.sid} was not found in account {number.account_sid}")
        return _one(request, changed)

    update_doc = (
        "Change the fields given (the same as on creation, PhoneNumber excepted); the others keep their values. "
        "An empty URL or application Sid clears it; an empty method resets it to POST."
    )
    router.add_api_route(
        one, update, methods=["POST"], name="update_incoming_number", summary="Update a number", description=update_doc
    )
    router.add_api_route(
        one, update, methods=["PUT"], name="put_incoming_number", summary="Update a number", description=update_doc
    )

    @router.delete(one, summary="Release an incoming phone number")
    async def delete_incoming_number(request: Request, AccountSid: str, PhoneNumberSid: str) -> Response:  # noqa: N803
        number = await lookup(request, AccountSid, PhoneNumberSid)
        await store_numbers.remove(db, number.sid)
        return Response(status_code=204)

    return router
