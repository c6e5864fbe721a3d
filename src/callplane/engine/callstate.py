"""The per-call state machine of the engine (issue 8): one table, one function that applies it.

Theory of operation
-------------------
A call placed through the API starts ``queued``; an inbound call starts ``ringing``. Events move it::

    queued --dial--> initiated --ring--> ringing --answer--> in-progress --hangup--> completed
      |                 |  \\----------answer------------------^
      |                 +--busy / fail / no_answer / cancel--> busy | failed | no-answer | canceled
      +--fail / cancel--> failed | canceled          (ringing takes the same four)

An inbound call (issue 9) needs no transition to start: its record is written ``ringing`` when the INVITE is
routed, and from there it takes the same events (``answer``; ``busy``/``no_answer`` for a ``<Reject>``,
``fail`` for an RCML fetch that failed, ``cancel`` for the caller's CANCEL or a Hangup before the answer).

``initiated`` is the engine's name for "INVITE sent, nothing heard yet"; the call record shows it as ``queued``
(the seed's status list has no ``initiated``), while the status callback reports the ``initiated`` event.
:func:`step` raises :class:`IllegalTransition` for a pair the table lacks: a caller bug, never a silent no-op.
Each transition says which status-callback event it fires (``initiated``, ``ringing``, ``answered`` or
``completed``) and which record statuses the store may find before it (the conditional update's ``WHERE``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from callplane.core.errors import EngineError

__all__ = ["FINAL", "CallState", "IllegalTransition", "Step", "step"]


class CallState(enum.Enum):
    QUEUED = "queued"
    INITIATED = "initiated"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    BUSY = "busy"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"

    @property
    def record_status(self) -> str:
        """The status the call record shows."""
        return "queued" if self is CallState.INITIATED else self.value

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({CallState.COMPLETED, CallState.BUSY, CallState.FAILED, CallState.NO_ANSWER, CallState.CANCELED})

S = CallState
_UNANSWERED_ENDINGS = {"busy": S.BUSY, "fail": S.FAILED, "no_answer": S.NO_ANSWER, "cancel": S.CANCELED}

TRANSITIONS: dict[tuple[CallState, str], CallState] = {
    (S.QUEUED, "dial"): S.INITIATED,
    (S.QUEUED, "fail"): S.FAILED,
    (S.QUEUED, "cancel"): S.CANCELED,
    (S.INITIATED, "ring"): S.RINGING,
    (S.INITIATED, "answer"): S.IN_PROGRESS,
    (S.RINGING, "answer"): S.IN_PROGRESS,
    (S.IN_PROGRESS, "hangup"): S.COMPLETED,
    **{(S.INITIATED, ev): end for ev, end in _UNANSWERED_ENDINGS.items()},
    **{(S.RINGING, ev): end for ev, end in _UNANSWERED_ENDINGS.items()},
}

_EVENT_OF = {S.INITIATED: "initiated", S.RINGING: "ringing", S.IN_PROGRESS: "answered"}


class IllegalTransition(EngineError):
    def __init__(self, state: CallState, event: str) -> None:
        super().__init__(f"no transition for {event!r} in state {state.value}", status=409)


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one event: the new state, the callback event it fires, and the statuses it may replace."""

    old: CallState
    new: CallState
    callback: str | None
    expect: tuple[str, ...]


def step(state: CallState, event: str) -> Step:
    new = TRANSITIONS.get((state, event))
    if new is None:
        raise IllegalTransition(state, event)
    callback = "completed" if new.final else _EVENT_OF.get(new)
    return Step(state, new, callback, (state.record_status,))


def is_live(status: str) -> bool:
    """A record status that a live call can still leave."""
    return status in ("queued", "ringing", "in-progress")
