"""The RCML interpreter verb by verb in virtual time: exact command sequences and exact deadlines."""

from __future__ import annotations

import pytest

from callplane.rcml import commands as cmd
from callplane.rcml import verbs as v
from callplane.rcml.errors import InterpreterStateError
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
from callplane.rcml.interpreter import MAX_FETCHES_WITHOUT_MEDIA, Interpreter, State
from callplane.rcml.parser import parse_document, response_event

URL = "http://app.example.com/ivr/start.xml"
FALLBACK = "http://backup.example.com/sorry.xml"
APP = "http://app.example.com/ivr/"
REC = "http://node.example.com/2012-04-24/Accounts/AC1/Recordings/RE1"


class Call:
    """One interpreter and a virtual clock; each step returns the commands it produced."""

    def __init__(self, **kw: object) -> None:
        self.itp = Interpreter(URL, name="CA1", **kw)  # type: ignore[arg-type]
        self.now = 0.0

    def start(self) -> list[cmd.Command]:
        self.itp.start(self.now)
        return self.itp.commands_to_run()

    def at(self, now: float) -> Call:
        self.now = now
        return self

    def feed(self, event: Event) -> list[cmd.Command]:
        self.itp.handle_event(event, self.now)
        return self.itp.commands_to_run()

    def load(self, ref: int, rcml: str, url: str = URL) -> list[cmd.Command]:
        return self.feed(DocumentLoaded(ref, parse_document(f"<Response>{rcml}</Response>", url)))

    def tick(self, now: float) -> list[cmd.Command]:
        self.now = now
        self.itp.handle_timer(now)
        return self.itp.commands_to_run()

    @property
    def timer(self) -> float | None:
        return self.itp.get_timer()


def started(rcml: str, **kw: object) -> tuple[Call, list[cmd.Command]]:
    call = Call(**kw)
    assert call.start() == [cmd.Fetch(1, URL, "POST", ())]
    return call, call.load(1, rcml)


# Say, Play, Pause, Hangup, end of document -------------------------------------------------------------------------
def test_say_then_end_of_document_hangs_up() -> None:
    call, out = started('<Say voice="woman" language="fr" loop="2">Bonjour</Say>')
    assert out == [cmd.Say(2, "Bonjour", "woman", "fr", 2)]
    assert call.itp.state is State.PROMPTING and call.timer is None
    assert call.feed(PromptDone(2)) == [cmd.Hangup()]
    assert call.itp.done


def test_play_resolves_its_url_and_a_stale_prompt_done_is_dropped() -> None:
    call, out = started('<Play loop="0">hold.wav</Play><Hangup/><Say>never</Say>')
    assert out == [cmd.Play(2, APP + "hold.wav", 0)]
    assert call.feed(PromptDone(7)) == []
    assert call.feed(PromptDone(2)) == [cmd.Hangup()]
    assert call.feed(PromptDone(2)) == []


def test_pause_arms_an_exact_deadline() -> None:
    call = Call()
    call.start()
    assert call.at(10.0).load(1, '<Pause length="3"/><Say>After</Say>') == [cmd.Silence(3)]
    assert call.timer == 13.0
    assert call.tick(12.999) == [] and call.timer == 13.0
    assert call.tick(13.0) == [cmd.Say(2, "After", "man", "en", 1)]
    assert call.timer is None


def test_empty_document_hangs_up_at_once() -> None:
    call, out = started("")
    assert out == [cmd.Hangup()] and call.itp.done


def test_notices_of_a_document_become_notifications_before_its_verbs() -> None:
    _, out = started('<Say loop="x">Hi</Say>')
    assert out == [
        cmd.Notify(13510, f'{URL}: <Say> loop="x" is invalid; using 1', "warning"),
        cmd.Say(2, "Hi", "man", "en", 1),
    ]


def test_halt_notifies_at_error_level_and_hangs_up() -> None:
    _, out = started('<Say>Hi</Say><Dial callerId="a b">1</Dial>')
    assert out == [cmd.Say(2, "Hi", "man", "en", 1)]
    call, out = started('<Dial callerId="a b">1</Dial><Say>never</Say>')
    assert out == [cmd.Notify(13214, '<Dial> callerId="a b" is invalid', "error"), cmd.Hangup()]


# Answering --------------------------------------------------------------------------------------------------------
def test_pause_before_the_answer_delays_it_and_the_first_media_verb_answers() -> None:
    call, out = started('<Pause length="2"/><Say>Welcome</Say>', answered=False)
    assert out == [cmd.Silence(2)] and call.timer == 2.0
    assert call.tick(2.0) == [cmd.Answer()]
    assert call.itp.state is State.ANSWERING
    assert call.at(2.3).feed(Answered()) == [cmd.Say(2, "Welcome", "man", "en", 1)]


def test_a_dial_before_the_answer_leaves_the_caller_ringing_until_the_callee_answers() -> None:
    call, out = started("<Dial>+15551234</Dial><Say>After</Say>", answered=False)
    assert out == [cmd.Dial(2, v.Dial((v.Number("+15551234"),)))]
    assert call.itp.state is State.DIALING and not call.itp.answered
    assert call.feed(Answered()) == []  # the engine answered the caller when the callee did
    assert call.itp.answered and call.feed(DialDone(2)) == [cmd.Say(3, "After", "man", "en", 1)]


def test_the_end_of_the_document_says_so_in_its_hangup() -> None:
    call, out = started("<Hangup/>")
    assert out == [cmd.Hangup()] and not out[0].end_of_document  # type: ignore[union-attr]
    call, out = started("<Pause length='1'/>")
    (hangup,) = call.tick(1.0)
    assert isinstance(hangup, cmd.Hangup) and hangup.end_of_document


@pytest.mark.parametrize(("reason", "answered", "expected"), [
    ("busy", False, cmd.Reject("busy")),
    ("rejected", False, cmd.Reject("rejected")),
    ("busy", True, cmd.Hangup()),
])  # fmt: skip
def test_reject_refuses_an_unanswered_call_and_hangs_up_an_answered_one(
    reason: str, answered: bool, expected: cmd.Command
) -> None:
    call, out = started(f'<Reject reason="{reason}"/><Say>never</Say>', answered=answered)
    assert out == [expected] and call.itp.done


# Gather ----------------------------------------------------------------------------------------------------------
GATHER = '<Gather action="menu" numDigits="2" timeout="4"><Say>Press</Say><Pause length="2"/></Gather><Say>Bye</Say>'


def test_gather_first_key_barges_in_and_num_digits_calls_the_action_at_once() -> None:
    call, out = started(GATHER)
    assert out == [cmd.StartGather("#", 2, 4), cmd.Say(2, "Press", "man", "en", 1)]
    assert call.timer is None
    assert call.at(1.5).feed(DigitReceived("1")) == [cmd.StopPrompt(2)]
    assert call.itp.state is State.COLLECTING and call.timer == 5.5
    assert call.at(1.6).feed(PromptDone(2)) == []  # the engine raced the StopPrompt: dropped
    assert call.at(3.0).feed(DigitReceived("2")) == [
        cmd.StopGather(),
        cmd.Fetch(3, APP + "menu", "POST", (("Digits", "12"),)),
    ]
    assert call.timer is None


def test_gather_prompts_then_timeout_with_nothing_goes_to_the_next_verb() -> None:
    call, out = started(GATHER)
    assert call.at(2.0).feed(PromptDone(2)) == [cmd.Silence(2)]
    assert call.timer == 4.0
    assert call.tick(4.0) == [] and call.itp.state is State.COLLECTING
    assert call.timer == 8.0
    assert call.tick(7.9) == []
    assert call.tick(8.0) == [cmd.StopGather(), cmd.Say(2 + 1, "Bye", "man", "en", 1)]


def test_a_key_during_a_nested_pause_cuts_it_without_stop_prompt() -> None:
    call, _ = started(GATHER)
    call.at(2.0).feed(PromptDone(2))
    assert call.at(3.0).feed(DigitReceived("5")) == []
    assert call.timer == 7.0
    assert call.tick(7.0) == [cmd.StopGather(), cmd.Fetch(3, APP + "menu", "POST", (("Digits", "5"),))]


def test_each_digit_restarts_the_timeout() -> None:
    call, out = started('<Gather action="a" timeout="3"/>')
    assert out == [cmd.StartGather("#", None, 3)] and call.timer == 3.0
    call.at(2.0).feed(DigitReceived("4"))
    assert call.timer == 5.0
    call.at(4.5).feed(DigitReceived("2"))
    assert call.timer == 7.5
    assert call.tick(7.5) == [cmd.StopGather(), cmd.Fetch(2, APP + "a", "POST", (("Digits", "42"),))]


def test_finish_on_key_ends_the_gather_and_is_stripped() -> None:
    call, _ = started('<Gather action="a" finishOnKey="*#"><Say>x</Say></Gather>')
    assert call.feed(DigitReceived("9")) == [cmd.StopPrompt(2)]
    call.feed(DigitReceived("8"))
    assert call.feed(DigitReceived("*")) == [cmd.StopGather(), cmd.Fetch(3, APP + "a", "POST", (("Digits", "98"),))]


def test_finish_on_key_with_nothing_collected_goes_to_the_next_verb() -> None:
    call, _ = started('<Gather action="a"/><Say>Next</Say>')
    assert call.feed(DigitReceived("#")) == [cmd.StopGather(), cmd.Say(2, "Next", "man", "en", 1)]


def test_gather_without_action_goes_on_and_the_next_redirect_carries_the_digits() -> None:
    call, _ = started('<Gather numDigits="1"/><Say>Thanks</Say><Redirect>route.xml</Redirect>')
    assert call.feed(DigitReceived("3")) == [cmd.StopGather(), cmd.Say(2, "Thanks", "man", "en", 1)]
    assert call.itp.digits == "3"
    assert call.feed(PromptDone(2)) == [cmd.Fetch(3, APP + "route.xml", "POST", (("Digits", "3"),))]
    assert call.itp.digits is None


def test_digits_outside_a_gather_and_non_dtmf_digits_are_dropped() -> None:
    call, _ = started('<Say>Hi</Say><Gather action="a"/>')
    assert call.feed(DigitReceived("1")) == []
    call.feed(PromptDone(2))
    assert call.feed(DigitReceived("x")) == [] and call.timer == 5.0
    assert call.feed(DigitReceived("D")) == [] and call.tick(5.0)[1] == cmd.Fetch(
        3, APP + "a", "POST", (("Digits", "D"),)
    )


# Record ----------------------------------------------------------------------------------------------------------
RECORD = '<Record action="saved" maxLength="30" timeout="3" finishOnKey="#" playBeep="false"/><Say>Next</Say>'


def test_record_ended_by_a_key_calls_the_action_with_url_duration_and_digit() -> None:
    call, out = started(RECORD)
    assert out == [cmd.StartRecord(2, 30, 3, "#", False)]
    assert call.feed(RecordingDone(2, 4.2, "key", "#", REC)) == [
        cmd.Fetch(3, APP + "saved", "POST", (("RecordingUrl", REC), ("RecordingDuration", "5"), ("Digits", "#")))
    ]


def test_record_ended_by_silence_sends_empty_digits() -> None:
    call, _ = started(RECORD)
    out = call.feed(RecordingDone(2, 7.0, "silence", None, REC))
    assert out == [
        cmd.Fetch(3, APP + "saved", "POST", (("RecordingUrl", REC), ("RecordingDuration", "7"), ("Digits", "")))
    ]


def test_an_empty_recording_is_dropped_and_the_next_verb_runs() -> None:
    call, _ = started(RECORD)
    assert call.feed(RecordingDone(2, 0.0, "silence", None, None)) == [cmd.Say(3, "Next", "man", "en", 1)]


def test_record_without_action_goes_to_the_next_verb() -> None:
    call, out = started("<Record/><Hangup/>")
    assert out == [cmd.StartRecord(2, 3600, 5, "1234567890*#", True)]
    assert call.feed(RecordingDone(2, 3.0, "max", None, REC)) == [cmd.Hangup()]


def test_caller_hangs_up_during_record_the_action_gets_hangup_and_its_rcml_is_not_run() -> None:
    call, _ = started(RECORD)
    assert call.feed(RecordingDone(2, 6.5, "hangup", None, REC)) == [
        cmd.Fetch(3, APP + "saved", "POST", (("RecordingUrl", REC), ("RecordingDuration", "7"), ("Digits", "hangup")))
    ]
    assert call.itp.state is State.ENDED and not call.itp.done
    assert call.load(3, "<Say>Too late</Say>", APP + "saved") == []
    assert call.itp.done


def test_call_ended_before_recording_done_still_calls_the_action() -> None:
    call, _ = started(RECORD)
    assert call.feed(CallEnded()) == [] and not call.itp.done
    out = call.feed(RecordingDone(2, 2.0, "stopped", None, REC))
    assert out == [
        cmd.Fetch(3, APP + "saved", "POST", (("RecordingUrl", REC), ("RecordingDuration", "2"), ("Digits", "hangup")))
    ]
    assert call.feed(FetchFailed(3, APP + "saved", "HTTP 500")) == [
        cmd.Notify(11200, f"POST {APP}saved failed: HTTP 500", "error")
    ]
    assert call.itp.done


def test_hangup_with_an_empty_recording_calls_nothing() -> None:
    call, _ = started(RECORD)
    assert call.feed(RecordingDone(2, 0.0, "hangup", None, None)) == []
    assert call.itp.done


# Redirect ----------------------------------------------------------------------------------------------------------
def test_redirect_fetches_the_resolved_url_with_its_method() -> None:
    call, out = started('<Redirect method="GET">../next.xml</Redirect><Say>never</Say>')
    assert out == [cmd.Fetch(2, "http://app.example.com/next.xml", "GET", ())]
    assert call.load(2, "<Hangup/>", "http://app.example.com/next.xml") == [cmd.Hangup()]


def test_empty_redirect_means_the_next_verb() -> None:
    _, out = started("<Redirect/><Say>Here</Say>")
    assert out == [cmd.Say(2, "Here", "man", "en", 1)]


def test_a_redirect_loop_without_media_ends_the_call() -> None:
    call, out = started("<Redirect>start.xml</Redirect>")
    for ref in range(2, MAX_FETCHES_WITHOUT_MEDIA + 1):
        assert out == [cmd.Fetch(ref, URL, "POST", ())]
        out = call.load(ref, "<Redirect>start.xml</Redirect>")
    assert out[0] == cmd.Notify(11215, f"20 documents in a row without a verb that takes time; at {URL}", "error")
    assert out[1:] == [cmd.Hangup()]


def test_a_redirect_loop_through_a_gather_is_not_a_loop() -> None:
    call, out = started('<Gather timeout="1"/><Redirect>start.xml</Redirect>')
    for ref in range(2, 2 * MAX_FETCHES_WITHOUT_MEDIA, 1):
        assert call.tick(call.now + 1) == [cmd.StopGather(), cmd.Fetch(ref, URL, "POST", ())]
        assert call.load(ref, '<Gather timeout="1"/><Redirect>start.xml</Redirect>') == [cmd.StartGather("#", None, 1)]


# Live call modification --------------------------------------------------------------------------------------------
OTHER = "http://other.example.com/lcm.xml"


def test_lcm_redirect_mid_pause_cancels_the_deadline_and_fetches() -> None:
    call, out = started('<Pause length="10"/><Say>never</Say>')
    assert call.timer == 10.0
    assert call.at(4.0).feed(Redirected(OTHER, "GET")) == [cmd.Fetch(2, OTHER, "GET", ())]
    assert call.timer is None
    assert call.tick(10.0) == []
    assert call.load(2, "<Say>Moved</Say>", OTHER) == [cmd.Say(3, "Moved", "man", "en", 1)]


@pytest.mark.parametrize(("rcml", "stops", "ref"), [
    ("<Say>Hi</Say>", [cmd.StopPrompt(2)], 3),
    ("<Gather><Say>Hi</Say></Gather>", [cmd.StopPrompt(2), cmd.StopGather()], 3),
    ('<Gather><Pause length="3"/></Gather>', [cmd.StopGather()], 2),
    ("<Gather/>", [cmd.StopGather()], 2),
    ("<Record/>", [cmd.StopRecord(2)], 3),
    ("<Dial>123</Dial>", [cmd.StopDial(2)], 3),
])  # fmt: skip
def test_lcm_redirect_stops_the_current_verb_at_once(rcml: str, stops: list[cmd.Command], ref: int) -> None:
    call, _ = started(rcml)
    assert call.feed(Redirected(OTHER)) == [*stops, cmd.Fetch(ref, OTHER, "POST", ())]
    assert call.timer is None
    assert call.feed(PromptDone(2)) == [] and call.feed(RecordingDone(2, 3.0, "stopped", None, REC)) == []
    assert call.feed(DialDone(2)) == [] and call.feed(DigitReceived("1")) == []
    assert call.itp.state is State.FETCHING


def test_lcm_redirect_while_fetching_drops_the_overtaken_document() -> None:
    call = Call()
    call.start()
    assert call.feed(Redirected(OTHER)) == [cmd.Fetch(2, OTHER, "POST", ())]
    assert call.load(1, "<Say>old</Say>") == []
    assert call.load(2, "<Say>new</Say>", OTHER) == [cmd.Say(3, "new", "man", "en", 1)]


def test_lcm_after_the_call_ended_does_nothing() -> None:
    call, _ = started("<Say>Hi</Say>")
    assert call.feed(CallEnded()) == [] and call.itp.done
    assert call.feed(Redirected(OTHER)) == [] and call.feed(PromptDone(2)) == []


# Fetch failures and the fallback -------------------------------------------------------------------------------------
def test_fetch_failure_without_fallback_notifies_and_hangs_up() -> None:
    call = Call()
    call.start()
    assert call.feed(FetchFailed(1, URL, "HTTP 500", 11200)) == [
        cmd.Notify(11200, f"POST {URL} failed: HTTP 500", "error"),
        cmd.Hangup(),
    ]
    assert call.itp.done


def test_fetch_failure_tries_the_fallback_with_the_same_parameters_then_hangs_up() -> None:
    call, _ = started('<Gather action="menu" numDigits="1"/>', fallback_url=FALLBACK, fallback_method="GET")
    out = call.feed(DigitReceived("7"))
    assert out[-1] == cmd.Fetch(2, APP + "menu", "POST", (("Digits", "7"),))
    assert call.feed(FetchFailed(2, APP + "menu", "the document is empty", 12100)) == [
        cmd.Notify(12100, f"POST {APP}menu failed: the document is empty", "error"),
        cmd.Fetch(3, FALLBACK, "GET", (("Digits", "7"),)),
    ]
    assert call.feed(FetchFailed(3, FALLBACK, "connection refused", 11205)) == [
        cmd.Notify(11205, f"GET {FALLBACK} failed: connection refused", "error"),
        cmd.Hangup(),
    ]


def test_the_fallback_document_runs_and_is_used_once_per_call() -> None:
    call = Call(fallback_url=FALLBACK)
    call.start()
    out = call.feed(FetchFailed(1, URL, "HTTP 404", 21402))
    assert out[1] == cmd.Fetch(2, FALLBACK, "POST", ())
    assert call.load(2, "<Redirect>http://app.example.com/x</Redirect>", FALLBACK) == [
        cmd.Fetch(3, "http://app.example.com/x", "POST", ())
    ]
    assert call.feed(FetchFailed(3, "http://app.example.com/x", "HTTP 503")) == [
        cmd.Notify(11200, "POST http://app.example.com/x failed: HTTP 503", "error"),
        cmd.Hangup(),
    ]


def test_lcm_brings_a_new_fallback() -> None:
    call, _ = started('<Pause length="5"/>')
    call.feed(Redirected(OTHER, "POST", FALLBACK, "GET"))
    out = call.feed(FetchFailed(2, OTHER, "timeout"))
    assert out[1] == cmd.Fetch(3, FALLBACK, "GET", ())


# Dial and the end of the call ---------------------------------------------------------------------------------------
def test_dial_is_left_to_the_engine_and_its_action_gets_the_engine_params() -> None:
    call, out = started('<Dial action="dialed" timeout="20">+15551234</Dial><Say>never</Say>')
    verb = v.Dial((v.Number("+15551234"),), APP + "dialed", "POST", 20)
    assert out == [cmd.Dial(2, verb)]
    params = (("DialCallStatus", "completed"), ("DialCallDuration", "3"))
    assert call.feed(DialDone(2, params)) == [cmd.Fetch(3, APP + "dialed", "POST", params)]


def test_dial_without_action_goes_on_and_hangup_during_dial_still_calls_the_action() -> None:
    call, _ = started("<Dial>1</Dial><Say>After</Say>")
    assert call.feed(DialDone(2)) == [cmd.Say(3, "After", "man", "en", 1)]
    call, _ = started('<Dial action="d">1</Dial>')
    assert call.feed(CallEnded()) == [] and not call.itp.done
    params = (("DialCallStatus", "completed"),)
    assert call.feed(DialDone(2, params)) == [cmd.Fetch(3, APP + "d", "POST", params)]
    assert call.load(3, "<Say>x</Say>") == [] and call.itp.done


def test_call_ended_mid_gather_drops_the_digits_and_the_timer() -> None:
    call, _ = started('<Gather action="a"/>')
    call.feed(DigitReceived("1"))
    assert call.feed(CallEnded()) == [] and call.timer is None and call.itp.done
    assert call.tick(100.0) == []


def test_a_forbidden_transition_raises() -> None:
    call, _ = started("<Hangup/>")
    with pytest.raises(InterpreterStateError, match="ended -> fetching"):
        call.itp._enter(State.FETCHING)


# From the HTTP response to the interpreter ---------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "content_type", "code"), [
    (b"<!DOCTYPE r [<!ENTITY a 'b'>]><Response>&a;</Response>", "text/xml", 12100),
    (b"<Response>" + b"<Say>" * 10_000, "text/xml", 12100),
    (b"", "text/xml", 12100),
    (b"<Html><Body/></Html>", "text/html", 12100),
    (b"<Response><Dance/></Response>", "application/xml", 12200),
    (b"{}", "application/json", 12300),
])  # fmt: skip
def test_a_refused_response_is_a_failed_fetch_that_notifies_and_hangs_up(
    body: bytes, content_type: str, code: int
) -> None:
    call = Call()
    call.start()
    event = response_event(1, URL, body, content_type)
    assert isinstance(event, FetchFailed) and event.code == code
    out = call.feed(event)
    assert [type(c) for c in out] == [cmd.Notify, cmd.Hangup]
    assert isinstance(out[0], cmd.Notify) and out[0].code == code and out[0].message.startswith(f"POST {URL} failed: ")


def test_an_accepted_response_runs() -> None:
    call = Call()
    call.start()
    assert call.feed(response_event(1, URL, b"hello there", "text/plain")) == [
        cmd.Say(2, "hello there", "man", "en", 1)
    ]
    call = Call()
    call.start()
    assert call.feed(response_event(1, URL, b"RIFF", "audio/wav")) == [cmd.Play(2, URL, 1)]


def test_lcm_forgets_digits_carried_from_the_old_document() -> None:
    call, _ = started('<Gather numDigits="1"/><Pause length="9"/>')
    call.feed(DigitReceived("4"))
    assert call.itp.digits == "4"
    call.feed(Redirected(OTHER))
    assert call.itp.digits is None
    assert call.load(2, "<Redirect>next.xml</Redirect>", OTHER) == [
        cmd.Fetch(3, "http://other.example.com/next.xml", "POST", ())
    ]
