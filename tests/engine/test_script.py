"""The RCML script on its own: the node's memo of parsed documents, and the interpreter's timer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from callplane.core.errors import RcmlError
from callplane.core.ids import IdSource
from callplane.engine.callstate import CallState
from callplane.engine.control import CallRequest
from callplane.engine.params import CallFacts
from callplane.engine.script import ParsedDocuments, RcmlScript, ScriptServices
from callplane.rcml.verbs import Hangup, Say
from callplane.webhooks.fetch import Reply

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


# -- the script's timer ------------------------------------------------------------------------------------------
class FakeEngine:
    """The few CallEngine calls a script makes when it only pauses and hangs up."""

    def __init__(self) -> None:
        self.hung_up = 0
        self.closed = 0

    def leg_of(self, call: object) -> str | None:
        return None

    def hang_up(self, call: object) -> None:
        self.hung_up += 1

    def script_closed(self, call: object) -> None:
        self.closed += 1


class FakeWeb:
    """The user's web app: one RCML document for every fetch."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def request(self, url: str, method: str, params: list[tuple[str, str]]) -> Reply:
        return Reply(url, 200, "application/xml", self.body)


async def test_a_timer_the_loop_runs_a_little_early_is_due() -> None:
    # uvloop rounds timers to whole milliseconds and may run one a fraction of a millisecond before its deadline;
    # the script must take it as due (as sip/aio does), not re-arm it to run again at once until the clock turns.
    engine = FakeEngine()
    web = FakeWeb(b'<Response><Pause length="1"/><Hangup/></Response>')
    services = ScriptServices(
        engine=cast(Any, engine),
        media=cast(Any, None),
        web=cast(Any, web),
        tts=cast(Any, None),
        audio=cast(Any, None),
        writer=cast(Any, None),
        ids=IdSource(1),
        recordings_dir=Path("/nonexistent"),
        public_url="http://127.0.0.1",
    )
    facts = CallFacts("CA1", "ID1", "AC1", "+1", "+2", "outbound-api", datetime(2026, 1, 1, tzinfo=UTC))
    call = SimpleNamespace(
        sid="CA1",
        account_sid="AC1",
        facts=facts,
        request=CallRequest("AC1", "+1", "+2", URL),
        state=CallState.IN_PROGRESS,
        incoming=None,
    )
    script = RcmlScript(services, cast(Any, call))
    script.start()
    loop = asyncio.get_running_loop()
    while script._deadline is None:  # the document is fetched and the pause has begun
        await asyncio.sleep(0)
    assert script._deadline - loop.time() > 0.5 and engine.hung_up == 0
    assert script._timer is not None
    script._timer.cancel()
    script._on_timer()  # the loop runs it early (here: a lot, to make the point without waiting)
    assert engine.hung_up == 1 and script._timer is None
