"""REGISTER client (RFC 3261 §10.2): register a Contact for an address-of-record, answer digest challenges, refresh.

One :class:`Registration` per AOR keeps its Call-ID and raises its CSeq on every REGISTER (§10.2.4 wants the same
Call-ID for refreshes so the registrar can order them). A 200 reports the expiry the registrar granted to our
Contact and schedules the refresh before it runs out; a 423 is retried once with the registrar's Min-Expires; a 401
or 407 is answered once per realm (again only when the new challenge says ``stale=true``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from callplane.sip.events import Registered, RegistrationFailed
from callplane.sip.headers import URI, Address
from callplane.sip.message import Headers, Request, Response
from callplane.sip.transaction_events import TransactionKey

if TYPE_CHECKING:  # the UA core imports us; we only need its types
    from callplane.sip.uacore import ClientTx, UaCore

__all__ = ["Registration", "RegistrationClient", "refresh_delay"]


def refresh_delay(granted: int) -> float:
    """Refresh a binding a little before it expires: half-way for short ones, 30 s early for long ones."""
    return max(1.0, granted - min(30.0, granted / 2))


@dataclass(slots=True)
class Registration:
    handle: str
    registrar: URI
    aor: Address
    contact: Address
    expires: int
    call_id: str
    from_tag: str
    cseq: int = 0
    realms: set[str] = field(default_factory=set)
    key: TransactionKey | None = None
    unregistering: bool = False
    retried_interval: bool = False


class RegistrationClient:
    """The REGISTER half of a :class:`~callplane.sip.ua.UserAgent`."""

    def __init__(self, ua: UaCore) -> None:
        self.ua = ua
        self._regs: dict[str, Registration] = {}

    def __contains__(self, handle: object) -> bool:
        return handle in self._regs

    def register(self, registrar: str, aor: str, now: float, *, expires: int = 3600) -> str:
        ua = self.ua
        aor_addr = Address.parse(aor) if "<" in aor else Address(URI.parse(aor))
        handle = ua.ids.call_id(ua.local.get(ua.transport, ("callplane", 0))[0])
        reg = Registration(
            handle=handle,
            registrar=URI.parse(registrar),
            aor=aor_addr,
            contact=ua.contact(aor_addr.uri.user),
            expires=expires,
            call_id=handle,
            from_tag=ua.ids.tag(),
        )
        self._regs[handle] = reg
        self._send(reg, now)
        return handle

    def unregister(self, handle: str, now: float) -> None:
        reg = self._regs.get(handle)
        if reg is None:
            return
        reg.unregistering = True
        reg.expires = 0
        reg.realms = set()
        self.ua._unschedule("register", handle)
        self._send(reg, now)

    def _build(self, reg: Registration) -> Request:
        ua = self.ua
        reg.cseq += 1
        h = Headers()
        h.add("Max-Forwards", 70)
        if ua.outbound_proxy is not None:
            h.add("Route", Address(ua.outbound_proxy))
        h.add("From", reg.aor.with_tag(reg.from_tag))
        h.add("To", reg.aor)
        h.add("Call-ID", reg.call_id)
        h.add("CSeq", f"{reg.cseq} REGISTER")
        h.add("Contact", reg.contact)
        h.add("Expires", reg.expires)
        h.add("User-Agent", ua.user_agent)
        return Request("REGISTER", reg.registrar, h)

    def _send(self, reg: Registration, now: float, request: Request | None = None) -> None:
        self.ua.forget_transaction(reg.key)
        self.ua.send_register(reg, request or self._build(reg), now)

    def on_response(self, ctx: ClientTx, response: Response, now: float) -> None:
        reg = self._regs.get(ctx.handle)
        status = response.status
        if reg is None or status < 200:
            return
        if status in (401, 407):
            request = self.ua.authorize(ctx, response, None)
            if request is not None:
                reg.cseq += 1
                request.headers.set("CSeq", f"{reg.cseq} REGISTER")
                self._send(reg, now, request)
                return
        elif status == 423 and not reg.retried_interval:
            minimum = (response.headers.get("min-expires") or "").strip()
            if minimum.isascii() and minimum.isdigit():
                reg.retried_interval = True
                reg.expires = int(minimum)
                self._send(reg, now)
                return
        if 200 <= status < 300:
            reg.realms = set()
            reg.retried_interval = False
            granted = self._granted(reg, response)
            self.ua._emit(Registered(reg.handle, granted))
            if reg.unregistering or granted == 0:
                self._drop(reg)
            else:
                self.ua._schedule("register", reg.handle, now + refresh_delay(granted))
            return
        self.ua._emit(RegistrationFailed(reg.handle, status, response.reason))
        self._drop(reg)

    def _granted(self, reg: Registration, response: Response) -> int:
        """The expiry the registrar gave our Contact (§10.2.4): its ``expires`` param, else the Expires header."""
        if reg.unregistering:
            return 0
        ours = str(reg.contact.uri)
        for contact in response.contacts:
            if str(contact.uri) == ours:
                value = contact.param("expires")
                if value is not None and value.strip().isascii() and value.strip().isdigit():
                    return int(value)
        header = (response.headers.get("expires") or "").strip()
        return int(header) if header.isascii() and header.isdigit() else reg.expires

    def on_timeout(self, ctx: ClientTx, status: int = 408, reason: str = "Request Timeout") -> None:
        reg = self._regs.get(ctx.handle)
        if reg is not None:
            self.ua._emit(RegistrationFailed(reg.handle, status, reason))
            self._drop(reg)

    def on_refresh(self, handle: str, now: float) -> None:
        reg = self._regs.get(handle)
        if reg is not None:
            reg.realms = set()
            self._send(reg, now)

    def _drop(self, reg: Registration) -> None:
        self.ua.forget_transaction(reg.key)
        self.ua._unschedule("register", reg.handle)
        self._regs.pop(reg.handle, None)
