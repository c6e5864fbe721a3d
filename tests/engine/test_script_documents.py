"""The node's memo of parsed RCML documents (the script parses a static IVR's document once)."""

from __future__ import annotations

import pytest

from callplane.core.errors import RcmlError
from callplane.engine.script import ParsedDocuments
from callplane.rcml.verbs import Hangup, Say

URL = "http://127.0.0.1:5000/rcml"
BODY = b"<Response><Say>Hello.</Say><Hangup/></Response>"


def test_the_same_response_is_parsed_once_and_shared() -> None:
    docs = ParsedDocuments()
    first = docs.parse(BODY, "application/xml", URL)
    assert first.verbs == (Say("Hello."), Hangup()) and first.url == URL
    assert docs.parse(BODY, "application/xml", URL) is first and docs.hits == 1
    # Another URL (the base of relative URLs), type or body is another document.
    assert docs.parse(BODY, "application/xml", URL + "2").url == URL + "2"
    assert docs.parse(BODY, "text/plain", URL).verbs != first.verbs
    assert docs.parse(BODY.replace(b"Hello", b"Bye"), "application/xml", URL).verbs[0] == Say("Bye.")
    assert docs.hits == 1


def test_a_bad_document_fails_every_time_and_the_memo_is_bounded() -> None:
    docs = ParsedDocuments(size=2)
    for _ in range(2):
        with pytest.raises(RcmlError):
            docs.parse(b"<Response><Say>", "application/xml", URL)
    for k in range(5):
        docs.parse(f"<Response><Say>{k}</Say></Response>".encode(), "application/xml", URL)
    assert len(docs) <= 2
    again = docs.parse(b"<Response><Say>4</Say></Response>", "application/xml", URL)
    assert again.verbs == (Say("4"),) and docs.hits == 1
