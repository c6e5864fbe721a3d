"""The Notifications resource: what went wrong while running an account's calls (restcomm-behaviour §6)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from callplane.store import notifications as store_notifications
from callplane.store.db import Database
from callplane.store.listing import ListQuery
from callplane.store.notifications import NotificationRecord

from .auth import Authenticator
from .errors import not_found
from .formats import API_VERSION, rfc2822, xml_element, xml_fields
from .listing import list_response, render_one


def _uri(n: NotificationRecord) -> str:
    return f"/{API_VERSION}/Accounts/{n.account_sid}/Notifications/{n.sid}"


def _fields(n: NotificationRecord) -> list[tuple[str, object]]:
    date = rfc2822(n.date_created)
    return [
        ("sid", n.sid),
        ("date_created", date),
        ("date_updated", date),
        ("account_sid", n.account_sid),
        ("call_sid", n.call_sid),
        ("api_version", n.api_version),
        ("log", n.log),
        ("error_code", n.error_code),
        ("more_info", n.more_info or f"https://www.twilio.com/docs/errors/{n.error_code}"),
        ("message_text", n.message_text),
        ("message_date", date),
        ("request_url", n.request_url),
        ("request_method", n.request_method),
        ("request_variables", n.request_variables),
        ("response_headers", n.response_headers),
        ("response_body", n.response_body),
    ]


def notification_json(n: NotificationRecord) -> dict[str, object]:
    out: dict[str, object] = {k: v for k, v in _fields(n) if v is not None}
    out["uri"] = _uri(n) + ".json"
    return out


def notification_xml(n: NotificationRecord) -> str:
    fields = xml_fields(_fields(n))
    return xml_element("Notification", [*fields, ("Uri", _uri(n))])


def build_router(db: Database, auth: Authenticator) -> APIRouter:
    router = APIRouter(tags=["Notifications"])

    async def listing(request: Request, account_sid: str, call_sid: str | None) -> Response:
        async def fetch(account: str, query: ListQuery, call: str | None) -> tuple[int, list[NotificationRecord]]:
            return await store_notifications.list_page(db, account, query, call_sid=call)

        return await list_response(
            request,
            auth,
            account_sid,
            call_sid,
            resource="Notifications",
            fetch=fetch,
            sid=lambda n: n.sid,
            as_json=notification_json,
            as_xml=notification_xml,
        )

    @router.get("/Accounts/{AccountSid}/Notifications", summary="List notifications")
    async def list_notifications(request: Request, AccountSid: str) -> Response:  # noqa: N803
        return await listing(request, AccountSid, None)

    @router.get("/Accounts/{AccountSid}/Calls/{CallSid}/Notifications", summary="List a call's notifications")
    async def list_call_notifications(request: Request, AccountSid: str, CallSid: str) -> Response:  # noqa: N803
        return await listing(request, AccountSid, CallSid)

    @router.get("/Accounts/{AccountSid}/Notifications/{NotificationSid}", summary="Get one notification")
    async def get_notification(request: Request, AccountSid: str, NotificationSid: str) -> Response:  # noqa: N803
        _, account = await auth.authorize(request, AccountSid)
        n = await store_notifications.get(db, NotificationSid)
        if n is None or n.account_sid != account.sid:
            raise not_found(f"Notification {NotificationSid} was not found in account {account.sid}")
        return render_one(request, n, notification_json, notification_xml)

    return router
