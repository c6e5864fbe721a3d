"""MediaCalls over real loopback sockets: our UA + SipEndpoint + MediaEngine against a second UA (UaDriver).

The peer's media address is a raw UDP socket owned by the test, so every assertion is about what a peer would see:
the SDP it received (port of our leg, negotiated codec), the RTP that arrived (payload type, from our leg's port),
and that our leg is gone (port released) once the call ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from callplane.core.errors import MediaError
from callplane.engine.media_session import CallDigit, MediaCall, can_send
from callplane.media import dtmf, rtp
from callplane.media.sources import ToneSource
from callplane.sip.events import (
    CallAnswered,
    CallCancelled,
    CallConfirmed,
    CallEnded,
    CallFailed,
    CallProgress,
    DtmfReceived,
    IncomingCall,
    MediaUpdated,
)
from callplane.sip.sdp import (
    Direction,
    MediaDescription,
    NegotiationError,
    SessionDescription,
    answer_offer,
    build_offer,
    refuse_offer,
)
from callplane.sip.transaction_events import Peer
from tests.engine.medianode import MediaNode
from tests.interop.peers import free_port_block
from tests.interop.uadriver import UaDriver
from tests.media.rawpeer import RawPeer

LOOPBACK = "127.0.0.1"


@pytest.fixture
async def node() -> AsyncIterator[MediaNode]:
    async with MediaNode() as n:
        yield n


@pytest.fixture
async def peer_ua() -> AsyncIterator[UaDriver]:
    async with UaDriver() as drv:
        yield drv


@pytest.fixture
def rtp_sock() -> Iterator[RawPeer]:
    raw = RawPeer()
    yield raw
    raw.close()


def audio(sdp: str | None) -> tuple[str, int, tuple[str, ...]]:
    """(c= address, m= port, formats) of the first audio stream."""
    assert sdp is not None
    parsed = SessionDescription.parse(sdp)
    section = parsed.audio()
    assert section is not None and parsed.connection is not None
    return parsed.connection.address, section.port, section.formats


async def incoming_call(node: MediaNode, drv: UaDriver, raw: RawPeer, codecs: tuple[str, ...]) -> tuple[str, MediaCall]:
    """The peer calls us offering ``codecs`` + 101 on ``raw``; we answer with MediaCalls."""
    offer = build_offer(LOOPBACK, raw.port, session_id="77", codecs=codecs)
    handle = drv.act(drv.ua.invite, f"sip:app@{LOOPBACK}:{node.port}", f"sip:alice@{LOOPBACK}", offer)
    incoming = await node.wait_for(IncomingCall)
    assert isinstance(incoming, IncomingCall)
    mc = node.calls.answer(incoming)
    return handle, mc


# Incoming calls -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("codecs", "pt"), [(("PCMU", "PCMA"), 0), (("PCMA", "PCMU"), 8)])
async def test_answer_carries_leg_port_and_codec_and_rtp_flows(
    node: MediaNode, peer_ua: UaDriver, rtp_sock: RawPeer, codecs: tuple[str, ...], pt: int
) -> None:
    handle, mc = await incoming_call(node, peer_ua, rtp_sock, codecs)
    answered = await peer_ua.wait_for(CallAnswered)
    assert audio(answered.sdp) == (LOOPBACK, mc.port, (str(pt), "101"))
    assert answered.media is not None
    assert (answered.media.port, answered.media.payload_type, answered.media.telephone_event_pt) == (mc.port, pt, 101)
    await node.wait_for(CallConfirmed)

    node.media.set_source(mc.leg_id, ToneSource([1000], None))
    packets = await rtp_sock.recv(3)
    assert {p.payload_type for p in packets} == {pt}
    _, source = await asyncio.wait_for(asyncio.get_running_loop().sock_recvfrom(rtp_sock.sock, 2048), 5)
    assert source == (LOOPBACK, mc.port)  # symmetric: our RTP leaves from the port we advertised

    peer_ua.act(peer_ua.ua.bye, handle)
    ended = await node.wait_for(CallEnded)
    assert isinstance(ended, CallEnded) and ended.by == "remote"
    assert mc.leg_id not in node.media.core.legs and node.calls.get(handle) is None
    assert mc.port not in node.media.ports.in_use


async def test_offer_without_a_codec_we_carry_is_rejected_488(peer_ua: UaDriver, rtp_sock: RawPeer) -> None:
    async with MediaNode(codecs=("PCMA",)) as node:
        offer = build_offer(LOOPBACK, rtp_sock.port, session_id="1", codecs=("PCMU",))
        peer_ua.act(peer_ua.ua.invite, f"sip:app@{LOOPBACK}:{node.port}", f"sip:alice@{LOOPBACK}", offer)
        incoming = await node.wait_for(IncomingCall)
        with pytest.raises(NegotiationError):
            node.calls.answer(incoming)
        failed = await peer_ua.wait_for(CallFailed)
        assert failed.status == 488
        assert len(node.calls) == 0 and node.media.core.legs == {} and node.media.ports.in_use == set()


async def test_late_offer_gets_our_offer_and_an_ack_without_answer_ends_the_call(
    node: MediaNode, peer_ua: UaDriver
) -> None:
    handle = peer_ua.act(peer_ua.ua.invite, f"sip:app@{LOOPBACK}:{node.port}", f"sip:alice@{LOOPBACK}", None)
    incoming = await node.wait_for(IncomingCall)
    assert isinstance(incoming, IncomingCall) and incoming.media is None
    mc = node.calls.answer(incoming)
    answered = await peer_ua.wait_for(CallAnswered)
    assert audio(answered.sdp) == (LOOPBACK, mc.port, ("0", "8", "101"))
    assert answered.sdp is not None and answered.needs_answer
    # This peer's ACK refuses every stream (port 0): no media can flow, so we hang up.
    peer_ua.act(peer_ua.ua.ack, handle, refuse_offer(SessionDescription.parse(answered.sdp), LOOPBACK, session_id="1"))
    confirmed = await node.wait_for(CallConfirmed)
    assert isinstance(confirmed, CallConfirmed) and confirmed.media is None
    ended = await peer_ua.wait_for(CallEnded)
    assert ended.by == "remote"
    assert mc.leg_id not in node.media.core.legs and len(node.calls) == 0


async def test_peer_hold_stops_our_rtp_and_resume_restarts_it(
    node: MediaNode, peer_ua: UaDriver, rtp_sock: RawPeer
) -> None:
    handle, mc = await incoming_call(node, peer_ua, rtp_sock, ("PCMU",))
    await peer_ua.wait_for(CallAnswered)
    await node.wait_for(CallConfirmed)
    await rtp_sock.recv(2)

    peer_ua.act(peer_ua.ua.hold, handle)  # re-INVITE a=sendonly: the peer will not listen to us
    updated = await node.wait_for(MediaUpdated)
    assert isinstance(updated, MediaUpdated) and updated.media.direction == "sendonly"
    reanswer = await peer_ua.wait_for(MediaUpdated)
    assert reanswer.media.direction == "recvonly" and reanswer.media.port == mc.port
    leg = node.media.leg(mc.leg_id)
    assert (mc.sending, leg.sending, leg.muted) == (False, False, False)
    sent = leg.packets_sent
    # The call is bridged to another party, which still hears what the holding peer sends (its hold music).
    other = RawPeer()
    try:
        b, _ = node.media.create_leg()
        node.media.set_remote(b, LOOPBACK, other.port)
        node.media.bridge(mc.leg_id, b)
        music = bytes([0x9A]) * 160
        for seq in range(10):  # ten ticks
            rtp_sock.send(rtp.build(0, seq, seq * 160, 77, music), mc.port)
            await asyncio.sleep(0.02)
        heard = [p.payload for p in await other.recv(25)]
        assert music in heard
        assert leg.packets_sent == sent  # and the peer got nothing from us
    finally:
        node.media.close_leg(b)
        other.close()

    peer_ua.act(peer_ua.ua.resume, handle)
    await node.wait_for(MediaUpdated)
    assert (mc.sending, leg.sending, leg.muted) == (True, True, False)
    packets = await rtp_sock.recv(2)
    assert packets[-1].payload_type == 0
    assert leg.packets_sent > sent


# Outgoing calls -----------------------------------------------------------------------------------------------------


async def test_invite_offers_leg_port_and_sends_to_the_answer(
    node: MediaNode, peer_ua: UaDriver, rtp_sock: RawPeer
) -> None:
    mc = node.calls.invite(f"sip:bob@{LOOPBACK}:{peer_ua.port}", f"sip:app@{LOOPBACK}")
    incoming = await peer_ua.expect(IncomingCall)
    assert audio(incoming.sdp) == (LOOPBACK, mc.port, ("0", "8", "101"))
    assert incoming.sdp is not None
    answer = answer_offer(
        SessionDescription.parse(incoming.sdp), LOOPBACK, rtp_sock.port, session_id="9", supported=("PCMA",)
    )
    peer_ua.act(peer_ua.ua.answer, incoming.call, answer)
    await node.wait_for(CallAnswered)
    assert mc.remote is not None and (mc.remote.port, mc.remote.codec) == (rtp_sock.port, "PCMA")
    packets = await rtp_sock.recv(2)
    assert {p.payload_type for p in packets} == {8}

    node.calls.hangup(mc.call)  # BYE; the leg is gone at once
    assert mc.leg_id not in node.media.core.legs and mc.port not in node.media.ports.in_use
    ended = await peer_ua.wait_for(CallEnded)
    assert ended.by == "remote"
    await node.wait_for(CallEnded)
    assert len(node.calls) == 0


async def test_rejected_invite_closes_the_leg(node: MediaNode, peer_ua: UaDriver) -> None:
    mc = node.calls.invite(f"sip:bob@{LOOPBACK}:{peer_ua.port}", f"sip:app@{LOOPBACK}")
    assert mc.leg_id in node.media.core.legs
    incoming = await peer_ua.expect(IncomingCall)
    peer_ua.act(peer_ua.ua.reject, incoming.call, 486)
    failed = await node.wait_for(CallFailed)
    assert isinstance(failed, CallFailed) and failed.status == 486
    assert mc.leg_id not in node.media.core.legs and mc.port not in node.media.ports.in_use
    assert len(node.calls) == 0


# Digits -------------------------------------------------------------------------------------------------------------


async def test_rfc4733_and_info_digits_surface_as_one_event(
    node: MediaNode, peer_ua: UaDriver, rtp_sock: RawPeer
) -> None:
    handle, mc = await incoming_call(node, peer_ua, rtp_sock, ("PCMU",))
    await peer_ua.wait_for(CallAnswered)
    await node.wait_for(CallConfirmed)
    # RFC 4733 digit "5" from the peer's media socket: three progress packets, three end packets.
    for i, (end, duration) in enumerate([(False, 160), (False, 320), (False, 480), (True, 640), (True, 640)]):
        payload = bytes(dtmf.TelephoneEvent(dtmf.event_for_digit("5"), end, 10, duration))
        rtp_sock.send(rtp.build(101, 100 + i, 8000, 0x1234, payload, marker=i == 0), mc.port)
    digit = await node.wait_for(CallDigit)
    assert digit == CallDigit(handle, "5", 80, "rfc4733")

    # SIP INFO (application/dtmf-relay) in the dialog, sent by the peer's transaction layer.
    dialog = peer_ua.ua.call(handle).dialog
    assert dialog is not None
    info = dialog.create_request("INFO", body=b"Signal=#\r\nDuration=160\r\n", content_type="application/dtmf-relay")
    peer_ua.endpoint.send_request(info, Peer("UDP", LOOPBACK, node.port))
    digit = await node.wait_for(CallDigit)
    assert digit == CallDigit(handle, "#", 160, "info")
    assert not any(isinstance(e, DtmfReceived) for e in node.events)


async def test_send_digits_goes_out_as_telephone_events(node: MediaNode, peer_ua: UaDriver, rtp_sock: RawPeer) -> None:
    _, mc = await incoming_call(node, peer_ua, rtp_sock, ("PCMU",))
    await peer_ua.wait_for(CallAnswered)
    node.calls.send_digits(mc.call, "7")
    events: list[dtmf.TelephoneEvent] = []
    while not (events and events[-1].end):
        (p,) = await rtp_sock.recv(1)
        if p.payload_type == 101:
            events.append(dtmf.TelephoneEvent.parse(p.payload))
    assert {e.event for e in events} == {7}


def test_can_send_follows_the_peer_direction() -> None:
    def md(direction: str, address: str = LOOPBACK) -> MediaDescription:
        return MediaDescription(address, 4000, 0, "PCMU", 8000, 101, direction, 20)  # type: ignore[arg-type]

    assert [can_send(md(d)) for d in ("sendrecv", "recvonly", "sendonly", "inactive")] == [True, True, False, False]
    assert can_send(md("sendrecv", "0.0.0.0")) is False


@pytest.mark.parametrize(
    ("direction", "answered", "sending"), [("sendonly", "recvonly", True), ("inactive", "inactive", False)]
)
async def test_our_hold_follows_the_peer_answer(
    node: MediaNode, peer_ua: UaDriver, rtp_sock: RawPeer, direction: Direction, answered: str, sending: bool
) -> None:
    handle, mc = await incoming_call(node, peer_ua, rtp_sock, ("PCMU",))
    await peer_ua.wait_for(CallAnswered)
    await node.wait_for(CallConfirmed)
    node.calls.hold(mc.call, direction)
    offered = await peer_ua.wait_for(MediaUpdated)
    assert (offered.media.direction, offered.media.port) == (direction, mc.port)
    update = await node.wait_for(MediaUpdated)
    assert update.media.direction == answered
    assert (mc.sending, node.media.leg(mc.leg_id).sending) == (sending, sending)
    node.calls.resume(mc.call)
    update = await node.wait_for(MediaUpdated)
    assert update.media.direction == "sendrecv" and mc.sending
    assert handle == mc.call


async def test_no_free_rtp_port_rejects_503(peer_ua: UaDriver, rtp_sock: RawPeer) -> None:
    low = free_port_block(2)
    async with MediaNode(port_range=(low, low + 2)) as node:
        node.media.create_leg()  # the only pair in the range
        offer = build_offer(LOOPBACK, rtp_sock.port, session_id="1")
        peer_ua.act(peer_ua.ua.invite, f"sip:app@{LOOPBACK}:{node.port}", f"sip:alice@{LOOPBACK}", offer)
        incoming = await node.wait_for(IncomingCall)
        with pytest.raises(MediaError):
            node.calls.answer(incoming)
        failed = await peer_ua.wait_for(CallFailed)
        assert failed.status == 503 and len(node.calls) == 0


async def test_legacy_hold_address_keeps_the_latched_remote(
    node: MediaNode, peer_ua: UaDriver, rtp_sock: RawPeer
) -> None:
    handle, mc = await incoming_call(node, peer_ua, rtp_sock, ("PCMU",))
    await peer_ua.wait_for(CallAnswered)
    await node.wait_for(CallConfirmed)
    leg = node.media.leg(mc.leg_id)
    assert mc.remote is not None and leg.remote == (LOOPBACK, rtp_sock.port)
    # RFC 2543 hold (c=0.0.0.0), as old phones send it in a re-INVITE: stop sending, forget no address.
    held = MediaDescription("0.0.0.0", rtp_sock.port, 0, "PCMU", 8000, 101, "sendrecv", 20)
    node.calls.on_sip_event(MediaUpdated(handle, held, ""))
    assert (mc.sending, leg.sending, leg.remote) == (False, False, (LOOPBACK, rtp_sock.port))
    resumed = MediaDescription(LOOPBACK, rtp_sock.port, 8, "PCMA", 8000, None, "sendrecv", 20)
    node.calls.on_sip_event(MediaUpdated(handle, resumed, ""))
    assert (mc.sending, leg.sending, leg.remote, leg.payload_type) == (True, True, (LOOPBACK, rtp_sock.port), 8)
    assert leg.dtmf_payload_type is None  # the peer dropped telephone-event: no RFC 4733 digits to it
    with pytest.raises(MediaError):
        node.calls.send_digits(handle, "1")
    (p,) = await rtp_sock.recv(1)
    while p.payload_type != 8:
        (p,) = await rtp_sock.recv(1)


@pytest.mark.parametrize(
    ("connection", "media", "why"),
    [
        # G.711 on a dynamic payload type: the leg cannot carry it.
        (LOOPBACK, "RTP/AVP 96\r\na=rtpmap:96 PCMU/8000", "dynamic payload type"),
        # A host name in c=: never looked up (a lookup would block the loop every call's audio runs on).
        ("media.invalid", "RTP/AVP 0", "not an IPv4 address"),
    ],
)
async def test_an_offer_the_leg_cannot_use_is_rejected_488(
    node: MediaNode, peer_ua: UaDriver, rtp_sock: RawPeer, connection: str, media: str, why: str
) -> None:
    offer = SessionDescription.parse(
        f"v=0\r\no=x 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {connection}\r\nt=0 0\r\n"
        f"m=audio {rtp_sock.port} {media}\r\n"
    )
    peer_ua.act(peer_ua.ua.invite, f"sip:app@{LOOPBACK}:{node.port}", f"sip:alice@{LOOPBACK}", offer)
    incoming = await node.wait_for(IncomingCall)
    with pytest.raises(NegotiationError, match=why):
        node.calls.answer(incoming)
    failed = await peer_ua.wait_for(CallFailed)
    assert failed.status == 488 and len(node.calls) == 0 and node.media.core.legs == {}


async def test_hangup_while_ringing_cancels_and_closes_the_leg(node: MediaNode, peer_ua: UaDriver) -> None:
    mc = node.calls.invite(f"sip:bob@{LOOPBACK}:{peer_ua.port}", f"sip:app@{LOOPBACK}")
    incoming = await peer_ua.expect(IncomingCall)
    peer_ua.act(peer_ua.ua.ring, incoming.call)
    await node.wait_for(CallProgress)
    node.calls.hangup(mc.call)
    assert mc.leg_id not in node.media.core.legs and mc.port not in node.media.ports.in_use
    await peer_ua.wait_for(CallCancelled)
    failed = await node.wait_for(CallFailed)
    assert failed.status == 487 and len(node.calls) == 0
