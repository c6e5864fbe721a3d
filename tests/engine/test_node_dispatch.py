"""SipService and MediaCalls composed on one endpoint through one SipEventDispatcher, as the node wires them.

A phone (a second UA on its own socket) registers, calls an application that answers with media, calls a number nobody
routes, and hangs up; a subscriber that raises on every event sits between them all the time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from callplane.core.clock import SystemClock
from callplane.core.ids import IdSource
from callplane.engine.dispatch import SipEventDispatcher, Subscription
from callplane.engine.media_session import MediaCalls
from callplane.engine.sip_service import SipService, StaticClientSecrets
from callplane.media.aio import MediaEngine
from callplane.sip.digest import Credentials
from callplane.sip.events import CallAnswered, CallConfirmed, CallEnded, CallFailed, IncomingCall, Registered
from callplane.store import registrations
from callplane.store.db import Database
from tests.interop.uadriver import UaDriver, offer_sdp

LOOPBACK = "127.0.0.1"
INSTANCE = "ID" + "8" * 32


@dataclass
class Node:
    service: SipService
    calls: MediaCalls
    broken: Subscription
    seen_by_media: list[object]


@pytest.fixture
async def node(db: Database) -> AsyncIterator[Node]:
    ids = IdSource()
    dispatcher = SipEventDispatcher()
    service = SipService(
        db,
        ids,
        SystemClock(),
        host=LOOPBACK,
        port=0,
        instance_id=INSTANCE,
        realm="callplane.test",
        clients=StaticClientSecrets({"alice": "wonderland-42"}),
        dispatcher=dispatcher,
    )
    await service.start()
    media = MediaEngine(host=LOOPBACK, port_range=(40000, 60000), ids=ids, rtcp_interval=3600.0)
    await media.start()
    seen: list[object] = []
    calls = MediaCalls(service.ua, service.endpoint, media, on_event=seen.append)
    calls.attach(dispatcher)

    def broken(event: object) -> bool:
        raise RuntimeError("a buggy subscriber")

    def application(event: IncomingCall) -> bool:
        if not event.request_uri.startswith("sip:app@"):
            return False  # not ours: the SIP service answers 404
        calls.answer(event)
        return True

    sub = dispatcher.subscribe(broken, name="broken")
    dispatcher.subscribe(application, types=(IncomingCall,), name="application")
    yield Node(service, calls, sub, seen)
    calls.close()
    await media.close()
    await service.close()


async def test_service_and_media_calls_both_get_their_events(db: Database, node: Node) -> None:
    host, port = node.service.local["UDP"]
    async with UaDriver(credentials=Credentials("alice", "wonderland-42")) as phone:
        # REGISTER reaches the SIP service (it stores the binding) in spite of the raising subscriber.
        phone.act(phone.ua.register, f"sip:{host}:{port}", "sip:alice@127.0.0.1", expires=600)
        assert (await phone.wait_for(Registered)).expires == 600
        rows = await registrations.lookup(db, "sip:alice@127.0.0.1", SystemClock().wall().timestamp())
        assert len(rows) == 1

        # A routed INVITE: the application claims it and MediaCalls answers with a leg; no 404 from the service.
        handle = phone.act(phone.ua.invite, f"sip:app@{host}:{port}", "sip:alice@127.0.0.1", offer_sdp(phone))
        answered = await phone.wait_for(CallAnswered)
        mc = node.calls.get(handle)
        assert mc is not None and answered.media is not None and answered.media.port == mc.port
        phone.act(phone.ua.bye, handle)
        await phone.wait_for(CallEnded)
        # MediaCalls saw the call through (its leg is closed) and handed the events on.
        assert [type(e) for e in node.seen_by_media if type(e) in (IncomingCall, CallConfirmed, CallEnded)] == [
            IncomingCall,
            CallConfirmed,
            CallEnded,
        ]
        assert len(node.calls) == 0

        # An INVITE nobody claims: the SIP service's fallback answers 404.
        phone.act(phone.ua.invite, f"sip:nobody@{host}:{port}", "sip:alice@127.0.0.1", offer_sdp(phone))
        assert (await phone.wait_for(CallFailed)).status == 404
    assert node.broken.faults >= 6
