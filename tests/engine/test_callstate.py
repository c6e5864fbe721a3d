"""The call state table: every legal path, its callbacks, and the refusal of illegal events."""

from __future__ import annotations

import pytest

from callplane.engine.callstate import CallState, IllegalTransition, step

S = CallState


def walk(start: CallState, *events: str) -> list[tuple[str, str | None]]:
    state, out = start, []
    for ev in events:
        s = step(state, ev)
        out.append((s.new.record_status, s.callback))
        state = s.new
    return out


def test_answered_api_call() -> None:
    assert walk(S.QUEUED, "dial", "ring", "answer", "hangup") == [
        ("queued", "initiated"),
        ("ringing", "ringing"),
        ("in-progress", "answered"),
        ("completed", "completed"),
    ]


@pytest.mark.parametrize(
    ("event", "status"), [("busy", "busy"), ("fail", "failed"), ("no_answer", "no-answer"), ("cancel", "canceled")]
)
def test_unanswered_endings_fire_completed(event: str, status: str) -> None:
    assert walk(S.QUEUED, "dial", "ring", event)[-1] == (status, "completed")
    assert walk(S.QUEUED, "dial", event)[-1] == (status, "completed")


def test_answer_without_ringing_and_conditional_expectations() -> None:
    s = step(S.INITIATED, "answer")
    assert (s.new, s.callback, s.expect) == (S.IN_PROGRESS, "answered", ("queued",))
    assert step(S.IN_PROGRESS, "hangup").expect == ("in-progress",)


@pytest.mark.parametrize(
    ("state", "event"),
    [(S.COMPLETED, "hangup"), (S.QUEUED, "answer"), (S.IN_PROGRESS, "busy"), (S.CANCELED, "ring"), (S.QUEUED, "x")],
)
def test_illegal_events_raise(state: CallState, event: str) -> None:
    with pytest.raises(IllegalTransition):
        step(state, event)
