"""The Clients resource: SIP users of an account (issue 9; restcomm-behaviour §6).

A Client is a login and password that a phone registers with (digest, the node's realm) and that ``client:login``
rings. The password is kept only as its RFC 7616 HA1s for the node's realm and is never returned (Restcomm returned
the stored value; docs/compatibility.md). The list is a plain JSON array, as in Restcomm.
"""

from __future__ import annotations

import re
from dataclasses import replace

from fastapi import APIRouter, Request
from fastapi.responses import Response

from callplane.core.clock import Clock
from callplane.core.errors import ApiError, Conflict, NotFound
from callplane.core.ids import IdSource
from callplane.core.secrets import digest_ha1
from callplane.store import clients as store_clients
from callplane.store.clients import ClientRecord
from callplane.store.db import Database

from .auth import Authenticator
from .errors import bad_request, not_found
from .formats import API_VERSION, rfc2822, xml_element, xml_fields
from .forms import form_fields
from .listing import render_array, render_one
from .params import method_param, url_param

__all__ = ["build_router", "check_login", "check_password", "client_json", "client_xml"]

MAX_LOGIN = 64
MIN_PASSWORD = 8
MAX_PASSWORD = 128
CONFLICT = 20409  # as a taken EmailAddress (api/accounts.py)
PASSWORD_ALGORITHM = "MD5"  # what digest uses by default; the SHA-256 HA1 is kept beside it
# RFC 3261 §25.1 user part: alphanumerics, "mark" and "user-unreserved", without "," (the seed list's separator),
# ";" (URI parameters), "?" (header fields, and POST Calls' To=client:login?X-h=v) and "/", and without %-escapes
# (a digest username is compared as written, so one login must have one spelling).
_LOGIN = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$]+")
_APPLICATION_SID = re.compile(r"AP[0-9a-fA-F]{32}")
_STATUS = {"1": 1, "true": 1, "0": 0, "false": 0}


def check_login(raw: str) -> str:
    login = raw.strip()
    if not login:
        raise bad_request("Login is required")
    if len(login) > MAX_LOGIN:
        raise bad_request(f"Login is longer than {MAX_LOGIN} characters")
    if not _LOGIN.fullmatch(login):
        raise bad_request(
            f"Login {login!r} cannot be a SIP user name: use letters, digits and - _ . ! ~ * ' ( ) & = + $"
        )
    return login


def check_password(password: str, login: str) -> str:
    """Strength rule: at least 8 characters, at least three of the four kinds (lower-case letters, capitals, digits,
    other characters), and not containing the login. Restcomm's answer to a weak one was "Password too weak"."""
    if not password:
        raise bad_request("Password is required")
    if len(password) > MAX_PASSWORD:
        raise bad_request(f"Password is longer than {MAX_PASSWORD} characters")
    kinds = (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum())
    mixed = sum(any(kind(c) for c in password) for kind in kinds)
    if len(password) < MIN_PASSWORD or mixed < 3 or login.lower() in password.lower():
        raise bad_request(
            f"Password too weak: use at least {MIN_PASSWORD} characters with three of lower-case letters, "
            "capitals, digits and symbols, not containing the Login"
        )
    return password


def _status(fields: dict[str, str]) -> int:
    raw = fields["Status"]
    status = _STATUS.get(raw.strip().lower())
    if status is None:
        raise bad_request(f"Status must be 1 (enabled) or 0 (disabled), got {raw!r}")
    return status


def _friendly_name(fields: dict[str, str]) -> str:
    name = fields["FriendlyName"].strip()
    if not name or len(name) > 256:
        raise bad_request("FriendlyName must be 1 to 256 characters")
    if any(ord(c) < 0x20 for c in name):
        raise bad_request("FriendlyName must not contain control characters")
    return name


def _application_sid(fields: dict[str, str]) -> str | None:
    sid = fields["VoiceApplicationSid"].strip()
    if sid and not _APPLICATION_SID.fullmatch(sid):
        raise bad_request(f"VoiceApplicationSid must be AP followed by 32 hex digits, got {sid!r}")
    return sid or None


def _field_changes(fields: dict[str, str]) -> dict[str, object]:
    """The optional fields present in ``fields``, as ClientRecord changes (a blank URL clears it, a blank method is
    POST)."""
    changes: dict[str, object] = {}
    for name, key in (("VoiceUrl", "voice_url"), ("VoiceFallbackUrl", "voice_fallback_url")):
        if name in fields:
            changes[key] = url_param(fields, name)
    for name, key in (("VoiceMethod", "voice_method"), ("VoiceFallbackMethod", "voice_fallback_method")):
        if name in fields:
            changes[key] = method_param(fields, name)
    if "VoiceApplicationSid" in fields:
        changes["voice_application_sid"] = _application_sid(fields)
    if "FriendlyName" in fields:
        changes["friendly_name"] = _friendly_name(fields)
    if "Status" in fields:
        changes["status"] = _status(fields)
    return changes


def _uri(c: ClientRecord) -> str:
    return f"/{API_VERSION}/Accounts/{c.account_sid}/Clients/{c.sid}"


def _fields(c: ClientRecord) -> list[tuple[str, object]]:
    return [
        ("sid", c.sid),
        ("date_created", rfc2822(c.date_created)),
        ("date_updated", rfc2822(c.date_updated)),
        ("account_sid", c.account_sid),
        ("api_version", c.api_version),
        ("friendly_name", c.friendly_name),
        ("login", c.login),
        ("password_algorithm", PASSWORD_ALGORITHM),
        ("status", c.status),
        ("voice_url", c.voice_url),
        ("voice_method", c.voice_method),
        ("voice_fallback_url", c.voice_fallback_url),
        ("voice_fallback_method", c.voice_fallback_method),
        ("voice_application_sid", c.voice_application_sid),
    ]


def client_json(c: ClientRecord) -> dict[str, object]:
    """§6's attributes but ``password``. As everywhere in the API, null values are omitted: so is
    ``push_client_identity``, always null (no push notifications)."""
    out = {k: v for k, v in _fields(c) if v is not None}
    out["uri"] = _uri(c) + ".json"
    return out


def client_xml(c: ClientRecord) -> str:
    return xml_element("Client", [*xml_fields(_fields(c)), ("Uri", _uri(c)), ("PushClientIdentity", None)])


def _one(request: Request, c: ClientRecord) -> Response:
    return render_one(request, c, client_json, client_xml)


def _taken(login: str) -> ApiError:
    return ApiError(409, f"Login {login} is already used by another Client", CONFLICT)


def build_router(db: Database, auth: Authenticator, ids: IdSource, clock: Clock, realm: str) -> APIRouter:
    """``realm`` is the node's SIP realm (``CALLPLANE_SIP_REALM``): the HA1s are computed for it."""
    router = APIRouter(tags=["Clients"])

    async def lookup(request: Request, account_sid: str, sid: str) -> ClientRecord:
        _, account = await auth.authorize(request, account_sid)
        client = await store_clients.get(db, sid)
        if client is None or client.account_sid != account.sid:
            raise not_found(f"Client {sid} was not found in account {account.sid}")
        return client

    @router.get("/Accounts/{AccountSid}/Clients", summary="List the account's Clients")
    async def list_clients(request: Request, AccountSid: str) -> Response:  # noqa: N803 (Restcomm's path name)
        _, account = await auth.authorize(request, AccountSid)
        found = await store_clients.list_for(db, account.sid)
        return render_array(request, "Clients", found, client_json, client_xml)

    @router.post(
        "/Accounts/{AccountSid}/Clients",
        summary="Create a Client",
        description="Form fields: Login and Password (required), FriendlyName (default the Login), Status (1 or 0), "
        "VoiceUrl, VoiceMethod, VoiceFallbackUrl, VoiceFallbackMethod, VoiceApplicationSid. The password is never "
        "returned.",
    )
    async def create_client(request: Request, AccountSid: str) -> Response:  # noqa: N803
        _, account = await auth.authorize(request, AccountSid)
        fields = await form_fields(request)
        login = check_login(fields.get("Login", ""))
        password = check_password(fields.get("Password", ""), login)
        changes = _field_changes(fields)
        client = store_clients.new(ids.client_sid(), account.sid, login, password, realm=realm, now=clock.wall())
        client = replace(client, **changes)  # type: ignore[arg-type]
        try:
            await store_clients.add(db, client)
        except Conflict:
            raise _taken(login) from None
        return _one(request, client)

    @router.get("/Accounts/{AccountSid}/Clients/{ClientSid}", summary="Get a Client")
    async def get_client(request: Request, AccountSid: str, ClientSid: str) -> Response:  # noqa: N803
        return _one(request, await lookup(request, AccountSid, ClientSid))

    async def update(request: Request, account_sid: str, sid: str) -> Response:
        client = await lookup(request, account_sid, sid)
        fields = await form_fields(request)
        if "Login" in fields and fields["Login"].strip() != client.login:
            raise bad_request("Login cannot be changed: delete the Client and create another")
        changes = _field_changes(fields)
        if "Password" in fields:
            md5, sha256 = digest_ha1(client.login, realm, check_password(fields["Password"], client.login))
            changes.update(realm=realm, ha1_md5=md5, ha1_sha256=sha256)
        changes = {k: v for k, v in changes.items() if getattr(client, k) != v}
        if changes:
            try:
                client = await store_clients.update(db, client.sid, {**changes, "date_updated": clock.wall()})
            except NotFound:  # deleted meanwhile
                raise not_found(f"Client {sid} was not found in account {client.account_sid}") from None
        return _one(request, client)

    @router.post(
        "/Accounts/{AccountSid}/Clients/{ClientSid}",
        summary="Update a Client",
        description="Form fields as for creating one, all optional; Login cannot change. Status=0 disables the "
        "Client and removes its registrations.",
    )
    async def update_client(request: Request, AccountSid: str, ClientSid: str) -> Response:  # noqa: N803
        return await update(request, AccountSid, ClientSid)

    @router.put(
        "/Accounts/{AccountSid}/Clients/{ClientSid}",
        summary="Update a Client (as POST)",
        description="The same as POST on the Client.",
    )
    async def replace_client(request: Request, AccountSid: str, ClientSid: str) -> Response:  # noqa: N803
        return await update(request, AccountSid, ClientSid)

    @router.delete("/Accounts/{AccountSid}/Clients/{ClientSid}", summary="Delete a Client and its registrations")
    async def delete_client(request: Request, AccountSid: str, ClientSid: str) -> Response:  # noqa: N803
        client = await lookup(request, AccountSid, ClientSid)
        if not await store_clients.remove(db, client.sid):
            raise not_found(f"Client {ClientSid} was not found in account {client.account_sid}")
        return Response(status_code=204)

    return router
