"""Registrar logic (RFC 3261 §10.3) for callplane Clients, sans-IO.

Theory of operation
-------------------
The registrar never touches a database. The caller (adapter or engine) runs one REGISTER in three steps::

    username = registrar.username(request)           # who claims to be asking (None: not yet authenticated)
    secret = <look up the Client's password/HA1>      # None when there is no such Client
    bindings = store.bindings(aor, now)               # current bindings of registrar.aor(request)
    outcome = registrar.handle(request, secret=secret, bindings=bindings, now=now, source=(host, port, "UDP"))
    store.apply(outcome.aor, outcome.upserts, outcome.removals)   # only when outcome.aor is not None
    send(outcome.response)

``handle`` follows the steps of §10.3 in order: domain (404), Require (420), authentication (401 / 403), the To AOR
(404), the Contact list (``*`` with Expires 0, 400 otherwise), expiration (423 with Min-Expires, clamp to
max-expires), and the Call-ID/CSeq ordering rule of step 7 (500 when a request arrives out of order). The 200 lists
every binding the AOR has after the change, each with its remaining ``expires``.

``now`` is wall-clock epoch seconds here (bindings outlive the process and are shared by every node through the store),
and :class:`~callplane.sip.digest.DigestServer` nonces are judged with the same clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from callplane.core.ids import IdSource
from callplane.sip.digest import DigestParseError, DigestResponse, DigestServer, Verdict
from callplane.sip.headers import URI, Address, SipParseError
from callplane.sip.message import Request, Response

__all__ = [
    "Binding",
    "BindingStore",
    "InMemoryBindingStore",
    "Registrar",
    "RegisterOutcome",
    "Secret",
    "aor_of",
    "same_resource",
]


@dataclass(frozen=True, slots=True)
class Binding:
    """One Contact bound to an address-of-record (§10.3). ``expires_at`` is wall-clock epoch seconds."""

    aor: str
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    source_host: str = ""
    source_port: int = 0
    transport: str = "UDP"
    user_agent: str | None = None

    def remaining(self, now: float) -> int:
        return max(0, math.ceil(self.expires_at - now))


class BindingStore(Protocol):
    """Where bindings live. The in-memory one is for tests; the store layer provides the SQL-backed one."""

    def bindings(self, aor: str, now: float) -> list[Binding]:
        """Unexpired bindings of ``aor``, oldest first."""
        ...

    def apply(self, aor: str, upserts: Sequence[Binding], removals: Sequence[str]) -> None:
        """Insert or replace ``upserts`` (keyed by aor + contact) and delete the ``removals`` contacts of ``aor``."""
        ...

    def purge(self, now: float) -> int:
        """Delete every expired binding; return how many."""
        ...


class InMemoryBindingStore:
    """A dict-backed :class:`BindingStore`."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Binding]] = {}

    def bindings(self, aor: str, now: float) -> list[Binding]:
        return [b for b in self._rows.get(aor, {}).values() if b.expires_at > now]

    def apply(self, aor: str, upserts: Sequence[Binding], removals: Sequence[str]) -> None:
        rows = self._rows.setdefault(aor, {})
        for contact in removals:
            rows.pop(contact, None)
        for binding in upserts:
            rows[binding.contact] = binding
        if not rows:
            del self._rows[aor]

    def purge(self, now: float) -> int:
        count = 0
        for aor in list(self._rows):
            rows = self._rows[aor]
            for contact in [c for c, b in rows.items() if b.expires_at <= now]:
                del rows[contact]
                count += 1
            if not rows:
                del self._rows[aor]
        return count


@dataclass(frozen=True, slots=True)
class Secret:
    """What the credential source knows about a Client: its password, or H(user:realm:password) per algorithm."""

    password: str | None = None
    ha1: tuple[tuple[str, str], ...] = ()  # (algorithm name in upper case, HA1) pairs

    def ha1_for(self, algorithm: str) -> str | None:
        for name, value in self.ha1:
            if name == algorithm.upper():
                return value
        return None


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    """The response to send and the binding changes to apply (none unless the request succeeded)."""

    response: Response
    aor: str | None = None
    upserts: tuple[Binding, ...] = ()
    removals: tuple[str, ...] = ()
    bindings: tuple[Binding, ...] = ()  # the AOR's bindings after the change


def aor_of(uri: URI) -> str:
    """Canonical address-of-record for a To URI: ``sip:user@host`` with the host lower-cased (§10.3 step 5)."""
    scheme = "sips" if uri.scheme == "sips" else "sip"
    return f"{scheme}:{uri.user}@{uri.host.lower()}" if uri.user else f"{scheme}:{uri.host.lower()}"


def same_resource(digest_uri: str, request_uri: URI) -> bool:
    """Does the Digest ``uri`` parameter name the Request-URI (RFC 7616 §3.4.6)? Compared as SIP URIs (§19.1.4):
    scheme, user and password exactly, host case-insensitively, port, and parameters without regard to order."""
    try:
        uri = URI.parse(digest_uri)
    except SipParseError:
        return False

    def key(u: URI) -> tuple[object, ...]:
        params = sorted((name.lower(), (value or "").lower()) for name, value in u.params)
        return (u.scheme, u.user, u.password, u.host.lower(), u.port, params, u.headers, u.opaque)

    return key(uri) == key(request_uri)


class Registrar:
    """Judges REGISTER requests (RFC 3261 §10.3). ``domains`` empty means "any domain is ours"."""

    def __init__(
        self,
        digest: DigestServer | None,
        ids: IdSource,
        *,
        domains: frozenset[str] = frozenset(),
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
    ) -> None:
        self.digest = digest
        self._ids = ids
        self.domains = frozenset(d.lower() for d in domains)
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires

    # -- lookups the caller makes before handle() --------------------------------------------------------------
    def aor(self, request: Request) -> str:
        return aor_of(request.to.uri)

    def username(self, request: Request) -> str | None:
        """The username of the request's Digest credentials for our realm, if any."""
        auth = self._authorization(request)
        return auth.username if auth is not None else None

    def _authorization(self, request: Request) -> DigestResponse | None:
        if self.digest is None:
            return None
        for value in request.headers.get_all("authorization"):
            try:
                auth = DigestResponse.parse(value)
            except DigestParseError:
                continue
            if auth.realm == self.digest.realm:
                return auth
        return None

    # -- the decision -------------------------------------------------------------------------------------------
    def handle(
        self,
        request: Request,
        *,
        secret: Secret | None,
        bindings: Sequence[Binding],
        now: float,
        source: tuple[str, int, str] = ("", 0, "UDP"),
    ) -> RegisterOutcome:
        """Decide one REGISTER. ``bindings`` are the AOR's current ones; ``secret`` is the looked-up Client's."""
        # Step 1: is the Request-URI one of our domains?
        if self.domains and request.uri.host.lower() not in self.domains:
            return RegisterOutcome(self._respond(request, 404, "Domain Not Served"))
        # Step 2: we support no extensions.
        required = request.headers.get_all("require")
        if required:
            response = self._respond(request, 420)
            response.headers.add("Unsupported", ", ".join(required))
            return RegisterOutcome(response)
        to_uri = request.to.uri
        if to_uri.scheme not in ("sip", "sips") or not to_uri.user:
            return RegisterOutcome(self._respond(request, 404, "Not Found"))
        # Steps 3 and 4: authenticate, and the user may only register its own AOR.
        if self.digest is not None:
            rejection = self._authenticate(request, secret, now, to_uri)
            if rejection is not None:
                return RegisterOutcome(rejection)
        aor = aor_of(to_uri)
        try:
            return self._bind(request, aor, list(bindings), now, source)
        except SipParseError:
            return RegisterOutcome(self._respond(request, 400, "Bad Contact"))

    def _authenticate(self, request: Request, secret: Secret | None, now: float, to_uri: URI) -> Response | None:
        digest = self.digest
        assert digest is not None
        auth = self._authorization(request)
        if auth is None:
            return self._challenge(request, now, stale=False)
        if secret is None:
            return self._respond(request, 403, "Forbidden")
        if not same_resource(auth.uri, request.uri):
            # RFC 7616 §3.4.6: credentials computed for another URI are a bad request, not a wrong password.
            return self._respond(request, 400, "Digest URI Mismatch")
        ha1 = secret.ha1_for(auth.algorithm)
        if ha1 is None and secret.password is None:
            return self._challenge(request, now, stale=False)
        verdict = digest.verify(auth, "REGISTER", now, password=secret.password, ha1=ha1, body=request.body)
        if verdict is Verdict.STALE:
            return self._challenge(request, now, stale=True)
        if verdict is not Verdict.OK:
            return self._challenge(request, now, stale=False)
        if auth.username != to_uri.user:
            return self._respond(request, 403, "Forbidden")
        return None

    def _respond(self, request: Request, status: int, reason: str | None = None) -> Response:
        """A response with a To tag of ours (§8.2.6.2): the registrar is a UAS."""
        return request.create_response(status, reason, to_tag=self._ids.tag())

    def _challenge(self, request: Request, now: float, *, stale: bool) -> Response:
        assert self.digest is not None
        response = self._respond(request, 401)
        for value in self.digest.challenges(now, stale=stale):
            response.headers.add("WWW-Authenticate", value)
        return response

    def _expiry(self, request: Request, contact: Address | None) -> int:
        """Requested expiration for ``contact``: its ``expires`` param, else the Expires header, else the default."""
        text = contact.param("expires") if contact is not None else None
        if text is None:
            text = request.headers.get("expires")
        if text is None:
            return self.default_expires
        text = text.strip()
        if not (text.isascii() and text.isdigit()):
            raise SipParseError("malformed expires")
        return int(text)

    def _bind(
        self, request: Request, aor: str, current: list[Binding], now: float, source: tuple[str, int, str]
    ) -> RegisterOutcome:
        call_id = request.call_id
        cseq = request.cseq.seq
        by_contact = {b.contact: b for b in current}

        def out_of_order(existing: Binding) -> bool:
            return existing.call_id == call_id and cseq <= existing.cseq

        contact_values = request.headers.get_all("contact")
        if "*" in (v.strip() for v in contact_values):
            # §10.2.2: "*" only alone and only with Expires: 0.
            if len(contact_values) != 1 or (request.headers.get("expires") or "").strip() != "0":
                return RegisterOutcome(self._respond(request, 400, "Invalid Wildcard"))
            if any(out_of_order(b) for b in current):
                return RegisterOutcome(self._respond(request, 500, "Out Of Order"))
            every = tuple(b.contact for b in current)
            return RegisterOutcome(self._ok(request, (), now), aor, (), every, ())

        contacts = [Address.parse(v) for v in contact_values]
        wanted: list[tuple[Address, int]] = []
        for contact in contacts:
            expires = self._expiry(request, contact)
            if 0 < expires < self.min_expires:
                response = self._respond(request, 423)
                response.headers.add("Min-Expires", self.min_expires)
                return RegisterOutcome(response)
            wanted.append((contact, min(expires, self.max_expires)))

        user_agent = request.headers.get("user-agent")
        upserts: dict[str, Binding] = {}
        removals: list[str] = []
        for contact, expires in wanted:
            key = str(contact.uri)
            existing = by_contact.get(key)
            if existing is not None and out_of_order(existing):
                return RegisterOutcome(self._respond(request, 500, "Out Of Order"))
            if expires == 0:
                upserts.pop(key, None)
                if existing is not None and key not in removals:
                    removals.append(key)
                continue
            if key in removals:
                removals.remove(key)
            upserts[key] = Binding(
                aor=aor,
                contact=key,
                expires_at=now + expires,
                call_id=call_id,
                cseq=cseq,
                source_host=source[0],
                source_port=source[1],
                transport=source[2],
                user_agent=user_agent,
            )
        after = {b.contact: b for b in current if b.contact not in removals}
        after.update(upserts)
        final = tuple(after.values())
        return RegisterOutcome(self._ok(request, final, now), aor, tuple(upserts.values()), tuple(removals), final)

    def _ok(self, request: Request, bindings: Sequence[Binding], now: float) -> Response:
        response = self._respond(request, 200)
        for binding in bindings:
            response.headers.add("Contact", f"<{binding.contact}>;expires={binding.remaining(now)}")
        return response
