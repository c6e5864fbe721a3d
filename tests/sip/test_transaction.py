"""Transactions (RFC 3261 §17 + RFC 6026) in virtual time: exact deadlines, exact bytes."""

from __future__ import annotations

import pytest

from callplane.core.ids import IdSource
from callplane.sip.headers import URI
from callplane.sip.message import Headers, Request, Response, parse_message
from callplane.sip.transaction import TimerConfig, TransactionError, TransactionLayer, UnsupportedTransport
from callplane.sip.transaction_events import (
    AckReceived,
    AckTimeout,
    CancelReceived,
    Peer,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionKey,
    TransactionTimeout,
    TransportError,
    TxEvent,
)

UAS = Peer("UDP", "192.0.2.4", 5060)
UAC = Peer("UDP", "192.0.2.1", 5060)


def make_layer(seed: int = 1, **kw: object) -> TransactionLayer:
    return TransactionLayer(IdSource(seed), local={"UDP": ("192.0.2.1", 5060), "TCP": ("192.0.2.1", 5060)}, **kw)  # type: ignore[arg-type]


def request(method: str = "INVITE", branch: str | None = None, cseq: int = 1, via_host: str = "192.0.2.1") -> Request:
    h = Headers()
    if branch is not None:
        h.add("Via", f"SIP/2.0/UDP {via_host}:5060;branch={branch}")
    h.add("From", "Alice <sip:alice@atlanta.com>;tag=1928301774")
    h.add("To", "Bob <sip:bob@biloxi.com>")
    h.add("Call-ID", "a84b4c76e66710")
    h.add("CSeq", f"{cseq} {method}")
    return Request(method, URI.parse("sip:bob@biloxi.com"), h)


def events(layer: TransactionLayer) -> list[TxEvent]:
    out = []
    while (ev := layer.next_event()) is not None:
        out.append(ev)
    return out


def run_timers(layer: TransactionLayer, until: float = 1000.0) -> list[tuple[float, list[bytes], list[TxEvent]]]:
    """Step virtual time from deadline to deadline; record what each firing sent and emitted."""
    log = []
    while (t := layer.get_timer()) is not None and t <= until:
        layer.handle_timer(t)
        log.append((t, [d for d, _ in layer.datagrams_to_send()], events(layer)))
    return log


def first_line(data: bytes) -> bytes:
    return data.split(b"\r\n", 1)[0]


def respond(req: Request, status: int, tag: str | None = "b0b") -> Response:
    return parse_message(bytes(req.create_response(status, to_tag=tag)))  # type: ignore[return-value]


# Client INVITE ------------------------------------------------------------------------------------------------


def test_client_invite_timer_a_then_b() -> None:
    layer = make_layer()
    key = layer.send_request(request(), UAS, now=0.0)
    assert key == TransactionKey("client", "z9hG4bK" + IdSource(1).hex(10), "INVITE")
    sent = layer.datagrams_to_send()
    assert [dest for _, dest in sent] == [UAS]
    log = run_timers(layer)
    assert [t for t, _, _ in log] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 32.0]
    assert all(out == [sent[0][0]] for _, out, _ in log[:-1])
    assert log[-1][1:] == ([], [TransactionTimeout(key, "B")])
    assert len(layer) == 0


def test_client_invite_over_tcp_does_not_retransmit() -> None:
    layer = make_layer()
    key = layer.send_request(request(), Peer("TCP", "192.0.2.4", 5060), now=10.0)
    assert b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=" in layer.datagrams_to_send()[0][0]
    assert [(t, out, ev) for t, out, ev in run_timers(layer)] == [(42.0, [], [TransactionTimeout(key, "B")])]


def test_client_invite_non_2xx_is_acked_by_the_transaction() -> None:
    layer = make_layer()
    inv = request(branch="z9hG4bKnashds8")
    inv.headers.add("Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>")
    key = layer.send_request(inv, UAS, now=0.0)
    layer.datagrams_to_send()
    layer.receive(respond(inv, 180), UAS, now=0.2)
    busy = respond(inv, 486)
    layer.receive(busy, UAS, now=0.3)
    assert [type(e) for e in events(layer)] == [ResponseReceived, ResponseReceived]
    (ack, dest), *_ = layer.datagrams_to_send()
    assert dest == UAS
    assert ack == (
        b"ACK sip:bob@biloxi.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8\r\n"
        b"Route: <sip:p1.example.com;lr>\r\n"
        b"Route: <sip:p2.example.com;lr>\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
        b'To: "Bob" <sip:bob@biloxi.com>;tag=b0b\r\n'
        b"Call-ID: a84b4c76e66710\r\n"
        b"CSeq: 1 ACK\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    # The retransmitted 486 is ACKed again and not passed up.
    layer.receive(busy, UAS, now=1.0)
    assert layer.datagrams_to_send() == [(ack, UAS)] and events(layer) == []
    assert layer.state(key) == "completed"
    # Timer D: 32 s after the final, then terminated; A/B were cancelled by the 180.
    assert run_timers(layer) == [(32.3, [], [])]
    assert layer.state(key) is None


def test_client_invite_tcp_final_terminates_at_once() -> None:
    layer = make_layer()
    inv = request()
    tcp = Peer("TCP", "192.0.2.4", 5060)
    key = layer.send_request(inv, tcp, now=0.0)
    layer.receive(respond(inv, 603), tcp, now=0.1)
    assert layer.state(key) is None  # Timer D = 0 on reliable transports
    assert [first_line(d) for d, _ in layer.datagrams_to_send()][-1] == b"ACK sip:bob@biloxi.com SIP/2.0"
    assert layer.get_timer() is None


def test_client_invite_2xx_passed_up_with_retransmissions() -> None:
    layer = make_layer()
    inv = request()
    key = layer.send_request(inv, UAS, now=0.0)
    layer.datagrams_to_send()
    ok = respond(inv, 200)
    layer.receive(ok, UAS, now=0.4)
    layer.receive(ok, UAS, now=0.9)
    assert events(layer) == [ResponseReceived(ok, key), ResponseReceived(ok, key)]
    assert layer.datagrams_to_send() == []  # the ACK for 2xx is the dialog's job
    assert layer.state(key) == "accepted"
    assert run_timers(layer) == [(32.4, [], [])]  # Timer M
    layer.receive(ok, UAS, now=40.0)
    assert events(layer) == [StrayResponse(ok, UAS)]


# Client non-INVITE ---------------------------------------------------------------------------------------------


def test_client_non_invite_timer_e_capped_at_t2_then_f() -> None:
    layer = make_layer()
    key = layer.send_request(request("OPTIONS"), UAS, now=0.0)
    layer.datagrams_to_send()
    log = run_timers(layer)
    assert [t for t, _, _ in log] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5, 32.0]
    assert log[-1][2] == [TransactionTimeout(key, "F")]


def test_client_non_invite_proceeding_retransmits_every_t2_and_k() -> None:
    layer = make_layer(timers=TimerConfig(t1=0.5, t2=4.0, t4=5.0))
    bye = request("BYE")
    key = layer.send_request(bye, UAS, now=0.0)
    layer.datagrams_to_send()
    layer.handle_timer(0.5)
    layer.receive(respond(bye, 100), UAS, now=0.6)
    assert layer.state(key) == "proceeding"
    log = run_timers(layer, until=10.0)
    assert [t for t, _, _ in log] == [1.5, 5.5, 9.5]
    assert [type(e) for e in log[0][2]] == [ResponseReceived]  # the 100, drained by run_timers
    layer.receive(respond(bye, 200), UAS, now=10.0)
    (ev,) = events(layer)
    assert isinstance(ev, ResponseReceived) and ev.response.status == 200
    layer.receive(respond(bye, 200), UAS, now=10.5)
    assert events(layer) == []  # absorbed in completed
    assert run_timers(layer) == [(15.0, [], [])]  # Timer K = T4
    assert layer.state(key) is None


def test_custom_timer_values() -> None:
    layer = make_layer(timers=TimerConfig(t1=0.1, t2=0.3, t4=1.0))
    layer.send_request(request("OPTIONS"), UAS, now=0.0)
    times = [round(t, 6) for t, _, _ in run_timers(layer)]
    assert times[:5] == [0.1, 0.3, 0.6, 0.9, 1.2] and times[-1] == 6.4


# Server INVITE -------------------------------------------------------------------------------------------------


def test_server_invite_absorbs_retransmissions_and_times_out_on_h() -> None:
    layer = make_layer()
    inv = request(branch="z9hG4bKabc")
    layer.receive(inv, UAC, now=0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    key = ev.key
    assert key == TransactionKey("server", "z9hG4bKabc", "INVITE", "192.0.2.1:5060")
    (trying, dest), *_ = layer.datagrams_to_send()
    assert first_line(trying) == b"SIP/2.0 100 Trying" and dest == UAC
    # Retransmitted INVITE: the last response is re-sent; no new event.
    layer.receive(inv, UAC, now=0.5)
    assert layer.datagrams_to_send() == [(trying, UAC)] and events(layer) == []
    layer.send_response(inv.create_response(180, to_tag="t1"), now=0.6)
    ringing = layer.datagrams_to_send()[0][0]
    layer.receive(inv, UAC, now=1.0)
    assert layer.datagrams_to_send() == [(ringing, UAC)]
    layer.send_response(inv.create_response(486, to_tag="t1"), now=2.0)
    busy = layer.datagrams_to_send()[0][0]
    log = run_timers(layer)
    assert [t for t, _, _ in log] == [2.5, 3.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5, 33.5, 34.0]
    assert all(out == [busy] for _, out, _ in log[:-1])
    assert log[-1][1:] == ([], [TransactionTimeout(key, "H")])


def test_server_invite_ack_confirms_then_timer_i() -> None:
    layer = make_layer()
    inv = request(branch="z9hG4bKabc")
    layer.receive(inv, UAC, now=0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    layer.send_response(inv.create_response(404, to_tag="t1"), now=1.0)
    layer.datagrams_to_send()
    ack = request("ACK", branch="z9hG4bKabc")
    layer.receive(ack, UAC, now=1.2)
    assert layer.state(ev.key) == "confirmed" and events(layer) == [] and layer.datagrams_to_send() == []
    layer.receive(ack, UAC, now=1.3)  # absorbed
    layer.receive(inv, UAC, now=1.4)  # absorbed too: nothing re-sent once confirmed
    assert layer.datagrams_to_send() == [] and events(layer) == []
    assert run_timers(layer) == [(6.2, [], [])]  # Timer I = T4
    assert layer.state(ev.key) is None


def test_server_invite_over_tcp() -> None:
    layer = make_layer(auto_trying=False)
    src = Peer("TCP", "192.0.2.1", 40001)
    inv = request(branch="z9hG4bKtcp")
    layer.receive(inv, src, now=0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    assert layer.datagrams_to_send() == []  # auto_trying off
    layer.send_response(inv.create_response(486, to_tag="t"), now=0.0)
    assert [dest for _, dest in layer.datagrams_to_send()] == [src]  # back on the connection
    assert run_timers(layer) == [(32.0, [], [TransactionTimeout(ev.key, "H")])]  # no G on TCP
    layer.receive(inv, src, now=40.0)
    layer.receive(inv.create_response(200), src, now=40.0)  # a stray response is reported, not raised
    layer.send_response(inv.create_response(486), now=40.0)
    layer.receive(request("ACK", branch="z9hG4bKtcp2"), src, now=40.0)
    assert [type(e) for e in events(layer)] == [RequestReceived, StrayResponse, AckReceived]


def test_server_invite_2xx_retransmitted_until_ack() -> None:
    layer = make_layer()
    inv = request(branch="z9hG4bKabc")
    layer.receive(inv, UAC, now=0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    layer.datagrams_to_send()
    layer.send_response(inv.create_response(200, to_tag="t1"), now=1.0)
    ok = layer.datagrams_to_send()[0][0]
    log = run_timers(layer, until=14.0)
    assert [t for t, _, _ in log] == [1.5, 2.5, 4.5, 8.5, 12.5]
    assert all(out == [ok] for _, out, _ in log)
    layer.receive(inv, UAC, now=14.0)  # retransmitted INVITE is absorbed in accepted (RFC 6026)
    assert events(layer) == [] and layer.datagrams_to_send() == []
    ack = request("ACK", branch="z9hG4bKother")  # ACK for 2xx: its own branch
    layer.receive(ack, UAC, now=14.1)
    assert events(layer) == [AckReceived(ack, UAC)]
    assert run_timers(layer) == [(33.0, [], [])]  # Timer L, no more 2xx and no AckTimeout
    assert layer.state(ev.key) is None


def test_server_invite_2xx_never_acked() -> None:
    layer = make_layer()
    inv = request(branch="z9hG4bKabc")
    layer.receive(inv, UAC, now=0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    layer.send_response(inv.create_response(200, to_tag="t1"), now=0.0)
    log = run_timers(layer)
    assert [t for t, _, _ in log][-1] == 32.0
    assert log[-1][2] == [AckTimeout(ev.key, "a84b4c76e66710", 1)]
    assert [t for t, _, _ in log][:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]


def test_illegal_response_raises() -> None:
    layer = make_layer()
    inv = request(branch="z9hG4bKabc")
    layer.receive(inv, UAC, now=0.0)
    layer.send_response(inv.create_response(486, to_tag="t"), now=0.0)
    with pytest.raises(TransactionError, match="cannot send 180 in state completed"):
        layer.send_response(inv.create_response(180, to_tag="t"), now=0.1)
    with pytest.raises(TransactionError, match="no server transaction"):
        layer.send_response(request("BYE", branch="z9hG4bKnone").create_response(200), now=0.1)
    with pytest.raises(TransactionError, match="send_stateless"):
        layer.send_request(request("ACK"), UAS, now=0.0)


# Server non-INVITE ---------------------------------------------------------------------------------------------


def test_server_non_invite_absorbs_and_timer_j() -> None:
    layer = make_layer()
    bye = request("BYE", branch="z9hG4bKbye")
    layer.receive(bye, UAC, now=0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    layer.receive(bye, UAC, now=0.5)  # trying: absorbed silently
    assert layer.datagrams_to_send() == [] and events(layer) == []
    layer.send_response(bye.create_response(200), now=1.0)
    ok = layer.datagrams_to_send()
    layer.receive(bye, UAC, now=1.5)
    assert layer.datagrams_to_send() == ok and events(layer) == []
    assert run_timers(layer) == [(33.0, [], [])]  # Timer J = 64*T1
    layer.receive(bye, UAC, now=34.0)  # after J: a new transaction
    assert [type(e) for e in events(layer)] == [RequestReceived]


def test_server_non_invite_tcp_terminates_at_once() -> None:
    layer = make_layer()
    src = Peer("TCP", "192.0.2.1", 40001)
    opt = request("OPTIONS", branch="z9hG4bKo")
    layer.receive(opt, src, now=0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    layer.send_response(opt.create_response(200), now=0.0)
    assert layer.state(ev.key) is None and layer.get_timer() is None


# CANCEL and matching -------------------------------------------------------------------------------------------


def test_cancel_finds_the_invite_it_cancels() -> None:
    layer = make_layer()
    inv = request(branch="z9hG4bKabc")
    layer.receive(inv, UAC, now=0.0)
    (inv_ev,) = events(layer)
    assert isinstance(inv_ev, RequestReceived)
    cancel = request("CANCEL", branch="z9hG4bKabc")
    layer.receive(cancel, UAC, now=1.0)
    (ev,) = events(layer)
    assert isinstance(ev, CancelReceived)
    assert ev.invite_key == inv_ev.key and ev.key.method == "CANCEL" and ev.key != inv_ev.key
    layer.send_response(cancel.create_response(200, to_tag="t"), now=1.0)
    layer.send_response(inv.create_response(487, to_tag="t"), now=1.0)
    assert [first_line(d) for d, _ in layer.datagrams_to_send()][-2:] == [
        b"SIP/2.0 200 OK",
        b"SIP/2.0 487 Request Terminated",
    ]
    # A CANCEL for an unknown INVITE (other sent-by) is still its own transaction, with invite_key None.
    layer.receive(request("CANCEL", branch="z9hG4bKabc", via_host="198.51.100.1"), UAC, now=2.0)
    (other,) = events(layer)
    assert isinstance(other, CancelReceived) and other.invite_key is None


def test_same_branch_different_sent_by_are_different_transactions() -> None:
    layer = make_layer()
    layer.receive(request("INVITE", branch="z9hG4bKsame"), UAC, now=0.0)
    layer.receive(request("INVITE", branch="z9hG4bKsame", via_host="198.51.100.1"), UAC, now=0.0)
    assert [type(e) for e in events(layer)] == [RequestReceived, RequestReceived]


def test_rfc2543_requests_without_cookie_are_matched_on_dialog_fields() -> None:
    layer = make_layer()
    inv = request(branch="old1")
    layer.receive(inv, UAC, now=0.0)
    layer.receive(inv, UAC, now=0.5)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived) and ev.key.branch == "2543|old1|a84b4c76e66710|1928301774|1"
    assert [first_line(d) for d, _ in layer.datagrams_to_send()] == [b"SIP/2.0 100 Trying"]  # one drain, one 100


def test_client_cancel_is_its_own_transaction() -> None:
    layer = make_layer()
    inv = request()
    ikey = layer.send_request(inv, UAS, now=0.0)
    cancel = request("CANCEL")
    cancel.headers.add("Via", inv.headers.get("via"))
    ckey = layer.send_request(cancel, UAS, now=0.1)
    assert (ckey.branch, ckey.method) == (ikey.branch, "CANCEL")
    layer.receive(respond(cancel, 200), UAS, now=0.2)
    layer.receive(respond(inv, 487), UAS, now=0.3)
    assert [(type(e).__name__, getattr(e, "key", None)) for e in events(layer)] == [
        ("ResponseReceived", ckey),
        ("ResponseReceived", ikey),
    ]


def test_responses_follow_received_and_rport() -> None:
    layer = make_layer()
    inv = request(branch="z9hG4bKnat")
    inv.headers.set_first("via", inv.via.with_param("rport", "40000").with_param("received", "203.0.113.9"))
    layer.receive(inv, Peer("UDP", "203.0.113.9", 40000), now=0.0)
    assert layer.datagrams_to_send()[0][1] == Peer("UDP", "203.0.113.9", 40000)


def test_prepare_request_adds_via_and_max_forwards() -> None:
    layer = make_layer(seed=7)
    req = request("OPTIONS")
    layer.send_request(req, UAS, now=0.0)
    data = layer.datagrams_to_send()[0][0]
    branch = IdSource(7).branch()
    assert data.startswith(
        f"OPTIONS sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport\r\n".encode()
    )
    assert b"\r\nMax-Forwards: 70\r\n" in data
    # A Via without a branch gets one; an existing Max-Forwards is kept.
    req2 = request("OPTIONS")
    req2.headers.add("Via", "SIP/2.0/UDP 10.0.0.1:5070")
    req2.headers.add("Max-Forwards", "10")
    layer.send_stateless(req2, UAS)
    data2 = layer.datagrams_to_send()[0][0]
    assert b"\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK" in data2 and b"Max-Forwards: 10\r\n" in data2


# Two layers over a fake lossy link -----------------------------------------------------------------------------


def test_uac_uas_over_lossy_link_one_call_only() -> None:
    uac = make_layer(seed=1)
    uas = make_layer(seed=2)
    inv = request()
    uac.send_request(inv, UAS, now=0.0)
    uac.datagrams_to_send()  # the first INVITE is lost
    uac.handle_timer(0.5)
    (retrans, _), *_ = uac.datagrams_to_send()
    for t in (0.5, 0.6):  # delivered, then duplicated by the network
        uas.receive(parse_message(retrans), UAC, now=t)
    (ev,) = events(uas)
    assert isinstance(ev, RequestReceived)
    uas.send_response(ev.request.create_response(200, to_tag="x"), now=0.7)
    replies = uas.datagrams_to_send()
    assert [first_line(d) for d, _ in replies] == [b"SIP/2.0 200 OK"]  # answered before the drain: no 100
    for data, _ in replies:
        uac.receive(parse_message(data), UAS, now=0.8)
    assert [e.response.status for e in events(uac) if isinstance(e, ResponseReceived)] == [200]
    assert uac.get_timer() == 32.8  # only Timer M is left: A and B are gone


def test_kamailio_hop_by_hop_ack_confirms_the_486() -> None:
    from pathlib import Path

    data = Path(__file__).parent.parent / "data" / "sip"
    inv = parse_message((data / "kamailio_rr_invite.sip").read_bytes())
    ack = parse_message((data / "kamailio_ack_486.sip").read_bytes())
    assert isinstance(inv, Request) and isinstance(ack, Request)
    proxy = Peer("UDP", "127.0.0.1", 39193)
    layer = make_layer()
    layer.receive(inv, proxy, now=0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    layer.send_response(inv.create_response(486, to_tag="k1"), now=0.1)
    assert [dest for _, dest in layer.datagrams_to_send()] == [proxy]  # the 486 (no 100: it was already answered)
    layer.receive(ack, proxy, now=0.2)
    assert layer.state(ev.key) == "confirmed" and events(layer) == []


def test_ack_reusing_the_invite_branch_still_reaches_the_dialog() -> None:
    layer = make_layer()
    inv = request(branch="z9hG4bKsame")
    layer.receive(inv, UAC, now=0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    layer.send_response(inv.create_response(200, to_tag="t"), now=0.0)
    layer.datagrams_to_send()
    ack = request("ACK", branch="z9hG4bKsame")
    layer.receive(ack, UAC, now=0.2)
    assert events(layer) == [AckReceived(ack, UAC)]
    assert run_timers(layer) == [(32.0, [], [])]  # no 2xx retransmissions after the ACK, no AckTimeout


def test_transport_failure_ends_the_transactions_bound_to_that_peer() -> None:
    layer = make_layer()
    tcp = Peer("TCP", "192.0.2.4", 5060)
    k1 = layer.send_request(request("INVITE"), tcp, now=0.0)
    k2 = layer.send_request(request("OPTIONS"), tcp, now=0.0)
    k3 = layer.send_request(request("OPTIONS"), UAS, now=0.0)
    layer.transport_failed(tcp, now=0.1)
    assert events(layer) == [TransportError(k1), TransportError(k2)]
    assert (layer.state(k1), layer.state(k2), layer.state(k3)) == (None, None, "trying")


def test_ack_uses_the_invite_as_sent_even_if_the_ua_changes_its_object() -> None:
    layer = make_layer()
    inv = request(branch="z9hG4bKsnap")
    layer.send_request(inv, UAS, now=0.0)
    layer.datagrams_to_send()
    busy = respond(inv, 407)
    inv.headers.set_first("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKretry")
    inv.headers.set("CSeq", "2 INVITE")
    layer.receive(busy, UAS, now=0.1)
    (ack, _), *_ = layer.datagrams_to_send()
    assert b"branch=z9hG4bKsnap\r\n" in ack and b"CSeq: 1 ACK\r\n" in ack


def test_ended_transactions_do_not_linger_on_the_timer_heap() -> None:
    layer = make_layer()
    tcp = Peer("TCP", "192.0.2.4", 5060)
    for n in range(500):
        req = request("OPTIONS", cseq=n + 1)
        layer.send_request(req, tcp, now=0.0)
        layer.receive(respond(req, 200), tcp, now=0.01)  # reliable: completed -> terminated at once
    assert len(layer) == 0
    assert layer.pending_timers <= 130  # not 500 Timer F entries holding dead transactions until 32 s
    events(layer)
    assert layer.get_timer() is None


def test_transport_failure_spares_other_peers_among_many() -> None:
    layer = make_layer()
    tcp = Peer("TCP", "192.0.2.4", 5060)
    others = [layer.send_request(request("OPTIONS"), Peer("TCP", "192.0.2.5", 6000 + n), now=0.0) for n in range(50)]
    mine = layer.send_request(request("OPTIONS"), tcp, now=0.0)
    layer.transport_failed(tcp, now=0.1)
    layer.transport_failed(tcp, now=0.2)  # a second report finds nothing left
    assert events(layer) == [TransportError(mine)]
    assert all(layer.state(k) == "trying" for k in others)


def test_100_trying_only_when_the_tu_has_not_answered_by_the_drain() -> None:
    layer = make_layer()
    slow, fast = request(branch="z9hG4bKslow"), request(branch="z9hG4bKfast")
    layer.receive(slow, UAC, now=0.0)
    assert [first_line(d) for d, _ in layer.datagrams_to_send()] == [b"SIP/2.0 100 Trying"]  # §17.2.1
    layer.receive(fast, UAC, now=0.1)
    (_, ev) = events(layer)
    assert isinstance(ev, RequestReceived) and ev.request is fast
    layer.send_response(fast.create_response(180, to_tag="t"), now=0.1)  # the TU answers while handling the event
    assert [first_line(d) for d, _ in layer.datagrams_to_send()] == [b"SIP/2.0 180 Ringing"]
    layer.receive(fast, UAC, now=0.2)  # a retransmission gets the last response, as before
    assert [first_line(d) for d, _ in layer.datagrams_to_send()] == [b"SIP/2.0 180 Ringing"]
    layer.receive(slow, UAC, now=0.3)
    assert [first_line(d) for d, _ in layer.datagrams_to_send()] == [b"SIP/2.0 100 Trying"]


@pytest.mark.parametrize("transport", ["TLS", "WS", "WSS", "SCTP"])
def test_unsupported_transports_are_refused_not_sent_as_tcp(transport: str) -> None:
    layer = make_layer()
    with pytest.raises(UnsupportedTransport, match=f"{transport} is not supported yet"):
        layer.send_request(request("OPTIONS"), Peer(transport, "192.0.2.4", 5061), now=0.0)
    ack = request("ACK", branch="z9hG4bKack")
    layer.send_stateless(ack, Peer(transport, "192.0.2.4", 5061))  # inside a receive path: dropped, not raised
    assert layer.datagrams_to_send() == [] and len(layer) == 0 and layer.get_timer() is None


def test_via_sent_by_is_never_made_up() -> None:
    layer = TransactionLayer(IdSource(1), local={"UDP": ("192.0.2.1", 5070)})
    with pytest.raises(UnsupportedTransport, match="no TCP address"):
        layer.send_request(request("OPTIONS"), Peer("TCP", "192.0.2.4", 5060), now=0.0)
    layer.send_request(request("OPTIONS"), UAS, now=0.0)
    ((data, _),) = layer.datagrams_to_send()
    assert b"\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK" in data


def test_lost_connection_fails_clients_at_once_and_moves_server_responses_to_sent_by() -> None:
    layer = make_layer()
    conn = Peer("TCP", "192.0.2.4", 40123)  # the peer's ephemeral port: its connection to us
    h = Headers()
    h.add("Via", "SIP/2.0/TCP client.example.com:5070;branch=z9hG4bKtcp1;received=192.0.2.4;rport=40123")
    for name, value in (("From", "<sip:a@x>;tag=1"), ("To", "<sip:b@x>"), ("Call-ID", "tcp1"), ("CSeq", "1 OPTIONS")):
        h.add(name, value)
    incoming = Request("OPTIONS", URI.parse("sip:b@x"), h)
    layer.receive(incoming, conn, now=0.0)
    (ev,) = events(layer)
    outgoing = layer.send_request(request("OPTIONS"), conn, now=0.0)  # a request we sent on the same connection
    layer.datagrams_to_send()
    layer.transport_failed(conn, now=1.0)
    assert events(layer) == [TransportError(outgoing)]  # at once, not at Timer F (32 s)
    layer.send_response(incoming.create_response(200, to_tag="t"), now=2.0)
    ((_, dest),) = layer.datagrams_to_send()
    assert dest == Peer("TCP", "192.0.2.4", 5070)  # §18.2.2: received + sent-by port, a new connection
    assert isinstance(ev, RequestReceived) and events(layer) == [] and len(layer) == 0


def test_server_transaction_ends_when_its_fallback_connection_fails_too() -> None:
    layer = make_layer()
    conn = Peer("TCP", "192.0.2.4", 40124)
    inv = request("INVITE", branch="z9hG4bKtcp2")
    inv.headers.set_first("Via", "SIP/2.0/TCP 192.0.2.4:5070;branch=z9hG4bKtcp2")
    layer.receive(inv, conn, now=0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    layer.transport_failed(conn, now=1.0)
    assert events(layer) == [] and layer.state(ev.key) == "proceeding"  # still answerable
    layer.transport_failed(Peer("TCP", "192.0.2.4", 5070), now=2.0)
    assert events(layer) == [TransportError(ev.key)] and len(layer) == 0
