"""The Accounts resource: list, create sub-accounts, get and update (name, status, auth token)."""

from __future__ import annotations

import asyncio
import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from callplane.core.clock import Clock
from callplane.core.errors import ApiError, Conflict
from callplane.core.ids import IdSource
from callplane.core.secrets import hash_token
from callplane.store import accounts as store_accounts
from callplane.store.accounts import STATUSES, AccountRecord
from callplane.store.db import Database

from .auth import Authenticator
from .errors import bad_request, forbidden
from .formats import API_VERSION, rfc2822, xml_element
from .forms import form_fields
from .listing import render_array, render_one

MAX_DEPTH = 4  # the administrator plus three levels of sub-accounts
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_SUBRESOURCES = ("Calls", "Clients", "Conferences", "IncomingPhoneNumbers", "Notifications", "Recordings")


def account_json(account: AccountRecord, auth_token: str | None = None) -> dict[str, object]:
    uri = f"/{API_VERSION}/Accounts/{account.sid}"
    out: dict[str, object] = {"sid": account.sid, "friendly_name": account.friendly_name}
    if account.email_address:
        out["email_address"] = account.email_address
    out.update(type=account.type, status=account.status, role=account.role)
    if account.parent_sid:
        out["owner_account_sid"] = account.parent_sid
    out.update(date_created=rfc2822(account.date_created), date_updated=rfc2822(account.date_updated))
    if auth_token is not None:
        out["auth_token"] = auth_token
    out["uri"] = uri + ".json"
    out["subresource_uris"] = {name.lower(): f"{uri}/{name}.json" for name in _SUBRESOURCES}
    return out


def account_xml(account: AccountRecord, auth_token: str | None = None) -> str:
    uri = f"/{API_VERSION}/Accounts/{account.sid}"
    fields: list[tuple[str, object]] = [
        ("Sid", account.sid),
        ("FriendlyName", account.friendly_name),
        ("EmailAddress", account.email_address),
        ("Type", account.type),
        ("Status", account.status),
        ("Role", account.role),
        ("OwnerAccountSid", account.parent_sid),
        ("DateCreated", rfc2822(account.date_created)),
        ("DateUpdated", rfc2822(account.date_updated)),
    ]
    if auth_token is not None:
        fields.append(("AuthToken", auth_token))
    fields += [("Uri", uri), ("SubresourceUris", [(n, f"{uri}/{n}") for n in _SUBRESOURCES])]
    return xml_element("Account", fields)


def _one(request: Request, account: AccountRecord, auth_token: str | None = None) -> Response:
    return render_one(request, account, lambda a: account_json(a, auth_token), lambda a: account_xml(a, auth_token))


def build_router(db: Database, auth: Authenticator, ids: IdSource, clock: Clock) -> APIRouter:
    router = APIRouter(tags=["Accounts"])

    @router.get("/Accounts", summary="List the caller's account and its sub-accounts")
    async def list_accounts(request: Request) -> Response:
        caller = await auth.authenticate(request)
        everyone = [caller, *await store_accounts.descendants(db, caller.sid)]
        return render_array(request, "Accounts", everyone, account_json, account_xml)

    @router.post(
        "/Accounts",
        summary="Create a sub-account of the caller",
        description="Form fields: FriendlyName (required), EmailAddress (optional, unique). The response carries "
        "the new account's auth_token; it is shown only here (tokens are stored hashed).",
    )
    async def create_account(request: Request) -> Response:
        caller = await auth.authenticate(request)
        form = await form_fields(request)
        name = form.get("FriendlyName", "").strip()
        if not name:
            raise bad_request("FriendlyName is required")
        if len(name) > 256:
            raise bad_request("FriendlyName is longer than 256 characters")
        email = form.get("EmailAddress", "").strip() or None
        if email is not None and not _EMAIL.fullmatch(email):
            raise bad_request(f"EmailAddress {email!r} is not a valid address")
        if len(await store_accounts.ancestors(db, caller.sid)) + 1 >= MAX_DEPTH:
            raise bad_request(f"Sub-accounts may be nested at most {MAX_DEPTH - 1} levels deep")
        token = ids.token()
        now = clock.wall()
        record = AccountRecord(
            sid=ids.account_sid(),
            friendly_name=name,
            status="active",
            auth_token_hash=await asyncio.to_thread(hash_token, token),
            date_created=now,
            date_updated=now,
            parent_sid=caller.sid,
            email_address=email,
        )
        try:
            await store_accounts.create(db, record)
        except Conflict:
            raise ApiError(409, f"EmailAddress {email} is already used by another account", 20409) from None
        return _one(request, record, token)

    @router.get("/Accounts/{AccountSid}", summary="Get an account")
    async def get_account(request: Request, AccountSid: str) -> Response:  # noqa: N803
        _, account = await auth.authorize(request, AccountSid)
        return _one(request, account)

    @router.post(
        "/Accounts/{AccountSid}",
        summary="Update an account",
        description="Form fields: FriendlyName; Status (active, suspended or closed; only an ancestor may change it, "
        "and closing closes every sub-account and releases the IncomingPhoneNumbers and Clients of them all; a "
        "suspended or closed account's numbers and Clients neither take nor make calls); "
        "RotateAuthToken=true (a fresh random token is returned once).",
    )
    async def update_account(request: Request, AccountSid: str) -> Response:  # noqa: N803
        caller, account = await auth.authorize(request, AccountSid)
        form = await form_fields(request)
        now = clock.wall()
        changes: dict[str, object] = {}
        if "FriendlyName" in form:
            name = form["FriendlyName"].strip()
            if not name or len(name) > 256:
                raise bad_request("FriendlyName must be 1 to 256 characters")
            changes["friendly_name"] = name
        if "Status" in form:
            status = form["Status"].strip().lower()
            if status not in STATUSES:
                raise bad_request(f"Status must be one of {', '.join(STATUSES)}, got {form['Status']!r}")
            if caller.sid == account.sid and status != account.status:
                raise forbidden("An account cannot change its own status; its parent can")
            changes["status"] = status
        token = None
        rotate = form.get("RotateAuthToken", "").strip().lower()
        if rotate not in ("", "true", "false"):
            raise bad_request("RotateAuthToken must be true or false")
        if rotate == "true":
            token = ids.token()
            changes["auth_token_hash"] = await asyncio.to_thread(hash_token, token)
        changes = {k: v for k, v in changes.items() if getattr(account, k) != v}
        changed = account
        if changes:
            # Only the fields this request sets are written, so a concurrent update of other fields survives.
            changed = await store_accounts.update(db, account.sid, {**changes, "date_updated": now})
            if "status" in changes:
                await store_accounts.cascade_status(db, changed.sid, changed.status, now)
                if changed.status == "closed":  # the whole subtree is closed now: its numbers and Clients go
                    below = await store_accounts.descendants(db, changed.sid)
                    await store_accounts.release(db, [changed.sid, *(a.sid for a in below)])
            auth.forget()  # a suspension or a new token takes effect with the next request
        return _one(request, changed, token)

    return router
