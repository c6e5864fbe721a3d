"""Run callplane's :class:`~callplane.sip.ua.UserAgent` on the node's asyncio adapter, for interop tests.

The UA is attached to a :class:`~callplane.sip.aio.SipEndpoint` (UDP and TCP on one free loopback port, as in the
node: ``UserAgent(tl=endpoint.layer)`` + ``endpoint.attach``), and every event it reports is queued for the test::

    async with UaDriver() as drv:                      # binds 127.0.0.1:<free port>, makes the UserAgent
        handle = drv.act(drv.ua.invite, target, "sip:alice@127.0.0.1", offer_sdp(drv))   # now= added, then flush
        answered = await drv.expect(CallAnswered)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from callplane.core.ids import IdSource
from callplane.sip.aio import SipEndpoint
from callplane.sip.digest import DigestServer
from callplane.sip.events import Event, IncomingCall, RegisterReceived
from callplane.sip.registrar import InMemoryBindingStore, RegisterOutcome, Registrar, Secret
from callplane.sip.sdp import SessionDescription, answer_offer, build_offer
from callplane.sip.transaction import TimerConfig
from callplane.sip.ua import UserAgent
from tests.eventlog import EventLog

__all__ = ["RegistrarApp", "UaDriver", "answer_sdp", "offer_sdp"]

logger = logging.getLogger(__name__)
E = TypeVar("E")


class UaDriver(EventLog):
    """A UserAgent on ``host``:free port (UDP and TCP) behind a SipEndpoint. ``events`` collects what it reported."""

    def __init__(self, host: str = "127.0.0.1", *, timers: TimerConfig | None = None, **ua_options: Any) -> None:
        self.host = host
        self.timers = timers
        self.ua_options = ua_options
        self._ua: UserAgent | None = None
        self._ep: SipEndpoint | None = None
        EventLog.__init__(self)
        self.on_event: Callable[[Event], None] | None = None
        self._sink: asyncio.DatagramTransport | None = None

    @property
    def ua(self) -> UserAgent:
        assert self._ua is not None, "start() first"
        return self._ua

    @property
    def endpoint(self) -> SipEndpoint:
        assert self._ep is not None, "start() first"
        return self._ep

    @property
    def port(self) -> int:
        return self.endpoint.port

    @property
    def rtp_port(self) -> int:
        """A UDP port we hold open (and ignore) for the media address in our SDP, so peers' RTP lands nowhere else."""
        assert self._sink is not None
        return int(self._sink.get_extra_info("sockname")[1])

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def start(self) -> UaDriver:
        loop = asyncio.get_running_loop()
        ids = IdSource()
        self._ep = SipEndpoint(ids=ids, timers=self.timers, host=self.host, port=0)
        await self._ep.start()
        self._ua = UserAgent(ids, self._ep.local, tl=self._ep.layer, **self.ua_options)
        self._ep.attach(self._ua, self._on_event)
        self._sink, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(self.host, 0))
        return self

    async def close(self) -> None:
        if self._ep is not None:
            await self._ep.close()
            self._ep = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    async def __aenter__(self) -> UaDriver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_event(self, event: Any) -> None:
        self.record(event)
        if self.on_event is not None:
            self.on_event(event)

    def flush(self) -> None:
        """Transmit what the UA queued and re-arm the timer (after calling into the UA directly)."""
        self.endpoint.flush()

    # test helpers --------------------------------------------------------------------------------------------------

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
    is used for the registrar, as in the node. ``algorithms`` None keeps :class:`DigestServer`'s default.
    """

    def __init__(
        self,
        drv: UaDriver,
        users: dict[str, str],
        *,
        realm: str = "callplane.test",
        algorithms: tuple[str, ...] | None = None,
    ) -> None:
        ids = IdSource()
        self.drv = drv
        self.users = users
        self.store = InMemoryBindingStore()
        digest = DigestServer(realm, b"interop-secret", ids)
        if algorithms is not None:
            digest = DigestServer(realm, b"interop-secret", ids, algorithms=algorithms)
        self.registrar = Registrar(digest, ids)
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
        self.drv.ua.respond(outcome.response, self.drv.now())  # the endpoint is pumping: it transmits this

    def contacts(self, aor: str) -> list[str]:
        return [b.contact for b in self.store.bindings(aor, time.time())]
