"""Dialogs (RFC 3261 §12): identity, route set, remote target, sequence numbers, and in-dialog requests.

Theory of operation
-------------------
A dialog is created by the UAC core from a 1xx-with-To-tag or a 2xx to its INVITE (§12.1.2), or by the UAS core when
it sends a 1xx/2xx to an INVITE (§12.1.1). It starts ``EARLY`` (from a provisional) or ``CONFIRMED`` (from a 2xx) and
ends ``TERMINATED`` (BYE, a failure of the early dialog, or the ACK/2xx timeouts). Transitions live in
:data:`TRANSITIONS`; :meth:`Dialog.apply` is the only place that changes the state and raises
:class:`DialogStateError` for an event the table does not allow in the current state.

The dialog builds its own in-dialog requests (§12.2.1.1): To/From/Call-ID from the dialog, CSeq from the local
sequence number, the remote target as Request-URI and the route set as Route headers (loose routing only: the first
route must carry ``;lr``; strict routing per §12.2.1.1's second case is not supported and is treated as loose). The
caller adds the top Via (transport address and a fresh branch). :meth:`Dialog.check_request` applies the remote
sequence number rule of §12.2.2 (500 for an out-of-order request).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from callplane.core.errors import SipError
from callplane.sip.headers import URI, Address, CSeq, Via, quick_init
from callplane.sip.message import DEFAULT_MAX_FORWARDS, Headers, Request, Response

__all__ = [
    "Dialog",
    "DialogEvent",
    "DialogId",
    "DialogState",
    "DialogStateError",
    "TRANSITIONS",
    "next_hop",
    "uri_destination",
]


logger = logging.getLogger(__name__)


class DialogStateError(SipError):
    """An event arrived that the dialog state table does not allow (a bug in the caller)."""


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"

    # Members are singletons compared by identity: hash them so too, in C (Enum's own __hash__ is Python code, run
    # for every lookup in TRANSITIONS).
    __hash__ = object.__hash__


class DialogEvent(enum.Enum):
    PROVISIONAL = "provisional"  # another 1xx with the same tags (early stays early)
    CONFIRM = "confirm"  # a 2xx to the INVITE
    REFRESH = "refresh"  # a target refresh (re-INVITE, its 2xx)
    TERMINATE = "terminate"  # BYE sent or received, non-2xx final to the INVITE, timeouts

    __hash__ = object.__hash__  # as DialogState's


TRANSITIONS: dict[tuple[DialogState, DialogEvent], DialogState] = {
    (DialogState.EARLY, DialogEvent.PROVISIONAL): DialogState.EARLY,
    (DialogState.EARLY, DialogEvent.CONFIRM): DialogState.CONFIRMED,
    (DialogState.EARLY, DialogEvent.TERMINATE): DialogState.TERMINATED,
    (DialogState.CONFIRMED, DialogEvent.CONFIRM): DialogState.CONFIRMED,  # 2xx retransmission, re-INVITE 2xx
    (DialogState.CONFIRMED, DialogEvent.REFRESH): DialogState.CONFIRMED,
    (DialogState.CONFIRMED, DialogEvent.TERMINATE): DialogState.TERMINATED,
    (DialogState.TERMINATED, DialogEvent.TERMINATE): DialogState.TERMINATED,
}


@quick_init
@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID plus local and remote tags (§12): the key of a dialog as seen from our side."""

    call_id: str
    local_tag: str
    remote_tag: str

    def __str__(self) -> str:
        return f"{self.call_id};local={self.local_tag};remote={self.remote_tag}"


def _record_route(message: Request | Response) -> list[Address]:
    return [Address.parse(v) for v in message.headers.get_all("record-route")]


class Dialog:
    """One dialog's state (§12.1). Mutable on purpose: the UA core owns it and changes it through its methods."""

    __slots__ = (
        "id",
        "state",
        "local",
        "remote",
        "remote_target",
        "route_set",
        "local_seq",
        "remote_seq",
        "secure",
        "is_uac",
    )

    def __init__(
        self,
        id: DialogId,
        *,
        local: Address,
        remote: Address,
        remote_target: URI,
        route_set: tuple[Address, ...],
        local_seq: int | None,
        remote_seq: int | None,
        state: DialogState,
        is_uac: bool,
        secure: bool = False,
    ) -> None:
        self.id = id
        self.state = state
        self.local = local  # our From in requests we send; carries our tag
        self.remote = remote  # their address; carries their tag
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure
        self.is_uac = is_uac

    def __repr__(self) -> str:
        return f"<Dialog {self.id} {self.state.value}>"

    # -- creation -----------------------------------------------------------------------------------------------
    @classmethod
    def from_response(cls, request: Request, response: Response) -> Dialog:
        """The UAC side (§12.1.2), from a 1xx with a To tag or a 2xx to ``request``."""
        remote_tag = response.to.tag
        local_tag = request.from_.tag
        if remote_tag is None or local_tag is None:
            raise DialogStateError("a dialog needs both tags")
        contacts = response.contacts
        target = contacts[0].uri if contacts else request.uri
        state = DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY
        return cls(
            DialogId(request.call_id, local_tag, remote_tag),
            local=request.from_,
            remote=response.to,
            remote_target=target,
            route_set=tuple(reversed(_record_route(response))),
            local_seq=request.cseq.seq,
            remote_seq=None,
            state=state,
            is_uac=True,
            secure=request.uri.scheme == "sips",
        )

    @classmethod
    def from_request(cls, request: Request, local_tag: str, *, confirmed: bool = False) -> Dialog:
        """The UAS side (§12.1.1), when we answer ``request`` with a 1xx or 2xx carrying ``local_tag``."""
        remote_tag = request.from_.tag
        if remote_tag is None:
            raise DialogStateError("a dialog needs the remote From tag")
        contacts = request.contacts
        if not contacts:
            raise DialogStateError("INVITE without Contact")
        return cls(
            DialogId(request.call_id, local_tag, remote_tag),
            local=request.to.with_tag(local_tag),
            remote=request.from_,
            remote_target=contacts[0].uri,
            route_set=tuple(_record_route(request)),
            local_seq=None,
            remote_seq=request.cseq.seq,
            state=DialogState.CONFIRMED if confirmed else DialogState.EARLY,
            is_uac=False,
            secure=request.uri.scheme == "sips",
        )

    # -- state --------------------------------------------------------------------------------------------------
    def apply(self, event: DialogEvent) -> DialogState:
        """Move along :data:`TRANSITIONS`; raise :class:`DialogStateError` for a transition the table lacks."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise DialogStateError(f"dialog {self.id}: {event.value} not allowed in {self.state.value}")
        if new is not self.state and logger.isEnabledFor(logging.DEBUG):  # no Enum.value lookups when off
            logger.debug("[%s] dialog %s -> %s", self.id.call_id, self.state.value, new.value)
        self.state = new
        return new

    def confirm(self, response: Response) -> None:
        """A 2xx arrived for the INVITE of an early dialog (§13.2.2.4): the route set and target are recomputed."""
        if self.state is DialogState.EARLY and self.is_uac:
            self.route_set = tuple(reversed(_record_route(response)))
        self.refresh_target(response)
        self.apply(DialogEvent.CONFIRM)

    def refresh_target(self, message: Request | Response) -> None:
        """A target refresh request or its 2xx replaces the remote target with its Contact (§12.2)."""
        contacts = message.contacts
        if contacts:
            self.remote_target = contacts[0].uri

    def check_request(self, request: Request) -> int | None:
        """§12.2.2: None if ``request`` is in order (and record its CSeq), else the status to answer (500).

        ACK and CANCEL reuse the INVITE's number and are exempt.
        """
        if request.method in ("ACK", "CANCEL"):
            return None
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            return 500
        self.remote_seq = seq
        return None

    # -- requests -----------------------------------------------------------------------------------------------
    def next_seq(self) -> int:
        """Take the next local CSeq number (§12.2.1.1; an empty local sequence starts at 1)."""
        self.local_seq = (self.local_seq or 0) + 1
        return self.local_seq

    def create_request(
        self,
        method: str,
        via: Via | None = None,
        *,
        cseq: int | None = None,
        contact: Address | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        """An in-dialog request (§12.2.1.1). ``cseq`` given: reuse it (ACK for a 2xx); else take the next number."""
        number = cseq if cseq is not None else self.next_seq()
        headers = Headers()
        if via is not None:  # requests sent through a client transaction get their Via from the transaction layer
            headers.add("Via", via)
        headers.add("Max-Forwards", DEFAULT_MAX_FORWARDS)
        for route in self.route_set:
            headers.add("Route", route)
        headers.add("From", self.local)
        headers.add("To", self.remote)
        headers.add("Call-ID", self.id.call_id)
        headers.add("CSeq", CSeq(number, method))
        if contact is not None:
            headers.add("Contact", contact)
        for name, value in extra:
            headers.add(name, value)
        if body and content_type is not None:
            headers.add("Content-Type", content_type)
        return Request(method, self.remote_target, headers, body)


def next_hop(request: Request) -> URI:
    """Where a request goes first (§8.1.2, loose routing): the top Route if any, else the Request-URI."""
    routes = request.headers.get_all("route")
    if routes:
        return Address.parse(routes[0]).uri
    return request.uri


def uri_destination(uri: URI, default_transport: str = "UDP") -> tuple[str, int, str]:
    """(host, port, transport) for a URI without DNS (RFC 3263 reduced to literal hosts): maddr wins, then host;
    port defaults to 5060 (5061 for sips); transport from ``;transport=``."""
    secure = uri.scheme == "sips"
    transport = uri.transport or ("TLS" if secure else default_transport)
    host = uri.maddr or uri.host
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, uri.port or (5061 if secure or transport == "TLS" else 5060), transport
