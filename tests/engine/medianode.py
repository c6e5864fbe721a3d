"""Our side of a call in tests: SipEndpoint + UserAgent + MediaEngine on free loopback ports, joined by MediaCalls.

``events`` / :meth:`MediaNode.wait_for` give what MediaCalls handed on (SIP events, media events, ``CallDigit``)::

    async with MediaNode() as node:
        mc = node.calls.invite(f"sip:svc@127.0.0.1:{port}", "sip:app@127.0.0.1")
        await node.wait_for(CallAnswered)
"""

from __future__ import annotations

from typing import Any, TypeVar

from callplane.core.ids import IdSource
from callplane.engine.dispatch import SipEventDispatcher
from callplane.engine.media_session import MediaCalls
from callplane.media.aio import MediaEngine
from callplane.sip.aio import SipEndpoint
from callplane.sip.ua import UserAgent
from tests.eventlog import EventLog

__all__ = ["LOOPBACK", "MediaNode"]

LOOPBACK = "127.0.0.1"
E = TypeVar("E")


class MediaNode(EventLog):
    """The node's call plumbing on 127.0.0.1 (SIP on a free port; RTP ports from ``port_range``)."""

    def __init__(self, *, port_range: tuple[int, int] = (40000, 60000), **calls_options: Any) -> None:
        self.port_range = port_range
        self.calls_options = calls_options
        EventLog.__init__(self)
        self._endpoint: SipEndpoint | None = None
        self._media: MediaEngine | None = None
        self._calls: MediaCalls | None = None
        self.dispatcher = SipEventDispatcher()

    @property
    def endpoint(self) -> SipEndpoint:
        assert self._endpoint is not None, "start() first"
        return self._endpoint

    @property
    def media(self) -> MediaEngine:
        assert self._media is not None, "start() first"
        return self._media

    @property
    def calls(self) -> MediaCalls:
        assert self._calls is not None, "start() first"
        return self._calls

    @property
    def ua(self) -> UserAgent:
        return self.calls.ua

    @property
    def port(self) -> int:
        return self.endpoint.port

    async def start(self) -> MediaNode:
        ids = IdSource()
        self._endpoint = SipEndpoint(ids=ids, host=LOOPBACK, port=0)
        await self._endpoint.start()
        ua = UserAgent(ids, self._endpoint.local, tl=self._endpoint.layer)
        # RTCP is not what these tests judge: keep it out of the peers' way.
        self._media = MediaEngine(host=LOOPBACK, port_range=self.port_range, ids=ids, rtcp_interval=3600.0)
        await self._media.start()
        self._calls = MediaCalls(ua, self._endpoint, self._media, on_event=self._on_event, **self.calls_options)
        self.dispatcher.attach(self._endpoint, ua)
        self._calls.attach(self.dispatcher)
        return self

    async def close(self) -> None:
        if self._calls is not None:
            self._calls.close()
        if self._media is not None:
            await self._media.close()
        if self._endpoint is not None:
            await self._endpoint.close()

    async def __aenter__(self) -> MediaNode:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_event(self, event: object) -> None:
        self.record(event)
