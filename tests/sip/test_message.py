"""Messages: parse, serialise, framing, on real bytes (RFC 3261 §7, §18, §24; RFC 3665; SIPp captures)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callplane.sip.headers import URI, Address, CSeq, SipParseError, Via
from callplane.sip.message import (
    FramingError,
    Headers,
    Request,
    Response,
    StreamFramer,
    TooManyHops,
    can_answer,
    decrement_max_forwards,
    error_response,
    parse_message,
    response_destination,
)

DATA = Path(__file__).parent.parent / "data" / "sip"
FIXTURES = sorted(DATA.glob("*.sip"))


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_fixtures_present() -> None:
    assert len(FIXTURES) >= 15


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_round_trip_is_byte_exact(path: Path) -> None:
    data = path.read_bytes()
    msg = parse_message(data)
    again = bytes(msg)
    if b"\r\n " in data or b"\r\n\t" in data or b"Content-Length:  " in data:
        # Folding and odd spacing are normalised; the second round trip must then be stable.
        assert bytes(parse_message(again)) == again
    else:
        assert again == data


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_byte_by_byte_stream_framing(path: Path) -> None:
    data = path.read_bytes()
    framer = StreamFramer()
    frames: list[bytes] = []
    for i in range(len(data)):
        frames += framer.feed(data[i : i + 1])
    assert frames == [data]
    assert framer.buffered == 0
    assert bytes(parse_message(frames[0], stream=True)) == bytes(parse_message(data))


def test_rfc3261_f1_invite_fields() -> None:
    msg = parse_message(load("rfc3261_24_2_f1_invite.sip"))
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.uri == URI("sip", "biloxi.com", "bob")
    assert msg.via == Via("UDP", "pc33.atlanta.com", None, (("branch", "z9hG4bKnashds8"),))
    assert msg.from_.tag == "1928301774" and msg.from_.display_name == "Alice"
    assert msg.to.tag is None
    assert msg.call_id == "a84b4c76e66710"
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.max_forwards == 70
    assert msg.content_type == "application/sdp"
    assert msg.body.startswith(b"v=0\r\no=alice") and len(msg.body) == int(msg.headers.get("content-length") or "")
    assert [str(c.uri) for c in msg.contacts] == ["sip:alice@pc33.atlanta.com"]


def test_multi_value_headers_and_order() -> None:
    msg = parse_message(load("rfc3261_24_2_f9_200.sip"))
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (200, "OK")
    assert [v.branch for v in msg.vias] == ["z9hG4bK4b43c2ff8.1", "z9hG4bK77ef4c2312983.1", "z9hG4bKnashds8"]
    rr = parse_message(load("rfc3261_24_2_f8_180.sip")).headers.get_all("Record-Route")
    assert rr == ["<sip:server10.biloxi.com;lr>", "<sip:bigbox3.site3.atlanta.com;lr>"]
    assert msg.headers.get_all("record-route") == rr


def test_a_folded_line_that_looks_like_a_header_continues_the_line_above() -> None:
    """Folding is found by the line that starts with a space or tab: what came before it is read again as folded."""
    text = (
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nTo: <sip:a@b>\r\n"
        b"From: <sip:c@d>;tag=1\r\nCall-ID: f1\r\nCSeq: 1 OPTIONS\r\nSubject: lunch\r\n Max-Forwards: 5\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text)
    assert msg.headers.get("subject") == "lunch Max-Forwards: 5" and msg.max_forwards == 70
    assert [n for n, _ in msg.headers] == [
        "Via",
        "Max-Forwards",
        "To",
        "From",
        "Call-ID",
        "CSeq",
        "Subject",
        "Content-Length",
    ]
    lf = parse_message(text.replace(b"\r\n", b"\n"))
    assert list(lf.headers) == list(msg.headers)


def test_compact_forms_folding_and_unknown_headers() -> None:
    msg = parse_message(load("compact_folded_invite.sip"))
    assert [v.branch for v in msg.vias] == ["z9hG4bK.cmp1", "z9hG4bK.cmp2", "z9hG4bK.cmp3"]
    assert msg.via.host == "[2001:db8::9]" and msg.via.has_rport
    assert msg.to.display_name == "Bob, the builder"
    assert msg.from_ == Address(URI("sip", "atlanta.com", "alice"), None, (("tag", "77"),))
    assert msg.call_id == "compact-1@atlanta.com"
    assert [c.display_name for c in msg.contacts] == [None, "A, B"]
    assert msg.contacts[0].param("expires") == "60"
    assert msg.headers.get_all("Supported") == ["100rel", "timer"]
    assert msg.headers.get("x-custom-header") == "keep me ; exactly"
    assert msg.content_type == "application/sdp"
    names = [n for n, _ in msg.headers]
    assert names[:3] == ["v", "v", "Max-Forwards"] and "X-Custom-Header" in names and names[-1] == "l"
    assert b"\r\nv: SIP/2.0/TCP proxy.example.com:5060 ;branch=z9hG4bK.cmp2 , SIP/2.0/UDP" in bytes(msg)


def test_sipp_capture_odd_spacing() -> None:
    msg = parse_message(load("sipp_uac_invite.sip"))
    assert msg.contacts[0].uri == URI("sip", "127.0.0.1", "sipp", None, 5060)
    assert len(msg.body) == 129
    assert b"\r\nContent-Length: 129\r\n\r\nv=0" in bytes(msg)


def test_serialise_fixes_content_length() -> None:
    msg = parse_message(load("rfc3261_24_2_f13_bye.sip"))
    msg.body = b"hello"
    out = bytes(msg)
    assert out.endswith(b"CSeq: 231 BYE\r\nContent-Length: 5\r\n\r\nhello")
    req = Request("OPTIONS", URI.parse("sip:x@y"), Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")]))
    assert bytes(req) == b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"


def test_datagram_content_length_rules() -> None:
    data = load("rfc3261_24_2_f1_invite.sip")
    with pytest.raises(SipParseError, match="body shorter than Content-Length") as info:
        parse_message(data[:-10])
    assert info.value.status == 400
    assert can_answer(info.value) is not None  # enough is known to answer 400
    # Extra bytes after the body in a datagram are discarded (§18.3).
    assert parse_message(data + b"garbage").body == parse_message(data).body
    # Without Content-Length a datagram's body is the rest of the packet; on a stream that is an error.
    no_len = re.sub(rb"Content-Length: \d+\r\n", b"", data)
    assert b"Content-Length" not in no_len
    assert parse_message(no_len).body == parse_message(data).body
    with pytest.raises(SipParseError, match="missing Content-Length on a stream"):
        parse_message(no_len, stream=True)
    with pytest.raises(SipParseError, match="malformed Content-Length"):
        parse_message(re.sub(rb"Content-Length: \d+", b"Content-Length: -1", data))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"Via", "missing mandatory header Via"),
        (b"From", "missing mandatory header From"),
        (b"To", "missing mandatory header To"),
        (b"Call-ID", "missing mandatory header Call-ID"),
        (b"CSeq", "missing mandatory header CSeq"),
    ],
)
def test_missing_mandatory_headers(header: bytes, message: str) -> None:
    lines = load("rfc3261_24_2_f13_bye.sip").split(b"\r\n")
    data = b"\r\n".join(line for line in lines if not line.startswith(header + b":"))
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert str(info.value) == message and info.value.status == 400


def test_bad_cseq_and_mismatched_method_are_answerable() -> None:
    data = load("rfc3261_24_2_f13_bye.sip")
    with pytest.raises(SipParseError, match="malformed CSeq") as info:
        parse_message(data.replace(b"CSeq: 231 BYE", b"CSeq: x BYE"))
    assert can_answer(info.value) is not None  # answered 400 with the CSeq line copied as it came (RFC 4475 §3.1.2.4)
    with pytest.raises(SipParseError, match="CSeq method does not match") as info:
        parse_message(data.replace(b"CSeq: 231 BYE", b"CSeq: 231 INVITE"))
    partial = can_answer(info.value)
    assert partial is not None and partial.method == "BYE"
    resp = partial.create_response(400, to_tag="t")
    assert bytes(resp).startswith(b"SIP/2.0 400 Bad Request\r\nVia: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10\r\n")


@pytest.mark.parametrize(
    ("data", "message", "status"),
    [
        (b"", "incomplete header block", 400),
        (b"\x00\xff\r\n\r\n", "malformed request line", 400),
        (b"INVITE sip:a@b SIP/3.0\r\n\r\n", "unsupported SIP version", 505),
        (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", "malformed request line", 400),
        (b"SIP/2.0 99 Low\r\n\r\n", "malformed status line", 400),
        (b"SIP/2.0 2000 OK\r\n\r\n", "malformed status line", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nNoColon\r\n\r\n", "malformed header line", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nVia\r\n\r\n", "malformed header line", 400),  # a known name
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nBad Name: y\r\n\r\n", "malformed header name", 400),
        (b"INVITE sip:a@b SIP/2.0\nVia: x\nTo\n\n", "malformed header line", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\tfolded\r\nNoColon\r\n\r\n", "malformed header line", 400),
        (b"INVITE sip:a@b SIP/2.0\r\n folded\r\n\r\n", "malformed header folding", 400),
        (b"INVITE http://x SIP/2.0\r\nVia: x\r\n\r\n", "unsupported URI scheme", 416),
        (b"INVITE sip:a@b:x SIP/2.0\r\nVia: x\r\n\r\n", "malformed Request-URI", 400),
        (b"\r\n\r\n", "incomplete header block", 400),
    ],
)
def test_garbage(data: bytes, message: str, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert (str(info.value), info.value.status) == (message, status)


def test_oversized_datagram() -> None:
    data = load("rfc3261_24_2_f13_bye.sip") + b"x" * 70000
    with pytest.raises(SipParseError, match="message too large") as info:
        parse_message(data)
    assert info.value.status == 513


def test_leading_crlf_and_bare_lf() -> None:
    data = load("rfc3261_24_2_f13_bye.sip")
    assert bytes(parse_message(b"\r\n\r\n" + data)) == data
    assert bytes(parse_message(data.replace(b"\r\n", b"\n"))) == data


def test_create_response_copies_per_8_2_6() -> None:
    inv = parse_message(load("rfc3261_24_2_f3_invite_proxied.sip"))
    assert isinstance(inv, Request)
    resp = inv.create_response(180, to_tag="a6c85cf")
    assert bytes(resp) == (
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP bigbox3.site3.atlanta.com;branch=z9hG4bK77ef4c2312983.1\r\n"
        b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1\r\n"
        b"From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
        b'To: "Bob" <sip:bob@biloxi.com>;tag=a6c85cf\r\n'
        b"Call-ID: a84b4c76e66710\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert b"tag=" not in bytes(inv.create_response(100, to_tag="x")).split(b"To:")[1].split(b"\r\n")[0]


def test_headers_editing() -> None:
    msg = parse_message(load("compact_folded_invite.sip"))
    top = msg.via.with_param("received", "192.0.2.9").with_param("rport", "5070")
    msg.headers.set_first("via", top)
    assert msg.via.received == "192.0.2.9" and msg.via.rport == 5070
    assert len(msg.vias) == 3
    msg.headers.insert_first("Via", "SIP/2.0/UDP me;branch=z9hG4bKme")
    assert [v.branch for v in msg.vias][:2] == ["z9hG4bKme", "z9hG4bK.cmp1"]
    assert msg.headers.pop_first("via") == "SIP/2.0/UDP me;branch=z9hG4bKme"
    # A comma-joined line is split when its first value is removed.
    msg.headers.pop_first("via")
    msg.headers.pop_first("via")
    assert [v.branch for v in msg.vias] == ["z9hG4bK.cmp3"]
    msg.headers.remove("x-custom-header")
    assert "X-Custom-Header" not in msg.headers and "x-CUSTOM-header" not in msg.headers
    msg.headers.set("i", "new@x")
    assert msg.call_id == "new@x"


def test_stamping_the_top_via_keeps_the_other_parsed_headers() -> None:
    msg = parse_message(load("rfc3261_24_2_f1_invite.sip"))
    from_, to, cseq, vias = msg.from_, msg.to, msg.cseq, msg.vias
    top = msg.via.with_param("received", "192.0.2.9")
    msg.headers.set_first("Via", top)
    assert msg.via is top  # the typed value is kept, not re-parsed
    assert msg.from_ is from_ and msg.to is to and msg.cseq is cseq  # other headers' views survive
    assert msg.vias is not vias and msg.vias[0] == top and msg.vias[1:] == vias[1:]
    assert msg.headers.get("via") == str(top)
    assert b"\r\nVia: " + str(top).encode() + b"\r\n" in bytes(msg)


def test_a_response_forgets_the_views_it_copied_when_its_headers_change() -> None:
    """A response starts with its request's parsed views (Via list, From, CSeq...), and editing its headers afterwards
    forgets exactly the views of the edited header, whether or not a view of the whole list was copied."""
    request = parse_message(load("rfc3261_24_2_f1_invite.sip"))
    assert isinstance(request, Request)
    vias = request.vias  # a "via:all" view, copied into the response below
    ok = request.create_response(200, to_tag="t1")
    assert ok.vias is vias and ok.from_ is request.from_ and ok.cseq is request.cseq
    assert ok.to.tag == "t1" and request.to.tag is None and request.to.tag is None
    ok.headers.insert_first("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp")
    assert [v.host for v in ok.vias][0] == "proxy.example.com" and len(ok.vias) == len(vias) + 1
    assert request.vias is vias and len(request.vias) == len(vias)
    bare = request.create_response(180, to_tag="t1")  # no list view copied: the first line is still forgotten
    bare.headers.add("Contact", "<sip:a@b>")
    assert [c.uri.host for c in bare.contacts] == ["b"]
    bare.headers.add("Contact", "<sip:c@d>")
    assert [c.uri.host for c in bare.contacts] == ["b", "d"]
    bare.headers.set("CSeq", "7 INVITE")
    assert bare.cseq.seq == 7 and request.cseq.seq == 314159


def test_adding_a_line_updates_the_views_that_exist() -> None:
    request = parse_message(load("rfc3261_24_2_f1_invite.sip"))
    assert request.headers.get("x-new") is None and len(request.vias) == 1  # first-values map and a list view exist
    request.headers.add("X-New", "1")
    assert request.headers.get("x-new") == "1"
    request.headers.add("X-New", "2")  # not the first line: the first value stays
    assert request.headers.get("x-new") == "1" and request.headers.get_all("x-new") == ["1", "2"]
    top = request.via
    request.headers.add("Via", "SIP/2.0/UDP second.example.com;branch=z9hG4bK2")
    assert request.via == top and [v.host for v in request.vias][1] == "second.example.com"
    fresh = Headers()
    fresh.add("CSeq", CSeq(1, "INVITE"))  # a typed value is written as its text
    assert fresh.get("cseq") == "1 INVITE"


def test_max_forwards_view_follows_the_header() -> None:
    request = parse_message(load("rfc3261_24_2_f1_invite.sip"))
    assert isinstance(request, Request)
    assert request.max_forwards == 70
    assert decrement_max_forwards(request) == 69 and request.max_forwards == 69
    request.headers.remove("Max-Forwards")
    assert request.max_forwards is None
    request.headers.add("Max-Forwards", "x")
    with pytest.raises(SipParseError, match="malformed Max-Forwards"):
        request.max_forwards  # noqa: B018


def test_an_address_tag_is_read_once_and_each_value_has_its_own() -> None:
    address = Address.parse("Alice <sip:alice@atlanta.com>;tag=1928301774")
    assert address.tag == "1928301774" and address._tag == ("1928301774",)
    assert address.with_tag("other").tag == "other" and address.tag == "1928301774"
    assert Address.parse("<sip:bob@biloxi.com>").tag is None
    assert address == Address(address.uri, "Alice", (("tag", "1928301774"),))  # the memo is not compared


def test_stream_framer_several_messages_and_keepalives() -> None:
    a = load("rfc3261_24_2_f1_invite.sip")
    b = load("rfc3261_24_2_f13_bye.sip")
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n" + a + b[:50]) == [a]
    assert framer.pings == 1
    assert framer.feed(b[50:] + b"\r\n\r\n" + a) == [b, a]
    assert framer.feed(b"\r") == [] and framer.feed(b"\n\r\n") == []
    assert framer.pings == 3


def test_stream_framer_errors() -> None:
    with pytest.raises(FramingError, match="missing Content-Length on a stream"):
        StreamFramer().feed(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n")
    with pytest.raises(FramingError, match="malformed Content-Length"):
        StreamFramer().feed(b"OPTIONS sip:a@b SIP/2.0\r\nl: 1x\r\n\r\n")
    with pytest.raises(FramingError, match="message too large") as info:
        StreamFramer(max_size=1000).feed(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n")
    assert info.value.status == 513
    with pytest.raises(FramingError, match="header block too large"):
        StreamFramer(max_size=1000).feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 300)


def test_response_destination_18_2_2() -> None:
    v = Via.parse("SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK1")
    assert response_destination(v, "192.0.2.1", 40000) == ("192.0.2.1", 5060)
    assert response_destination(v.with_param("received", "192.0.2.1"), "x", 1) == ("192.0.2.1", 5060)
    v2 = Via.parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;received=192.0.2.1;rport=40000")
    assert response_destination(v2, "192.0.2.1", 40000) == ("192.0.2.1", 40000)
    v3 = Via.parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport")
    assert response_destination(v3, "192.0.2.7", 41000) == ("192.0.2.7", 41000)
    v4 = Via.parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;maddr=239.1.1.1;received=192.0.2.1")
    assert response_destination(v4, "192.0.2.1", 40000) == ("239.1.1.1", 5070)
    # Names in any case, the first occurrence of each counts (as Via.param), a non-numeric rport is a bare one.
    v5 = Via.parse("SIP/2.0/UDP 10.0.0.1:5070;RPORT=7;rport=9;Received=192.0.2.5;received=192.0.2.6")
    assert response_destination(v5, "192.0.2.1", 40000) == ("192.0.2.5", 7)
    v6 = Via.parse("SIP/2.0/UDP 10.0.0.1:5070;rport=x;received=192.0.2.5")
    assert response_destination(v6, "192.0.2.1", 40000) == ("192.0.2.5", 40000)
    v7 = Via.parse("SIP/2.0/TLS 10.0.0.1;maddr;received=192.0.2.5")  # a flag maddr is no address
    assert response_destination(v7, "192.0.2.1", 40000) == ("192.0.2.5", 5061)


def test_max_forwards_helper() -> None:
    req = parse_message(load("rfc3261_24_2_f13_bye.sip"))
    assert isinstance(req, Request)
    assert decrement_max_forwards(req) == 69
    assert req.headers.get("Max-Forwards") == "69"
    req.headers.set("Max-Forwards", "0")
    with pytest.raises(TooManyHops) as info:
        decrement_max_forwards(req)
    assert info.value.status == 483
    req.headers.set("Max-Forwards", "x")
    with pytest.raises(SipParseError, match="malformed Max-Forwards"):
        decrement_max_forwards(req)


def test_baresip_capture_empty_supported_and_sdp() -> None:
    msg = parse_message(load("baresip_invite.sip"))
    assert isinstance(msg, Request)
    assert msg.headers.get("Supported") == "" and msg.headers.get_all("Supported") == []
    assert msg.headers.get_all("Allow")[:3] == ["INVITE", "ACK", "BYE"]
    assert msg.via.has_rport and msg.via.rport is None
    assert msg.body.startswith(b"v=0\r\n") and len(msg.body) == 314


def test_kamailio_capture_record_route_and_two_vias() -> None:
    msg = parse_message(load("kamailio_rr_invite.sip"))
    assert msg.headers.get_all("Record-Route") == ["<sip:127.0.0.1:39193;lr;ftag=31366SIPpTag001>"]
    rr = Address.parse(msg.headers.get_all("Record-Route")[0])
    assert rr.uri.lr and rr.uri.port == 39193
    assert [v.port for v in msg.vias] == [39193, 5060]
    assert msg.max_forwards == 69


def test_create_cancel_9_1() -> None:
    inv = parse_message(load("rfc3261_24_2_f1_invite.sip"))
    assert isinstance(inv, Request)
    inv.headers.add("Route", "<sip:p1.example.com;lr>")
    assert bytes(inv.create_cancel()) == (
        b"CANCEL sip:bob@biloxi.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8\r\n"
        b"Route: <sip:p1.example.com;lr>\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
        b"To: Bob <sip:bob@biloxi.com>\r\n"
        b"Call-ID: a84b4c76e66710\r\n"
        b"CSeq: 314159 CANCEL\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_stream_framer_trickled_header_split_across_feeds() -> None:
    data = load("rfc3261_24_2_f13_bye.sip")
    end = data.index(b"\r\n\r\n")
    framer = StreamFramer()
    # The blank line arrives split in every possible way.
    for cut in range(end, end + 4):
        framer = StreamFramer()
        assert framer.feed(data[:cut]) == []
        assert framer.feed(data[cut:]) == [data]


def test_absolute_uri_in_to_is_accepted() -> None:
    """RFC 4475 §3.1.1.11-style: an unknown scheme in To/From is legal; only a Request-URI must be sip/sips/tel."""
    data = load("rfc3261_24_2_f13_bye.sip").replace(
        b"To: Alice <sip:alice@atlanta.com>;tag=1928301774", b"To: <urn:service:sos>;tag=1928301774"
    )
    msg = parse_message(data)
    assert msg.to.uri == URI("urn", "", opaque="service:sos") and msg.to.tag == "1928301774"
    assert bytes(msg) == data


def test_two_requests_in_one_datagram_keep_the_first() -> None:
    """RFC 4475 §3.1.2.9 (dblreq): bytes after Content-Length are discarded on a datagram."""
    a = load("rfc3261_24_1_register.sip")
    msg = parse_message(a + load("rfc3261_24_2_f13_bye.sip"))
    assert isinstance(msg, Request) and msg.method == "REGISTER" and msg.body == b""


def test_escaped_user_and_whitespace_everywhere() -> None:
    data = (
        b"OPTIONS sip:sips%3Auser%40example.com@example.net SIP/2.0\r\n"
        b"Via  :  SIP / 2.0\r\n  / UDP\r\n    192.0.2.2 ; branch = z9hG4bK390skdjuw\r\n"
        b"To: sip:user@example.com\r\nFrom  :   Caller   Name   <sip:caller@example.com>  ;  tag = 98asjd8\r\n"
        b"Call-ID: esc01.239409asdfakjkn23onasd0-3234\r\nCSeq: 234234 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(data)
    assert isinstance(msg, Request) and msg.uri.user == "sips%3Auser%40example.com"
    assert (msg.via.transport, msg.via.host, msg.via.branch) == ("UDP", "192.0.2.2", "z9hG4bK390skdjuw")
    assert (msg.from_.display_name, msg.from_.tag) == ("Caller   Name", "98asjd8")


# RFC 4475 §3.1.2: each invalid message (hand-written to the RFC's description, tests/data/sip/rfc4475/) and the
# outcome it gets here: an int is the status it is answered with (the error is answerable), None is dropped, "parse"
# is accepted (the RFC allows it, and we do not use the faulty field).
TORTURE: dict[str, int | str | None] = {
    "badinv01": 400,  # §3.1.2.1 empty Via/Contact parameters: answered to the source (the Via cannot be read)
    "clerr": 400,  # §3.1.2.2 Content-Length beyond the datagram
    "ncl": 400,  # §3.1.2.3 negative Content-Length
    "scalar02": 400,  # §3.1.2.4 CSeq beyond 2**31
    "scalarlg": None,  # §3.1.2.5 a response: dropped
    "quotbal": 400,  # §3.1.2.6 unterminated quote in To: the To line is copied as it came
    "ltgtruri": 400,  # §3.1.2.7 <> around the Request-URI
    "lwsruri": 400,  # §3.1.2.8 LWS inside the Request-URI
    "lwsstart": 400,  # §3.1.2.9 several SP in the request line (rejecting is allowed)
    "trws": 400,  # §3.1.2.10 SP after the version (rejecting is allowed)
    "escruri": 400,  # §3.1.2.11 headers in the Request-URI
    "baddate": "parse",  # §3.1.2.12 non-GMT Date: we never read Date
    "regbadct": "parse",  # §3.1.2.13 the Contact fails when read: the registrar answers 400 (test_registrar)
    "badaspec": 400,  # §3.1.2.14 spaces inside < >
    "baddn": 400,  # §3.1.2.15 unquoted display name with a comma
    "badvers": 505,  # §3.1.2.16 SIP/9.0
    "mismatch01": 400,  # §3.1.2.17 CSeq method differs from the request's
    "mismatch02": 400,  # §3.1.2.18 unknown method and mismatch (501 preferred by the RFC, 400 allowed)
    "bigcode": None,  # §3.1.2.19 a status code of ten digits: dropped
    "missing_callid": 400,  # issue 7: requests without Call-ID, From or To are answered, not dropped
    "missing_from": 400,
    "missing_to": 400,
}


def test_every_rfc4475_invalid_fixture_has_an_outcome() -> None:
    assert sorted(p.stem for p in (DATA / "rfc4475").glob("*.sip")) == sorted(TORTURE)


@pytest.mark.parametrize(("name", "outcome"), sorted(TORTURE.items()))
def test_rfc4475_invalid_messages(name: str, outcome: int | str | None) -> None:
    data = (DATA / "rfc4475" / f"{name}.sip").read_bytes()
    if outcome == "parse":
        assert isinstance(parse_message(data), Request)
        return
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    answer = error_response(info.value, "192.0.2.99", 5999, "ourtag")
    if outcome is None:
        assert answer is None
        return
    assert answer is not None
    response, host, port = answer
    wire = bytes(response).decode()
    assert wire.startswith(f"SIP/2.0 {outcome} ")
    assert f'\r\nWarning: 399 callplane "{info.value}"\r\n' in wire
    # Every Via, From, To, Call-ID and CSeq line the request had is copied (§8.2.6.2), well-formed or not.
    request_lines = data.decode().split("\r\n")
    for line in request_lines:
        if line.split(":")[0] in ("From", "Call-ID", "CSeq"):
            assert f"\r\n{line}\r\n" in wire
    if name == "badinv01":
        assert (host, port) == ("192.0.2.99", 5999)  # the Via cannot be read: back to the source
    else:
        assert (host, port) == ("192.0.2.99", 5060)  # §18.2.2: received + sent-by port


def test_rfc4475_contact_not_in_angle_brackets_fails_when_read() -> None:
    msg = parse_message((DATA / "rfc4475" / "regbadct.sip").read_bytes())
    with pytest.raises(SipParseError):
        _ = msg.contacts
