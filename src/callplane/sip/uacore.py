"""Shared machinery of the UA cores: configuration, call bookkeeping, our client transactions, digest answers.

:class:`UaCore` holds the state every part of the :class:`~callplane.sip.ua.UserAgent` uses; the UAS half
(:mod:`.uas`: requests we receive) and the UAC half (:mod:`.uac`: responses to requests we sent) build on it, and
:mod:`.ua` joins them with the sans-IO surface and the engine API. See :mod:`.ua` for the theory of operation.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from callplane.core.ids import IdSource
from callplane.sip.calls import Call, CallStateError, PendingReinvite
from callplane.sip.dialog import next_hop, uri_destination
from callplane.sip.digest import Credentials, DigestClient, best_challenge
from callplane.sip.events import Event, MediaUpdated
from callplane.sip.headers import URI, Address, remember
from callplane.sip.message import Request, Response
from callplane.sip.regclient import Registration, RegistrationClient
from callplane.sip.sdp import MediaDescription, NegotiationError, SdpParseError, SessionDescription, describe
from callplane.sip.transaction import TimerConfig, TransactionLayer
from callplane.sip.transaction_events import Peer, TransactionKey

__all__ = ["ALLOWED", "KNOWN_METHODS", "ClientTx", "CredentialSource", "UaCore"]

logger = logging.getLogger(__name__)

#: Methods we recognise (RFC 3261 and common extensions); anything else gets 501 (§8.2.1).
KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH"}
    | {"MESSAGE", "REFER", "UPDATE"}
)
#: Methods we implement; a known method outside this list gets 405 with Allow (§8.2.1).
ALLOWED = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO")

#: Headers an incoming INVITE hands to the engine besides the typed fields (plus every ``X-`` header).
FORWARDED_HEADERS = frozenset(
    {"diversion", "history-info", "p-asserted-identity", "remote-party-id", "referred-by", "user-agent", "subject"}
)

CredentialSource = Credentials | Callable[[str], Credentials | None]
"""Outbound authentication: one set of credentials, or a lookup by realm."""


@dataclass(slots=True)
class ClientTx:
    """What one of our client transactions is for."""

    kind: str  # "invite", "reinvite", "cancel", "bye", "options", "info", "register"
    handle: str
    request: Request
    peer: Peer
    realms: set[str] = field(default_factory=set)
    ack: Request | None = None  # INVITE/re-INVITE: the ACK we sent for its 2xx


class UaCore:
    """State and helpers shared by the UAS and UAC cores (see :class:`~callplane.sip.ua.UserAgent`)."""

    def __init__(
        self,
        ids: IdSource,
        local: dict[str, tuple[str, int]],
        *,
        transport: str = "UDP",
        timers: TimerConfig | None = None,
        credentials: CredentialSource | None = None,
        outbound_proxy: str | None = None,
        user_agent: str = "callplane",
        supported: tuple[str, ...] = ("PCMU", "PCMA"),
        accept_register: bool = False,
        relay_reinvites: bool = False,
        tl: TransactionLayer | None = None,
    ) -> None:
        self.ids = ids
        self.local = {k.upper(): v for k, v in local.items()}
        self.transport = transport.upper()
        self.tl = tl if tl is not None else TransactionLayer(ids, timers, self.local)
        self.credentials = credentials
        proxy = URI.parse(outbound_proxy) if outbound_proxy else None
        self.outbound_proxy = proxy.with_param("lr") if proxy is not None and not proxy.lr else proxy
        self.user_agent = user_agent
        self.supported = supported
        self.accept_register = accept_register
        self.relay_reinvites = relay_reinvites  # hand peers' re-INVITEs to the engine (per call: Call.relay_reinvites)
        self.allow = ", ".join(ALLOWED + (("REGISTER",) if accept_register else ()))
        self._digest = DigestClient(ids)
        self._events: deque[Event] = deque()
        self._calls: dict[str, Call] = {}  # by handle
        self._by_call_id: dict[str, list[Call]] = {}  # a Call-ID can carry several calls (a spiral through a proxy)
        self._by_server_key: dict[TransactionKey, str] = {}
        self._final_tags: dict[TransactionKey, str | None] = {}  # To tag of INVITEs we ended (see UasCore)
        self._client: dict[TransactionKey, ClientTx] = {}
        self._timers: list[tuple[float, int, str, str]] = []  # (deadline, token, kind, handle)
        self._tokens: dict[tuple[str, str], int] = {}
        self._seq = 0
        self.faults = 0  # internal errors caught at the UA's error boundary (see UserAgent.on_tx_event)
        self.registrations = RegistrationClient(self)
        self._contact_texts: dict[tuple[str | None, str, str, int], str] = {}

    def call(self, handle: str) -> Call:
        """The live call record (read it, do not change it). Raises :class:`CallStateError` if unknown."""
        call = self._calls.get(handle)
        if call is None:
            raise CallStateError(f"no call {handle}")
        return call

    # -- finding calls (§12: a dialog is Call-ID plus both tags) -----------------------------------------------
    def _add_call(self, call: Call) -> None:
        self._calls[call.handle] = call
        self._by_call_id.setdefault(call.invite.call_id, []).append(call)

    def new_handle(self, call_id: str, local_tag: str) -> str:
        """A handle for a new call: its Call-ID, or ``Call-ID;tag=<our tag>`` when another live call already uses
        that Call-ID (our own INVITE spiralling back to us through a proxy)."""
        return call_id if call_id not in self._calls else f"{call_id};tag={local_tag}"

    def calls_with(self, call_id: str) -> list[Call]:
        """The live calls whose INVITE carries ``call_id`` (usually one)."""
        return self._by_call_id.get(call_id, [])

    def find_dialog(self, call_id: str, local_tag: str | None, remote_tag: str | None) -> Call | None:
        """The call owning dialog (Call-ID, local tag, remote tag): its confirmed dialog, or for a call we placed,
        any early dialog of a forked INVITE (§12, §13.2.2.4)."""
        if local_tag is None or remote_tag is None:
            return None
        for call in self._by_call_id.get(call_id, ()):  # calls_with, inline
            dialog = call.dialog
            if dialog is not None and dialog.id.local_tag == local_tag and dialog.id.remote_tag == remote_tag:
                return call
            if call.role == "uac" and call.invite.from_.tag == local_tag and remote_tag in call.early_tags:
                return call
        return None

    def merged(self, request: Request) -> bool:
        """§8.2.2.2: a new INVITE (no To tag) whose From tag, Call-ID and CSeq are those of an INVITE we already
        received in another transaction (it forked and reached us twice): answer 482."""
        calls = self._by_call_id.get(request.call_id)
        if not calls:
            return False  # a new Call-ID: the usual INVITE
        tag, seq = request.from_.tag, request.cseq.seq
        return any(
            call.role == "uas" and call.invite.from_.tag == tag and call.invite.cseq.seq == seq for call in calls
        )

    def _call_for_2xx(self, call_id: str, cseq: int) -> Call | None:
        """The call whose 2xx (to its INVITE or to the peer's re-INVITE) with this CSeq went unacknowledged."""
        for call in self.calls_with(call_id):
            pending = call.reinvite
            if pending is not None and not pending.outgoing and pending.request.cseq.seq == cseq:
                return call
            if call.role == "uas" and call.invite.cseq.seq == cseq:
                return call
        return None

    def _call_of(self, message: Request | Response) -> Call | None:
        """The call a message belongs to, by dialog where it has one (for the error boundary)."""
        calls = self.calls_with(message.call_id)
        if isinstance(message, Response):
            local, remote = message.from_.tag, message.to.tag
        else:
            local, remote = message.to.tag, message.from_.tag
        found = self.find_dialog(message.call_id, local, remote)
        if found is None:
            found = next((c for c in calls if c.invite.from_.tag in (local, remote)), None)
        return found if found is not None else (calls[0] if calls else None)

    def contact(self, user: str | None = None, transport: str | None = None) -> Address:
        """Our Contact for ``transport`` (§8.1.1.8)."""
        transport = (transport or self.transport).upper()
        host, port = self.local.get(transport, ("127.0.0.1", 5060))
        params = (("transport", transport.lower()),) if transport != "UDP" else ()
        return Address(URI("sip", host, user or None, None, port, params))

    def contact_text(self, user: str | None, transport: str) -> str:
        """``str(self.contact(user, transport))``, remembered: every dialog-creating response carries it."""
        key = (user, transport, *self.local.get(transport.upper(), ("", 0)))
        text = self._contact_texts.get(key)
        if text is None:
            text = str(self.contact(user, transport))
            remember(self._contact_texts, key, text, 256)
        return text

    def _ua_headers(self) -> tuple[tuple[str, str], ...]:
        return (("User-Agent", self.user_agent),)

    def _destination(self, request: Request) -> Peer:
        host, port, transport = uri_destination(next_hop(request), self.transport)
        return Peer(transport, host, port)

    def _track(self, key: TransactionKey, ctx: ClientTx, call: Call | None) -> None:
        self._client[key] = ctx
        if call is not None:
            call.keys.append(key)

    def _send(self, call: Call, kind: str, request: Request, now: float) -> TransactionKey:
        peer = self._destination(request)
        key = self.tl.send_request(request, peer, now)
        self._track(key, ClientTx(kind, call.handle, request, peer), call)
        return key

    def _send_in_dialog(self, call: Call, method: str, now: float) -> TransactionKey:
        assert call.dialog is not None
        request = call.dialog.create_request(method, extra=self._ua_headers())
        return self._send(call, method.lower(), request, now)

    def _send_reinvite(self, call: Call, sdp: SessionDescription, now: float) -> None:
        """A re-INVITE offering ``sdp`` (its ``o=`` version raised above our last one if needed), §14.1."""
        assert call.dialog is not None
        sdp = self._next_version(call, sdp)
        contact = self.contact(call.dialog.local.uri.user)
        request = call.dialog.create_request(
            "INVITE", contact=contact, body=bytes(sdp), content_type="application/sdp", extra=self._ua_headers()
        )
        key = self._send(call, "reinvite", request, now)
        call.reinvite = PendingReinvite(True, key, request, sdp)

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _schedule(self, kind: str, handle: str, deadline: float) -> None:
        self._seq += 1
        self._tokens[(kind, handle)] = self._seq
        heapq.heappush(self._timers, (deadline, self._seq, kind, handle))

    def _unschedule(self, kind: str, handle: str) -> None:
        self._tokens.pop((kind, handle), None)

    def _forget(self, call: Call) -> None:
        if self._calls.pop(call.handle, None) is not None:
            same = self._by_call_id.get(call.invite.call_id, [])
            if call in same:
                same.remove(call)
            if not same:
                self._by_call_id.pop(call.invite.call_id, None)
        self._by_server_key.pop(call.invite_key, None)
        for key in call.keys:
            self._client.pop(key, None)
        tokens = self._tokens  # _unschedule of each kind, inline: this runs for every call
        if tokens:
            handle = call.handle
            tokens.pop(("cancel", handle), None)
            tokens.pop(("ring", handle), None)
            tokens.pop(("reinvite", handle), None)

    def _end(self, call: Call, event: Event | None) -> None:
        """Report the call's last event once and drop it when it is over."""
        if event is not None and not call.ended_emitted:
            call.ended_emitted = True
            self._emit(event)
        if call.state == "ended":
            self._forget(call)

    def _next_version(self, call: Call, sdp: SessionDescription) -> SessionDescription:
        """RFC 3264 §8: each new local description has a higher ``o=`` version than the previous one."""
        previous = call.local_sdp
        if previous is not None and sdp.origin.version <= previous.origin.version and sdp != previous:
            return sdp.with_version(previous.origin.version + 1)
        return sdp

    def _describe(self, sdp: SessionDescription | None) -> MediaDescription | None:
        """The peer's audio stream, or None when ``sdp`` is absent or unusable (no common codec, no ``c=``...)."""
        if sdp is None:
            return None
        try:
            return describe(sdp, self.supported)
        except (NegotiationError, SdpParseError):
            return None

    @staticmethod
    def _sdp_of(message: Request | Response) -> SessionDescription | None:
        """The SDP body, if any (None for no body, another content type, or unparsable SDP)."""
        if not message.body or (message.content_type or "").split(";")[0].strip().lower() != "application/sdp":
            return None
        try:
            return SessionDescription.parse(message.body)
        except SdpParseError:
            return None

    def _credentials_for(self, call: Call | None, realm: str) -> Credentials | None:
        if call is not None and call.credentials is not None:
            return call.credentials
        source = self.credentials
        if source is None:
            return None
        creds = source(realm) if callable(source) else source
        if creds is not None and creds.realm is not None and creds.realm != realm:
            return None
        return creds

    def authorize(self, ctx: ClientTx, response: Response, call: Call | None) -> Request | None:
        """A copy of ``ctx.request`` answering the 401/407 ``response`` (§22.2), or None to give up: no usable
        challenge, no credentials, or a second non-stale challenge for a realm we already answered."""
        proxy = response.status == 407
        challenge = best_challenge(response.headers.get_all("proxy-authenticate" if proxy else "www-authenticate"))
        if challenge is None or (challenge.realm in ctx.realms and not challenge.stale):
            return None
        creds = self._credentials_for(call, challenge.realm)
        if creds is None:
            return None
        old = ctx.request
        headers = old.headers.copy()
        headers.remove("via")
        name = "Proxy-Authorization" if proxy else "Authorization"
        kept = [v for v in headers.get_all(name) if f'realm="{challenge.realm}"' not in v]
        headers.remove(name)
        for value in kept:
            headers.add(name, value)
        request = Request(old.method, old.uri, headers, old.body)
        request.headers.add(name, self._digest.authorization(challenge, creds, old.method, str(old.uri), old.body))
        ctx.realms.add(challenge.realm)
        return request

    def _reply(
        self,
        request: Request,
        status: int,
        now: float,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        headers: tuple[tuple[str, object], ...] = (),
    ) -> None:
        response = request.create_response(status, reason, to_tag=to_tag or self.ids.tag())
        for name, value in headers:
            response.headers.add(name, value)
        self.tl.send_response(response, now)

    def _dialog_response(
        self,
        call: Call,
        status: int,
        sdp: SessionDescription | None,
        now: float,
        request: Request | None = None,
        *,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """A dialog-creating (or re-INVITE) response: Record-Route copied and Contact added (§12.1.1)."""
        request = request or call.invite
        response = request.create_response(status, to_tag=call.local_tag)
        for value in request.headers.get_all("record-route"):
            response.headers.add("Record-Route", value)
        user = call.dialog.local.uri.user if call.dialog is not None else None
        response.headers.add("Contact", self.contact_text(user, call.peer.transport))
        if status >= 200:
            response.headers.add("Allow", self.allow)
        for name, value in headers:
            response.headers.add(name, value)
        if sdp is not None:
            response.headers.add("Content-Type", "application/sdp")
            response.body = bytes(sdp)
        self.tl.send_response(response, now)

    def _update_media(self, call: Call, remote: SessionDescription | None) -> None:
        media = self._describe(remote)
        if remote is None or media is None:
            return
        call.remote_sdp = remote
        self._emit(MediaUpdated(call.handle, media, str(remote)))

    def send_register(self, registration: Registration, request: Request, now: float) -> None:
        """Used by :class:`~callplane.sip.regclient.RegistrationClient` to start a REGISTER transaction."""
        peer = self._destination(request)
        key = self.tl.send_request(request, peer, now)
        self._client[key] = ClientTx("register", registration.handle, request, peer, registration.realms)
        registration.key = key

    def forget_transaction(self, key: TransactionKey | None) -> None:
        if key is not None:
            self._client.pop(key, None)
