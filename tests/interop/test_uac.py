"""callplane's UAC (``callplane.sip.ua.UserAgent``) against SIPp UAS scenarios (issue 3, "Checked by").

Each test places one call from our UA, running in-process on a free loopback port, to a SIPp scenario under
``scenarios/``. SIPp is the judge: its exit code and statistics say whether every message it required arrived in
order, and its message log shows exactly what it received from us.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from callplane.sip.digest import Credentials
from callplane.sip.events import CallAnswered, CallEnded, CallFailed, CallProgress, MediaUpdated, ReinviteFailed
from callplane.sip.sdp import SessionDescription, answer_offer
from callplane.sip.transaction import TimerConfig
from callplane.sip.ua import RING_TIMEOUT
from tests.interop.conftest import need
from tests.interop.peers import LOOPBACK, PeerGroup, SippRun, TraceMessage, digest_response, parse_digest
from tests.interop.uadriver import UaDriver, offer_sdp

pytestmark = pytest.mark.interop


async def finished(run: SippRun, timeout: float = 15.0) -> None:
    """SIPp exited 0 with exactly one successful call."""
    rc = await asyncio.to_thread(run.wait, timeout)
    assert rc == 0, run.report()
    stats = run.stats()
    assert (stats.successful, stats.failed) == (1, 0), run.report()


def got(run: SippRun) -> list[TraceMessage]:
    return run.messages(received=True)


def methods(run: SippRun) -> list[str]:
    return [m.method for m in got(run)]


def server(peers: PeerGroup, scenario: str, **kwargs: object) -> SippRun:
    need("sipp")
    return peers.sipp(scenario, **kwargs)  # type: ignore[arg-type]


async def call(drv: UaDriver, run: SippRun, user: str = "svc") -> str:
    handle: str = drv.act(drv.ua.invite, f"sip:{user}@{LOOPBACK}:{run.port}", f"sip:alice@{LOOPBACK}", offer_sdp(drv))
    return handle


async def test_answered_call_and_our_bye(peers: PeerGroup) -> None:
    uas = server(peers, "uas_answer")
    async with UaDriver() as drv:
        handle = await call(drv, uas)
        progress = await drv.expect(CallProgress)
        assert (progress.status, progress.reason) == (180, "Ringing")
        answered = await drv.expect(CallAnswered)
        assert answered.media is not None
        assert (answered.media.codec, answered.media.port, answered.media.telephone_event_pt) == (
            "PCMU",
            uas.media_port,
            101,
        )
        drv.act(drv.ua.bye, handle)
        ended = await drv.expect(CallEnded)
        assert (ended.by, ended.status) == ("local", 200)
    await finished(uas)
    invite, ack, bye = got(uas)
    assert [invite.method, ack.method, bye.method] == ["INVITE", "ACK", "BYE"]
    assert invite.header("Content-Type") == "application/sdp" and "m=audio" in invite.body
    assert invite.branch.startswith("z9hG4bK")
    # The 2xx ACK is its own transaction (§13.2.2.4): new branch, INVITE's CSeq number, the callee's Contact as target.
    assert ack.branch != invite.branch and ack.cseq == (invite.cseq[0], "ACK")
    assert ack.request_uri == f"sip:{LOOPBACK}:{uas.port};transport=UDP"
    assert bye.request_uri == ack.request_uri and bye.cseq[0] > invite.cseq[0]
    assert ack.to_tag == bye.to_tag != "" and ack.call_id == bye.call_id == invite.call_id == handle


async def test_call_over_tcp(peers: PeerGroup) -> None:
    uas = server(peers, "uas_answer", transport="t1")
    async with UaDriver(transport="TCP") as drv:
        target = f"sip:svc@{LOOPBACK}:{uas.port};transport=tcp"
        handle = drv.act(drv.ua.invite, target, f"sip:alice@{LOOPBACK}", offer_sdp(drv))
        await drv.wait_for(CallAnswered)
        drv.act(drv.ua.bye, handle)
        assert (await drv.wait_for(CallEnded)).by == "local"
        await finished(uas)  # before the endpoint closes the connection, which SIPp would count as a failure
    assert methods(uas) == ["INVITE", "ACK", "BYE"]
    assert {m.transport for m in uas.messages()} == {"TCP"}
    assert all((m.header("Via") or "").startswith("SIP/2.0/TCP ") for m in got(uas))


async def test_answered_call_remote_bye(peers: PeerGroup) -> None:
    uas = server(peers, "uas_answer_bye")
    async with UaDriver() as drv:
        await call(drv, uas)
        await drv.wait_for(CallAnswered)
        ended = await drv.wait_for(CallEnded)
        assert ended.by == "remote"
    await finished(uas)
    assert methods(uas) == ["INVITE", "ACK", "BYE"]
    assert got(uas)[-1].status == 200


async def test_busy_is_reported_and_acked(peers: PeerGroup) -> None:
    uas = server(peers, "uas_busy")
    async with UaDriver() as drv:
        await call(drv, uas)
        failed = await drv.wait_for(CallFailed)
        assert (failed.status, failed.reason) == (486, "Busy Here")
        assert not drv.of(CallAnswered)
    await finished(uas)
    invite, ack = got(uas)
    assert ack.method == "ACK"
    # §17.1.1.3: the ACK of a non-2xx final belongs to the INVITE transaction.
    assert ack.branch == invite.branch and ack.cseq == (invite.cseq[0], "ACK")
    assert ack.request_uri == invite.request_uri and ack.to_tag == uas.messages(received=False)[-1].to_tag


async def test_cancel_while_ringing(peers: PeerGroup) -> None:
    uas = server(peers, "uas_cancel")
    async with UaDriver() as drv:
        handle = await call(drv, uas)
        await drv.expect(CallProgress)
        drv.act(drv.ua.cancel, handle)
        failed = await drv.wait_for(CallFailed)
        assert failed.status == 487
    await finished(uas)
    invite, cancel, ack = got(uas)
    assert [cancel.method, ack.method] == ["CANCEL", "ACK"]
    # §9.1: CANCEL copies the INVITE's Request-URI, Call-ID, From, To, CSeq number and top Via branch.
    assert cancel.branch == invite.branch and cancel.cseq == (invite.cseq[0], "CANCEL")
    assert cancel.request_uri == invite.request_uri and cancel.header("To") == invite.header("To")
    assert ack.branch == invite.branch and ack.cseq == (invite.cseq[0], "ACK")


async def test_ring_timeout_cancels_a_call_that_rings_for_ever(peers: PeerGroup) -> None:
    """uas_cancel rings and never answers; a 1 s ring timeout must CANCEL it and report no-answer (issue 7, item 9)."""
    uas = server(peers, "uas_cancel")
    async with UaDriver() as drv:
        started = drv.now()
        handle = drv.act(
            drv.ua.invite, f"sip:svc@{LOOPBACK}:{uas.port}", f"sip:alice@{LOOPBACK}", offer_sdp(drv), ring_timeout=1.0
        )
        await drv.expect(CallProgress)
        failed = await drv.wait_for(CallFailed)
        assert 1.0 <= drv.now() - started < 1.5
        assert failed == CallFailed(handle, 487, RING_TIMEOUT, no_answer=True)
        async with asyncio.timeout(5):  # the engine is told at the deadline; the UA still ACKs the 487 after it
            while handle in drv.ua._calls:
                await asyncio.sleep(0.02)
    await finished(uas)
    invite, cancel, ack = got(uas)
    assert [invite.method, cancel.method, ack.method] == ["INVITE", "CANCEL", "ACK"]
    assert cancel.branch == invite.branch and 0.95 <= _when(cancel) - _when(invite) < 1.5


async def test_late_offer_answer_goes_in_the_ack(peers: PeerGroup) -> None:
    """INVITE without SDP; SIPp offers in the 200 and requires our answer in the ACK (RFC 3261 §13.2.2.4)."""
    uas = server(peers, "uas_late_offer")
    async with UaDriver() as drv:
        handle = drv.act(drv.ua.invite, f"sip:svc@{LOOPBACK}:{uas.port}", f"sip:alice@{LOOPBACK}", None)
        answered = await drv.wait_for(CallAnswered)
        assert answered.needs_answer and answered.media is not None and answered.media.port == uas.media_port
        assert answered.sdp is not None
        rtp_port = drv.rtp_port
        answer = answer_offer(SessionDescription.parse(answered.sdp), LOOPBACK, rtp_port, session_id="9")
        drv.act(drv.ua.ack, handle, answer)
        drv.act(drv.ua.bye, handle)
        await drv.wait_for(CallEnded)
    await finished(uas)
    invite, ack, bye = got(uas)
    assert [invite.method, ack.method, bye.method] == ["INVITE", "ACK", "BYE"]
    assert invite.body.strip() == "" and ack.header("Content-Type") == "application/sdp"
    assert f"m=audio {rtp_port} RTP/AVP 0 101" in ack.body


async def test_hold_and_resume(peers: PeerGroup) -> None:
    uas = server(peers, "uas_held")  # it requires a=sendonly, then a=sendrecv, in our re-INVITEs
    async with UaDriver() as drv:
        handle = await call(drv, uas)
        await drv.wait_for(CallAnswered)
        drv.act(drv.ua.hold, handle)
        held = await drv.expect(MediaUpdated)
        assert held.media.direction == "recvonly"  # the peer's answer to our sendonly
        drv.act(drv.ua.resume, handle)
        resumed = await drv.expect(MediaUpdated)
        assert resumed.media.direction == "sendrecv"
        drv.act(drv.ua.bye, handle)
        await drv.wait_for(CallEnded)
    await finished(uas)
    invites = [m for m in got(uas) if m.method == "INVITE"]
    assert [m.cseq[0] for m in invites] == [invites[0].cseq[0] + i for i in range(3)]
    versions = [int(next(line for line in m.body.splitlines() if line.startswith("o=")).split()[2]) for m in invites]
    assert versions[0] < versions[1] < versions[2]  # RFC 3264 §8: a changed offer raises the o= version
    assert invites[1].request_uri == f"sip:{LOOPBACK}:{uas.port};transport=UDP"  # in-dialog: the callee's Contact


async def hold_then_hang_up(drv: UaDriver, uas: SippRun) -> None:
    """Call ``uas``, put it on hold (its answer must be recvonly, however many rounds the re-INVITE takes), BYE."""
    handle = await call(drv, uas)
    await drv.wait_for(CallAnswered)
    drv.act(drv.ua.hold, handle)
    held = await drv.wait_for(MediaUpdated, timeout=8)
    assert held.media.direction == "recvonly"
    drv.act(drv.ua.bye, handle)
    await drv.wait_for(CallEnded)


async def test_challenged_reinvite_ack_carries_the_credentials(peers: PeerGroup) -> None:
    """uas_reinvite_auth challenges our re-INVITE with 407 and requires the ACK of the 200 that follows to carry
    Proxy-Authorization (RFC 3261 §22.1: the ACK repeats the credentials of the INVITE it acknowledges)."""
    uas = server(peers, "uas_reinvite_auth")
    async with UaDriver(credentials=Credentials("alice", "secret")) as drv:
        await hold_then_hang_up(drv, uas)
    await finished(uas)
    challenged, retry = [m for m in got(uas) if m.method == "INVITE"][1:]
    check_credentials([challenged, retry], "Proxy-Authorization", "MD5")
    ack = next(m for m in got(uas) if m.method == "ACK" and m.cseq == (retry.cseq[0], "ACK"))
    assert ack.header("Proxy-Authorization") == retry.header("Proxy-Authorization")


async def test_reinvite_answered_491_is_sent_again_after_the_14_1_delay(peers: PeerGroup) -> None:
    """uas_glare answers our first re-INVITE 491. We placed the call (own the Call-ID), so the re-INVITE goes again
    2.1-4 s later (RFC 3261 §14.1), in a new transaction, and the engine only sees the outcome."""
    uas = server(peers, "uas_glare")
    async with UaDriver() as drv:
        await hold_then_hang_up(drv, uas)
        assert not [e for e in drv.events if isinstance(e, ReinviteFailed)]
    await finished(uas)
    log = uas.messages()
    refused = next(m for m in log if m.direction == "sent" and m.status == 491)
    first, second = [m for m in got(uas) if m.method == "INVITE"][1:]
    ack_491 = next(m for m in got(uas) if m.method == "ACK" and m.cseq == (first.cseq[0], "ACK"))
    assert ack_491.branch == first.branch  # the ACK of a non-2xx is part of its INVITE transaction
    assert second.branch != first.branch and second.cseq[0] > first.cseq[0]
    assert 2.1 - 0.05 <= _when(second) - _when(refused) <= 4.0 + 0.5


async def test_cancel_waits_for_a_provisional(peers: PeerGroup) -> None:
    """We cancel at once; the UAS stays silent for 700 ms. The CANCEL must wait for the 180 (§9.1)."""
    uas = server(peers, "uas_cancel_late_ring")
    async with UaDriver() as drv:
        handle = await call(drv, uas)
        drv.act(drv.ua.cancel, handle)
        failed = await drv.wait_for(CallFailed)
        assert failed.status == 487
    await finished(uas)
    assert methods(uas)[-2:] == ["CANCEL", "ACK"]
    assert set(methods(uas)[:-2]) == {"INVITE"}  # the INVITE (and its retransmission at 500 ms)
    log = uas.messages()
    cancel_at = next(i for i, m in enumerate(log) if m.method == "CANCEL" and m.is_request)
    assert (log[cancel_at - 1].direction, log[cancel_at - 1].status) == ("sent", 180)


def check_credentials(invites: list[TraceMessage], header: str, algorithm: str) -> None:
    first, second = invites
    value = second.header(header)
    assert value is not None, f"no {header} in the second INVITE"
    params = parse_digest(value)
    assert params["username"] == "alice" and params["realm"] == "callplane.test"
    assert params.get("algorithm", "MD5").upper() == algorithm
    assert params["qop"] == "auth" and params["nc"] == "00000001" and params["cnonce"]
    assert params["response"] == digest_response(params, "INVITE", "secret")
    # §22.2: same Call-ID and From tag, a higher CSeq, a new branch.
    assert second.call_id == first.call_id and second.from_tag == first.from_tag
    assert second.cseq[0] == first.cseq[0] + 1 and second.branch != first.branch


async def test_401_challenge_answered(peers: PeerGroup) -> None:
    uas = server(peers, "uas_auth401")  # SIPp's verifyauth checks the digest itself
    async with UaDriver(credentials=Credentials("alice", "secret")) as drv:
        handle = await call(drv, uas)
        await drv.wait_for(CallAnswered)
        drv.act(drv.ua.bye, handle)
        await drv.wait_for(CallEnded)
    await finished(uas)
    assert methods(uas) == ["INVITE", "ACK", "INVITE", "ACK", "BYE"]
    check_credentials([m for m in got(uas) if m.method == "INVITE"], "Authorization", "MD5")


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_407_challenge_answered(peers: PeerGroup, algorithm: str) -> None:
    uas = server(peers, "uas_auth407", keys={"algorithm": algorithm})
    async with UaDriver(credentials=Credentials("alice", "secret")) as drv:
        handle = await call(drv, uas)
        await drv.wait_for(CallAnswered)
        drv.act(drv.ua.bye, handle)
        await drv.wait_for(CallEnded)
    await finished(uas)
    assert methods(uas) == ["INVITE", "ACK", "INVITE", "ACK", "BYE"]
    check_credentials([m for m in got(uas) if m.method == "INVITE"], "Proxy-Authorization", algorithm)


async def test_wrong_password_fails_the_call(peers: PeerGroup) -> None:
    """The oracle can fail: a wrong password makes SIPp's verifyauth reject the call."""
    uas = server(peers, "uas_auth401", timeout=4.0)
    async with UaDriver(credentials=Credentials("alice", "not-the-password")) as drv:
        await call(drv, uas)
        rc = await asyncio.to_thread(uas.wait, 15)
    assert rc != 0
    assert uas.stats().successful == 0
    assert "bad digest" in uas.errors() + uas.peer.output()


def _when(msg: TraceMessage) -> float:
    return datetime.strptime(msg.wall, "%Y-%m-%d %H:%M:%S.%f").timestamp()


async def test_late_answer_after_invite_retransmissions(peers: PeerGroup) -> None:
    uas = server(peers, "uas_late")
    async with UaDriver() as drv:
        handle = await call(drv, uas)
        await drv.wait_for(CallAnswered)
        drv.act(drv.ua.bye, handle)
        await drv.wait_for(CallEnded)
    await finished(uas)
    invites = [m for m in got(uas) if m.method == "INVITE"]
    assert len(invites) == 3
    # Retransmissions of one transaction (§17.1.1.2): identical copies, Timer A doubling from T1 = 0.5 s.
    assert len({(m.branch, m.cseq, m.body) for m in invites}) == 1
    assert _when(invites[1]) - _when(invites[0]) >= 0.45
    assert _when(invites[2]) - _when(invites[0]) >= 1.4


async def test_unanswered_invite_times_out(peers: PeerGroup) -> None:
    """With T1 = 50 ms, Timer A sends the INVITE at 0, 50, 150, 350, 750, 1550 and 3150 ms; Timer B (64*T1 = 3.2 s)
    ends the call with 408 (§17.1.1.2). SIPp logs every copy it got."""
    uas = server(peers, "uas_silent", extra=["-d", "4500"])
    async with UaDriver(timers=TimerConfig(t1=0.05)) as drv:
        await call(drv, uas)
        failed = await drv.wait_for(CallFailed, timeout=10)
        assert failed.status == 408
    await finished(uas)
    invites = got(uas)
    assert [m.method for m in invites] == ["INVITE"] * 7
    assert len({(m.branch, m.cseq) for m in invites}) == 1
    assert _when(invites[-1]) - _when(invites[0]) >= 3.1


async def test_retransmitted_200_is_acked_each_time(peers: PeerGroup) -> None:
    uas = server(peers, "uas_200_retrans")
    async with UaDriver() as drv:
        handle = await call(drv, uas)
        await drv.wait_for(CallAnswered)
        await asyncio.sleep(2.0)  # the scenario re-sends its 200 at +0.3 s and +0.6 s (slack for a loaded machine)
        drv.act(drv.ua.bye, handle)
        await drv.wait_for(CallEnded)
        assert len(drv.of(CallAnswered)) == 1
    await finished(uas)
    assert methods(uas) == ["INVITE", "ACK", "ACK", "ACK", "BYE"]
    acks = [m for m in got(uas) if m.method == "ACK"]
    assert len({(m.branch, m.cseq, m.request_uri) for m in acks}) == 1
