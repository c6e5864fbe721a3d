"""The per-call RCML interpreter: a sans-IO state machine fed events, emitting commands (issue 8, "RCML verbs").

Theory of operation
-------------------
One :class:`Interpreter` runs the RCML of one call. The engine feeds it :mod:`~callplane.rcml.events` with
:meth:`Interpreter.handle_event` and drains :mod:`~callplane.rcml.commands` with :meth:`commands_to_run`; time
enters only as ``now``, and the interpreter's single deadline (a Pause, a Gather timeout) is exposed through
:meth:`get_timer` / :meth:`handle_timer`, as in the other sans-IO cores. It never touches a socket or a clock.

Every input is looked up as ``(state, input)`` in :data:`HANDLERS`. A pair that is not in the table is dropped: it
is stale (a PromptDone for a prompt a digit already stopped) or meaningless where it arrives (a digit outside a
Gather). Events that answer a command carry its ``ref`` and are dropped unless that operation is the one awaited.
Handlers change state only through ``_enter``, which checks :data:`NEXT` and raises :class:`InterpreterStateError`
on a transition the table forbids: that is a bug in callplane, never a consequence of input. ::

    idle --start--> fetching --document--> (run verbs) --fetch_failed--> fetching (FallbackUrl, once) | ended
    run verbs:  Say/Play -> prompting --prompt_done--> next verb
                Pause -> pausing --timer--> next verb
                Gather -> gathering (nested prompts) --prompt_done/timer--> next prompt ... --> collecting
                          gathering --digit (barge-in: StopPrompt)--> collecting --digit--> collecting
                          collecting --finishOnKey | numDigits--> Fetch(action, Digits) | next verb
                          collecting --timer (timeout)--> Fetch(action, Digits) if digits, else next verb
                Record -> recording --recording_done--> Fetch(action, RecordingUrl...) | next verb
                Dial -> dialing --dial_done--> Fetch(action, Dial params) | next verb
                Redirect -> fetching;  Hangup, Reject, end of document -> ended
                a verb that needs an answered call, before the answer -> answering --answered--> that verb
                (not Dial: an unanswered caller hears ringing until the callee answers; the engine answers it)
    any live state --redirected (live call modification)--> stop the current verb --> fetching
    any live state --call_ended--> ended

After ``call_ended`` during a Record or a Dial, the interpreter still waits for RecordingDone/DialDone and calls the
verb's action (``Digits=hangup`` for a Record); the RCML that action returns is not run. :attr:`done` is true when
nothing more will come out. Twenty fetches in a row with no verb that takes time (a Redirect loop) end the call with
Notification 11215.
"""

from __future__ import annotations

import logging
import math
from enum import StrEnum
from typing import Literal

from callplane.rcml import commands as cmd
from callplane.rcml import events as ev
from callplane.rcml import verbs as v
from callplane.rcml.errors import REDIRECT_LOOP, InterpreterStateError

__all__ = ["HANDLERS", "MAX_FETCHES_WITHOUT_MEDIA", "NEXT", "Interpreter", "State"]

logger = logging.getLogger(__name__)

MAX_FETCHES_WITHOUT_MEDIA = 20
_DTMF = frozenset("0123456789*#ABCD")
_UNLIMITED_DIGITS = 32767  # Restcomm's "unlimited" numDigits: a bound on what one Gather collects


class State(StrEnum):
    IDLE = "idle"
    FETCHING = "fetching"
    ANSWERING = "answering"
    PROMPTING = "prompting"
    PAUSING = "pausing"
    GATHERING = "gathering"
    COLLECTING = "collecting"
    RECORDING = "recording"
    DIALING = "dialing"
    ENDED = "ended"


_S = State
_VERB_STATES = frozenset({_S.PROMPTING, _S.PAUSING, _S.GATHERING, _S.COLLECTING, _S.RECORDING, _S.DIALING})
_AFTER_A_VERB = _VERB_STATES | {_S.ANSWERING, _S.FETCHING, _S.ENDED}
NEXT: dict[State, frozenset[State]] = {
    _S.IDLE: frozenset({_S.FETCHING, _S.ENDED}),
    _S.FETCHING: _AFTER_A_VERB,
    _S.ANSWERING: (_VERB_STATES - {_S.PAUSING}) | {_S.FETCHING, _S.ENDED},
    _S.PROMPTING: _AFTER_A_VERB,
    _S.PAUSING: _AFTER_A_VERB,
    _S.GATHERING: frozenset({_S.GATHERING, _S.COLLECTING, _S.FETCHING, _S.ENDED}),
    _S.COLLECTING: _AFTER_A_VERB,
    _S.RECORDING: _AFTER_A_VERB,
    _S.DIALING: _AFTER_A_VERB,
    _S.ENDED: frozenset(),
}
_LIVE = [state for state in State if state is not _S.ENDED]
HANDLERS: dict[tuple[State, str], str] = {
    **{(state, "call_ended"): "_on_call_ended" for state in _LIVE},
    **{(state, "redirected"): "_on_redirected" for state in _LIVE},
    (_S.FETCHING, "document"): "_on_document",
    (_S.FETCHING, "fetch_failed"): "_on_fetch_failed",
    (_S.ANSWERING, "answered"): "_on_answered",
    (_S.PROMPTING, "prompt_done"): "_on_prompt_done",
    (_S.PAUSING, "timer"): "_on_prompt_done",
    (_S.GATHERING, "prompt_done"): "_on_gather_prompt_done",
    (_S.GATHERING, "timer"): "_on_gather_prompt_done",
    (_S.GATHERING, "digit"): "_on_digit",
    (_S.COLLECTING, "digit"): "_on_digit",
    (_S.COLLECTING, "timer"): "_on_gather_timeout",
    (_S.RECORDING, "recording_done"): "_on_recording_done",
    (_S.DIALING, "dial_done"): "_on_dial_done",
    # After the call ended: the action of a Record or Dial that was running, and that action's response.
    (_S.ENDED, "recording_done"): "_on_recording_done",
    (_S.ENDED, "dial_done"): "_on_dial_done",
    (_S.ENDED, "document"): "_on_final_response",
    (_S.ENDED, "fetch_failed"): "_on_final_response",
}
_INPUTS: dict[type, str] = {
    ev.DocumentLoaded: "document",
    ev.FetchFailed: "fetch_failed",
    ev.Answered: "answered",
    ev.PromptDone: "prompt_done",
    ev.DigitReceived: "digit",
    ev.RecordingDone: "recording_done",
    ev.DialDone: "dial_done",
    ev.CallEnded: "call_ended",
    ev.Redirected: "redirected",
}
# The verb whose outcome each of these events is.
_OUTCOME_OF: dict[type, type] = {ev.RecordingDone: v.Record, ev.DialDone: v.Dial}
Method = Literal["GET", "POST"]
Params = tuple[tuple[str, str], ...]


class Interpreter:
    """Runs the RCML of one call; see the module docstring.

    ``url``/``method`` is the first document; ``fallback_url``/``fallback_method`` is fetched (once per call, with
    the same parameters) when a fetch fails. ``answered`` is False for an inbound call that is still ringing.
    """

    def __init__(
        self,
        url: str,
        method: Method = "POST",
        fallback_url: str | None = None,
        fallback_method: Method = "POST",
        *,
        answered: bool = True,
        name: str = "",
    ) -> None:
        self.name = name
        self.state = State.IDLE
        self.answered = answered
        self.digits: str | None = None  # collected by a Gather without action; sent with the next Redirect
        self._url, self._method = url, method
        self._fallback: tuple[str, Method] | None = (fallback_url, fallback_method) if fallback_url else None
        self._fallback_used = False
        self._commands: list[cmd.Command] = []
        self._deadline: float | None = None
        self._refs = 0
        self._pending: int | None = None  # ref of the operation whose outcome is awaited
        self._last_fetch: tuple[str, Method, Params, bool] = (url, method, (), False)
        self._fetch_run = 0  # fetches since the last verb that takes time
        self._verbs: tuple[v.Verb, ...] = ()
        self._index = 0
        self._verb: v.Verb | None = None  # the verb running now
        self._prompt = 0  # next nested prompt of a Gather
        self._collected = ""

    # Entry points ----------------------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Fetch the first document."""
        if self.state is State.IDLE:
            self._fetch(self._url, self._method, (), now)

    def handle_event(self, event: ev.Event, now: float) -> None:
        """Feed one event; inputs with no entry in :data:`HANDLERS` for the current state are dropped."""
        if isinstance(event, ev.Answered):
            self.answered = True
        ref = getattr(event, "ref", None)
        if ref is not None and ref != self._pending:
            logger.debug(
                "[%s] %s: stale ref %s (awaiting %s), dropped", self.name, type(event).__name__, ref, self._pending
            )
            return
        awaited = _OUTCOME_OF.get(type(event))
        if awaited is not None and not isinstance(self._verb, awaited):
            # The right ref for the wrong verb (a recording's outcome while a Dial waits): the engine is confused,
            # the call is not; the verb's own outcome still comes.
            logger.warning(
                "[%s] %s for %s, dropped",
                self.name,
                type(event).__name__,
                type(self._verb).__name__ if self._verb is not None else "no verb",
            )
            return
        self._dispatch(_INPUTS[type(event)], event, now)

    def get_timer(self) -> float | None:
        """The interpreter's deadline, or None."""
        return self._deadline

    def handle_timer(self, now: float) -> None:
        """Fire the deadline if it is due at ``now``."""
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            self._dispatch("timer", None, now)

    def commands_to_run(self) -> list[cmd.Command]:
        """Drain the commands emitted so far, in order."""
        out, self._commands = self._commands, []
        return out

    @property
    def done(self) -> bool:
        """True once the call is over and no outcome (a last action fetch) is awaited."""
        return self.state is State.ENDED and self._pending is None

    # Machinery -------------------------------------------------------------------------------------------------
    def _dispatch(self, name: str, event: object, now: float) -> None:
        handler = HANDLERS.get((self.state, name))
        if handler is None:
            logger.debug("[%s] %s in state %s, dropped", self.name, name, self.state)
            return
        getattr(self, handler)(event, now)

    def _enter(self, new: State) -> None:
        if new is self.state:
            return
        if new not in NEXT[self.state]:
            raise InterpreterStateError(f"interpreter {self.name}: {self.state} -> {new} is not allowed")
        logger.debug("[%s] %s -> %s", self.name, self.state, new)
        self.state = new

    def _emit(self, command: cmd.Command) -> None:
        self._commands.append(command)

    def _ref(self) -> int:
        self._refs += 1
        self._pending = self._refs
        return self._refs

    def _fetch(self, url: str, method: Method, params: Params, now: float, *, fallback: bool = False) -> None:
        if not fallback:
            self._fetch_run += 1
            if self._fetch_run > MAX_FETCHES_WITHOUT_MEDIA:
                message = f"{MAX_FETCHES_WITHOUT_MEDIA} documents in a row without a verb that takes time; at {url}"
                self._emit(cmd.Notify(REDIRECT_LOOP, message, "error"))
                self._hangup()
                return
        self._last_fetch = (url, method, params, fallback)
        self._emit(cmd.Fetch(self._ref(), url, method, params))
        self._enter(State.FETCHING)

    def _hangup(self, *, end_of_document: bool = False) -> None:
        self._emit(cmd.Hangup(end_of_document))
        self._pending = None
        self._deadline = None
        self._enter(State.ENDED)

    def _stop_current(self) -> None:
        """Stop whatever the current verb started (live call modification)."""
        pending, state = self._pending, self.state
        if state in (State.PROMPTING, State.GATHERING) and pending is not None:
            self._emit(cmd.StopPrompt(pending))
        if state in (State.GATHERING, State.COLLECTING):
            self._emit(cmd.StopGather())
        elif state is State.RECORDING and pending is not None:
            self._emit(cmd.StopRecord(pending))
        elif state is State.DIALING and pending is not None:
            self._emit(cmd.StopDial(pending))
        self._pending = None
        self._deadline = None

    # Documents -------------------------------------------------------------------------------------------------
    def _on_document(self, event: ev.DocumentLoaded, now: float) -> None:
        self._pending = None
        document = event.document
        for notice in document.notices:
            self._emit(cmd.Notify(notice.code, f"{document.url}: {notice.message}", notice.level))
        self._verbs, self._index = document.verbs, 0
        self._run_verbs(now)

    def _on_fetch_failed(self, event: ev.FetchFailed, now: float) -> None:
        self._pending = None
        _, method, params, was_fallback = self._last_fetch
        self._emit(cmd.Notify(event.code, f"{method} {event.url} failed: {event.reason}", "error"))
        if self._fallback is not None and not was_fallback and not self._fallback_used:
            self._fallback_used = True
            self._fetch(*self._fallback, params, now, fallback=True)
        else:
            self._hangup()

    def _on_final_response(self, event: ev.DocumentLoaded | ev.FetchFailed, now: float) -> None:
        self._pending = None
        if isinstance(event, ev.FetchFailed):
            self._emit(cmd.Notify(event.code, f"{self._last_fetch[1]} {event.url} failed: {event.reason}", "error"))

    def _on_redirected(self, event: ev.Redirected, now: float) -> None:
        self._stop_current()
        if event.fallback_url is not None:
            self._fallback = (event.fallback_url, event.fallback_method)
            self._fallback_used = False
        self._fetch_run, self.digits = 0, None
        self._fetch(event.url, event.method, (), now)

    def _on_call_ended(self, event: ev.CallEnded, now: float) -> None:
        if self.state not in (State.RECORDING, State.DIALING):
            self._pending = None  # a Record or Dial still reports its outcome, and its action is called
        self._deadline = None
        self._enter(State.ENDED)

    def _on_answered(self, event: ev.Answered, now: float) -> None:
        self._run_verbs(now)

    # Verbs -----------------------------------------------------------------------------------------------------
    def _run_verbs(self, now: float) -> None:
        """Start verbs from the current index until one waits for something; the end of the document hangs up."""
        while self._index < len(self._verbs):
            verb = self._verbs[self._index]
            # Not Dial: the caller stays at 180 until the callee answers (the engine answers it then).
            if not self.answered and isinstance(verb, (v.Say, v.Play, v.Gather, v.Record)):
                self._emit(cmd.Answer())
                self._enter(State.ANSWERING)
                return
            self._index += 1
            self._verb = verb
            if self._start(verb, now):
                return
        self._hangup(end_of_document=True)

    def _start(self, verb: v.Verb, now: float) -> bool:
        """Start ``verb``; True when it waits for an event or a timer, False to go on with the next verb."""
        if isinstance(verb, (v.Say, v.Play, v.Pause, v.Gather, v.Record, v.Dial)):
            self._fetch_run = 0
        if isinstance(verb, (v.Say, v.Play, v.Pause)):
            self._start_prompt(verb, now)
            self._enter(State.PAUSING if isinstance(verb, v.Pause) else State.PROMPTING)
        elif isinstance(verb, v.Gather):
            self._emit(cmd.StartGather(verb.finish_on_key, verb.num_digits, verb.timeout))
            self._prompt, self._collected, self.digits = 0, "", None
            self._next_prompt(verb, now)
        elif isinstance(verb, v.Record):
            self._emit(cmd.StartRecord(self._ref(), verb.max_length, verb.timeout, verb.finish_on_key, verb.play_beep))
            self._enter(State.RECORDING)
        elif isinstance(verb, v.Dial):
            self._emit(cmd.Dial(self._ref(), verb))
            self._enter(State.DIALING)
        elif isinstance(verb, v.Redirect):
            if verb.url is None:
                return False
            params: Params = (("Digits", self.digits),) if self.digits else ()
            self.digits = None
            self._fetch(verb.url, verb.method, params, now)
        elif isinstance(verb, v.Reject) and not self.answered:
            self._emit(cmd.Reject(verb.reason))
            self._pending = None
            self._enter(State.ENDED)
        else:  # Hangup, Halt, Reject after the answer
            if isinstance(verb, v.Halt):
                self._emit(cmd.Notify(verb.code, verb.message, "error"))
            self._hangup()
        return True

    def _start_prompt(self, prompt: v.Prompt, now: float) -> None:
        if isinstance(prompt, v.Say):
            self._emit(cmd.Say(self._ref(), prompt.text, prompt.voice, prompt.language, prompt.loop))
        elif isinstance(prompt, v.Play):
            self._emit(cmd.Play(self._ref(), prompt.url, prompt.loop))
        else:
            self._pending = None
            self._emit(cmd.Silence(prompt.length))
            self._deadline = now + prompt.length

    def _on_prompt_done(self, event: ev.PromptDone | None, now: float) -> None:
        self._pending = None
        self._run_verbs(now)

    # Gather ----------------------------------------------------------------------------------------------------
    def _gather(self) -> v.Gather:
        assert isinstance(self._verb, v.Gather)
        return self._verb

    def _next_prompt(self, gather: v.Gather, now: float) -> None:
        if self._prompt < len(gather.prompts):
            self._prompt += 1
            self._start_prompt(gather.prompts[self._prompt - 1], now)
            self._enter(State.GATHERING)
        else:
            self._pending = None
            self._deadline = now + gather.timeout
            self._enter(State.COLLECTING)

    def _on_gather_prompt_done(self, event: ev.PromptDone | None, now: float) -> None:
        self._next_prompt(self._gather(), now)

    def _on_digit(self, event: ev.DigitReceived, now: float) -> None:
        gather, digit = self._gather(), event.digit
        if digit not in _DTMF:
            return
        if self.state is State.GATHERING:  # barge-in: the first key stops the prompts
            if self._pending is not None:
                self._emit(cmd.StopPrompt(self._pending))
                self._pending = None
            self._enter(State.COLLECTING)
        if digit in gather.finish_on_key:
            self._finish_gather(gather, now)
            return
        self._collected += digit
        if len(self._collected) >= (gather.num_digits or _UNLIMITED_DIGITS):
            self._finish_gather(gather, now)
        else:
            self._deadline = now + gather.timeout

    def _on_gather_timeout(self, event: None, now: float) -> None:
        self._finish_gather(self._gather(), now)

    def _finish_gather(self, gather: v.Gather, now: float) -> None:
        self._emit(cmd.StopGather())
        self._deadline = None
        collected, self._collected = self._collected, ""
        if collected and gather.action is not None:
            self._fetch(gather.action, gather.method, (("Digits", collected),), now)
            return
        self.digits = collected or None
        self._run_verbs(now)

    # Record and Dial -------------------------------------------------------------------------------------------
    def _on_recording_done(self, event: ev.RecordingDone, now: float) -> None:
        self._pending = None
        record = self._verb
        assert isinstance(record, v.Record)
        hung_up = self.state is State.ENDED or event.reason == "hangup"
        if hung_up:
            self._enter(State.ENDED)
        if event.duration <= 0 or event.url is None or record.action is None:  # empty recordings are dropped
            if not hung_up:
                self._run_verbs(now)
            return
        params = (
            ("RecordingUrl", event.url),
            ("RecordingDuration", str(math.ceil(event.duration))),
            ("Digits", "hangup" if hung_up else event.digit or ""),
        )
        self._action(record.action, record.method, params, now)

    def _on_dial_done(self, event: ev.DialDone, now: float) -> None:
        self._pending = None
        dial = self._verb
        assert isinstance(dial, v.Dial)
        if dial.action is not None:
            self._action(dial.action, dial.method, event.params, now)
        elif self.state is not State.ENDED:
            self._run_verbs(now)

    def _action(self, url: str, method: Method, params: Params, now: float) -> None:
        """Call a verb's action; after the call ended, its response is awaited but not run."""
        if self.state is State.ENDED:
            self._last_fetch = (url, method, params, True)
            self._emit(cmd.Fetch(self._ref(), url, method, params))
        else:
            self._fetch(url, method, params, now)
