"""The hardened parser: hostile input gives a clean RcmlError with a code, quickly; good input gives verbs."""

from __future__ import annotations

import pytest

from callplane.core.errors import RcmlError
from callplane.rcml.errors import ContentTypeError, DocumentError, SchemaError
from callplane.rcml.parser import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_ELEMENTS,
    document_for_response,
    escape_bare_ampersands,
    parse_document,
)
from callplane.rcml.verbs import Document, Hangup, Notice, Play, Redirect, Say

URL = "http://app.example.com/ivr/start.xml"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Response><Say>&lol9;</Say></Response>"""

HOSTILE = {
    "billion laughs": (BILLION_LAUGHS, "DTD"),
    "external entity": (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Response><Say>&x;</Say>'
        b"</Response>",
        "DTD",
    ),
    "external DTD": (
        b'<!DOCTYPE Response SYSTEM "http://127.0.0.1:9/evil.dtd"><Response><Hangup/></Response>',
        "DTD",
    ),
    "bare DTD": (b"<!DOCTYPE Response><Response><Hangup/></Response>", "DTD"),
    "undefined entity": (b"<Response><Say>&secret;</Say></Response>", "not well-formed"),
    "10 MiB": (b"<Response><Say>" + b"a" * (10 << 20) + b"</Say></Response>", "limit is 1048576"),
    "10,000 nested": (
        b"<Response>" + b"<Say>" * 10_000 + b"x" + b"</Say>" * 10_000 + b"</Response>",
        "64 elements deep",
    ),
    "10,000 nested, unclosed": (b"<Response>" + b"<a>" * 10_000, "64 elements deep"),
    "too many elements": (b"<Response>" + b"<Pause/>" * MAX_ELEMENTS + b"</Response>", "more than 10000 elements"),
    "root not Response": (b"<Document><Hangup/></Document>", "not <Response>"),
    "namespaced Response": (b'<Response xmlns="urn:x"><Hangup/></Response>', "not <Response>"),
    "lower-case response": (b"<response><Hangup/></response>", "not <Response>"),
    "empty": (b"", "empty"),
    "blank": (b" \r\n\t ", "empty"),
    "only a declaration": (b'<?xml version="1.0"?>', "not well-formed"),
    "unclosed": (b"<Response><Say>Hi</Response>", "not well-formed"),
    "two roots": (b"<Response/><Response/>", "not well-formed"),
    "unknown encoding": (b'<?xml version="1.0" encoding="x-nope"?><Response/>', "not well-formed"),
    "utf-16 odd length": ("<Response/>".encode("utf-16") + b"\x00", "utf-16"),
    "NUL byte": (b"<Response><Say>\x00</Say></Response>", "not well-formed"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_documents_are_refused_with_12100(name: str) -> None:
    body, words = HOSTILE[name]
    with pytest.raises(DocumentError) as info:
        parse_document(body, URL)
    assert info.value.code == 12100
    assert words in str(info.value)


def test_every_parser_error_is_an_rcml_error() -> None:
    assert issubclass(DocumentError, RcmlError) and issubclass(SchemaError, RcmlError)
    assert issubclass(ContentTypeError, RcmlError)


def test_size_cap_is_inclusive_of_exactly_one_mebibyte() -> None:
    head, tail = b"<Response><Hangup/>", b"</Response>"
    exact = head + b" " * (MAX_BYTES - len(head) - len(tail)) + tail
    assert len(exact) == MAX_BYTES
    assert parse_document(exact, URL).verbs == (Hangup(),)
    with pytest.raises(DocumentError, match="1048577 bytes"):
        parse_document(exact + b" ", URL)


def test_depth_cap_allows_exactly_max_depth() -> None:
    inner = MAX_DEPTH - 2  # Response and Say are two levels
    body = b"<Response><Say>" + b"<b>" * inner + b"deep" + b"</b>" * inner + b"</Say></Response>"
    assert parse_document(body, URL).verbs == (Say("deep"),)
    deeper = b"<Response><Say>" + b"<b>" * (inner + 1) + b"x" + b"</b>" * (inner + 1) + b"</Say></Response>"
    with pytest.raises(DocumentError, match="64 elements deep"):
        parse_document(deeper, URL)


def test_unknown_verb_refuses_the_document_with_12200() -> None:
    with pytest.raises(SchemaError) as info:
        parse_document(b"<Response><Say>Hi</Say><Dance/></Response>", URL)
    assert info.value.code == 12200
    assert "<Dance> is not an RCML verb" in str(info.value)


def test_unknown_element_inside_gather_or_dial_refuses_the_document() -> None:
    for body in (b"<Response><Gather><Sing/></Gather></Response>", b"<Response><Dial><Fax2/></Dial></Response>"):
        with pytest.raises(SchemaError):
            parse_document(body, URL)


def test_bare_ampersands_are_escaped_and_references_kept() -> None:
    assert (
        escape_bare_ampersands(b"a&b &amp; &#38; &#x26; &lt; & &x") == b"a&amp;b &amp; &#38; &#x26; &lt; &amp; &amp;x"
    )
    doc = parse_document(b"<Response><Redirect>next?a=1&b=2&amp;c=3</Redirect></Response>", URL)
    assert doc.verbs == (Redirect("http://app.example.com/ivr/next?a=1&b=2&c=3"),)


def test_text_bodies_and_declared_encodings() -> None:
    latin = b'<?xml version="1.0" encoding="ISO-8859-1"?><Response><Say>caf\xe9</Say></Response>'
    assert parse_document(latin, URL).verbs == (Say("caf\u00e9"),)
    assert parse_document("<Response><Say>caf\u00e9</Say></Response>", URL).verbs == (Say("caf\u00e9"),)
    assert parse_document(b"\xef\xbb\xbf<Response><Hangup/></Response>", URL).verbs == (Hangup(),)
    for codec in ("utf-16", "utf-16-be", "utf-32"):
        body = '<?xml version="1.0" encoding="UTF-16"?><Response><Say>a&b \u00e9</Say></Response>'.encode(codec)
        if codec == "utf-16-be":
            body = b"\xfe\xff" + body
        assert parse_document(body, URL).verbs == (Say("a&b \u00e9"),), codec


def test_comments_and_processing_instructions_are_ignored() -> None:
    body = b"<Response><!-- hi --><?php echo 1 ?><Hangup/></Response>"
    assert parse_document(body, URL) == Document(URL, (Hangup(),))


@pytest.mark.parametrize(
    "content_type", ["text/xml", "application/xml", "text/html", "TEXT/XML; charset=utf-8", "application/rcml+xml"]
)
def test_xml_content_types_are_parsed(content_type: str) -> None:
    doc = document_for_response(b"<Response><Hangup/></Response>", content_type, URL)
    assert doc.verbs == (Hangup(),)


@pytest.mark.parametrize("content_type", ["audio/wav", "audio/x-wav", "audio/mpeg", "Audio/WAVE"])
def test_audio_content_types_play_the_url(content_type: str) -> None:
    assert document_for_response(b"RIFF....", content_type, URL) == Document(URL, (Play(URL),))


def test_text_plain_says_the_body_in_its_charset() -> None:
    doc = document_for_response(b"  caf\xe9 ouvert \n", "text/plain; charset=ISO-8859-1", URL)
    assert doc.verbs == (Say("caf\u00e9 ouvert"),)
    assert document_for_response(b"caf\xc3\xa9", "text/plain; charset=nonsense", URL).verbs == (Say("caf\u00e9"),)
    empty = document_for_response(b"  ", "text/plain", URL)
    assert empty.verbs == () and empty.notices == (Notice(13520, "the text/plain document is empty; nothing to say"),)


@pytest.mark.parametrize("content_type", [None, "", "application/json", "image/png", "text/csv"])
def test_other_content_types_are_error_12300(content_type: str | None) -> None:
    with pytest.raises(ContentTypeError) as info:
        document_for_response(b"<Response/>", content_type, URL)
    assert info.value.code == 12300
    assert URL in str(info.value)


def test_non_xml_bodies_are_capped_too() -> None:
    with pytest.raises(DocumentError):
        document_for_response(b"a" * (MAX_BYTES + 1), "text/plain", URL)
