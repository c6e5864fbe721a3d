from __future__ import annotations

import pytest

from callplane.sip.dialog import (
    Dialog,
    DialogEvent,
    DialogId,
    DialogState,
    DialogStateError,
    next_hop,
    uri_destination,
)
from callplane.sip.headers import URI, Address, Via
from callplane.sip.message import Request, Response, parse_message

# RFC 3261 §24.2-shaped INVITE, through two Record-Route proxies.
INVITE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP proxy2.example.com;branch=z9hG4bK2\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK1\r\n"
    "Max-Forwards: 68\r\n"
    "Record-Route: <sip:proxy2.example.com;lr>\r\n"
    "Record-Route: <sip:proxy1.example.com;lr>\r\n"
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n'
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    "CSeq: 2 INVITE\r\n"
    "Contact: <sip:alice@client.atlanta.example.com;transport=tcp>\r\n"
    "Content-Length: 0\r\n\r\n"
)

OK = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK1\r\n"
    "Record-Route: <sip:proxy2.example.com;lr>, <sip:proxy1.example.com;lr>\r\n"
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n'
    "To: Bob <sip:bob@biloxi.example.com>;tag=314159\r\n"
    "Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    "CSeq: 2 INVITE\r\n"
    "Contact: <sip:bob@client.biloxi.example.com>\r\n"
    "Content-Length: 0\r\n\r\n"
)

VIA = Via("UDP", "10.0.0.1", 5060, (("branch", "z9hG4bKnew"),))


def req(text: str) -> Request:
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def resp(text: str) -> Response:
    msg = parse_message(text.encode())
    assert isinstance(msg, Response)
    return msg


def test_uac_dialog_from_2xx() -> None:
    d = Dialog.from_response(req(INVITE), resp(OK))
    assert d.id == DialogId("3848276298220188511@atlanta.example.com", "9fxced76sl", "314159")
    assert d.state is DialogState.CONFIRMED
    assert d.remote_target == URI.parse("sip:bob@client.biloxi.example.com")
    assert [str(r) for r in d.route_set] == ["<sip:proxy1.example.com;lr>", "<sip:proxy2.example.com;lr>"]
    assert (d.local_seq, d.remote_seq) == (2, None)


def test_uac_in_dialog_bye_exact_bytes() -> None:
    d = Dialog.from_response(req(INVITE), resp(OK))
    bye = d.create_request("BYE", VIA)
    assert bytes(bye).decode() == (
        "BYE sip:bob@client.biloxi.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKnew\r\n"
        "Max-Forwards: 70\r\n"
        "Route: <sip:proxy1.example.com;lr>\r\n"
        "Route: <sip:proxy2.example.com;lr>\r\n"
        'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n'
        'To: "Bob" <sip:bob@biloxi.example.com>;tag=314159\r\n'
        "Call-ID: 3848276298220188511@atlanta.example.com\r\n"
        "CSeq: 3 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    assert next_hop(bye) == URI.parse("sip:proxy1.example.com;lr")


def test_ack_reuses_invite_cseq() -> None:
    d = Dialog.from_response(req(INVITE), resp(OK))
    ack = d.create_request("ACK", VIA, cseq=2)
    assert str(ack.cseq) == "2 ACK"
    assert d.local_seq == 2
    assert str(d.create_request("INFO", VIA).cseq) == "3 INFO"


def test_uas_dialog_from_request_and_its_bye() -> None:
    d = Dialog.from_request(req(INVITE), "a6c85cf")
    assert d.id == DialogId("3848276298220188511@atlanta.example.com", "a6c85cf", "9fxced76sl")
    assert d.state is DialogState.EARLY
    assert [str(r) for r in d.route_set] == ["<sip:proxy2.example.com;lr>", "<sip:proxy1.example.com;lr>"]
    assert (d.local_seq, d.remote_seq) == (None, 2)
    d.apply(DialogEvent.CONFIRM)
    bye = d.create_request("BYE", VIA)
    assert bye.uri == URI.parse("sip:alice@client.atlanta.example.com;transport=tcp")
    assert str(bye.cseq) == "1 BYE"
    assert bye.headers.get("from") == '"Bob" <sip:bob@biloxi.example.com>;tag=a6c85cf'
    assert bye.headers.get("to") == '"Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl'
    assert next_hop(bye) == URI.parse("sip:proxy2.example.com;lr")


def test_early_dialog_confirm_recomputes_route_set() -> None:
    ringing = resp(OK.replace("200 OK", "180 Ringing").replace(", <sip:proxy1.example.com;lr>", ""))
    d = Dialog.from_response(req(INVITE), ringing)
    assert d.state is DialogState.EARLY
    assert len(d.route_set) == 1
    d.confirm(resp(OK.replace("client.biloxi", "new.biloxi")))
    assert d.state.value == "confirmed"
    assert len(d.route_set) == 2
    assert d.remote_target.host == "new.biloxi.example.com"


def test_remote_cseq_rule() -> None:
    d = Dialog.from_request(req(INVITE), "t")
    older = req(INVITE.replace("CSeq: 2 INVITE", "CSeq: 1 INFO").replace("INVITE sip", "INFO sip"))
    newer = req(INVITE.replace("CSeq: 2 INVITE", "CSeq: 3 BYE").replace("INVITE sip", "BYE sip"))
    assert d.check_request(older) == 500
    assert d.check_request(newer) is None
    assert d.remote_seq == 3


def test_state_table_rejects_illegal_transitions() -> None:
    d = Dialog.from_response(req(INVITE), resp(OK))
    with pytest.raises(DialogStateError):
        d.apply(DialogEvent.PROVISIONAL)
    d.apply(DialogEvent.TERMINATE)
    with pytest.raises(DialogStateError):
        d.apply(DialogEvent.CONFIRM)


def test_dialog_needs_tags_and_contact() -> None:
    with pytest.raises(DialogStateError):
        Dialog.from_response(req(INVITE), resp(OK.replace(";tag=314159", "")))
    with pytest.raises(DialogStateError):
        Dialog.from_request(
            req(INVITE.replace("Contact: <sip:alice@client.atlanta.example.com;transport=tcp>\r\n", "")), "t"
        )


def test_uri_destination() -> None:
    assert uri_destination(URI.parse("sip:bob@127.0.0.1:5070")) == ("127.0.0.1", 5070, "UDP")
    assert uri_destination(URI.parse("sip:bob@127.0.0.1;transport=tcp")) == ("127.0.0.1", 5060, "TCP")
    assert uri_destination(URI.parse("sips:bob@example.com")) == ("example.com", 5061, "TLS")
    assert uri_destination(URI.parse("sip:bob@example.com;maddr=10.0.0.9")) == ("10.0.0.9", 5060, "UDP")
    assert uri_destination(URI.parse("sip:[::1]:5080")) == ("::1", 5080, "UDP")


def test_create_request_with_body_and_contact() -> None:
    d = Dialog.from_response(req(INVITE), resp(OK))
    contact = Address(URI.parse("sip:alice@10.0.0.1:5060"))
    r = d.create_request("INVITE", VIA, contact=contact, body=b"v=0\r\n", content_type="application/sdp")
    text = bytes(r).decode()
    assert "Contact: <sip:alice@10.0.0.1:5060>\r\n" in text
    assert text.endswith("Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n")
