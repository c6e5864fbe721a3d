"""Inbound calls (issue 9): who may call in, and which application answers an INVITE to the node.

Theory of operation
-------------------
The call engine hands every new INVITE to :meth:`InboundRouter.route` (in a task: it looks up the store) and gets
back a :class:`Route` (run this application in this account) or a :class:`Refusal` (the final response to send).

* **Who is calling.** A source address inside ``CALLPLANE_TRUSTED_PEERS`` is a trunk or proxy: it is never
  challenged. Otherwise an INVITE whose From user is a Client's login must prove it with digest: ``407
  Proxy-Authenticate`` (RFC 3261 §22.3) with the node's shared :class:`~callplane.sip.digest.DigestServer`, then
  the re-sent INVITE's ``Proxy-Authorization`` is checked against the Client's stored HA1. Anything else is
  anonymous, and may call numbers only with ``CALLPLANE_ALLOW_ANONYMOUS_INBOUND`` on (``403`` otherwise).
* **What answers.** In order: a Request-URI user that is a provisioned IncomingPhoneNumber (after E.164
  normalisation) runs the number's VoiceUrl in the number's account; a call from a Client (authenticated, or from
  a trusted proxy) runs the Client's VoiceUrl in the Client's account; anything else is ``404``.
* **Account status.** A suspended or closed account neither takes nor makes calls: an INVITE from one of its
  Clients, or to one of its numbers, is ``403``.
* **Credentials.** The digest ``uri`` must name the Request-URI, or its host and port alone (SIPp leaves the
  user out). A wrong password (a valid nonce whose response does not match) or credentials for another user
  are ``403``: an INVITE re-challenged for a wrong password would loop. A stale nonce is challenged again with
  ``stale=true``, an unknown nonce or a replayed count is challenged again.

The helpers below turn the INVITE into the RCML parameters of restcomm-behaviour §4.2: user parts,
``ForwardedFrom`` (the first Diversion), and the ``SipHeader_*`` list (every ``X-`` header, Diversion and
History-Info, one entry per value, in header order).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Literal

from callplane.core.phone import to_e164
from callplane.engine.clients import secret_of
from callplane.sip.digest import DigestParseError, DigestResponse, DigestServer, Verdict
from callplane.sip.events import IncomingCall
from callplane.sip.headers import URI, Address, SipParseError, split_list
from callplane.sip.message import canonical_name
from callplane.sip.registrar import same_resource
from callplane.store import clients as store_clients
from callplane.store import numbers as store_numbers
from callplane.store.clients import ClientRecord
from callplane.store.db import Database

__all__ = [
    "InboundPolicy",
    "InboundRouter",
    "Refusal",
    "Route",
    "forwarded_from",
    "sip_header_params",
    "uri_user",
]

log = logging.getLogger("callplane.engine.inbound")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Headers passed to the application as ``SipHeader_<name>`` besides the ``X-`` ones, by their canonical names.
_LISTED = {"diversion": "Diversion", "history-info": "History-Info"}


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    """``CALLPLANE_TRUSTED_PEERS`` and ``CALLPLANE_ALLOW_ANONYMOUS_INBOUND``."""

    trusted: tuple[Network, ...] = ()
    allow_anonymous: bool = False

    def trusts(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)


@dataclass(frozen=True, slots=True)
class Route:
    """Run ``url`` for the call, in ``account_sid``."""

    account_sid: str
    url: str
    method: str = "POST"
    fallback_url: str | None = None
    fallback_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    phone_number_sid: str | None = None
    api_version: str = "2012-04-24"
    kind: Literal["number", "client"] = "number"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The final response to the INVITE."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def uri_user(text: str) -> str:
    """The user part of a SIP or tel URI (the number of a ``tel:``); empty when there is none."""
    try:
        return URI.parse(text).user or ""
    except SipParseError:
        return ""


def forwarded_from(headers: tuple[tuple[str, str], ...]) -> str | None:
    """The user of the first Diversion (RFC 5806), or None."""
    for name, value in headers:
        if canonical_name(name) == "diversion":
            for item in split_list(value):
                try:
                    user = Address.parse(item).uri.user
                except SipParseError:
                    continue
                return user or None
            return None
    return None


def sip_header_params(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """(name, value) for ``SipHeader_<name>``: every ``X-`` header as named in the INVITE, and each Diversion and
    History-Info value (a comma-separated header gives one entry per value), in header order."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        key = canonical_name(name)
        if key.startswith("x-"):
            out.append((name, value))
        elif key in _LISTED:
            out.extend((_LISTED[key], item) for item in split_list(value))
    return tuple(out)


def _same_target(digest_uri: str, request_uri: str) -> bool:
    """Does the Digest ``uri`` name the Request-URI (RFC 7616 §3.4.6)? The same resource (as the registrar checks),
    or the same scheme, host and port without the user: SIPp 3.6 computes an INVITE's digest for ``sip:host:port``,
    leaving out the dialled user. The response hash still binds the ``uri`` the client chose."""
    try:
        theirs, ours = URI.parse(digest_uri), URI.parse(request_uri)
    except SipParseError:
        return False
    if same_resource(digest_uri, ours):
        return True
    return theirs.user is None and (theirs.scheme, theirs.host.lower(), theirs.port) == (
        ours.scheme,
        ours.host.lower(),
        ours.port,
    )


class InboundRouter:
    """Decides an INVITE (see the module docstring). ``digest`` is the node's shared digest server; without one,
    Clients cannot authenticate and are treated as anonymous callers."""

    def __init__(self, db: Database, digest: DigestServer | None, policy: InboundPolicy) -> None:
        self.db = db
        self.digest = digest
        self.policy = policy

    async def route(
        self, incoming: IncomingCall, credentials: tuple[str, ...], body: bytes, now: float
    ) -> Route | Refusal:
        """``credentials``: the INVITE's Proxy-Authorization values; ``body`` its body (for ``auth-int``); ``now``
        wall-clock epoch seconds (nonces are checked by any node sharing the secret)."""
        trusted = self.policy.trusts(incoming.source[0])
        e164 = to_e164(uri_user(incoming.request_uri))
        if trusted and e164 is not None:
            # A trunk's call to a number never needs the caller's Client (no challenge; the number comes first): one
            # store read per call instead of two.
            route = await self._number_route(e164)
            if route is not None:
                return route
        caller = uri_user(incoming.from_uri)
        found = await store_clients.with_account_status(self.db, caller) if caller else None
        client, client_account = found if found is not None else (None, "")
        if client is not None and not trusted:
            if self.digest is None:
                client = None
            else:
                refusal = self._authenticate(client, incoming.request_uri, credentials, body, now)
                if refusal is not None:
                    return refusal
        if client is not None and client_account != "active":
            log.info("INVITE from Client %r refused: its account %s is not active", client.login, client.account_sid)
            return Refusal(403, "Forbidden")
        if client is None and not trusted and not self.policy.allow_anonymous:
            log.info(
                "INVITE from %s (%s) refused: not a trusted peer nor a Client", incoming.from_uri, incoming.source[0]
            )
            return Refusal(403, "Forbidden")
        if not trusted and e164 is not None:
            route = await self._number_route(e164)
            if route is not None:
                return route
        if client is not None and client.enabled and client.voice_url:
            return Route(
                client.account_sid,
                client.voice_url,
                client.voice_method,
                client.voice_fallback_url,
                client.voice_fallback_method,
                api_version=client.api_version,
                kind="client",
            )
        log.info("INVITE %s -> %s: no number or Client application, 404", incoming.from_uri, incoming.request_uri)
        return Refusal(404, "Not Found")

    async def _number_route(self, e164: str) -> Route | Refusal | None:
        """The application of the number ``e164`` when it has one (``403`` when its account is not active)."""
        found = await store_numbers.for_inbound_call(self.db, e164)
        if found is None:
            return None
        number, account_status = found
        if not number.voice_capable or not number.voice_url:
            return None
        if account_status != "active":
            log.info("INVITE to %s refused: account %s is %s", number.phone_number, number.account_sid, account_status)
            return Refusal(403, "Forbidden")
        return Route(
            number.account_sid,
            number.voice_url,
            number.voice_method,
            number.voice_fallback_url,
            number.voice_fallback_method,
            number.status_callback,
            number.status_callback_method,
            number.sid,
            number.api_version,
        )

    def _authenticate(
        self, client: ClientRecord, request_uri: str, credentials: tuple[str, ...], body: bytes, now: float
    ) -> Refusal | None:
        """None when the INVITE carries valid credentials of ``client``, else the 407 or 403 to send."""
        digest = self.digest
        assert digest is not None
        auth = None
        for value in credentials:
            try:
                parsed = DigestResponse.parse(value)
            except DigestParseError:
                continue
            if parsed.realm == digest.realm:
                auth = parsed
                break
        if auth is None:
            return self._challenge(now, stale=False)
        secret = secret_of(client, digest.realm)
        if secret is None or auth.username != client.login:
            return Refusal(403, "Forbidden")
        if not _same_target(auth.uri, request_uri):
            return Refusal(400, "Digest URI Mismatch")  # RFC 7616 §3.4.6
        ha1 = secret.ha1_for(auth.algorithm)
        if ha1 is None:
            return self._challenge(now, stale=False)
        try:
            verdict = digest.verify(auth, "INVITE", now, ha1=ha1, body=body)
        except (DigestParseError, ValueError):
            return self._challenge(now, stale=False)
        if verdict is Verdict.OK:
            return None
        if verdict is Verdict.BAD_RESPONSE:
            log.info("INVITE from Client %r: wrong credentials, 403", client.login)
            return Refusal(403, "Forbidden")
        return self._challenge(now, stale=verdict is Verdict.STALE)

    def _challenge(self, now: float, *, stale: bool) -> Refusal:
        assert self.digest is not None
        return Refusal(
            407,
            "Proxy Authentication Required",
            tuple(("Proxy-Authenticate", value) for value in self.digest.challenges(now, stale=stale)),
        )
