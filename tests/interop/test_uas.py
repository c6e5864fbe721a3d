"""callplane's UAS (``callplane.sip.ua.UserAgent``) against SIPp UAC scenarios (issue 3, "Checked by").

Our UA runs in-process on a free loopback port with a small test application (answer, ring then answer, ring
forever, reject, hang up); SIPp calls it. SIPp's exit code and stats judge the exchange, its message log shows
what our UAS sent, and the UA's own events show how many calls it believed it had.
"""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from callplane.sip.events import (
    CallCancelled,
    CallConfirmed,
    CallEnded,
    DtmfReceived,
    IncomingCall,
    MediaUpdated,
    ReinviteReceived,
)
from callplane.sip.sdp import SessionDescription, answer_offer
from tests.interop.conftest import need
from tests.interop.peers import LOOPBACK, PeerGroup, SippRun, TraceMessage
from tests.interop.uadriver import UaDriver, answer_sdp

pytestmark = pytest.mark.interop


async def finished(run: SippRun, timeout: float = 15.0) -> None:
    rc = await asyncio.to_thread(run.wait, timeout)
    assert rc == 0, run.report()
    stats = run.stats()
    assert (stats.successful, stats.failed) == (1, 0), run.report()


def responses(run: SippRun) -> list[TraceMessage]:
    return [m for m in run.messages(received=True) if not m.is_request]


def client(peers: PeerGroup, drv: UaDriver, scenario: str, **kwargs: object) -> SippRun:
    need("sipp")
    return peers.sipp(scenario, (LOOPBACK, drv.port), service="app", **kwargs)  # type: ignore[arg-type]


async def test_call_answered_then_caller_bye(peers: PeerGroup) -> None:
    async with UaDriver() as drv:
        run = client(peers, drv, "uac_basic")
        incoming = await drv.expect(IncomingCall)
        assert incoming.request_uri == f"sip:app@{LOOPBACK}:{drv.port}"
        assert incoming.media is not None and incoming.media.port == run.media_port
        drv.act(drv.ua.answer, incoming.call, answer_sdp(drv, incoming))
        await drv.expect(CallConfirmed)
        ended = await drv.expect(CallEnded)
        assert ended.by == "remote"
        await finished(run)
        ok = [m for m in responses(run) if m.status == 200]
        invite_ok, bye_ok = ok[0], ok[-1]
        assert invite_ok.cseq[1] == "INVITE" and bye_ok.cseq[1] == "BYE"
        assert invite_ok.header("Content-Type") == "application/sdp"
        # PCMU first, as SIPp offered, plus telephone-event
        assert f"m=audio {drv.rtp_port} RTP/AVP 0 101" in invite_ok.body
        assert invite_ok.header("Contact") is not None and invite_ok.to_tag


async def test_call_over_tcp(peers: PeerGroup) -> None:
    """The same call with SIPp connecting over TCP: responses go back on the connection the INVITE came on."""
    async with UaDriver() as drv:
        run = client(peers, drv, "uac_basic", transport="t1")
        incoming = await drv.expect(IncomingCall)
        assert incoming.source[2] == "TCP"
        drv.act(drv.ua.answer, incoming.call, answer_sdp(drv, incoming))
        await drv.expect(CallConfirmed)
        assert (await drv.expect(CallEnded)).by == "remote"
        await finished(run)
    assert {m.transport for m in run.messages()} == {"TCP"}
    ok = next(m for m in responses(run) if m.status == 200)
    assert (ok.header("Contact") or "").endswith(";transport=tcp>")


async def test_we_hang_up(peers: PeerGroup) -> None:
    async with UaDriver() as drv:
        run = client(peers, drv, "uac_wait_bye")
        incoming = await drv.expect(IncomingCall)
        drv.act(drv.ua.answer, incoming.call, answer_sdp(drv, incoming))
        await drv.expect(CallConfirmed)
        drv.act(drv.ua.bye, incoming.call)
        ended = await drv.expect(CallEnded)
        assert (ended.by, ended.status) == ("local", 200)
        await finished(run)
    bye = run.messages(received=True)[-1]
    assert bye.method == "BYE"
    # §12.2.1.1: the BYE goes to the caller's Contact, in the dialog (tags swapped).
    assert bye.request_uri.startswith(f"sip:sipp@{LOOPBACK}:{run.port}")
    invite = run.messages(received=False)[0]
    assert bye.to_tag == invite.from_tag and bye.call_id == invite.call_id


async def test_invite_copies_make_one_call(peers: PeerGroup) -> None:
    async with UaDriver() as drv:
        run = client(peers, drv, "uac_invite_retrans")
        incoming = await drv.expect(IncomingCall)
        drv.act(drv.ua.ring, incoming.call)
        await asyncio.sleep(1.5)  # the two copies arrive while we ring (within ms; slack for a loaded machine)
        drv.act(drv.ua.answer, incoming.call, answer_sdp(drv, incoming))
        await drv.wait_for(CallEnded)
        await finished(run)
        assert len(drv.of(IncomingCall)) == 1
    got = responses(run)
    # Each copy got the most recent provisional again (§17.2.1), all from one dialog (one To tag).
    assert [m.status for m in got if m.status == 180] == [180, 180, 180]
    assert len({m.to_tag for m in got if m.cseq[1] == "INVITE" and m.status != 100}) == 1
    assert len([m for m in got if m.status == 200 and m.cseq[1] == "INVITE"]) >= 1


async def test_invite_copy_after_the_200_is_no_new_call(peers: PeerGroup) -> None:
    async with UaDriver() as drv:
        run = client(peers, drv, "uac_invite_after_200")
        incoming = await drv.expect(IncomingCall)
        drv.act(drv.ua.answer, incoming.call, answer_sdp(drv, incoming))
        await drv.expect(CallConfirmed)
        assert (await drv.expect(CallEnded)).by == "remote"
        await finished(run)
        assert len(drv.of(IncomingCall)) == 1
    oks = [m for m in responses(run) if m.status == 200 and m.method == "INVITE"]
    assert len(oks) == 2 and oks[0].to_tag == oks[1].to_tag and oks[0].body == oks[1].body


async def test_cancel_while_ringing(peers: PeerGroup) -> None:
    async with UaDriver() as drv:
        run = client(peers, drv, "uac_cancel")
        incoming = await drv.expect(IncomingCall)
        drv.act(drv.ua.ring, incoming.call)
        cancelled = await drv.expect(CallCancelled)
        assert cancelled.call == incoming.call
        await finished(run)
        assert not drv.of(CallConfirmed)
    got = responses(run)
    statuses = [(m.status, m.cseq[1]) for m in got if m.status != 100]
    assert statuses == [(180, "INVITE"), (200, "CANCEL"), (487, "INVITE")]
    ringing, _, terminated = [m for m in got if m.status != 100]
    assert terminated.to_tag == ringing.to_tag  # the 487 ends the early dialog the 180 made


async def test_bye_on_the_early_dialog_is_a_hang_up_before_answer(peers: PeerGroup) -> None:
    """SIPp sends BYE on the early dialog of our 180: it needs 200 to the BYE and 487 to the INVITE (RFC 3261
    15.1.2), and the application hears that the caller gave up."""
    async with UaDriver() as drv:
        run = client(peers, drv, "uac_early_bye")
        incoming = await drv.expect(IncomingCall)
        drv.act(drv.ua.ring, incoming.call)
        assert await drv.expect(CallCancelled) == CallCancelled(incoming.call, "BYE")
        await finished(run)
        assert not drv.ua._calls
    got = [(m.status, m.cseq[1]) for m in responses(run) if m.status != 100]
    assert got == [(180, "INVITE"), (200, "BYE"), (487, "INVITE")]


async def test_reject_busy(peers: PeerGroup) -> None:
    async with UaDriver() as drv:
        run = client(peers, drv, "uac_busy")
        incoming = await drv.expect(IncomingCall)
        drv.act(drv.ua.reject, incoming.call, 486)
        await finished(run)
    assert [m.status for m in responses(run) if m.status != 100] == [486]


async def test_engine_headers_reach_the_caller(peers: PeerGroup) -> None:
    """Headers the engine passes to ring, answer and reject are in the bytes SIPp received (issue 7, SIP 9)."""
    pai = '"Bob" <sip:+15550001@127.0.0.1>'
    async with UaDriver() as drv:
        run = client(peers, drv, "uac_basic")
        incoming = await drv.expect(IncomingCall)
        drv.act(drv.ua.ring, incoming.call, headers=(("P-Asserted-Identity", pai),))
        drv.act(drv.ua.answer, incoming.call, answer_sdp(drv, incoming), headers=(("X-RestComm-CallSid", "CA1"),))
        await drv.expect(CallConfirmed)
        await drv.expect(CallEnded)
        await finished(run)
    got = {m.status: m for m in responses(run) if m.cseq[1] == "INVITE"}
    assert got[180].header("P-Asserted-Identity") == pai
    assert got[200].header("X-RestComm-CallSid") == "CA1"
    assert got[200].header("P-Asserted-Identity") is None  # per response, not sticky

    reason = 'Q.850;cause=17;text="User busy"'
    async with UaDriver() as drv:
        run = client(peers, drv, "uac_busy")
        incoming = await drv.expect(IncomingCall)
        drv.act(drv.ua.reject, incoming.call, 486, headers=(("Reason", reason), ("X-Busy", "yes")))
        await finished(run)
    (busy,) = [m for m in responses(run) if m.status == 486]
    assert (busy.header("Reason"), busy.header("X-Busy")) == (reason, "yes")


async def test_held_resumed_info_and_unknown_method(peers: PeerGroup) -> None:
    """SIPp holds us (a=sendonly) and resumes, sends an INFO digit and a method nobody knows, then hangs up."""
    async with UaDriver() as drv:
        run = client(peers, drv, "uac_hold")
        incoming = await drv.expect(IncomingCall)
        drv.act(drv.ua.answer, incoming.call, answer_sdp(drv, incoming))
        await drv.expect(CallConfirmed)
        held = await drv.expect(MediaUpdated)
        assert (held.media.direction, held.media.held) == ("sendonly", True)
        resumed = await drv.expect(MediaUpdated)
        assert (resumed.media.direction, resumed.media.held) == ("sendrecv", False)
        digit = await drv.expect(DtmfReceived)
        assert (digit.digit, digit.duration) == ("5", 160)
        assert (await drv.expect(CallEnded)).by == "remote"
        await finished(run)
    answers = [m for m in responses(run) if m.status == 200 and m.method == "INVITE"]
    assert len(answers) == 3  # SIPp checked a=recvonly in the second and a=sendrecv in the third
    versions = [int(next(line for line in m.body.splitlines() if line.startswith("o=")).split()[2]) for m in answers]
    assert versions[0] < versions[1] < versions[2]  # RFC 3264 §8: each changed answer raises the o= version
    assert len({m.to_tag for m in answers}) == 1
    unknown = next(m for m in responses(run) if m.method == "FOO")
    assert unknown.status == 501 and "INVITE" in (unknown.header("Allow") or "")


async def test_relayed_reinvites_are_answered_by_the_application(peers: PeerGroup) -> None:
    """With re-INVITE relay on, SIPp's hold and resume reach the application, whose answers SIPp checks
    (a=recvonly, then a=sendrecv): the path a bridge takes to pass an offer to its other leg."""
    async with UaDriver(relay_reinvites=True) as drv:
        run = client(peers, drv, "uac_hold")
        incoming = await drv.expect(IncomingCall)
        drv.act(drv.ua.answer, incoming.call, answer_sdp(drv, incoming))
        await drv.expect(CallConfirmed)
        for direction in ("recvonly", "sendrecv"):
            relayed = await drv.expect(ReinviteReceived)
            assert relayed.sdp is not None
            offer = SessionDescription.parse(relayed.sdp)
            answer = answer_offer(offer, drv.host, drv.rtp_port, session_id="2", direction=direction)
            drv.act(drv.ua.answer_reinvite, incoming.call, answer)
            assert (await drv.expect(MediaUpdated)).media.port == run.media_port
        assert (await drv.expect(DtmfReceived)).digit == "5"
        assert (await drv.expect(CallEnded)).by == "remote"
        await finished(run)
    answers = [m for m in responses(run) if m.status == 200 and m.method == "INVITE"]
    assert len(answers) == 3 and "a=recvonly" in answers[1].body and "a=sendrecv" in answers[2].body


async def test_reject_not_found_and_absorb_the_retransmission(peers: PeerGroup) -> None:
    async with UaDriver() as drv:
        run = client(peers, drv, "uac_not_found")
        incoming = await drv.expect(IncomingCall)
        drv.act(drv.ua.reject, incoming.call, 404)
        await finished(run)
        assert len(drv.of(IncomingCall)) == 1
    finals = [m for m in responses(run) if m.status != 100]
    assert [m.status for m in finals] == [404, 404]
    assert finals[0].to_tag == finals[1].to_tag  # the same response, re-sent by the server transaction


async def test_garbage_then_options(peers: PeerGroup) -> None:
    async with UaDriver() as drv:
        # Binary junk first, from a socket of our own: nothing may escape the receive path.
        rng = random.Random(3)
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for size in (0, 1, 3, 64, 1400, 9000):
                junk.sendto(bytes(rng.getrandbits(8) for _ in range(size)), (LOOPBACK, drv.port))
            junk.sendto(b"\r\n\r\n", (LOOPBACK, drv.port))  # a keep-alive (RFC 5626 section 3.5.1)
            junk.sendto(
                b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK1\r\n", (LOOPBACK, drv.port)
            )
        finally:
            junk.close()
        run = client(peers, drv, "uac_garbage")
        await finished(run)
        assert not drv.of(IncomingCall)
    ok = responses(run)[-1]
    assert (ok.status, ok.cseq[1]) == (200, "OPTIONS")
    allow = {m.strip() for m in (ok.header("Allow") or "").split(",")}
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"} <= allow
    assert "application/sdp" in (ok.header("Accept") or "")
