"""SIP transactions (RFC 3261 §17, with the Accepted states of RFC 6026), sans-IO.

Theory of operation
-------------------
A :class:`TransactionLayer` owns every transaction of an endpoint. It never reads a clock or touches a socket:

* inputs are ``receive(msg, source, now)`` for a parsed message from the transport, ``send_request`` /
  ``send_response`` / ``send_stateless`` from the transaction user (the UA core), and ``handle_timer(now)``;
* outputs are events (:mod:`callplane.sip.transaction_events`, drained with ``next_event()``) and datagrams
  (``datagrams_to_send()`` -> ``[(bytes, Peer)]``); ``get_timer()`` returns the earliest deadline.

Timers live in one heap of ``(deadline, seq, transaction, name, token)`` entries. A transaction re-arming or
cancelling a timer bumps its token, so stale heap entries are skipped when they surface (lazy deletion). The layer
counts stale entries and rebuilds the heap once they outnumber the live ones, so an ended transaction is not kept
alive by the heap until its longest timer (up to 64*T1) would have surfaced. Transactions are also indexed by the
peer they send to, so ``transport_failed`` touches only that peer's transactions.

The four state machines are the RFC figures 5-8, amended by RFC 6026 (client and server INVITE "Accepted" state):
each transaction class lists its legal transitions in ``TRANSITIONS`` and changes state only through
``_set_state``, which raises :class:`TransactionError` on an illegal move and logs ``old -> new``.

Timers (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2, table 4), T1/T2/T4 from :class:`TimerConfig`::

    A  INVITE request retransmit      T1, doubling (unreliable only)     B  INVITE timeout          64*T1
    D  wait for final retransmits     32 s unreliable, 0 reliable        M  2xx retransmits (6026)  64*T1
    E  non-INVITE retransmit          T1, doubling to T2 (unreliable)    F  non-INVITE timeout      64*T1
    K  wait for response retransmits  T4 unreliable, 0 reliable
    G  INVITE final retransmit        T1, doubling to T2 (unreliable)    H  wait for ACK            64*T1
    I  wait for ACK retransmits       T4 unreliable, 0 reliable          J  wait for request retr.  64*T1 / 0
    L  Accepted (6026)                64*T1
    2xx  the UAS core's 2xx retransmission (§13.3.1.4): T1 doubling to T2 until the ACK, unreliable only;
         64*T1 without ACK -> AckTimeout. The layer does this for the UA: the ACK for a 2xx is recognised by
         Call-ID + CSeq number, stops the retransmission and is still passed up as AckReceived.

Behaviour the transaction user can rely on:

* ``send_request`` adds a top Via (``SIP/2.0/<transport> <local>;branch=z9hG4bK...;rport``) when the request has
  none, adds a branch to a top Via without one, and adds ``Max-Forwards: 70`` when absent. A CANCEL must carry the
  INVITE's top Via (same branch, §9.1); it then forms its own client transaction (key method ``CANCEL``).
* The INVITE client transaction ACKs non-2xx finals itself (§17.1.1.3) and absorbs their retransmissions; 2xx
  responses (and their retransmissions) are passed up: the ACK for a 2xx is the dialog layer's
  (``send_stateless``).
* The INVITE server transaction sends ``100 Trying`` (``auto_trying=True``, §17.2.1) with the next
  ``datagrams_to_send()``, unless the transaction user has responded by then: a TU that answers while handling the
  ``RequestReceived`` event (before the adapter transmits) is known to respond within 200 ms, and its 1xx or final
  response makes the 100 redundant. Retransmitted requests are absorbed by re-sending the last response; a
  retransmitted INVITE never becomes a second event.
* Requests whose branch lacks the magic cookie (RFC 2543 peers) are matched on Call-ID, From tag, CSeq number,
  top Via sent-by and branch (a simplified §17.2.3 fallback).
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from callplane.core.errors import SipError
from callplane.core.ids import IdSource
from callplane.sip.headers import MAGIC_COOKIE, CSeq, Via
from callplane.sip.message import DEFAULT_MAX_FORWARDS, Headers, Message, Request, Response, response_destination
from callplane.sip.transaction_events import (
    AckReceived,
    AckTimeout,
    CancelReceived,
    Peer,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionKey,
    TransactionTimeout,
    TransportError,
    TxEvent,
)

__all__ = [
    "SUPPORTED_TRANSPORTS",
    "TimerConfig",
    "TransactionError",
    "UnsupportedTransport",
    "TransactionLayer",
    "client_key",
    "server_key",
]

logger = logging.getLogger(__name__)


class TransactionError(SipError):
    """The transaction user misused the layer (e.g. a response with no server transaction to carry it)."""


class UnsupportedTransport(TransactionError):
    """The destination needs a transport this endpoint does not have: TLS, WS, WSS or SCTP (a ``sips:`` URI or a
    ``;transport=`` parameter), or UDP/TCP when that socket is not bound. Nothing was sent."""


SUPPORTED_TRANSPORTS = frozenset({"UDP", "TCP"})
"""What :class:`~callplane.sip.aio.SipEndpoint` can send on. A ``sips:`` destination must not fall back to TCP."""


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 timer values in seconds (§17.1.1.1, table 4)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    td: float = 32.0

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable), L, M and the 2xx ACK wait."""
        return 64 * self.t1


def client_key(msg: Message) -> TransactionKey | None:
    """§17.1.3: top Via branch + CSeq method. ``None`` when the top Via has no branch."""
    branch = msg.via.branch
    if not branch:
        return None
    return TransactionKey("client", branch, msg.cseq.method)


def server_key(request: Message) -> TransactionKey:
    """§17.2.3: branch + sent-by + method, the ACK mapping to its INVITE. RFC 2543 fallback without the cookie."""
    cache = request.headers._cache  # the views a parsed message (or a response made from one) already has
    via: Via = cache.get("via") or request.via
    cseq: CSeq = cache.get("cseq") or request.cseq
    method = cseq.method
    if method == "ACK":
        method = "INVITE"
    sent_by = f"{via.host.lower()}:{via.port or ''}"
    branch = via.branch or ""
    if not branch.startswith(MAGIC_COOKIE):
        branch = f"2543|{branch}|{request.call_id}|{request.from_.tag or ''}|{request.cseq.seq}"
    # tuple.__new__ directly: a NamedTuple's own __new__ is Python code, and this runs several times per call.
    return _new_tuple(TransactionKey, ("server", branch, method, sent_by))


_new_tuple = tuple.__new__

_Timer = tuple[float, int, "_Transaction", str, int]


class _Transaction:
    """Common machinery: state, timers, the last message to retransmit."""

    TRANSITIONS: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    __slots__ = ("layer", "key", "state", "peer", "fallback", "last", "timers", "interval")

    def __init__(self, layer: TransactionLayer, key: TransactionKey, state: str, peer: Peer) -> None:
        self.layer = layer
        self.key = key
        self.state = state
        self.peer = peer
        self.fallback: Peer | None = None  # server, reliable: where responses go once the connection is gone
        self.last: bytes | None = None
        self.timers: dict[str, int] = {}
        self.interval = 0.0

    def _set_state(self, new: str) -> None:
        old = self.state
        if (old, new) not in self.TRANSITIONS:
            raise TransactionError(f"illegal transition {old} -> {new} in {type(self).__name__}")
        self.state = new
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("[%s %s] %s -> %s", self.key.branch, self.key.method, old, new)
        if new == "terminated":
            self.layer._stale += len(self.timers)
            self.timers.clear()
            self.layer._remove(self)

    def _arm(self, name: str, delay: float, now: float) -> None:
        self.layer._schedule(self, name, now + delay)

    def _disarm(self, *names: str) -> None:
        for name in names:
            if self.timers.pop(name, None) is not None:
                self.layer._stale += 1

    def _transmit(self, data: bytes) -> None:
        self.last = data
        self.layer._out.append((data, self.peer))

    def _retransmit(self) -> None:
        if self.last is not None:
            self.layer._out.append((self.last, self.peer))

    def on_timer(self, name: str, now: float) -> None:
        raise NotImplementedError


class _ClientInvite(_Transaction):
    """Figure 5 + RFC 6026 §7.2: calling -> proceeding -> completed | accepted -> terminated."""

    TRANSITIONS = frozenset(
        {
            ("calling", "proceeding"),
            ("calling", "completed"),
            ("calling", "accepted"),
            ("calling", "terminated"),
            ("proceeding", "completed"),
            ("proceeding", "accepted"),
            ("proceeding", "terminated"),
            ("completed", "terminated"),
            ("accepted", "terminated"),
        }
    )
    __slots__ = ("request", "ack")

    def __init__(self, layer: TransactionLayer, key: TransactionKey, peer: Peer, request: Request) -> None:
        super().__init__(layer, key, "calling", peer)
        # A snapshot: the UA may reuse and change its Request object (e.g. to retry with credentials). Dropped with
        # the INVITE's bytes once a 2xx arrives: Accepted only passes 2xx retransmissions up for 64*T1.
        self.request: Request | None = Request(request.method, request.uri, request.headers.copy(), request.body)
        self.ack: bytes | None = None

    def start(self, now: float) -> None:
        cfg = self.layer.timers
        assert self.request is not None
        self._transmit(bytes(self.request))
        if not self.peer.reliable:
            self.interval = cfg.t1
            self._arm("A", cfg.t1, now)
        self._arm("B", cfg.timeout, now)

    def on_response(self, response: Response, now: float) -> None:
        status = response.status
        state = self.state
        if status < 200:
            if state in ("calling", "proceeding"):
                if state == "calling":
                    self._set_state("proceeding")
                    self._disarm("A", "B")
                self.layer._emit(ResponseReceived(response, self.key))
        elif status < 300:
            if state in ("calling", "proceeding"):
                self._disarm("A", "B")
                self._set_state("accepted")
                self.request = self.last = None
                self._arm("M", self.layer.timers.timeout, now)
                self.layer._emit(ResponseReceived(response, self.key))
            elif state == "accepted":
                self.layer._emit(ResponseReceived(response, self.key))
        elif state in ("calling", "proceeding"):
            self._disarm("A", "B")
            self.ack = bytes(self._build_ack(response))
            self.layer._out.append((self.ack, self.peer))
            self.layer._emit(ResponseReceived(response, self.key))
            self._set_state("completed")
            if self.peer.reliable:
                self._set_state("terminated")
            else:
                self._arm("D", self.layer.timers.td, now)
        elif state == "completed" and self.ack is not None:
            self.layer._out.append((self.ack, self.peer))

    def _build_ack(self, response: Response) -> Request:
        """§17.1.1.3: same Request-URI, Call-ID, From, CSeq number, top Via and Route; To from the response."""
        request = self.request
        assert request is not None  # a non-2xx final comes before Accepted
        src = request.headers
        h = Headers()
        h.add("Via", src.get_all("via")[0])
        for route in src.get_all("route"):
            h.add("Route", route)
        h.add("Max-Forwards", src.get("max-forwards") or DEFAULT_MAX_FORWARDS)
        h.add("From", src.get("from"))
        h.add("To", response.headers.get("to"))
        h.add("Call-ID", src.get("call-id"))
        h.add("CSeq", f"{request.cseq.seq} ACK")
        return Request("ACK", request.uri, h)

    def on_timer(self, name: str, now: float) -> None:
        if name == "A" and self.state == "calling":
            self._retransmit()
            self.interval *= 2
            self._arm("A", self.interval, now)
        elif name == "B" and self.state == "calling":
            self.layer._emit(TransactionTimeout(self.key, "B"))
            self._set_state("terminated")
        elif name in ("D", "M"):
            self._set_state("terminated")


# Figures 6 and 8: both non-INVITE transactions move trying -> proceeding -> completed -> terminated.
_NON_INVITE_TRANSITIONS = frozenset(
    {
        ("trying", "proceeding"),
        ("trying", "completed"),
        ("trying", "terminated"),
        ("proceeding", "completed"),
        ("proceeding", "terminated"),
        ("completed", "terminated"),
    }
)


class _ClientNonInvite(_Transaction):
    """Figure 6: trying -> proceeding -> completed -> terminated."""

    TRANSITIONS = _NON_INVITE_TRANSITIONS
    __slots__ = ()

    def start(self, request: Request, now: float) -> None:
        cfg = self.layer.timers
        self._transmit(bytes(request))
        if not self.peer.reliable:
            self.interval = cfg.t1
            self._arm("E", cfg.t1, now)
        self._arm("F", cfg.timeout, now)

    def on_response(self, response: Response, now: float) -> None:
        state = self.state
        if state not in ("trying", "proceeding"):
            return  # completed: absorb retransmitted finals
        if response.status < 200:
            if state == "trying":
                self._set_state("proceeding")
            self.layer._emit(ResponseReceived(response, self.key))
            return
        self._disarm("E", "F")
        self.layer._emit(ResponseReceived(response, self.key))
        self._set_state("completed")
        if self.peer.reliable:
            self._set_state("terminated")
        else:
            self._arm("K", self.layer.timers.t4, now)

    def on_timer(self, name: str, now: float) -> None:
        cfg = self.layer.timers
        if name == "E" and self.state in ("trying", "proceeding"):
            self._retransmit()
            self.interval = min(2 * self.interval, cfg.t2) if self.state == "trying" else cfg.t2
            self._arm("E", self.interval, now)
        elif name == "F" and self.state in ("trying", "proceeding"):
            self.layer._emit(TransactionTimeout(self.key, "F"))
            self._set_state("terminated")
        elif name == "K":
            self._set_state("terminated")


class _ServerInvite(_Transaction):
    """Figure 7 + RFC 6026 §7.1: proceeding -> completed -> confirmed | accepted -> terminated."""

    TRANSITIONS = frozenset(
        {
            ("proceeding", "completed"),
            ("proceeding", "accepted"),
            ("proceeding", "terminated"),
            ("completed", "confirmed"),
            ("completed", "terminated"),
            ("confirmed", "terminated"),
            ("accepted", "terminated"),
        }
    )
    __slots__ = ("acked", "call_id", "cseq", "ok")

    def __init__(self, layer: TransactionLayer, key: TransactionKey, peer: Peer, request: Request) -> None:
        super().__init__(layer, key, "proceeding", peer)
        self.acked = False
        self.call_id = request.call_id
        self.cseq = request.cseq.seq
        self.ok: bytes | None = None

    def on_request(self, request: Request, source: Peer, now: float) -> None:
        state = self.state
        if request.method == "ACK":
            if state == "completed":
                self._disarm("G", "H")
                self._set_state("confirmed")
                if self.peer.reliable:
                    self._set_state("terminated")
                else:
                    self._arm("I", self.layer.timers.t4, now)
            elif state == "accepted":
                # An ACK for our 2xx that reuses the INVITE's branch (RFC 2543-style peers): still the dialog's.
                self.on_2xx_ack()
                self.layer._emit(AckReceived(request, source))
            # confirmed/proceeding: absorbed
        elif state in ("proceeding", "completed"):
            self._retransmit()
        # accepted: absorb retransmitted INVITEs (RFC 6026 §7.1); the 2xx keeps being retransmitted by timer

    def on_response(self, response: Response, data: bytes, now: float) -> None:
        state = self.state
        cfg = self.layer.timers
        status = response.status
        if state == "accepted" and 200 <= status < 300:
            self.layer._out.append((data, self.peer))
            return
        if state != "proceeding":
            raise TransactionError(f"cannot send {status} in state {state}")
        self._transmit(data)
        if status < 200:
            return
        if status < 300:
            self.ok = data
            self._set_state("accepted")
            self.layer._awaiting_ack[(self.call_id, self.cseq)] = self
            self.layer._schedule(self, "L", now + cfg.timeout)
            if not self.peer.reliable:
                self.interval = cfg.t1
                self.layer._schedule(self, "2xx", now + cfg.t1)
            return
        self._set_state("completed")
        if not self.peer.reliable:
            self.interval = cfg.t1
            self._arm("G", cfg.t1, now)
        self._arm("H", cfg.timeout, now)

    def on_2xx_ack(self) -> None:
        self.acked = True
        self._disarm("2xx")

    def on_timer(self, name: str, now: float) -> None:
        cfg = self.layer.timers
        state = self.state
        if name == "G" and state == "completed":
            self._retransmit()
            self.interval = min(2 * self.interval, cfg.t2)
            self._arm("G", self.interval, now)
        elif name == "H" and state == "completed":
            self.layer._emit(TransactionTimeout(self.key, "H"))
            self._set_state("terminated")
        elif name == "I":
            self._set_state("terminated")
        elif name == "2xx" and state == "accepted" and not self.acked and self.ok is not None:
            self.layer._out.append((self.ok, self.peer))
            self.interval = min(2 * self.interval, cfg.t2)
            self._arm("2xx", self.interval, now)
        elif name == "L":
            if not self.acked:
                self.layer._emit(AckTimeout(self.key, self.call_id, self.cseq))
            self._set_state("terminated")


class _ServerNonInvite(_Transaction):
    """Figure 8: trying -> proceeding -> completed -> terminated."""

    TRANSITIONS = _NON_INVITE_TRANSITIONS
    __slots__ = ()

    def on_request(self, request: Request, source: Peer, now: float) -> None:
        if self.state in ("proceeding", "completed"):
            self._retransmit()
        # trying: absorbed, nothing sent yet

    def on_response(self, response: Response, data: bytes, now: float) -> None:
        state = self.state
        if state not in ("trying", "proceeding"):
            raise TransactionError(f"cannot send {response.status} in state {state}")
        self._transmit(data)
        if response.status < 200:
            if state == "trying":
                self._set_state("proceeding")
            return
        self._set_state("completed")
        if self.peer.reliable:
            self._set_state("terminated")
        else:
            self.layer._schedule(self, "J", now + self.layer.timers.timeout)

    def on_timer(self, name: str, now: float) -> None:
        if name == "J":
            self._set_state("terminated")


_Server = _ServerInvite | _ServerNonInvite
_Client = _ClientInvite | _ClientNonInvite


class TransactionLayer:
    """All client and server transactions of one endpoint; see the module docstring for the contract.

    ``local`` maps a transport name (``"UDP"``, ``"TCP"``) to the ``(host, port)`` written as Via sent-by.
    """

    def __init__(
        self,
        ids: IdSource,
        timers: TimerConfig | None = None,
        local: dict[str, tuple[str, int]] | None = None,
        *,
        auto_trying: bool = True,
    ) -> None:
        self.ids = ids
        self.timers = timers or TimerConfig()
        self.local: dict[str, tuple[str, int]] = dict(local or {})
        self.auto_trying = auto_trying
        self._clients: dict[TransactionKey, _Client] = {}
        self._servers: dict[TransactionKey, _Server] = {}
        self._awaiting_ack: dict[tuple[str, int], _ServerInvite] = {}
        self._heap: list[_Timer] = []
        self._stale = 0  # heap entries whose token no longer matches (cancelled, re-armed, transaction ended)
        self._by_peer: dict[Peer, dict[_Transaction, None]] = {}
        self._seq = 0
        self._events: deque[TxEvent] = deque()
        self._out: list[tuple[bytes, Peer]] = []
        self._trying: list[tuple[_ServerInvite, Request]] = []

    # Outputs ---------------------------------------------------------------------------------------------------
    def next_event(self) -> TxEvent | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        """Drain what must be transmitted, in order (first the 100 Trying of INVITEs the TU has not answered yet)."""
        if self._trying:
            self._send_trying()
        out, self._out = self._out, []
        return out

    def _send_trying(self) -> None:
        pending, self._trying = self._trying, []
        trying: list[tuple[bytes, Peer]] = []
        for inv, request in pending:
            if inv.state == "proceeding" and inv.last is None:
                response = request.create_response(100)
                data = bytes(response)
                inv.last = data
                trying.append((data, inv.peer))
        self._out[:0] = trying

    def get_timer(self) -> float | None:
        """The earliest live deadline, or None."""
        heap = self._heap
        while heap:
            deadline, _, txn, name, token = heap[0]
            if txn.timers.get(name) == token:
                return deadline
            heapq.heappop(heap)
            self._stale -= 1
        return None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        while self._heap and self._heap[0][0] <= now:  # re-read: a transaction ending may rebuild the heap
            _, _, txn, name, token = heapq.heappop(self._heap)
            if txn.timers.get(name) != token:
                self._stale -= 1
                continue
            del txn.timers[name]
            txn.on_timer(name, now)

    # Introspection ---------------------------------------------------------------------------------------------
    def state(self, key: TransactionKey) -> str | None:
        """State name of a live transaction (``"proceeding"``, ``"completed"``...), else None."""
        txn = (self._servers if key.role == "server" else self._clients).get(key)
        return txn.state if txn is not None else None

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    def bound_to(self, peer: Peer) -> bool:
        """True while a live transaction sends to ``peer`` (the adapter keeps such a connection open)."""
        return bool(self._by_peer.get(peer))

    @property
    def pending_timers(self) -> int:
        """Entries on the timer heap, live or cancelled (bounded at about twice the live timers plus 64)."""
        return len(self._heap)

    # Inputs ----------------------------------------------------------------------------------------------------
    def receive(self, msg: Request | Response, source: Peer, now: float) -> None:
        """A message from the transport (already parsed and validated by ``parse_message``)."""
        if isinstance(msg, Response):
            key = client_key(msg)
            client = self._clients.get(key) if key is not None else None
            if client is None:
                self._emit(StrayResponse(msg, source))
            else:
                client.on_response(msg, now)
            return
        skey = server_key(msg)
        server = self._servers.get(skey)
        if server is not None:
            server.on_request(msg, source, now)
            return
        method = msg.method
        if method == "ACK":
            waiting = self._awaiting_ack.get((msg.call_id, msg.cseq.seq))
            if waiting is not None:
                waiting.on_2xx_ack()
            self._events.append(AckReceived(msg, source))
            return
        if method == "INVITE":
            inv = _ServerInvite(self, skey, self._reply_peer(msg, source), msg)
            if source.transport != "UDP":  # fallback stays None over UDP: no call for it
                inv.fallback = self._reconnect_peer(msg, source)
            self._servers[skey] = inv
            self._index(inv)
            self._events.append(RequestReceived(msg, source, skey))
            if self.auto_trying:
                self._trying.append((inv, msg))
            return
        nin = self._servers[skey] = _ServerNonInvite(self, skey, "trying", self._reply_peer(msg, source))
        if source.transport != "UDP":
            nin.fallback = self._reconnect_peer(msg, source)
        self._index(nin)
        if method == "CANCEL":
            ikey = TransactionKey("server", skey.branch, "INVITE", skey.sent_by)
            self._emit(CancelReceived(msg, source, skey, ikey if ikey in self._servers else None))
        else:
            self._events.append(RequestReceived(msg, source, skey))

    def send_request(self, request: Request, dest: Peer, now: float) -> TransactionKey:
        """Start a client transaction (§17.1) for ``request`` towards ``dest`` and return its key."""
        if request.method == "ACK":
            raise TransactionError("ACK is sent with send_stateless, not in a transaction")
        self._check_transport(dest)
        self.prepare_request(request, dest.transport)
        key = client_key(request)
        if key is None:  # pragma: no cover - prepare_request always sets a branch
            raise TransactionError("request has no branch")
        if key in self._clients:
            raise TransactionError("a client transaction with this branch and method exists")
        txn: _Client
        if request.method == "INVITE":
            txn = _ClientInvite(self, key, dest, request)
            self._clients[key] = txn
            self._index(txn)
            txn.start(now)
        else:
            txn = _ClientNonInvite(self, key, "trying", dest)
            self._clients[key] = txn
            self._index(txn)
            txn.start(request, now)
        return key

    def send_response(self, response: Response, now: float) -> None:
        """Send a response through the server transaction it belongs to (matched on its Via and CSeq)."""
        key = server_key(response)
        txn = self._servers.get(key)
        if txn is None:
            raise TransactionError("no server transaction for this response")
        txn.on_response(response, bytes(response), now)

    def send_stateless(self, msg: Request | Response, dest: Peer) -> None:
        """Transmit outside any transaction: the ACK for a 2xx (§13.2.2.4), or a response to unmatched input.

        A request gets the same Via / Max-Forwards treatment as in :meth:`send_request`. A destination on an
        unsupported transport is not sent to (logged): this runs inside the receive path (the ACK for a 2xx whose
        Contact asks for TLS), where raising would lose the rest of the input."""
        try:
            self._check_transport(dest)
            if isinstance(msg, Request):
                self.prepare_request(msg, dest.transport)
        except UnsupportedTransport as exc:
            logger.warning("not sent to %s:%s: %s", dest.host, dest.port, exc)
            return
        self._out.append((bytes(msg), dest))

    def _check_transport(self, dest: Peer) -> None:
        transport = dest.transport.upper()
        if transport not in SUPPORTED_TRANSPORTS:
            raise UnsupportedTransport(f"{transport} is not supported yet (sips: and TLS/WS destinations are refused)")

    def prepare_request(self, request: Request, transport: str) -> None:
        """Add the top Via (with a fresh z9hG4bK branch and ``rport``) and Max-Forwards 70 where missing."""
        headers = request.headers
        if "via" not in headers:
            sent_by = self.local.get(transport.upper())
            if sent_by is None:  # never a made-up sent-by: the response would go nowhere (§18.2.2)
                raise UnsupportedTransport(f"no {transport.upper()} address on this endpoint for the Via sent-by")
            host, port = sent_by
            headers.insert_first("Via", f"SIP/2.0/{transport.upper()} {host}:{port};branch={self.ids.branch()};rport")
        elif not request.via.branch:
            headers.set_first("Via", request.via.with_param("branch", self.ids.branch()))
        if "max-forwards" not in headers:
            headers.add("Max-Forwards", DEFAULT_MAX_FORWARDS)

    def transport_failed(self, peer: Peer, now: float) -> None:
        """The transport could not reach ``peer``, or its connection closed (§17.1.4, §17.2.4).

        A client transaction bound to it ends at once with a :class:`TransportError` event (treat as 503). A server
        transaction whose request came on that connection moves to §18.2.2's fallback (a new connection to the
        ``received`` address and the sent-by port) for the responses still to come; if that fails too, it ends with
        a :class:`TransportError`."""
        for txn in list(self._by_peer.get(peer, ())):
            if txn.state == "terminated":
                continue
            fallback, txn.fallback = txn.fallback, None
            if fallback is not None and fallback != peer:
                self._unindex(txn)
                txn.peer = fallback
                self._index(txn)
                continue
            self._emit(TransportError(txn.key))
            txn._set_state("terminated")

    # Internals -------------------------------------------------------------------------------------------------
    @staticmethod
    def _reply_peer(request: Request, source: Peer) -> Peer:
        """§18.2.2: reliable -> back on the connection it came from; unreliable -> received/rport/maddr/sent-by."""
        if source.transport != "UDP":  # Peer.reliable, without the property call
            return source
        via: Via = request.headers._cache.get("via") or request.via
        host, port = response_destination(via, source.host, source.port)
        if host == source.host and port == source.port:
            return source  # the usual case (rport, or a sent-by that is the source): no new object
        return Peer(source.transport, host, port)

    @staticmethod
    def _reconnect_peer(request: Request, source: Peer) -> Peer | None:
        """§18.2.2, reliable transports: once the request's connection is gone, open one to the ``received``
        address (else the source) at the sent-by port (else the transport's default)."""
        if not source.reliable:
            return None
        via: Via = request.via
        default = 5061 if source.transport in ("TLS", "WSS") else 5060
        return Peer(source.transport, via.received or source.host, via.port or default)

    def _emit(self, event: TxEvent) -> None:
        self._events.append(event)

    def _schedule(self, txn: _Transaction, name: str, deadline: float) -> None:
        self._seq += 1
        if name in txn.timers:
            self._stale += 1
        txn.timers[name] = self._seq
        heapq.heappush(self._heap, (deadline, self._seq, txn, name, self._seq))

    def _index(self, txn: _Transaction) -> None:
        peers = self._by_peer.get(txn.peer)
        if peers is None:
            peers = self._by_peer[txn.peer] = {}
        peers[txn] = None

    def _unindex(self, txn: _Transaction) -> None:
        peers = self._by_peer.get(txn.peer)
        if peers is not None:
            peers.pop(txn, None)
            if not peers:
                del self._by_peer[txn.peer]

    def _remove(self, txn: _Transaction) -> None:
        if txn.key.role == "client":
            self._clients.pop(txn.key, None)
        else:
            self._servers.pop(txn.key, None)
            if isinstance(txn, _ServerInvite):
                self._awaiting_ack.pop((txn.call_id, txn.cseq), None)
        self._unindex(txn)
        heap = self._heap
        if self._stale > 64 and 2 * self._stale > len(heap):
            # Drop the entries of cancelled timers and ended transactions, so the heap holds no dead transaction.
            self._heap = [entry for entry in heap if entry[2].timers.get(entry[3]) == entry[4]]
            heapq.heapify(self._heap)
            self._stale = 0
