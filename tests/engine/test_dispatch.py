"""The SIP event dispatcher on its own: order, filters, claims and fallbacks, per-call subscriptions, faults.

The composition with the real SipService and MediaCalls over sockets is in ``test_node_dispatch.py``.
"""

from __future__ import annotations

import logging

import pytest

from callplane.engine.dispatch import APP, FALLBACK, MEDIA, SipEventDispatcher
from callplane.sip.events import CallEnded, DtmfReceived, IncomingCall, Registered

INCOMING = IncomingCall("c1", "sip:app@h", "sip:a@h", None, "sip:app@h", None, None, (), ("127.0.0.1", 5060, "UDP"))


class Recorder:
    """A subscriber that records what it got, under a name, into a shared list; optionally claims or raises."""

    def __init__(self, seen: list[str], name: str, *, claim: bool = False, error: Exception | None = None) -> None:
        self.seen, self.name, self.claim, self.error = seen, name, claim, error

    def __call__(self, event: object) -> bool:
        self.seen.append(f"{self.name}:{type(event).__name__}")
        if self.error is not None:
            raise self.error
        return self.claim


def test_order_by_stage_then_subscription() -> None:
    seen: list[str] = []
    d = SipEventDispatcher()
    d.subscribe(Recorder(seen, "app1"))
    d.subscribe(Recorder(seen, "fallback"), order=FALLBACK)
    d.subscribe(Recorder(seen, "media"), order=MEDIA)
    d.subscribe(Recorder(seen, "app2"), order=APP)
    d.dispatch(Registered("r1", 600))
    assert seen == ["media:Registered", "app1:Registered", "app2:Registered", "fallback:Registered"]


def test_types_filter() -> None:
    seen: list[str] = []
    d = SipEventDispatcher()
    d.subscribe(Recorder(seen, "calls"), types=(IncomingCall, CallEnded))
    d.subscribe(Recorder(seen, "all"))
    d.dispatch(Registered("r1", 600))
    d.dispatch(CallEnded("c1", "remote"))
    assert seen == ["all:Registered", "calls:CallEnded", "all:CallEnded"]


def test_fallback_only_for_unclaimed_events() -> None:
    seen: list[str] = []
    d = SipEventDispatcher()
    router = Recorder(seen, "router")
    d.subscribe(router, types=(IncomingCall,))
    d.subscribe(Recorder(seen, "404"), types=(IncomingCall,), order=FALLBACK, fallback=True)
    d.dispatch(INCOMING)
    router.claim = True
    d.dispatch(INCOMING)
    assert seen == ["router:IncomingCall", "404:IncomingCall", "router:IncomingCall"]


def test_per_call_subscription_gets_only_its_call_and_ends_with_it() -> None:
    seen: list[str] = []
    d = SipEventDispatcher()
    d.subscribe(Recorder(seen, "media"), order=MEDIA)
    d.subscribe(Recorder(seen, "c1"), call="c1", order=APP)
    d.subscribe(Recorder(seen, "late"), order=FALLBACK)
    d.dispatch(DtmfReceived("c2", "5", None))
    d.dispatch(DtmfReceived("c1", "5", None))
    d.dispatch(CallEnded("c1", "remote"))
    d.dispatch(DtmfReceived("c1", "6", None))  # after the call's last event: the per-call subscriber is gone
    assert seen == [
        "media:DtmfReceived",
        "late:DtmfReceived",
        "media:DtmfReceived",
        "c1:DtmfReceived",
        "late:DtmfReceived",
        "media:CallEnded",
        "c1:CallEnded",
        "late:CallEnded",
        "media:DtmfReceived",
        "late:DtmfReceived",
    ]


def test_unsubscribe() -> None:
    seen: list[str] = []
    d = SipEventDispatcher()
    sub = d.subscribe(Recorder(seen, "a"))
    per_call = d.subscribe(Recorder(seen, "b"), call="c1")
    d.unsubscribe(sub)
    d.unsubscribe(per_call)
    d.dispatch(CallEnded("c1", "remote"))
    assert seen == [] and d.subscribers(CallEnded("c1", "remote")) == []


def test_a_raising_subscriber_does_not_stop_the_others_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    d = SipEventDispatcher()
    d.subscribe(Recorder(seen, "before"), order=MEDIA)
    broken = d.subscribe(Recorder(seen, "broken", claim=True, error=KeyError("boom")), name="broken")
    d.subscribe(Recorder(seen, "after"))
    d.subscribe(Recorder(seen, "404"), order=FALLBACK, fallback=True)
    with caplog.at_level(logging.ERROR, logger="callplane.engine.dispatch"):
        for _ in range(5):
            d.dispatch(INCOMING)  # returns normally every time
    assert seen.count("after:IncomingCall") == 5 and seen.count("before:IncomingCall") == 5
    assert seen.count("404:IncomingCall") == 5  # the raising subscriber claimed nothing
    assert broken.faults == 5
    # 5 faults: a traceback for the first, one line each for the 2nd and 4th.
    assert [r.exc_info is not None for r in caplog.records] == [True, False, False]
    assert "subscriber broken failed on IncomingCall" in caplog.records[0].getMessage()
    assert "(4 times)" in caplog.records[2].getMessage()
