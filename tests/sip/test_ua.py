"""UAC and UAS endpoints joined by hand in virtual time: datagrams are passed (or "lost") explicitly."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callplane.core.ids import IdSource
from callplane.sip.digest import Credentials, DigestResponse, DigestServer, Verdict
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
    Registered,
    RegisterReceived,
    RegistrationFailed,
    ReinviteFailed,
)
from callplane.sip.message import Request, Response, parse_message
from callplane.sip.registrar import InMemoryBindingStore, Registrar, Secret
from callplane.sip.sdp import MediaDescription, SessionDescription, answer_offer, build_offer
from callplane.sip.transaction_events import Peer
from callplane.sip.ua import CallStateError, UserAgent
from callplane.sip.uac import GLARE_RETRIES
from tests.sip.uapair import (
    ALICE,
    BOB,
    A,
    B,
    Link,
    answer_for,
    connected,
    first_line,
    lines,
    offer,
    ok_for,
    parse,
    start_call,
)

# ------------------------------------------------------------------------------------------------- basic call


def test_invite_exact_bytes() -> None:
    link = Link()
    handle = link.a.invite(BOB, ALICE, offer(), 0.0, from_display="Alice", headers=(("X-Account", "AC1"),))
    ((data, peer),) = link.a.datagrams_to_send()
    assert peer == B
    ids = IdSource(1)
    call_id, tag, branch = ids.call_id("127.0.0.1"), ids.tag(), ids.branch()
    assert handle == call_id
    body = str(offer())
    assert data.decode() == (
        f"INVITE {BOB} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "Alice" <{ALICE}>;tag={tag}\r\n'
        f"To: <{BOB}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:alice@127.0.0.1:5061>\r\n"
        "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO\r\n"
        "User-Agent: callplane\r\n"
        "X-Account: AC1\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )


def test_call_answered_acked_and_ended_by_caller() -> None:
    link = Link()
    handle, incoming = start_call(link)
    assert incoming.call == handle
    assert incoming.from_uri == ALICE and incoming.to_uri == BOB and incoming.request_uri == BOB
    assert incoming.media == MediaDescription("127.0.0.1", 20000, 0, "PCMU", 8000, 101, "sendrecv", 20)
    assert incoming.source == ("127.0.0.1", 5061, "UDP")
    link.b.ring(incoming.call, link.now)
    link.pump()
    assert link.events(link.a) == [CallProgress(handle, 180, "Ringing", None)]
    link.b.answer(incoming.call, answer_for(incoming), link.now)
    link.pump()
    (answered,) = link.events(link.a)
    assert isinstance(answered, CallAnswered)
    assert answered.media == MediaDescription("127.0.0.1", 30000, 0, "PCMU", 8000, 101, "sendrecv", 20)
    assert link.events(link.b) == [CallConfirmed(handle, None)]
    link.a.bye(handle, link.now)
    link.pump()
    assert link.events(link.b) == [CallEnded(handle, "remote")]
    assert link.events(link.a) == [CallEnded(handle, "local", 200, "OK")]
    assert lines(link.log) == [
        "a: INVITE sip:bob@127.0.0.1:5062 SIP/2.0",
        "b: SIP/2.0 100 Trying",
        "b: SIP/2.0 180 Ringing",
        "b: SIP/2.0 200 OK",
        "a: ACK sip:bob@127.0.0.1:5062 SIP/2.0",
        "a: BYE sip:bob@127.0.0.1:5062 SIP/2.0",
        "b: SIP/2.0 200 OK",
    ]
    with pytest.raises(CallStateError):
        link.a.bye(handle, link.now)


def test_ack_is_end_to_end_and_bye_from_callee() -> None:
    link = Link()
    handle, _ = connected(link)
    link.b.bye(handle, link.now)
    link.pump()
    bye = parse(link.log[0][1])
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert str(bye.uri) == "sip:alice@127.0.0.1:5061"
    assert bye.headers.get("to") is not None and bye.to.uri.user == "alice"
    assert str(bye.cseq) == "1 BYE"
    assert link.events(link.a) == [CallEnded(handle, "remote")]
    assert link.events(link.b) == [CallEnded(handle, "local", 200, "OK")]


def test_early_media_183() -> None:
    link = Link()
    handle, incoming = start_call(link)
    link.b.ring(incoming.call, link.now, early_sdp=answer_for(incoming))
    link.pump()
    (progress,) = link.events(link.a)
    assert isinstance(progress, CallProgress) and progress.status == 183
    assert progress.media is not None and progress.media.port == 30000


# ------------------------------------------------------------------------------------------- retransmissions


def test_retransmitted_invite_is_one_call() -> None:
    link = Link()
    link.a.invite(BOB, ALICE, offer(), 0.0)
    link.pass_("a", keep=lambda d: True)
    link.b.datagrams_to_send()  # the 100 Trying is lost
    link.advance(0.5)  # Timer A: the INVITE goes again
    link.pass_("a")
    link.advance(1.5)
    link.pass_("a")
    assert [type(e) for e in link.events(link.b)] == [IncomingCall]
    assert lines(link.log) == ["a: INVITE sip:bob@127.0.0.1:5062 SIP/2.0"] * 3


def test_lost_ack_2xx_retransmitted_and_reacked_with_same_ack() -> None:
    link = Link()
    handle, incoming = start_call(link)
    link.log.clear()
    link.b.answer(incoming.call, answer_for(incoming), link.now)
    link.pass_("b")
    link.pass_("a", keep=lambda d: False)  # the ACK is lost
    for t, arrives in ((0.5, False), (1.5, True)):
        link.advance(t)
        link.pass_("b")  # 200 again
        link.pass_("a", keep=(lambda d: True) if arrives else (lambda d: False))  # ACK again
    assert [e for e in link.events(link.a) if isinstance(e, CallAnswered)] != []
    assert link.events(link.b) == [CallConfirmed(handle, None)]
    acks = [data for src, data in link.log if src == "a"]
    assert len(acks) == 3 and acks[0] == acks[1] == acks[2]
    link.advance(10.0)
    assert link.b.datagrams_to_send() == []  # retransmission stopped with the ACK


def test_no_ack_means_bye_after_64_t1() -> None:
    link = Link()
    handle, incoming = start_call(link)
    link.b.answer(incoming.call, answer_for(incoming), link.now)
    link.pass_("b")
    link.events(link.a)
    link.a.datagrams_to_send()  # every ACK is lost
    link.log.clear()
    times = []
    while link.now < 40:
        t = link.b.get_timer()
        assert t is not None
        link.advance(t)
        for data, _ in link.b.datagrams_to_send():
            times.append((t, first_line(data)))
        if any("BYE" in line for _, line in times):
            break
    oks = [t for t, line in times if line == "SIP/2.0 200 OK"]
    assert oks == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]  # T1 doubling, capped at T2
    assert times[-1] == (32.0, "BYE sip:alice@127.0.0.1:5061 SIP/2.0")  # 64*T1
    assert link.events(link.b) == [CallEnded(handle, "timeout", 408, "No ACK")]


# ------------------------------------------------------------------------------------------- failures, CANCEL


@pytest.mark.parametrize("status", [404, 480, 486, 487, 488, 603])
def test_reject_reported_and_acked_by_transaction(status: int) -> None:
    link = Link()
    handle, incoming = start_call(link)
    link.log.clear()
    link.b.reject(incoming.call, status, link.now)
    link.pump()
    (failed,) = link.events(link.a)
    assert isinstance(failed, CallFailed) and failed.status == status
    assert lines(link.log)[-1] == "a: ACK sip:bob@127.0.0.1:5062 SIP/2.0"
    assert link.log[0][1].split(b"\r\n")[0].decode().startswith(f"SIP/2.0 {status} ")


def test_cancel_waits_for_a_provisional() -> None:
    link = Link()
    handle = link.a.invite(BOB, ALICE, offer(), 0.0)
    link.a.cancel(handle, 0.0)
    link.pass_("a")  # only the INVITE: no CANCEL before a 1xx
    assert lines(link.log) == ["a: INVITE sip:bob@127.0.0.1:5062 SIP/2.0"]
    link.pump()  # 100 Trying arrives -> CANCEL -> 200 + 487 -> ACK
    assert lines(link.log)[1:] == [
        "b: SIP/2.0 100 Trying",
        "a: CANCEL sip:bob@127.0.0.1:5062 SIP/2.0",
        "b: SIP/2.0 200 OK",
        "b: SIP/2.0 487 Request Terminated",
        "a: ACK sip:bob@127.0.0.1:5062 SIP/2.0",
    ]
    assert link.events(link.a) == [CallFailed(handle, 487, "Request Terminated")]
    assert [type(e) for e in link.events(link.b)] == [IncomingCall, CallCancelled]
    cancel = parse(link.log[2][1])
    invite = parse(link.log[0][1])
    assert str(cancel.via) == str(invite.via)
    assert str(cancel.cseq) == "1 CANCEL"


def test_cancel_after_ringing_and_487_tag_matches() -> None:
    link = Link()
    handle, incoming = start_call(link)
    link.b.ring(incoming.call, link.now)
    link.pump()
    link.log.clear()
    link.a.cancel(handle, link.now)
    link.pump()
    ok, terminated = parse(link.log[1][1]), parse(link.log[2][1])
    assert isinstance(ok, Response) and isinstance(terminated, Response)
    assert ok.to.tag == terminated.to.tag is not None
    with pytest.raises(CallStateError):
        link.b.answer(incoming.call, answer_for(incoming), link.now)


def test_2xx_crossing_cancel_is_acked_then_byed() -> None:
    link = Link()
    handle, incoming = start_call(link)
    link.events(link.a)
    link.log.clear()
    link.a.cancel(handle, link.now)  # CANCEL queued at a (the 100 arrived)
    link.b.answer(incoming.call, answer_for(incoming), link.now)
    link.pass_("b")  # the 200 reaches a first
    link.pump()
    assert lines(link.log)[:4] == [
        "b: SIP/2.0 200 OK",
        "a: CANCEL sip:bob@127.0.0.1:5062 SIP/2.0",
        "a: ACK sip:bob@127.0.0.1:5062 SIP/2.0",
        "a: BYE sip:bob@127.0.0.1:5062 SIP/2.0",
    ]
    assert link.events(link.a) == [CallFailed(handle, 487, "Request Terminated")]
    assert link.events(link.b) == [CallConfirmed(handle, None), CallEnded(handle, "remote")]


def test_invite_timeout_is_408() -> None:
    link = Link()
    handle = link.a.invite(BOB, ALICE, offer(), 0.0)
    link.advance(32.0)
    assert link.events(link.a) == [CallFailed(handle, 408, "Request Timeout")]
    assert len(link.a.datagrams_to_send()) == 7  # the INVITE and its six retransmissions (Timer A)


def test_no_common_codec_is_488_without_event() -> None:
    link = Link()
    sdp = build_offer("127.0.0.1", 4000, session_id="1", codecs=())
    link.a.invite(BOB, ALICE, sdp, 0.0)
    link.pump()
    assert link.events(link.b) == []
    assert [type(e) for e in link.events(link.a)] == [CallFailed]
    assert "b: SIP/2.0 488 Not Acceptable Here" in lines(link.log)


# -------------------------------------------------------------------------------------------- digest (client)


class Challenger:
    """A hand-driven UAS that challenges once with 401 (or 407) and accepts correct credentials."""

    def __init__(self, link: Link, status: int = 401) -> None:
        self.link = link
        self.status = status
        self.server = DigestServer("example", b"k" * 32, IdSource(9), algorithms=("MD5",), qop=False)
        self.header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"

    def take(self) -> list[Request | Response]:
        return [parse(d) for d, _ in self.link.a.datagrams_to_send()]

    def challenge(self, request: Request) -> None:
        response = request.create_response(self.status, to_tag="ch1")
        response.headers.add(self.header, self.server.challenges(0.0)[0])
        self.link.a.receive(response, B, self.link.now)

    def verdict(self, request: Request) -> Verdict:
        name = "authorization" if self.status == 401 else "proxy-authorization"
        value = request.headers.get(name)
        assert value is not None
        return self.server.verify(DigestResponse.parse(value), request.method, 1.0, password="secret")


@pytest.mark.parametrize("status", [401, 407])
def test_invite_answers_challenge_once(status: int) -> None:
    link = Link()
    link.a.credentials = Credentials("alice", "secret")
    ch = Challenger(link, status)
    handle = link.a.invite(BOB, ALICE, offer(), 0.0)
    (invite,) = ch.take()
    assert isinstance(invite, Request)
    ch.challenge(invite)
    ack, retry = ch.take()
    assert isinstance(ack, Request) and ack.method == "ACK" and str(ack.cseq) == "1 ACK"
    assert isinstance(retry, Request) and retry.method == "INVITE" and str(retry.cseq) == "2 INVITE"
    assert retry.via.branch != invite.via.branch
    assert retry.from_.tag == invite.from_.tag and retry.call_id == invite.call_id
    assert ch.verdict(retry) is Verdict.OK
    # A second challenge for the same realm (credentials refused) ends the attempt.
    ch.challenge(retry)
    (ack2,) = ch.take()
    assert isinstance(ack2, Request) and ack2.method == "ACK"
    assert link.events(link.a) == [CallFailed(handle, status, "Unauthorized" if status == 401 else ch_reason())]


def ch_reason() -> str:
    return "Proxy Authentication Required"


def test_2xx_ack_carries_invite_credentials() -> None:
    link = Link()
    link.a.credentials = lambda realm: Credentials("alice", "secret") if realm == "example" else None
    ch = Challenger(link)
    link.a.invite(BOB, ALICE, offer(), 0.0)
    (invite,) = ch.take()
    assert isinstance(invite, Request)
    ch.challenge(invite)
    _, retry = ch.take()
    assert isinstance(retry, Request)
    ok = ok_for(retry, "uas1")
    link.a.receive(ok, B, link.now)
    (ack,) = ch.take()
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.headers.get("authorization") == retry.headers.get("authorization")
    assert str(ack.cseq) == "2 ACK"


def test_no_credentials_reports_the_401() -> None:
    link = Link()
    ch = Challenger(link)
    handle = link.a.invite(BOB, ALICE, offer(), 0.0)
    (invite,) = ch.take()
    assert isinstance(invite, Request)
    ch.challenge(invite)
    assert link.events(link.a) == [CallFailed(handle, 401, "Unauthorized")]


def test_bye_answers_407() -> None:
    link = Link()
    link.a.credentials = Credentials("alice", "secret")
    handle, _ = connected(link)
    link.a.bye(handle, link.now)
    ((data, _),) = link.a.datagrams_to_send()
    bye = parse(data)
    assert isinstance(bye, Request)
    ch = Challenger(link, 407)
    ch.challenge(bye)
    (retry,) = ch.take()
    assert isinstance(retry, Request) and retry.method == "BYE" and str(retry.cseq) == "3 BYE"
    assert ch.verdict(retry) is Verdict.OK
    link.b.receive(retry, A, link.now)
    link.pump()
    assert link.events(link.a) == [CallEnded(handle, "local", 200, "OK")]


# ----------------------------------------------------------------------------------------- re-INVITE and hold


def test_hold_and_resume_by_caller() -> None:
    link = Link()
    handle, _ = connected(link)
    link.a.hold(handle, link.now)
    link.pump()
    (held,) = link.events(link.b)
    assert isinstance(held, MediaUpdated) and held.media.held and held.media.direction == "sendonly"
    (seen,) = link.events(link.a)
    assert isinstance(seen, MediaUpdated) and seen.media.direction == "recvonly"
    reinvite = parse(link.log[0][1])
    assert isinstance(reinvite, Request) and str(reinvite.cseq) == "2 INVITE"
    assert SessionDescription.parse(reinvite.body).origin.version == 2
    assert lines(link.log)[-1] == "a: ACK sip:bob@127.0.0.1:5062 SIP/2.0"
    link.a.resume(handle, link.now)
    link.pump()
    (resumed,) = link.events(link.b)
    assert isinstance(resumed, MediaUpdated) and not resumed.media.held
    assert [type(e) for e in link.events(link.a)] == [MediaUpdated]


def test_callee_holds_with_inactive_and_answer_mirrors() -> None:
    link = Link()
    handle, _ = connected(link)
    link.b.hold(handle, link.now, "inactive")
    link.pump()
    (seen_by_a,) = link.events(link.a)
    assert isinstance(seen_by_a, MediaUpdated) and seen_by_a.media.direction == "inactive"
    (answer,) = [m for m in map(parse, (d for _, d in link.log)) if isinstance(m, Response) and m.status == 200]
    assert isinstance(answer, Response)
    assert b"a=inactive" in answer.body
    assert answer.to.tag is not None


def test_reinvite_glare_is_491_for_both_then_each_retries_after_its_random_delay() -> None:
    link = Link()
    handle, _ = connected(link)
    link.a.hold(handle, link.now)
    link.b.hold(handle, link.now)
    link.pump()
    statuses = [m.status for m in map(parse, (d for _, d in link.log)) if isinstance(m, Response)]
    assert statuses.count(491) == 2
    assert link.events(link.a) == [] and link.events(link.b) == []  # glare is retried, not reported
    link.log.clear()
    first_reinvite: dict[str, float] = {}
    t0 = link.now
    for step in range(1, 501):  # 5 s in 10 ms steps
        link.advance(t0 + step / 100)
        link.pump()
        for src, data in link.log:
            if first_line(data).startswith("INVITE ") and src not in first_reinvite:
                first_reinvite[src] = round(link.now - t0, 2)
    # §14.1: a generated the Call-ID (2.1-4 s); b did not (0-2 s). The two retries do not collide.
    assert 0.0 <= first_reinvite["b"] <= 2.0 and 2.1 <= first_reinvite["a"] <= 4.0
    assert [type(e) for e in link.events(link.a)] == [MediaUpdated, MediaUpdated]
    assert [type(e) for e in link.events(link.b)] == [MediaUpdated, MediaUpdated]
    assert link.a.call(handle).reinvite is None and link.b.call(handle).reinvite is None


def test_glare_delays_follow_14_1_in_10_ms_steps() -> None:
    ua = Link().a
    owner = [ua.glare_delay(True) for _ in range(3000)]
    other = [ua.glare_delay(False) for _ in range(3000)]
    assert (min(owner), max(owner), min(other), max(other)) == (2.1, 4.0, 0.0, 2.0)
    assert all(abs(round(d * 100) - d * 100) < 1e-9 for d in owner + other)  # 10 ms steps


def test_glare_gives_up_after_three_retries() -> None:
    link = Link()
    handle, _ = connected(link)
    link.a.hold(handle, link.now)
    sent = 0
    while True:
        out = [parse(d) for d, _ in link.a.datagrams_to_send()]
        invites = [m for m in out if isinstance(m, Request) and m.method == "INVITE"]
        if not invites:
            break
        reinvite = invites[0]
        assert {m.via.branch for m in invites} == {reinvite.via.branch}  # one transaction (and its Timer A copies)
        sent += 1
        link.a.receive(reinvite.create_response(491), B, link.now)
        link.advance(link.now + 4.0)
    assert sent == 1 + GLARE_RETRIES
    assert link.events(link.a) == [ReinviteFailed(handle, 491, "Request Pending")]
    assert link.a.call(handle).state == "confirmed"


def test_in_dialog_options_and_info_dtmf() -> None:
    link = Link()
    handle, _ = connected(link)
    call = link.a.call(handle)
    assert call.dialog is not None
    for body, ctype in ((b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay"), (b"#", "application/dtmf")):
        info = call.dialog.create_request("INFO", body=body, content_type=ctype)
        link.a.tl.send_request(info, B, link.now)
    options = call.dialog.create_request("OPTIONS")
    link.a.tl.send_request(options, B, link.now)
    link.pump()
    assert link.events(link.b) == [DtmfReceived(handle, "5", 160), DtmfReceived(handle, "#", None)]
    statuses = [first_line(d) for src, d in link.log if src == "b"]
    assert statuses == ["SIP/2.0 200 OK"] * 3
    options_ok = parse(link.log[-1][1])
    assert options_ok.headers.get("allow") == "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"


# ---------------------------------------------------------------------------------------- UAS request checks


def raw_request(method: str, extra: str = "", to_tag: str = "", max_forwards: int = 70) -> bytes:
    return (
        f"{method} sip:bob@127.0.0.1:5062 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-raw-" + method + "\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        "From: <sip:alice@127.0.0.1>;tag=f1\r\n"
        f"To: <sip:bob@127.0.0.1>{';tag=' + to_tag if to_tag else ''}\r\n"
        "Call-ID: raw-1@127.0.0.1\r\n"
        f"CSeq: 7 {method}\r\n"
        "Contact: <sip:alice@127.0.0.1:5061>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def reply_to(raw: bytes, **kw: object) -> Response:
    link = Link(A, B, **kw)
    link.b.receive_datagram(raw, A, 0.0)
    out = [parse(d) for d, _ in link.b.datagrams_to_send()]
    final = out[-1]
    assert isinstance(final, Response)
    return final


@pytest.mark.parametrize(
    ("raw", "status", "allow"),
    [
        (raw_request("FROB"), 501, "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"),
        (raw_request("SUBSCRIBE"), 405, "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"),
        (raw_request("REGISTER"), 405, "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"),
        (raw_request("OPTIONS"), 200, "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"),
        (raw_request("INVITE", max_forwards=0), 483, None),
        (raw_request("OPTIONS", "Require: 100rel\r\n"), 420, None),
        (raw_request("BYE"), 481, None),
        (raw_request("BYE", to_tag="nope"), 481, None),
        (raw_request("INVITE", "Content-Type: text/plain\r\n"), 200, None),  # no body: fine, offerless INVITE
    ],
)
def test_uas_request_checks(raw: bytes, status: int, allow: str | None) -> None:
    if status == 200 and raw.startswith(b"INVITE"):
        link = Link()
        link.b.receive_datagram(raw, A, 0.0)
        (incoming,) = link.events(link.b)
        assert isinstance(incoming, IncomingCall) and incoming.media is None
        return
    response = reply_to(raw)
    assert response.status == status
    assert response.headers.get("allow") == allow
    if status == 420:
        assert response.headers.get("unsupported") == "100rel"


def test_garbage_never_raises_and_bad_request_gets_400() -> None:
    link = Link()
    for junk in (b"", b"\x00\xff" * 50, b"INVITE\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n"):
        link.b.receive_datagram(junk, A, 0.0)
    assert link.b.datagrams_to_send() == []
    bad = raw_request("OPTIONS").replace(b"CSeq: 7 OPTIONS", b"CSeq: 7 INVITE")
    link.b.receive_datagram(bad, A, 0.0)
    ((data, peer),) = link.b.datagrams_to_send()
    assert first_line(data).startswith("SIP/2.0 400 ")
    assert peer == A


def test_offer_in_unsupported_content_type_is_415() -> None:
    raw = raw_request("INVITE", "Content-Type: text/plain\r\n").replace(
        b"Content-Length: 0\r\n\r\n", b"Content-Length: 2\r\n\r\nhi"
    )
    response = reply_to(raw)
    assert response.status == 415 and response.headers.get("accept") == "application/sdp"


RR_INVITE = (
    "INVITE sip:bob@127.0.0.1:5062 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5065;branch=z9hG4bK-proxy\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-caller\r\n"
    "Record-Route: <sip:127.0.0.1:5065;lr;ftag=f1>\r\n"
    "Max-Forwards: 69\r\n"
    "From: <sip:alice@127.0.0.1>;tag=f1\r\n"
    "To: <sip:bob@127.0.0.1>\r\n"
    "Call-ID: rr-1@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.1:5061>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def test_uas_copies_record_route_and_routes_its_bye() -> None:
    link = Link()
    proxy = Peer("UDP", "127.0.0.1", 5065)
    link.b.receive_datagram(RR_INVITE.encode(), proxy, 0.0)
    (incoming,) = link.events(link.b)
    assert isinstance(incoming, IncomingCall)
    link.b.answer(incoming.call, build_offer("127.0.0.1", 30000, session_id="5"), 0.0)
    out = link.b.datagrams_to_send()
    ok = parse(out[-1][0])
    assert isinstance(ok, Response) and ok.status == 200
    assert ok.headers.get_all("record-route") == ["<sip:127.0.0.1:5065;lr;ftag=f1>"]
    assert ok.headers.get("contact") == "<sip:bob@127.0.0.1:5062>"
    assert out[-1][1] == proxy
    ack = RR_INVITE.replace("INVITE sip", "ACK sip").replace("1 INVITE", "1 ACK").replace("Record-Route", "Route")
    ack = ack.replace("To: <sip:bob@127.0.0.1>", f"To: <sip:bob@127.0.0.1>;tag={ok.to.tag}")
    ack = ack.replace("z9hG4bK-proxy", "z9hG4bK-proxy-ack")
    link.b.receive_datagram(ack.encode(), proxy, 0.1)
    assert link.events(link.b) == [CallConfirmed(incoming.call, None)]
    link.b.bye(incoming.call, 0.2)
    ((data, peer),) = link.b.datagrams_to_send()
    bye = parse(data)
    assert isinstance(bye, Request)
    assert peer == proxy
    assert str(bye.uri) == "sip:alice@127.0.0.1:5061"
    assert bye.headers.get_all("route") == ["<sip:127.0.0.1:5065;lr;ftag=f1>"]


def test_uac_uses_reversed_record_route_for_ack_and_bye() -> None:
    link = Link()
    handle = link.a.invite(BOB, ALICE, offer(), 0.0)
    ((data, _),) = link.a.datagrams_to_send()
    invite = parse(data)
    assert isinstance(invite, Request)
    ok = ok_for(invite, "t2", "<sip:bob@10.0.0.9:5070>")
    ok.headers.add("Record-Route", "<sip:10.0.0.2;lr>, <sip:10.0.0.1;lr>")
    link.a.receive(ok, Peer("UDP", "10.0.0.1", 5060), 0.1)
    ((ack_data, ack_peer),) = link.a.datagrams_to_send()
    ack = parse(ack_data)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert str(ack.uri) == "sip:bob@10.0.0.9:5070"
    assert ack.headers.get_all("route") == ["<sip:10.0.0.1;lr>", "<sip:10.0.0.2;lr>"]
    assert ack_peer == Peer("UDP", "10.0.0.1", 5060)
    assert ack.via.branch != invite.via.branch
    link.a.bye(handle, 0.2)
    ((bye_data, bye_peer),) = link.a.datagrams_to_send()
    assert bye_peer == Peer("UDP", "10.0.0.1", 5060)
    assert first_line(bye_data) == "BYE sip:bob@10.0.0.9:5070 SIP/2.0"


def test_outbound_proxy_preloads_route() -> None:
    ua = UserAgent(IdSource(1), {"UDP": ("127.0.0.1", 5061)}, outbound_proxy="sip:127.0.0.1:5065")
    ua.invite(BOB, ALICE, offer(), 0.0)
    ((data, peer),) = ua.datagrams_to_send()
    assert peer == Peer("UDP", "127.0.0.1", 5065)
    invite = parse(data)
    assert invite.headers.get_all("route") == ["<sip:127.0.0.1:5065;lr>"]
    assert isinstance(invite, Request) and str(invite.uri) == BOB


# --------------------------------------------------------------------------------------------- REGISTER client


def serve_register(link: Link, registrar: Registrar, store: InMemoryBindingStore, wall: float) -> None:
    """What the engine does with RegisterReceived: look up, decide, store, respond."""
    for event in link.events(link.b):
        assert isinstance(event, RegisterReceived)
        request = event.request
        user = registrar.username(request)
        secret = Secret(password="secret") if user == "alice" else None
        aor = registrar.aor(request)
        outcome = registrar.handle(request, secret=secret, bindings=store.bindings(aor, wall), now=wall)
        if outcome.aor is not None:
            store.apply(outcome.aor, outcome.upserts, outcome.removals)
        link.b.respond(outcome.response, link.now)


def test_register_with_digest_refresh_and_unregister() -> None:
    link = Link(accept_register=True)
    link.a.credentials = Credentials("alice", "secret")
    digest = DigestServer("127.0.0.1", b"k" * 32, IdSource(7))
    registrar = Registrar(digest, IdSource(8), min_expires=60, max_expires=600)
    store = InMemoryBindingStore()
    handle = link.a.register("sip:127.0.0.1:5062", "sip:alice@127.0.0.1", 0.0, expires=3600)
    for _ in range(3):
        link.pass_("a")
        serve_register(link, registrar, store, 1000.0 + link.now)
        link.pass_("b")
    assert link.events(link.a) == [Registered(handle, 600)]
    assert [b.contact for b in store.bindings("sip:alice@127.0.0.1", 1000.0)] == ["sip:alice@127.0.0.1:5061"]
    statuses = [first_line(d) for src, d in link.log if src == "b"]
    assert statuses == ["SIP/2.0 401 Unauthorized", "SIP/2.0 200 OK"]
    # The refresh goes out 30 s before the granted expiry, with the same Call-ID and a higher CSeq.
    assert link.a.get_timer() is not None
    link.advance(569.9)
    assert link.a.datagrams_to_send() == []
    link.advance(570.0)
    refresh = [parse(d) for d, _ in link.a.datagrams_to_send() if d.startswith(b"REGISTER")]
    assert len(refresh) == 1 and str(refresh[0].cseq) == "3 REGISTER" and refresh[0].call_id == handle
    link.a.unregister(handle, link.now)
    ((data, _),) = link.a.datagrams_to_send()
    assert b"Expires: 0\r\n" in data


def test_register_423_retries_with_min_expires_then_fails_on_403() -> None:
    link = Link(accept_register=True)
    registrar = Registrar(None, IdSource(8), min_expires=300)
    store = InMemoryBindingStore()
    handle = link.a.register("sip:127.0.0.1:5062", "sip:alice@127.0.0.1", 0.0, expires=30)
    for _ in range(2):
        link.pass_("a")
        serve_register(link, registrar, store, 1000.0)
        link.pass_("b")
    assert link.events(link.a) == [Registered(handle, 300)]
    other = link.a.register("sip:127.0.0.1:5062", "sip:carol@127.0.0.1", 0.0)
    link.pass_("a")
    for event in link.events(link.b):
        assert isinstance(event, RegisterReceived)
        link.b.respond(event.request.create_response(403, to_tag="x"), link.now)
    link.pass_("b")
    assert link.events(link.a) == [RegistrationFailed(other, 403, "Forbidden")]


def test_transport_error_fails_the_invite_with_503() -> None:
    link = Link()
    handle = link.a.invite(BOB, ALICE, offer(), 0.0)
    link.a.transport_failed(B, 0.1)
    assert link.events(link.a) == [CallFailed(handle, 503, "Service Unavailable")]


# ------------------------------------------------------------------------------------------------ more edges


def test_incoming_call_carries_display_name_and_engine_headers() -> None:
    raw = raw_request(
        "INVITE",
        "Diversion: <sip:+15550001@example.com>;reason=unconditional\r\nX-Trace: abc\r\nSubject: hi\r\n"
        "Accept: application/sdp\r\n",
    ).replace(b"From: <sip:alice", b'From: "Alice Smith" <sip:alice')
    link = Link()
    link.b.receive_datagram(raw, A, 0.0)
    (incoming,) = link.events(link.b)
    assert isinstance(incoming, IncomingCall)
    assert incoming.from_display == "Alice Smith"
    assert incoming.headers == (
        ("Diversion", "<sip:+15550001@example.com>;reason=unconditional"),
        ("X-Trace", "abc"),
        ("Subject", "hi"),
    )


def test_late_offer_answer_arrives_in_ack() -> None:
    link = Link()
    handle = link.a.invite(BOB, ALICE, None, 0.0)
    link.pump()
    (incoming,) = link.events(link.b)
    assert isinstance(incoming, IncomingCall) and incoming.sdp is None
    link.b.answer(handle, build_offer("127.0.0.1", 30000, session_id="7"), link.now)
    link.pass_("b")  # the 200 with b's offer reaches a, which waits for the engine's answer before it ACKs
    (answered,) = link.events(link.a)
    assert isinstance(answered, CallAnswered) and answered.needs_answer
    assert answered.media is not None and answered.media.port == 30000
    assert link.a.datagrams_to_send() == []
    link.advance(0.5)  # b retransmits its 200: still no ACK, and no second CallAnswered
    link.pump()
    assert link.events(link.a) == [] and [e for e in link.events(link.b) if not isinstance(e, IncomingCall)] == []
    sdp = answer_offer(SessionDescription.parse(answered.sdp or ""), "127.0.0.1", 20000, session_id="8")
    link.a.ack(handle, sdp, link.now)
    ((data, _),) = link.a.datagrams_to_send()
    ack = parse(data)
    assert isinstance(ack, Request) and ack.method == "ACK" and str(ack.cseq) == "1 ACK"
    assert ack.content_type == "application/sdp" and ack.body == bytes(sdp)
    link.b.receive(ack, A, link.now)
    (confirmed,) = link.events(link.b)
    assert isinstance(confirmed, CallConfirmed) and confirmed.media is not None and confirmed.media.port == 20000
    with pytest.raises(CallStateError):
        link.a.ack(handle, sdp, link.now)  # one answer per offer


def test_peer_offerless_reinvite_gets_our_sdp_and_answer_in_ack() -> None:
    link = Link()
    handle, _ = connected(link)
    dialog = link.a.call(handle).dialog
    assert dialog is not None
    reinvite = dialog.create_request("INVITE", contact=link.a.contact("alice"))
    link.a.tl.send_request(reinvite, B, link.now)
    link.pass_("a")
    out = [parse(d) for d, _ in link.b.datagrams_to_send()]
    ok = out[-1]
    assert isinstance(ok, Response) and ok.status == 200
    offered = SessionDescription.parse(ok.body)
    assert offered.origin.version == 2 and offered.audio() is not None
    answer = answer_offer(offered, "127.0.0.1", 20002, session_id="111", version=2, direction="sendonly")
    ack = dialog.create_request("ACK", cseq=reinvite.cseq.seq, body=bytes(answer), content_type="application/sdp")
    link.a.tl.prepare_request(ack, "UDP")
    link.b.receive(ack, A, link.now)
    (updated,) = link.events(link.b)
    assert isinstance(updated, MediaUpdated) and updated.media.port == 20002 and updated.media.held


def test_callee_hangup_before_ack_waits_for_it() -> None:
    link = Link()
    handle, incoming = start_call(link)
    link.b.answer(handle, answer_for(incoming), link.now)
    link.b.hangup(handle, link.now)  # 2xx not ACKed yet: no BYE now (§15)
    link.pass_("b")
    assert lines(link.log)[-1] == "b: SIP/2.0 200 OK"
    link.pass_("a")  # the ACK arrives: now the BYE goes out
    assert [first_line(d) for d, _ in link.b.datagrams_to_send()] == ["BYE sip:alice@127.0.0.1:5061 SIP/2.0"]
    assert [type(e) for e in link.events(link.b)] == [CallConfirmed]


def test_hangup_dispatches_by_state() -> None:
    link = Link()
    handle, incoming = start_call(link)
    link.b.hangup(handle, link.now)  # ringing UAS: rejected with 480
    link.pump()
    assert link.events(link.a) == [CallFailed(handle, 480, "Temporarily Unavailable")]
    link.b.hangup(handle, link.now)  # already gone: nothing happens
    handle2 = link.a.invite(BOB, ALICE, offer(), link.now)
    link.a.hangup(handle2, link.now)  # calling UAC: CANCEL remembered
    link.pump()
    assert link.events(link.a) == [CallFailed(handle2, 487, "Request Terminated")]


def test_cancel_without_final_gives_up_after_64_t1() -> None:
    link = Link()
    handle, _ = start_call(link)
    link.a.cancel(handle, link.now)
    link.a.datagrams_to_send()  # the CANCEL is lost, and so is everything after it
    link.advance(31.9)
    link.a.datagrams_to_send()
    assert link.events(link.a) == []
    link.advance(32.0)
    assert link.events(link.a) == [CallFailed(handle, 408, "Request Timeout")]


def test_out_of_order_in_dialog_request_is_500() -> None:
    link = Link()
    handle, _ = connected(link)
    dialog = link.a.call(handle).dialog
    assert dialog is not None
    link.a.tl.send_request(dialog.create_request("INFO"), B, link.now)  # CSeq 2
    link.pump()
    link.a.tl.send_request(dialog.create_request("INFO", cseq=1), B, link.now)
    link.pass_("a")
    reply = parse(link.b.datagrams_to_send()[-1][0])
    assert isinstance(reply, Response) and reply.status == 500


def test_redirect_reports_contact() -> None:
    link = Link()
    handle, incoming = start_call(link)
    call = link.b.call(handle)
    response = call.invite.create_response(302, to_tag="r1")
    response.headers.add("Contact", "<sip:carol@127.0.0.1:5070>")
    link.b.tl.send_response(response, link.now)
    link.pump()
    assert link.events(link.a) == [
        CallFailed(handle, 302, "Moved Temporarily", (("Contact", "<sip:carol@127.0.0.1:5070>"),))
    ]


def test_forked_second_2xx_is_acked_and_byed() -> None:
    link = Link()
    handle = link.a.invite(BOB, ALICE, offer(), 0.0)
    ((data, _),) = link.a.datagrams_to_send()
    invite = parse(data)
    assert isinstance(invite, Request)
    for tag in ("fork1", "fork2"):
        ok = ok_for(invite, tag, f"<sip:{tag}@127.0.0.1:5062>")
        link.a.receive(ok, B, 0.1)
    sent = [first_line(d) for d, _ in link.a.datagrams_to_send()]
    assert sent == [
        "ACK sip:fork1@127.0.0.1:5062 SIP/2.0",
        "ACK sip:fork2@127.0.0.1:5062 SIP/2.0",
        "BYE sip:fork2@127.0.0.1:5062 SIP/2.0",
    ]
    assert [type(e) for e in link.events(link.a)] == [CallAnswered]
    assert link.a.call(handle).state == "confirmed"


def test_late_2xx_after_transaction_end_is_reacked() -> None:
    link = Link()
    handle = link.a.invite(BOB, ALICE, offer(), 0.0)
    ((data, _),) = link.a.datagrams_to_send()
    invite = parse(data)
    assert isinstance(invite, Request)
    ok = ok_for(invite, "t1")
    link.a.receive(ok, B, 0.1)
    first_ack = link.a.datagrams_to_send()[0][0]
    link.advance(40.0)  # Timer M ended the client transaction
    assert len(link.a.tl) == 0
    link.a.receive(parse_message(bytes(ok)), B, 40.0)
    assert [d for d, _ in link.a.datagrams_to_send()] == [first_ack]
    assert link.a.call(handle).state == "confirmed"


# ------------------------------------------------------------------------------------------------- robustness


def _flow() -> list[tuple[str, bytes]]:
    """Every datagram of a full call with ringing, an in-dialog INFO, a hold re-INVITE and BYE."""
    link = Link()
    handle, incoming = start_call(link)
    link.b.ring(handle, link.now)
    link.b.answer(handle, answer_for(incoming), link.now)
    link.pump()
    link.a.hold(handle, link.now)
    link.pump()
    link.b.bye(handle, link.now)
    link.pump()
    return list(link.log)


FLOW = _flow()


@given(
    st.integers(0, len(FLOW) - 1),
    st.lists(st.tuples(st.integers(0, 2000), st.binary(min_size=0, max_size=8)), min_size=1, max_size=4),
)
@settings(max_examples=400, deadline=None)
def test_mutated_messages_never_raise_out_of_the_ua(index: int, edits: list[tuple[int, bytes]]) -> None:
    link = Link()
    link.strict = False
    handle, incoming = start_call(link)
    link.b.ring(handle, link.now)
    link.b.answer(handle, answer_for(incoming), link.now)
    link.pump()
    src, data = FLOW[index]
    buf = bytearray(data)
    for pos, chunk in edits:
        pos = min(pos, len(buf))
        buf[pos : pos + len(chunk)] = chunk
    target = link.b if src == "a" else link.a
    target.receive_datagram(bytes(buf), A if src == "a" else B, link.now)
    link.pump()
    link.advance(40.0)


@given(
    st.integers(0, len(FLOW) - 1),
    st.integers(0, 30),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
@settings(max_examples=400, deadline=None)
def test_one_header_value_replaced_never_raises(index: int, line_no: int, value: str) -> None:
    link = Link()
    link.strict = False
    handle, incoming = start_call(link)
    link.b.ring(handle, link.now)
    link.b.answer(handle, answer_for(incoming), link.now)
    link.pump()
    src, data = FLOW[index]
    head, sep, body = data.partition(b"\r\n\r\n")
    header_lines = head.split(b"\r\n")
    i = 1 + line_no % max(1, len(header_lines) - 1)
    if i < len(header_lines):
        name = header_lines[i].split(b":", 1)[0]
        header_lines[i] = name + b": " + value.encode()
    target = link.b if src == "a" else link.a
    target.receive_datagram(b"\r\n".join(header_lines) + sep + body, A if src == "a" else B, link.now)
    link.pump()
    link.advance(40.0)


@pytest.mark.parametrize(
    "module",
    ["sdp", "digest", "dialog", "calls", "events", "uacore", "uas", "uac", "ua", "regclient", "registrar"],
)
def test_public_names_exist(module: str) -> None:
    mod = importlib.import_module(f"callplane.sip.{module}")
    exported = getattr(mod, "__all__", None)
    assert exported, f"{module} has no __all__"
    assert [name for name in exported if not hasattr(mod, name)] == []
