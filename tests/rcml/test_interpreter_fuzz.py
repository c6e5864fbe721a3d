"""Any sequence of engine events, from any state, at any time: the interpreter never raises, ends the call at most
once, and says nothing more once it is done."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from callplane.rcml import commands as cmd
from callplane.rcml.events import (
    Answered,
    CallEnded,
    DialDone,
    DigitReceived,
    DocumentLoaded,
    Event,
    FetchFailed,
    PromptDone,
    RecordingDone,
    Redirected,
)
from callplane.rcml.interpreter import Interpreter, State
from callplane.rcml.parser import parse_document

URL = "http://app.example.com/start.xml"
DOCUMENTS = [
    parse_document(f"<Response>{body}</Response>", URL)
    for body in [
        "",
        "<Say>a</Say><Play>b.wav</Play>",
        '<Pause length="2"/><Say>a</Say>',
        '<Gather action="g" numDigits="2" timeout="3"><Say>a</Say><Pause/><Play>p.wav</Play></Gather><Say>n</Say>',
        "<Gather><Pause/></Gather><Redirect>start.xml</Redirect>",
        '<Record action="r" finishOnKey="#"/><Record/>',
        '<Dial action="d">1</Dial><Dial>2</Dial>',
        '<Redirect/><Reject reason="busy"/>',
        '<Dial callerId="x y">1</Dial>',
        "<Redirect>start.xml</Redirect>",
        "<Hangup/>",
    ]
]
REFS = st.integers(0, 8)
EVENTS: st.SearchStrategy[Event] = st.one_of(
    st.builds(DocumentLoaded, REFS, st.sampled_from(DOCUMENTS)),
    st.builds(FetchFailed, REFS, st.just(URL), st.just("HTTP 500"), st.sampled_from([11200, 12100, 21402])),
    st.just(Answered()),
    st.builds(PromptDone, REFS),
    st.builds(DigitReceived, st.sampled_from(list("0123456789*#Ax"))),
    st.builds(
        RecordingDone,
        REFS,
        st.sampled_from([0.0, 0.4, 3.0]),
        st.sampled_from(["silence", "key", "max", "hangup", "stopped"]),
        st.sampled_from([None, "#"]),
        st.sampled_from([None, "http://node/RE1"]),
    ),
    st.builds(DialDone, REFS, st.just((("DialCallStatus", "completed"),))),
    st.just(CallEnded()),
    st.builds(Redirected, st.just("http://other/x"), st.sampled_from(["GET", "POST"]), st.sampled_from([None, URL])),
)
STEPS = st.lists(st.one_of(EVENTS, st.floats(0.0, 12.0)), max_size=40)


@settings(max_examples=400, deadline=2000)
@example(  # found by a longer run: a recording's outcome with the ref of a Dial the caller hung up on
    [
        DocumentLoaded(1, DOCUMENTS[6]),
        CallEnded(),
        RecordingDone(2, 0.0, "silence", None, None),
        DialDone(2, (("DialCallStatus", "completed"),)),
    ],
    False,
    None,
)
@given(STEPS, st.booleans(), st.sampled_from([None, "http://backup/x"]))
def test_any_event_sequence_is_handled(steps: list[Event | float], answered: bool, fallback: str | None) -> None:
    itp = Interpreter(URL, fallback_url=fallback, answered=answered)
    now = 0.0
    itp.start(now)
    endings = 0
    for step in steps:
        was_done = itp.done
        if isinstance(step, float):
            now += step
            itp.handle_timer(now)
        else:
            itp.handle_event(step, now)
        out = itp.commands_to_run()
        if was_done:
            assert out == []
        endings += sum(isinstance(c, (cmd.Hangup, cmd.Reject)) for c in out)
        assert endings <= 1
        timer = itp.get_timer()
        assert timer is None or timer >= now
        if itp.state is State.ENDED:
            assert timer is None
