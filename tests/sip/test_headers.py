"""Typed wire values: URI, Address, Via, CSeq (RFC 3261 §19, §20, §25)."""

from __future__ import annotations

import pytest

from callplane.core.errors import SipError
from callplane.sip.headers import (
    _CACHE_MAX,
    _URI_CACHE,
    URI,
    Address,
    CSeq,
    SipParseError,
    Via,
    parse_params,
    quick_init,
    split_list,
)


def test_sip_uri_all_parts() -> None:
    uri = URI.parse("sips:alice:secret@atlanta.com:5061;transport=TCP;lr?subject=project")
    assert uri == URI(
        "sips", "atlanta.com", "alice", "secret", 5061, (("transport", "TCP"), ("lr", None)), "subject=project"
    )
    assert uri.transport == "TCP"
    assert uri.lr
    assert str(uri) == "sips:alice:secret@atlanta.com:5061;transport=TCP;lr?subject=project"


def test_uri_without_user_and_ipv6() -> None:
    uri = URI.parse("sip:[2001:db8::9]:5070;maddr=239.255.255.1")
    assert (uri.user, uri.host, uri.port, uri.maddr) == (None, "[2001:db8::9]", 5070, "239.255.255.1")
    assert str(uri) == "sip:[2001:db8::9]:5070;maddr=239.255.255.1"


def test_uri_user_with_semicolon_params() -> None:
    uri = URI.parse("sip:+12125551212;npdi@gw.example.com;user=phone")
    assert uri.user == "+12125551212;npdi"
    assert uri.param("USER") == "phone"


def test_tel_uri() -> None:
    uri = URI.parse("tel:+1-201-555-0123;phone-context=example.com")
    assert (uri.scheme, uri.user, uri.host) == ("tel", "+1-201-555-0123", "")
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "http//example.com",
        "1x:y",
        "sip:alice@",
        "sip:alice@host:99999",
        "sip:a@[::1",
        "sip:a b@host",
        "sip:ho st",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        URI.parse(text)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SipError)
    assert info.value.status == 400


def test_uri_param_helpers() -> None:
    uri = URI.parse("sip:bob@biloxi.com;Transport=udp")
    assert str(uri.with_param("transport", "tcp")) == "sip:bob@biloxi.com;Transport=tcp"
    assert str(uri.without_param("transport")) == "sip:bob@biloxi.com"
    assert str(uri.with_param("lr")) == "sip:bob@biloxi.com;Transport=udp;lr"


def test_address_forms() -> None:
    a = Address.parse('"Bob \\"B\\"" <sips:bob@biloxi.com> ;tag=a48s')
    assert (a.display_name, str(a.uri), a.tag) == ('Bob "B"', "sips:bob@biloxi.com", "a48s")
    assert str(a) == '"Bob \\"B\\"" <sips:bob@biloxi.com>;tag=a48s'
    b = Address.parse("Anonymous <sip:c8oqz84zk7z@privacy.org>;tag=hyh8")
    assert (b.display_name, b.tag) == ("Anonymous", "hyh8")
    # addr-spec form: the parameters belong to the header, not to the URI (§20.10).
    c = Address.parse("sip:+12125551212@phone2net.com;tag=887s")
    assert c.uri == URI("sip", "phone2net.com", "+12125551212")
    assert c.tag == "887s"
    assert str(c) == "<sip:+12125551212@phone2net.com>;tag=887s"
    d = Address.parse("<sip:carol@chicago.com;transport=tcp>;expires=60;q=0.5")
    assert d.uri.transport == "TCP" and d.param("q") == "0.5" and d.display_name is None
    assert str(d.with_tag("x1")) == "<sip:carol@chicago.com;transport=tcp>;expires=60;q=0.5;tag=x1"


@pytest.mark.parametrize("text", ["", '"unterminated <sip:a@b>', "<sip:a@b", "Bob sip:a@b", "<sip:a@b> junk", '"x" y'])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(SipParseError):
        Address.parse(text)


def test_via() -> None:
    v = Via.parse("SIP / 2.0 / udp 192.0.2.1:5060 ;branch=z9hG4bK776asdhds;received=10.0.0.1;rport=1234")
    assert (v.transport, v.host, v.port, v.branch, v.received, v.rport) == (
        "UDP",
        "192.0.2.1",
        5060,
        "z9hG4bK776asdhds",
        "10.0.0.1",
        1234,
    )
    assert v.is_rfc3261 and not v.reliable
    assert str(v) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;received=10.0.0.1;rport=1234"
    w = Via.parse("SIP/2.0/TCP [2001:db8::1];branch=abc;rport")
    assert (w.host, w.port, w.has_rport, w.rport, w.is_rfc3261, w.reliable) == (
        "[2001:db8::1]",
        None,
        True,
        None,
        False,
        True,
    )
    assert str(w.with_param("rport", "5").with_param("received", "::1")) == (
        "SIP/2.0/TCP [2001:db8::1];branch=abc;rport=5;received=::1"
    )
    assert Via.parse("SIP/2.0/FOO host").transport == "FOO"  # unknown transports parse; the endpoint answers 400


@pytest.mark.parametrize("text", ["", "SIP/2.0 host", "SIP/2.0/UDP", "SIP/2.0/UDP host:70000", "SIP/2.0/UDP host x"])
def test_bad_vias(text: str) -> None:
    with pytest.raises(SipParseError, match="malformed Via"):
        Via.parse(text)


def test_vias_from_one_peer_keep_their_own_parameters() -> None:
    # The sent-by part is remembered across values: each value still gets its own parameters, and a malformed
    # parameter list is refused as it was before any value from that peer was parsed.
    first = Via.parse("SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bK1;rport")
    second = Via.parse("SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bK2")
    assert (first.branch, first.has_rport, second.branch, second.has_rport) == ("z9hG4bK1", True, "z9hG4bK2", False)
    assert Via.parse("SIP/2.0/UDP 192.0.2.9:5062").params == ()
    for params in [";;branch=z9hG4bK3", ";", "; ;x"]:
        with pytest.raises(SipParseError, match="malformed parameter"):
            Via.parse("SIP/2.0/UDP 192.0.2.9:5062" + params)


def test_cseq() -> None:
    assert CSeq.parse(" 4711   INVITE ") == CSeq(4711, "INVITE")
    assert str(CSeq(1, "BYE")) == "1 BYE"
    for bad in ["", "INVITE", "1", "-1 INVITE", "2147483648 INVITE", "1 INV ITE", "x BYE"]:
        with pytest.raises(SipParseError, match="malformed CSeq"):
            CSeq.parse(bad)
    assert CSeq.parse("2147483647 ACK").seq == 2**31 - 1


def test_split_list_respects_quotes_and_angles() -> None:
    assert split_list('"A, B" <sip:a@b>;x=1, <sip:c@d;p=a,b>, sip:e@f') == [
        '"A, B" <sip:a@b>;x=1',
        "<sip:c@d;p=a,b>",
        "sip:e@f",
    ]
    assert split_list(" , a ,, b ") == ["a", "b"]
    with pytest.raises(SipParseError):
        split_list('"open, x')


def test_params_with_quoted_semicolon() -> None:
    assert parse_params(';a="x;y";b;c=3') == (("a", '"x;y"'), ("b", None), ("c", "3"))
    with pytest.raises(SipParseError):
        parse_params(";=x")


def test_other_schemes_are_opaque() -> None:
    uri = URI.parse("mailto:alice@example.com")
    assert (uri.scheme, uri.host, uri.opaque, str(uri)) == (
        "mailto",
        "",
        "alice@example.com",
        "mailto:alice@example.com",
    )


def test_public_names_exist() -> None:
    import importlib

    for name in ("headers", "message", "transaction", "transaction_events", "aio"):
        module = importlib.import_module(f"callplane.sip.{name}")
        exported = module.__all__
        assert exported and all(hasattr(module, n) for n in exported), name


def test_uri_cache_evicts_the_oldest_instead_of_emptying() -> None:
    _URI_CACHE.clear()
    texts = [f"sip:user{n}@cache.example.com" for n in range(_CACHE_MAX + 10)]
    parsed = [URI.parse(t) for t in texts]
    recent = _CACHE_MAX - 100
    assert URI.parse(texts[recent]) is parsed[recent]  # still cached: the table did not collapse
    assert URI.parse(texts[0]) is not parsed[0]  # the oldest made room
    # An eighth at once: deleting the oldest entry one at a time makes every later eviction scan the deleted slots.
    assert URI.parse(texts[_CACHE_MAX // 8 - 1]) is not parsed[_CACHE_MAX // 8 - 1]
    addresses = [Address.parse(f"<{t}>;tag=x") for t in texts]
    assert Address.parse(f"<{texts[recent]}>;tag=x") is addresses[recent]


def test_uri_text_is_made_once_and_takes_no_part_in_equality() -> None:
    """A remembered URI recurs in every message of a dialog and in each call's events: ``str()`` is computed once."""
    uri = URI.parse("sip:alice@atlanta.com:5060;transport=tcp")
    text = str(uri)
    assert text == "sip:alice@atlanta.com:5060;transport=tcp"
    assert str(uri) is text
    fresh = URI._parse("sip:alice@atlanta.com:5060;transport=tcp")
    assert fresh is not uri and fresh == uri and hash(fresh) == hash(uri)
    assert str(uri.with_param("lr")) == "sip:alice@atlanta.com:5060;transport=tcp;lr"  # a new value, its own text


@pytest.mark.parametrize("text", [";a b=1", ";=x", ";ok;", ";x@y", ";tag=1;;"])
def test_malformed_parameters_are_refused_even_after_good_names_were_seen(text: str) -> None:
    assert parse_params(";tag=1;branch=z9hG4bK1;lr") == (("tag", "1"), ("branch", "z9hG4bK1"), ("lr", None))
    with pytest.raises(SipParseError, match="malformed parameter"):
        parse_params(text)


def test_a_quoted_parameter_value_keeps_its_semicolons() -> None:
    assert parse_params(';reason="a;b";lr') == (("reason", '"a;b"'), ("lr", None))


@pytest.mark.parametrize(
    "text",
    ['"Bob B." <sip:bob@example.com;transport=tcp>;x=1', "sip:bob@example.com", "<sip:bob@example.com>;tag;x=2"],
)
def test_an_address_with_our_tag_reads_as_the_tagged_value(text: str) -> None:
    # A response's To is the request's To text plus our tag; a valueless ";tag" is given the value in its place.
    address = Address.parse(text)
    assert address.tagged_text("a1b2") == str(address.with_tag("a1b2"))
    assert Address.parse(address.tagged_text("a1b2")).tag == "a1b2"


@pytest.mark.parametrize(
    "text",
    [
        "sipp <sip:sipp@127.0.0.1:5061>;tag={}",
        '"A;tag=b" <sip:a@example.com>;x=1;tag={}',
        "sip:+12125551212@phone2net.com;transport=udp;tag={}",
        "<sip:a@example.com> ;tag=1;tag={}",
        '<sip:a@example.com>;x="y;tag=z";tag={}',
        "<tel:+1555;phone-context=x>;tag={}",
    ],
)
def test_a_new_tag_on_a_known_address_reads_as_a_full_parse(text: str) -> None:
    """Every call brings a From and a To with a new tag: the address before the tag is remembered, the result is the
    same value a full parse gives, and a malformed tail is still refused."""
    first = Address.parse(text.format("t1"))
    second = Address.parse(text.format("t2-x.Y"))
    assert first == Address._parse(text.format("t1")) and second == Address._parse(text.format("t2-x.Y"))
    assert (first.params[-1], second.params[-1]) == (("tag", "t1"), ("tag", "t2-x.Y"))
    for bad in ("t3>", 't4"', "t 5", "t6;", ""):
        try:
            expected: Address | None = Address._parse(text.format(bad))
        except SipParseError:
            expected = None
        if expected is None:
            with pytest.raises(SipParseError):
                Address.parse(text.format(bad))
        else:
            assert Address.parse(text.format(bad)) == expected


def test_quick_init_makes_the_same_frozen_values_as_the_generated_init() -> None:
    import dataclasses
    import inspect

    @dataclasses.dataclass(frozen=True, slots=True)
    class Plain:
        a: int
        b: str = "b"
        c: tuple[int, ...] = ()
        memo: str | None = dataclasses.field(default=None, init=False, compare=False)

    @quick_init
    @dataclasses.dataclass(frozen=True, slots=True)
    class Quick:
        a: int
        b: str = "b"
        c: tuple[int, ...] = ()
        memo: str | None = dataclasses.field(default=None, init=False, compare=False)

    assert [(p.name, p.default) for p in inspect.signature(Quick).parameters.values()] == [
        (p.name, p.default) for p in inspect.signature(Plain).parameters.values()
    ]
    for args, kwargs in (((1,), {}), ((1, "x"), {"c": (2,)}), ((), {"a": 3, "b": "y"})):
        quick, plain = Quick(*args, **kwargs), Plain(*args, **kwargs)
        assert (quick.a, quick.b, quick.c, quick.memo) == (plain.a, plain.b, plain.c, plain.memo)
        assert quick == Quick(*args, **kwargs) and hash(quick) == hash(Quick(*args, **kwargs))
        assert repr(quick).replace("Quick", "Plain") == repr(plain)
        with pytest.raises(dataclasses.FrozenInstanceError):
            quick.a = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Quick()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Quick(1, d=2)  # type: ignore[call-arg]

    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        items: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    for refused in (WithFactory, NotFrozen):
        with pytest.raises(TypeError):
            quick_init(refused)
