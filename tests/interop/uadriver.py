"""Run callplane's sans-IO :class:`~callplane.sip.ua.UserAgent` over a real loopback UDP socket, for interop tests.

This is the thin adapter loop of style habit 2, kept in the tests so they depend only on the UA's sans-IO surface
(``receive_datagram`` / ``datagrams_to_send`` / ``get_timer`` / ``handle_timer`` / ``next_event``): after every input
it flushes the datagrams, re-arms one timer and queues the UA's events for the test to await::

    async with UaDriver() as drv:                      # binds 127.0.0.1:<free port>, makes the UserAgent
        handle = drv.ua.invite(target, "sip:alice@127.0.0.1", offer(drv), drv.now())
        drv.flush()                                    # after any call into the UA
        answered = await drv.expect(CallAnswered)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from callplane.core.ids import IdSource
from callplane.sip.digest import DigestServer
from callplane.sip.events import Event, IncomingCall, RegisterReceived
from callplane.sip.registrar import InMemoryBindingStore, RegisterOutcome, Registrar, Secret
from callplane.sip.sdp import SessionDescription, answer_offer, build_offer
from callplane.sip.transaction_events import Peer
from callplane.sip.ua import UserAgent

__all__ = ["RegistrarApp", "UaDriver", "answer_sdp", "offer_sdp"]

logger = logging.getLogger(__name__)
E = TypeVar("E")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, driver: UaDriver) -> None:
        self.driver = driver

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.driver._on_datagram(data, str(addr[0]), int(addr[1]))

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable and the like
        logger.debug("UDP error: %s", exc)


class UaDriver:
    """A UserAgent on ``host``:free port, pumped by asyncio. ``events`` collects everything it reported."""

    def __init__(self, host: str = "127.0.0.1", **ua_options: Any) -> None:
        self.host = host
        self.ua_options = ua_options
        self._ua: UserAgent | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.events: list[Event] = []
        self.datagrams_in = 0
        self.datagrams_out = 0
        self.on_event: Callable[[Event], None] | None = None
        self._sink: asyncio.DatagramTransport | None = None

    @property
    def rtp_port(self) -> int:
        """A UDP port we hold open (and ignore) for the media address in our SDP, so peers' RTP lands nowhere else."""
        assert self._sink is not None
        return int(self._sink.get_extra_info("sockname")[1])

    @property
    def ua(self) -> UserAgent:
        assert self._ua is not None, "start() first"
        return self._ua

    @property
    def port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def start(self) -> UaDriver:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=(self.host, 0))
        self._sink, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(self.host, 0))
        self._ua = UserAgent(IdSource(), {"UDP": (self.host, self.port)}, **self.ua_options)
        return self

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    async def __aenter__(self) -> UaDriver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # pump ----------------------------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, host: str, port: int) -> None:
        self.datagrams_in += 1
        self.ua.receive_datagram(data, Peer("UDP", host, port), self.now())
        self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._deadline = None
        self.ua.handle_timer(self.now())
        self.flush()

    def flush(self) -> None:
        """Send what the UA queued, hand its events over, and re-arm the one timer."""
        assert self._transport is not None
        for data, peer in self.ua.datagrams_to_send():
            self.datagrams_out += 1
            self._transport.sendto(data, (peer.host, peer.port))
        while (event := self.ua.next_event()) is not None:
            self.events.append(event)
            self._queue.put_nowait(event)
            if self.on_event is not None:
                self.on_event(event)
        # on_event may have called into the UA again
        for data, peer in self.ua.datagrams_to_send():
            self.datagrams_out += 1
            self._transport.sendto(data, (peer.host, peer.port))
        deadline = self.ua.get_timer()
        if deadline != self._deadline:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._deadline = deadline
            if deadline is not None:
                self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    # test helpers --------------------------------------------------------------------------------------------------

    async def expect(self, kind: type[E], timeout: float = 10.0) -> E:
        """The next event, which must be of ``kind`` (other kinds fail the test with what was seen)."""
        try:
            event = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {kind.__name__} within {timeout} s; events so far: {self.events}") from None
        if not isinstance(event, kind):
            raise AssertionError(f"expected {kind.__name__}, got {event!r}; events so far: {self.events}")
        return event

    async def wait_for(self, kind: type[E], timeout: float = 10.0) -> E:
        """Skip events until one of ``kind`` arrives."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                event = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise AssertionError(f"no {kind.__name__} within {timeout} s; events: {self.events}") from None
            if isinstance(event, kind):
                return event

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def act(self, fn: Callable[..., object], *args: Any, **kwargs: Any) -> Any:
        """Call a UA method with ``now`` appended as keyword, then flush: ``drv.act(drv.ua.bye, handle)``."""
        result = fn(*args, now=self.now(), **kwargs)
        self.flush()
        return result


def offer_sdp(drv: UaDriver) -> SessionDescription:
    """Our audio offer; media goes to the driver's sink port (these tests judge signalling only)."""
    return build_offer(drv.host, drv.rtp_port, session_id="1")


def answer_sdp(drv: UaDriver, call: IncomingCall) -> SessionDescription:
    assert call.sdp is not None
    return answer_offer(SessionDescription.parse(call.sdp), drv.host, drv.rtp_port, session_id="2")


class RegistrarApp:
    """Serves REGISTER on a driver's UA (``accept_register=True``) with callplane's registrar and digest server.

    ``users`` maps usernames to passwords; bindings live in an in-memory store, readable as :attr:`store`. Wall time
    is used for the registrar, as in the node.
    """

    def __init__(
        self,
        drv: UaDriver,
        users: dict[str, str],
        *,
        realm: str = "callplane.test",
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
    ) -> None:
        ids = IdSource()
        self.drv = drv
        self.users = users
        self.store = InMemoryBindingStore()
        self.registrar = Registrar(DigestServer(realm, b"interop-secret", ids, algorithms=algorithms), ids)
        self.outcomes: list[RegisterOutcome] = []
        drv.on_event = self._on_event

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, RegisterReceived):
            return
        now = time.time()
        request = event.request
        username = self.registrar.username(request)
        password = self.users.get(username) if username is not None else None
        secret = Secret(password=password) if password is not None else None
        aor = self.registrar.aor(request)
        source = (event.source.host, event.source.port, event.source.transport)
        outcome = self.registrar.handle(
            request, secret=secret, bindings=self.store.bindings(aor, now), now=now, source=source
        )
        if outcome.aor is not None:
            self.store.apply(outcome.aor, outcome.upserts, outcome.removals)
        self.outcomes.append(outcome)
        self.drv.ua.respond(outcome.response, self.drv.now())

    def contacts(self, aor: str) -> list[str]:
        return [b.contact for b in self.store.bindings(aor, time.time())]
