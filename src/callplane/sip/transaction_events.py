"""Events of the SIP transaction layer (frozen, slotted values; see :mod:`callplane.sip.transaction`).

``TransactionLayer.next_event()`` yields these in order. Messages inside events must be treated as read-only.
(The UA/engine-facing call events live in :mod:`callplane.sip.events`.)

::

    RequestReceived(request, source, key)        a new request and its new server transaction (not ACK/CANCEL)
    CancelReceived(request, source, key, invite_key)
                                                 a new CANCEL (its own transaction, ``key``); ``invite_key`` is the
                                                 INVITE server transaction it cancels, or None (answer 481)
    AckReceived(request, source)                 an ACK outside any transaction: the ACK for a 2xx (§13.3.1.4)
    ResponseReceived(response, key)              a response for the client transaction ``key``: every 1xx and 2xx
                                                 (2xx retransmissions too, RFC 6026), a non-2xx final once
    StrayResponse(response, source)              a response that matches no transaction (§18.1.2: usually ignored;
                                                 a late 2xx retransmission can still be ACKed by the dialog)
    TransactionTimeout(key, timer)               Timer B or F (client: treat as 408) or H (server: no ACK)
    TransportError(key)                          the transport could not reach the peer (§17.1.4: treat as 503)
    AckTimeout(key, call_id, cseq)               our 2xx to an INVITE was not ACKed within 64*T1 (§13.3.1.4: BYE)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from callplane.sip.headers import quick_init
from callplane.sip.message import Request, Response

__all__ = [
    "Peer",
    "TransactionKey",
    "TxEvent",
    "RequestReceived",
    "CancelReceived",
    "AckReceived",
    "ResponseReceived",
    "StrayResponse",
    "TransactionTimeout",
    "AckTimeout",
    "TransportError",
]


class Peer(NamedTuple):
    """A transport address: where a message came from or goes to. For TCP it also names the connection.

    A named tuple rather than a frozen dataclass, as :class:`TransactionKey`: both are dict keys on every message's
    path (transactions by key, by peer), and a tuple hashes and compares in C."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """TCP/TLS/SCTP/WS carry their own retransmission (§17.1.1.2)."""
        return self.transport != "UDP"


class TransactionKey(NamedTuple):
    """Identifies one transaction (§17.1.3 client: branch + CSeq method; §17.2.3 server: branch + sent-by + method).

    ``role`` is ``"client"`` or ``"server"``; ``method`` is the CSeq method (``INVITE`` for the ACK of an INVITE).
    """

    role: str
    branch: str
    method: str
    sent_by: str = ""


@quick_init
@dataclass(frozen=True, slots=True)
class RequestReceived:
    request: Request
    source: Peer
    key: TransactionKey


@quick_init
@dataclass(frozen=True, slots=True)
class CancelReceived:
    request: Request
    source: Peer
    key: TransactionKey
    invite_key: TransactionKey | None


@quick_init
@dataclass(frozen=True, slots=True)
class AckReceived:
    request: Request
    source: Peer


@quick_init
@dataclass(frozen=True, slots=True)
class ResponseReceived:
    response: Response
    key: TransactionKey


@quick_init
@dataclass(frozen=True, slots=True)
class StrayResponse:
    response: Response
    source: Peer


@quick_init
@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    key: TransactionKey
    timer: str


@quick_init
@dataclass(frozen=True, slots=True)
class AckTimeout:
    key: TransactionKey
    call_id: str
    cseq: int


@quick_init
@dataclass(frozen=True, slots=True)
class TransportError:
    key: TransactionKey


TxEvent = (
    RequestReceived
    | CancelReceived
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
    | AckTimeout
    | TransportError
)
