"""Fuzzing the parser: whatever a web server returns, only an RcmlError can come out, and never slowly."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from hypothesis import given, settings
from hypothesis import strategies as st

from callplane.core.errors import RcmlError
from callplane.rcml.parser import document_for_response, parse_document
from callplane.rcml.verbs import Document

URL = "http://app.example.com/a/b.xml"
TAGS = [
    "Say", "Play", "Pause", "Gather", "Record", "Redirect", "Hangup", "Reject", "Dial", "Number", "Client", "Sip",
    "Conference", "Sms", "Queue", "Response", "Foo",
]  # fmt: skip
ATTRS = [
    "voice", "language", "loop", "length", "action", "method", "timeout", "finishOnKey", "numDigits", "maxLength",
    "playBeep", "reason", "timeLimit", "callerId", "record", "hangupOnStar", "url", "statusCallback",
    "statusCallbackEvent", "muted", "beep", "maxParticipants", "waitUrl", "input", "sendDigits", "name",
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "5", "true", "false", "GET", "post", "#", "*#", "man", "woman", "busy"]),
    st.sampled_from(["http://x/y", "/rel", "../up", "mailto:a@b", "http://[::1", "sip:a@b", "a b", "9" * 20]),
    st.text(max_size=12),
)


def _clean(text: str) -> str:
    # XML 1.0 cannot carry most control characters at all; the fuzz is about structure and values.
    return "".join(ch for ch in text if ch in "\t\n\r" or 0x20 <= ord(ch) < 0xD800 or 0xE000 <= ord(ch) < 0xFFFE)


Node = tuple[str, dict[str, str], str, list["Node"]]
_NODE_PARTS = (
    st.sampled_from(TAGS),
    st.dictionaries(st.sampled_from(ATTRS), VALUES, max_size=3),
    st.one_of(st.just(""), VALUES),
)
NODES: st.SearchStrategy[Node] = st.recursive(
    st.tuples(*_NODE_PARTS, st.just([])),
    lambda kids: st.tuples(*_NODE_PARTS, st.lists(kids, max_size=3)),
    max_leaves=10,
)


def render(node: Node) -> str:
    tag, attrs, text, children = node
    rendered = "".join(f" {name}={quoteattr(_clean(value))}" for name, value in attrs.items())
    return f"<{tag}{rendered}>{escape(_clean(text))}{''.join(render(c) for c in children)}</{tag}>"


@settings(max_examples=150, deadline=2000)
@given(st.binary(max_size=512))
def test_random_bytes_give_a_document_or_an_rcml_error(body: bytes) -> None:
    try:
        assert isinstance(parse_document(body, URL), Document)
    except RcmlError as exc:
        assert exc.code in (12100, 12200)


@settings(max_examples=150, deadline=2000)
@given(st.binary(max_size=256), st.sampled_from(["text/xml", "audio/wav", "text/plain", "application/json", None]))
def test_random_responses_give_a_document_or_an_rcml_error(body: bytes, content_type: str | None) -> None:
    try:
        assert isinstance(document_for_response(body, content_type, URL), Document)
    except RcmlError as exc:
        assert exc.code in (12100, 12200, 12300)


@settings(max_examples=200, deadline=2000)
@given(st.lists(NODES, max_size=4), st.booleans())
def test_random_element_trees_give_a_document_or_an_rcml_error(nodes: list[Node], wrap: bool) -> None:
    children = "".join(render(node) for node in nodes)
    body = f"<Response>{children}</Response>" if wrap else children
    try:
        doc = parse_document(body.encode("utf-8"), URL)
    except RcmlError as exc:
        assert exc.code in (12100, 12200)
        return
    for notice in doc.notices:
        assert isinstance(notice.code, int) and notice.message


@settings(max_examples=200, deadline=2000)
@given(st.lists(NODES, min_size=1, max_size=3), st.integers(0, 20), st.integers(0, 60))
def test_mutated_documents_give_a_document_or_an_rcml_error(nodes: list[Node], cut: int, flip: int) -> None:
    body = bytearray(f"<Response>{''.join(render(node) for node in nodes)}</Response>".encode())
    del body[len(body) - cut :]
    if body:
        body[flip % len(body)] ^= 0x20
    try:
        parse_document(bytes(body), URL)
    except RcmlError:
        pass
