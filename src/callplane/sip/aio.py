"""asyncio adapter for the SIP transaction layer: UDP and TCP sockets, one timer, no protocol logic.

Theory of operation
-------------------
:class:`SipEndpoint` binds UDP and/or TCP on one address (default ``127.0.0.1:5080``; port 0 picks a free port,
the same for both). Every input goes through the same steps (the aioquic pattern):

1. parse (``parse_message``); stamp ``received``/``rport`` into the top Via of a request (§18.2.1, RFC 3581);
   a CRLFCRLF keep-alive on TCP is answered with CRLF (RFC 5626 §4.4.1);
2. ``TransactionLayer.receive(msg, peer, now)`` with ``now = loop.time()``;
3. drain the layer's events into the ``on_event`` callback (which may call ``send_*`` synchronously);
4. transmit ``datagrams_to_send()``: UDP ``sendto``; TCP on the connection the peer is known by (the one a
   request came on, §18.2.2), opening one if needed;
5. re-arm the ONE ``loop.call_at`` timer if ``get_timer()`` changed.

Nothing raises out of the receive path. Malformed input (garbage, truncated, oversized, bad Content-Length,
missing headers, bad CSeq, an unknown Via transport) is answered ``400`` (or the error's own status) when a
response can be routed — the request's Via, From, To, Call-ID and CSeq were readable — and otherwise dropped and
logged, at most once per ``log_interval`` per kind of error. UDP datagrams over 64 KiB are dropped; TCP messages
are bounded by ``max_message``, a connection that cannot be framed is closed, and inbound connections beyond
``max_connections`` are refused.

Public API::

    ep = SipEndpoint(on_event, ids=IdSource(), timers=TimerConfig(), host="127.0.0.1", port=5080, advertise=None)
    await ep.start()                       binds; ep.local == {"UDP": (host, port), "TCP": (host, port)}
                                           (host = ``advertise`` if given, else the bound address; for a
                                           wildcard bind the host's outbound address; IPv6 in brackets)
    ep.send_request(request, Peer(...))    -> TransactionKey (adds Via/branch/rport and Max-Forwards 70);
                                           raises UnsupportedTransport for TLS/WS/WSS/SCTP destinations
    ep.send_response(response)             through its server transaction
    ep.send_stateless(msg, Peer(...))      ACK for 2xx, responses outside transactions
    ep.attach(core, on_event)              drive a UA core built on ``ep.layer`` (its events go to on_event)
    ep.flush()                             after calling the core directly: transmit + re-arm
    ep.bind_flow(contact, source)          TCP to ``contact`` goes on the inbound connection from ``source``
    ep.stats                               counters: received, bad, answered_bad, dropped, sent, lookups, wakeups
    await ep.close()

TCP: a closed connection fails the client transactions sent on it at once and moves the server transactions'
responses to §18.2.2's fallback; connections idle for ``tcp_idle_timeout`` that no transaction needs are closed.
UDP to a hostname is resolved once per ``dns_ttl`` (one lookup in flight per name). Timers wake the loop on a grid
of ``timer_resolution`` (20 ms, or T1/25 when smaller).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import socket
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from callplane.core.ids import IdSource
from callplane.sip.headers import KNOWN_TRANSPORTS, SipParseError, remember
from callplane.sip.message import (
    MAX_DATAGRAM,
    FramingError,
    Request,
    Response,
    StreamFramer,
    error_response,
    parse_message,
    stamp_via,
)
from callplane.sip.transaction import TimerConfig, TransactionLayer
from callplane.sip.transaction_events import Peer, TransactionKey

__all__ = ["RateLimitedLog", "SansIoCore", "SipEndpoint", "stamp_via"]

logger = logging.getLogger(__name__)

EventHandler = Callable[[Any], None]

_MAX_NAMES = 1024  # hostnames remembered by the UDP resolver cache
_MAX_WAITING = 64  # datagrams held per hostname while its lookup runs


class SansIoCore(Protocol):
    """What the endpoint drives: a :class:`TransactionLayer`, or a UA core built on the endpoint's ``layer``
    (e.g. ``UserAgent(tl=endpoint.layer, local=endpoint.local)``), which has the same surface."""

    def receive(self, msg: Request | Response, source: Peer, now: float) -> None: ...

    def transport_failed(self, peer: Peer, now: float) -> None: ...

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> object | None: ...


_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def _outbound_address(wildcard: str) -> str:
    """The address this host sends from by default, for a wildcard bind without ``advertise`` (a connected UDP
    socket sends nothing; loopback when there is no route). Set ``advertise`` when peers reach us through NAT."""
    family = socket.AF_INET6 if wildcard == "::" else socket.AF_INET
    probe = ("2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1", 9)  # documentation ranges
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(probe)
            return str(sock.getsockname()[0])
    except OSError:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class RateLimitedLog:
    """Log each kind of problem as one line, at most once per interval, with the count of suppressed repeats."""

    def __init__(self, interval: float, log: logging.Logger = logger, what: str = "dropped SIP input") -> None:
        self.interval = interval
        self._logger = log
        self._what = what
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, kind: str, now: float, detail: str) -> None:
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        skipped = self._suppressed.pop(kind, 0)
        self._logger.warning("%s: %s (%s; %d similar suppressed)", self._what, kind, detail, skipped)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.endpoint._on_datagram(data, str(addr[0]), int(addr[1]))

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP error: %s", exc)


class _TcpConn(asyncio.Protocol):
    """One TCP connection: frames the stream and feeds whole messages to the endpoint."""

    def __init__(self, endpoint: SipEndpoint, peer: Peer | None = None) -> None:
        self.endpoint = endpoint
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer(endpoint.max_message)
        self.pending: list[bytes] = []
        self.last_active = endpoint._now()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        if self.peer is None:
            host, port = transport.get_extra_info("peername")[:2]
            self.peer = Peer("TCP", str(host), int(port))
            if len(self.endpoint._connections) >= self.endpoint.max_connections:
                self.endpoint._log.warn("too many TCP connections", self.endpoint._now(), f"from {host}:{port}")
                transport.close()
                return
        self.endpoint._connections[(self.peer.host, self.peer.port)] = self
        for data in self.pending:
            transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.transport is None or self.transport.is_closing():
            return
        self.last_active = self.endpoint._now()
        pings = self.framer.pings
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            self.endpoint._bad_input(exc, self.peer)
            self.transport.close()
            return
        if self.framer.pings != pings:
            self.transport.write(b"\r\n")  # RFC 5626 §4.4.1 keep-alive pong
        for frame in frames:
            self.endpoint._on_message(frame, self.peer, stream=True)

    def write(self, data: bytes) -> None:
        self.last_active = self.endpoint._now()
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.endpoint._connections.get((self.peer.host, self.peer.port)) is self:
            del self.endpoint._connections[(self.peer.host, self.peer.port)]
            self.endpoint._connection_lost(self.peer)


class SipEndpoint:
    """UDP + TCP transport around one :class:`TransactionLayer` (see the module docstring)."""

    def __init__(
        self,
        on_event: EventHandler | None = None,
        *,
        ids: IdSource | None = None,
        timers: TimerConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 5080,
        udp: bool = True,
        tcp: bool = True,
        max_message: int = MAX_DATAGRAM,
        advertise: str | None = None,
        max_connections: int = 4096,
        log_interval: float = 10.0,
        auto_trying: bool = True,
        dns_ttl: float = 60.0,
        tcp_idle_timeout: float = 300.0,
    ) -> None:
        self.on_event = on_event
        self.layer = TransactionLayer(ids or IdSource(), timers, auto_trying=auto_trying)
        self.timer_resolution = min(0.02, self.layer.timers.t1 / 25)
        self.core: SansIoCore = self.layer
        self.host = host
        # The host written into Via sent-by (and read by the UA for Contact): a wildcard bind needs a real address.
        shown = advertise or (_outbound_address(host) if host in _WILDCARDS else host)
        self.advertise = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
        self.port = port
        self.use_udp = udp
        self.use_tcp = tcp
        self.max_message = max_message
        self.max_connections = max_connections
        self.tcp_idle_timeout = tcp_idle_timeout
        # Contact (host, port) of a registered client -> the (host, port) its inbound connection is known by.
        self._flows: dict[tuple[str, int], tuple[str, int]] = {}
        self._flow_targets: dict[tuple[str, int], set[tuple[str, int]]] = {}  # the reverse of _flows
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing = False
        self.stats = {"received": 0, "bad": 0, "answered_bad": 0, "dropped": 0, "sent": 0, "lookups": 0, "wakeups": 0}
        self.dns_ttl = dns_ttl
        # hostname -> (valid until, address or None for a failed lookup); FIFO-bounded like the URI caches.
        self._dns: dict[str, tuple[float, str | None]] = {}
        self._dns_waiting: dict[str, list[tuple[bytes, Peer]]] = {}
        self._log = RateLimitedLog(log_interval)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[tuple[str, int], _TcpConn] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._pumping = False
        self._requeued = False  # a transmit made the core queue more (see _pump)
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp_peers: dict[tuple[str, int], Peer] = {}

    @property
    def local(self) -> dict[str, tuple[str, int]]:
        """``{"UDP": (host, port), "TCP": (host, port)}`` once started (the dict object stays the same)."""
        return self.layer.local

    def attach(self, core: SansIoCore, on_event: EventHandler | None = None) -> None:
        """Drive ``core`` instead of the bare transaction layer: inputs go to ``core.receive``, and its events,
        datagrams and timer are what the endpoint drains, sends and arms. ``core`` must share ``self.layer``."""
        self.core = core
        if on_event is not None:
            self.on_event = on_event

    def flush(self) -> None:
        """Drain events, transmit and re-arm the timer: call after acting on the core directly (``ua.invite()``)."""
        self._pump()

    async def start(self) -> None:
        """Bind the sockets. With port 0 the UDP port is chosen first and TCP binds the same number."""
        loop = self._loop = asyncio.get_running_loop()
        for _attempt in range(20):
            port = self.port
            udp = None
            try:
                if self.use_udp:
                    udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(self.host, port))
                    port = udp.get_extra_info("sockname")[1]
                if self.use_tcp:
                    self._server = await loop.create_server(lambda: _TcpConn(self), self.host, port)
                    port = self._server.sockets[0].getsockname()[1]
            except OSError:
                if udp is not None:
                    udp.close()
                if self.port != 0:
                    raise
                continue
            self._udp = udp
            break
        else:  # pragma: no cover - 20 clashes in a row
            raise OSError("could not bind UDP and TCP on the same port")
        if self.use_udp:
            self.layer.local["UDP"] = (self.advertise, port)
        if self.use_tcp:
            self.layer.local["TCP"] = (self.advertise, port)
            self._sweeper = loop.call_later(self._sweep_interval, self._sweep)
        self.port = port

    async def close(self) -> None:
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._udp is not None:
            self._udp.close()
        for conn in list(self._connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # Transaction user API ----------------------------------------------------------------------------------
    def send_request(self, request: Request, dest: Peer) -> TransactionKey:
        key = self.layer.send_request(request, dest, self._now())
        self._pump()
        return key

    def send_response(self, response: Response) -> None:
        self.layer.send_response(response, self._now())
        self._pump()

    def send_stateless(self, msg: Request | Response, dest: Peer) -> None:
        self.layer.send_stateless(msg, dest)
        self._pump()

    # Receive path ------------------------------------------------------------------------------------------
    def _on_datagram(self, data: bytes, host: str, port: int) -> None:
        if len(data) > MAX_DATAGRAM:
            self.stats["dropped"] += 1
            self._log.warn("oversized datagram", self._now(), f"{len(data)} bytes from {host}:{port}")
            return
        if not data.strip(b"\r\n"):
            return  # keep-alive
        peer = self._udp_peers.get((host, port))
        if peer is None:  # one Peer per address: fewer objects for every live transaction to hold
            peer = Peer("UDP", host, port)
            remember(self._udp_peers, (host, port), peer, 1024)
        self._on_message(data, peer, stream=False)

    def _on_message(self, data: bytes, peer: Peer, *, stream: bool) -> None:
        self.stats["received"] += 1
        try:
            msg = parse_message(data, stream=stream)
            if isinstance(msg, Request):
                transport = msg.headers._cache["via"].transport  # parse_message stored the top Via
                if transport not in KNOWN_TRANSPORTS:
                    err = SipParseError("unsupported transport in Via")
                    err.partial = msg  # type: ignore[attr-defined]
                    raise err
                stamp_via(msg, peer.host, peer.port)
        except SipParseError as exc:
            self._bad_input(exc, peer)
            return
        try:
            self.core.receive(msg, peer, self._now())
        except Exception as exc:  # never out of the receive path; this is a bug, so log it fully once
            self.stats["bad"] += 1
            self._log.warn("internal error", self._now(), repr(exc))
            logger.debug("transaction layer failed on input", exc_info=True)
        self._pump()

    def _bad_input(self, exc: SipParseError, peer: Peer) -> None:
        self.stats["bad"] += 1
        try:
            answer = error_response(exc, peer.host, peer.port, self.layer.ids.tag())
            if answer is None:
                self.stats["dropped"] += 1
                self._log.warn(str(exc), self._now(), f"from {peer.transport} {peer.host}:{peer.port}")
                return
            resp, host, port = answer
            dest = peer if peer.reliable else Peer(peer.transport, host, port)
            self.stats["answered_bad"] += 1
            self._transmit(bytes(resp), dest)
        except Exception as err:  # a partial message can still hold surprises: drop rather than raise
            self.stats["dropped"] += 1
            self._log.warn("unanswerable input", self._now(), repr(err))

    # Output and timer --------------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Drain events to the callback, transmit, re-arm the one timer."""
        if self._pumping:
            return  # a callback called send_*; the outer loop drains what it queued
        self._pumping = True
        core = self.core
        try:
            while True:
                event = core.next_event()
                if event is None:
                    out = core.datagrams_to_send()
                    if not out:
                        break
                    self._requeued = False
                    for data, dest in out:
                        self._transmit(data, dest)
                    if not self._requeued:
                        break  # sending queued no new event or datagram: nothing left to drain
                    continue
                if self.on_event is not None:
                    try:
                        self.on_event(event)
                    except Exception:
                        logger.exception("SIP event handler failed on %s", type(event).__name__)
        finally:
            self._pumping = False
        self._rearm()

    def _rearm(self) -> None:
        deadline = self.core.get_timer()
        if deadline is not None:
            # Wake up on a grid of ``timer_resolution`` s: timers due close together (every call's Timer J and L at
            # 32 s, say) share one wake-up instead of one each, and the armed timer rarely has to move.
            step = self.timer_resolution
            deadline = math.ceil(deadline / step) * step
        if deadline == self._deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        armed = self._deadline or 0.0
        self._timer = None
        self._deadline = None
        self.stats["wakeups"] += 1
        # The loop may call back a little before the deadline (its clock resolution): what was due then is due now.
        self.core.handle_timer(max(self._now(), armed))
        self._pump()

    def _transmit(self, data: bytes, dest: Peer) -> None:
        self.stats["sent"] += 1
        if dest.transport == "UDP":
            if self._udp is None:
                self._log.warn("no UDP socket", self._now(), f"to {dest.host}:{dest.port}")
                return
            if _is_ip(dest.host):
                self._udp.sendto(data, (dest.host.strip("[]"), dest.port))
            else:
                self._send_to_name(data, dest)
            return
        if dest.transport != "TCP":  # the transaction layer refuses these; never fall back to plain TCP
            self._log.warn("unsupported transport", self._now(), f"{dest.transport} to {dest.host}:{dest.port}")
            return
        conn = self._connections.get((dest.host, dest.port))
        if conn is None:
            flow = self._flows.get((dest.host, dest.port))
            conn = self._connections.get(flow) if flow is not None else None
        if conn is None:
            if self._loop is None:
                return
            conn = _TcpConn(self, dest)
            self._connections[(dest.host, dest.port)] = conn
            self._spawn(self._connect(conn, dest))
        conn.write(data)

    # TCP connections ----------------------------------------------------------------------------------------
    def bind_flow(self, target: tuple[str, int], source: tuple[str, int]) -> None:
        """Send what is addressed to ``target`` over TCP (a registered client's Contact) on the connection known by
        ``source`` (where its REGISTER came from) while that connection is open: a client behind NAT or a firewall
        is reachable only there (RFC 5626 §5.3 in spirit, without ``outbound``). Otherwise a new connection."""
        if len(self._flows) >= 2 * self.max_connections and target not in self._flows:
            self.unbind_flow(next(iter(self._flows)))
        self.unbind_flow(target)
        self._flows[target] = source
        self._flow_targets.setdefault(source, set()).add(target)

    def unbind_flow(self, target: tuple[str, int]) -> None:
        source = self._flows.pop(target, None)
        if source is not None:
            targets = self._flow_targets.get(source)
            if targets is not None:
                targets.discard(target)
                if not targets:
                    del self._flow_targets[source]

    def _flow_peers(self, peer: Peer) -> list[Peer]:
        """The connection's own peer and the registered Contacts that are sent to on it."""
        return [peer, *(Peer("TCP", *t) for t in self._flow_targets.get((peer.host, peer.port), ()))]

    def _connection_lost(self, peer: Peer) -> None:
        """§17.1.4 / §18.2.2: what depended on the connection learns of it now, not at its Timer B/F."""
        if self._closing or self._loop is None:
            return
        for each in self._flow_peers(peer):
            self.core.transport_failed(each, self._now())
        self._pump()

    @property
    def _sweep_interval(self) -> float:
        return max(0.05, min(30.0, self.tcp_idle_timeout / 4))

    def _sweep(self) -> None:
        """Close connections idle for ``tcp_idle_timeout`` that no transaction still needs."""
        assert self._loop is not None
        self._sweeper = self._loop.call_later(self._sweep_interval, self._sweep)
        limit = self._now() - self.tcp_idle_timeout
        for conn in list(self._connections.values()):
            peer = conn.peer
            if conn.last_active <= limit and conn.transport is not None and peer is not None:
                if not any(self.layer.bound_to(each) for each in self._flow_peers(peer)):
                    conn.transport.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send_to_name(self, data: bytes, dest: Peer) -> None:
        """UDP to a hostname: from the cache, else after the one lookup in flight for that name."""
        now = self._now()
        cached = self._dns.get(dest.host)
        if cached is not None and cached[0] > now:
            address = cached[1]
            if address is None:
                self._log.warn("unresolvable destination", now, dest.host)
                self.core.transport_failed(dest, now)
                self._requeued = True  # its events and datagrams are drained by the _pump that sent this
            elif self._udp is not None:
                self._udp.sendto(data, (address, dest.port))
            return
        waiting = self._dns_waiting.get(dest.host)
        if waiting is None:
            self._dns_waiting[dest.host] = [(data, dest)]
            self._spawn(self._resolve(dest.host))
        elif len(waiting) < _MAX_WAITING:
            waiting.append((data, dest))
        else:
            self.stats["dropped"] += 1

    async def _resolve(self, host: str) -> None:
        assert self._loop is not None
        self.stats["lookups"] += 1
        address: str | None = None
        try:
            sock = self._udp.get_extra_info("socket") if self._udp is not None else None
            family = sock.family if sock is not None else socket.AF_UNSPEC
            infos = await self._loop.getaddrinfo(host, None, family=family, type=socket.SOCK_DGRAM)
            address = str(infos[0][4][0]) if infos else None
        except OSError as exc:
            self._log.warn("unresolvable destination", self._now(), f"{host}: {exc}")
        now = self._now()
        if len(self._dns) >= _MAX_NAMES:
            del self._dns[next(iter(self._dns))]
        self._dns.pop(host, None)
        # A failed lookup is remembered briefly, so a flood towards a bad name costs one lookup per second.
        self._dns[host] = (now + (self.dns_ttl if address is not None else 1.0), address)
        failed: dict[Peer, None] = {}
        for data, dest in self._dns_waiting.pop(host, []):
            if address is None:
                failed[dest] = None
            elif self._udp is not None:
                self._udp.sendto(data, (address, dest.port))
        for dest in failed:
            self.core.transport_failed(dest, now)  # §17.1.4: the transactions towards it fail at once
        if failed:
            self._pump()

    async def _connect(self, conn: _TcpConn, dest: Peer) -> None:
        assert self._loop is not None
        try:
            await self._loop.create_connection(lambda: conn, dest.host.strip("[]"), dest.port)
        except OSError as exc:
            if self._connections.get((dest.host, dest.port)) is conn:
                del self._connections[(dest.host, dest.port)]
            self._log.warn("TCP connect failed", self._now(), f"{dest.host}:{dest.port}: {exc}")
            self.core.transport_failed(dest, self._now())
            self._pump()
