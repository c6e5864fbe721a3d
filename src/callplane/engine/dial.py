"""``<Dial>``: ring its nouns, bridge the first callee that answers to the caller, report the outcome (issue 9).

Theory of operation
-------------------
The parent's :class:`~callplane.engine.script.RcmlScript` starts one :class:`DialRun` per ``Dial`` command. It
places a child call per noun through :meth:`CallEngine.place_dial_leg` (all at once: forking; ``<Client>`` rings
every registration, so a noun may give several branches) and follows the parent and every child as their
:class:`~callplane.engine.engine.CallObserver`:

* a child's early media (183 with SDP) is bridged to the caller until a callee answers (a caller that still rings
  gets a 183 with our answer first);
* the first child to answer wins, once its screening ``url`` document (run on the callee) has come to its end (a
  screening document that hangs up makes the branch unanswered); every other branch is CANCELed. The caller is
  answered if it was still ringing (:meth:`CallEngine.answer`), and the two legs are bridged in the media engine:
  audio both ways (each leg decodes and encodes its own codec, so PCMU meets PCMA), RFC 4733 digits relayed.
  A re-INVITE (hold) from either side is relayed to the other and the answer back (:mod:`.reinvites`);
* the child is hung up at ``timeLimit``, on ``*`` from the caller with ``hangupOnStar``, when the caller hangs up,
  or when the parent is redirected (live call modification, per ``ChildCallMode``); the callee hanging up ends
  the Dial;
* once no branch is left, the Dial reports its action parameters (:meth:`DialRun.params`) to the script, which
  calls the action or goes on with the next verb.

The time the caller spends hearing the Dial ring is left out of its duration (calls-api "Call Duration"): the
parent's ``dial_ringing_since`` is set while branches ring, and the engine subtracts it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from callplane.core.errors import CallplaneError
from callplane.engine.callstate import CallState
from callplane.engine.control import CallRequest, CallUpdate
from callplane.engine.media_session import CallDigit
from callplane.engine.reinvites import ReinviteRelay, answer_here
from callplane.rcml import verbs as v
from callplane.sip import events as sip

if TYPE_CHECKING:
    from callplane.engine.engine import CallEngine, LiveCall, Script
    from callplane.media.aio import MediaEngine

__all__ = ["DialOwner", "DialRun"]

log = logging.getLogger("callplane.engine.dial")

Params = tuple[tuple[str, str], ...]
Callee = v.Number | v.Client | v.Sip

#: DialCallStatus of a branch, by the final state of its call.
_STATUS = {
    CallState.COMPLETED: "completed",
    CallState.BUSY: "busy",
    CallState.NO_ANSWER: "no-answer",
    CallState.FAILED: "failed",
    CallState.CANCELED: "canceled",
}
#: Which unanswered branch the action reports when several rang: the most telling outcome first.
_UNANSWERED = ("no-answer", "busy", "failed", "canceled", "completed")
DIAL_FAILED = 13224  # Notification: a noun that cannot be called at all (no route, unknown client, bad URI)
DIAL_UNSUPPORTED = 13200


class DialOwner(Protocol):
    """What a :class:`DialRun` needs from the parent's script."""

    def dial_done(self, ref: int, params: Params) -> None: ...

    def parent_answered(self) -> None: ...

    def dial_notice(self, code: int, message: str) -> None: ...

    def screen(self, call: LiveCall, on_screened: Callable[[], None]) -> Script: ...

    def record_bridge(self, dial: DialRun, a: str, b: str) -> bool: ...


@dataclass(eq=False)
class Branch:
    """One dialled leg: its noun, its call (None when the noun could not be placed) and, once over, its outcome."""

    noun: Callee
    call: LiveCall | None
    status: str | None = None
    screening: bool = False


class DialRun:
    """One ``<Dial>`` of ``parent`` (see the module docstring)."""

    def __init__(
        self,
        engine: CallEngine,
        media: MediaEngine,
        parent: LiveCall,
        ref: int,
        verb: v.Dial,
        owner: DialOwner,
    ) -> None:
        self.engine = engine
        self.calls = engine.media
        self.media = media
        self.parent = parent
        self.ref = ref
        self.verb = verb
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.branches: list[Branch] = []
        self._by_sid: dict[str, Branch] = {}
        self.placing = True
        self.winner: Branch | None = None
        self.early: Branch | None = None  # the branch whose early media the caller hears
        self.bridged: tuple[str, str] | None = None  # (parent leg, child leg)
        self.stopping: str | None = None  # why we end it ourselves: caller, redirect, star, time-limit
        self.finished = False
        self.recording = "off"  # record="true": "running" from the bridge until its RecordingUrl is known
        self.recording_url: str | None = None
        self._limit: asyncio.TimerHandle | None = None
        self.reinvites: ReinviteRelay | None = None  # while bridged to the winner

    # -- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.parent.observer = self
        if self.parent.state is CallState.IN_PROGRESS:  # a caller still ringing is not billed before its answer anyway
            self.parent.dial_ringing_since = self.engine.clock.wall()
        task = self.loop.create_task(self._place())
        task.add_done_callback(self._placed)

    async def _place(self) -> None:
        callees: list[Callee] = []
        for noun in self.verb.nouns:
            if isinstance(noun, v.Conference):
                self.owner.dial_notice(DIAL_UNSUPPORTED, "<Dial><Conference> is not supported yet; skipped")
            else:
                callees.append(noun)
        await asyncio.gather(*(self._place_noun(noun) for noun in callees))

    def _placed(self, task: asyncio.Task[None]) -> None:
        self.placing = False
        if not task.cancelled() and task.exception() is not None:
            log.error("[%s] placing the <Dial> legs failed", self.parent.sid, exc_info=task.exception())
        self._check()

    async def _place_noun(self, noun: Callee) -> None:
        request = self._request(noun)
        try:
            calls = await self.engine.place_dial_leg(self.parent, request, self)
        except CallplaneError as e:
            log.info("[%s] <Dial> cannot call %s: %s", self.parent.sid, request.to, e)
            self.owner.dial_notice(DIAL_FAILED, f"<Dial> cannot call {request.to}: {e}")
            self.branches.append(Branch(noun, None, "failed"))
            return
        for call in calls:
            branch = Branch(noun, call)
            self.branches.append(branch)
            self._by_sid[call.sid] = branch
            if call.state.final:  # the INVITE could not even be sent
                branch.status = _STATUS.get(call.state, "failed")
            elif self.winner is not None or self.stopping is not None:
                self.engine.hang_up(call)

    def _request(self, noun: Callee) -> CallRequest:
        parent = self.parent
        if isinstance(noun, v.Number):
            number, sep, query = noun.number.partition("?")
            to = "".join(number.split()) + sep + query  # "+1 555 0100" is +15550100
        elif isinstance(noun, v.Client):
            to = "client:" + noun.name
        else:
            to = noun.uri
        sip_noun = noun if isinstance(noun, v.Sip) else None
        callback = noun.status_callback
        return CallRequest(
            account_sid=parent.account_sid,
            from_=self.verb.caller_id or parent.request.from_,
            to=to,
            url=noun.url or "",
            method=noun.method,
            status_callback=callback.url if callback is not None else None,
            status_callback_method=callback.method if callback is not None else "POST",
            status_callback_events=callback.events if callback is not None else (),
            timeout=self.verb.timeout,
            username=sip_noun.username if sip_noun is not None else None,
            password=sip_noun.password if sip_noun is not None else None,
            api_version=parent.request.api_version,
        )

    def stop(self) -> None:
        """The parent was redirected (live call modification): ringing branches are CANCELed, and the connected
        leg follows the parent's ``ChildCallMode`` (``hangup``, the default; ``move``: it runs the new Url too;
        ``stay``: the bridge stays up while the parent runs its new document)."""
        self.stopping = "redirect"
        for branch in self._live():
            if branch is not self.winner:
                assert branch.call is not None
                self.engine.hang_up(branch.call)
        winner = self.winner
        if winner is None or winner.call is None or winner.status is not None:
            return
        mode = self.parent.child_call_mode
        if mode == "stay":
            return  # the bridge lives on; either side hanging up ends it (and this run, unreported)
        if mode == "move" and self.parent.redirect_to is not None:
            self._release(winner)
            self.engine.move(winner.call, self.parent.redirect_to)
            self._check()
            return
        self.engine.hang_up(winner.call)

    def redirected(self, call: LiveCall, update: CallUpdate) -> None:
        """The connected callee was redirected (live call modification on the child): it leaves the bridge and runs
        its new document; the Dial ends (``completed``) and the parent goes on."""
        branch = self._by_sid.get(call.sid)
        if branch is None or branch is not self.winner or branch.status is not None:
            return
        self._release(branch)
        self.engine.move(call, update)
        self._check()

    # -- events (CallObserver) ------------------------------------------------------------------------------
    def on_call_event(self, call: LiveCall, event: object) -> None:
        if call is self.parent and isinstance(event, CallDigit):
            self._parent_digit(event.digit)
            return
        if isinstance(event, sip.ReinviteReceived | sip.MediaUpdated | sip.ReinviteFailed):
            self._reinvite_event(call, event)
            return
        branch = self._by_sid.get(call.sid)
        if branch is None:
            return
        if isinstance(event, sip.CallProgress):
            if event.media is not None and self.winner is None and self.early is None:
                self._early_media(branch)
        elif isinstance(event, sip.CallAnswered):
            if call.state is CallState.IN_PROGRESS:
                self._answered(branch)

    def call_over(self, call: LiveCall) -> None:
        if call is self.parent:
            self.stopping = self.stopping or "caller"
            for live in self._live():
                assert live.call is not None
                self.engine.hang_up(live.call)
            self._check()
            return
        branch = self._by_sid.get(call.sid)
        if branch is None or branch.status is not None:
            return
        branch.status = "no-answer" if branch.screening else _STATUS.get(call.state, "failed")
        branch.screening = False
        if branch is self.early or branch is self.winner:
            self._unbridge()
            self.early = None
        if branch is self.winner:
            self._cancel_limit()
            self._stop_relaying()
        self._check()

    # -- answering and bridging -----------------------------------------------------------------------------
    def _answered(self, branch: Branch) -> None:
        call = branch.call
        assert call is not None
        if self.winner is not None or self.stopping is not None or self.finished:
            self.engine.hang_up(call)  # a late answer: another branch has won
            return
        if branch.noun.url is not None:
            branch.screening = True
            self.engine.run_script(call, self.owner.screen(call, lambda: self._screened(branch)))
            return
        self._connect(branch)

    def _screened(self, branch: Branch) -> None:
        """The callee's screening document came to its end without hanging up: the branch may win."""
        branch.screening = False
        call = branch.call
        assert call is not None
        call.script = None
        if call.state is not CallState.IN_PROGRESS or branch.status is not None:
            return
        if self.winner is not None or self.stopping is not None or self.finished:
            self.engine.hang_up(call)
            return
        self._connect(branch)

    def _connect(self, branch: Branch) -> None:
        call = branch.call
        assert call is not None
        self.winner = branch
        self._stop_ringing()
        for other in self._live():
            if other is not branch:
                assert other.call is not None
                self.engine.hang_up(other.call)  # CANCEL (or BYE, for one being screened)
        was_answered = self.parent.state is CallState.IN_PROGRESS
        if not self.engine.answer(self.parent):
            log.info("[%s] the caller cannot be answered: hanging up %s", self.parent.sid, call.sid)
            self.engine.hang_up(call)
            return
        if not was_answered:
            self.owner.parent_answered()
        if self.early is not branch:
            self._unbridge()
            if not self._bridge(branch):
                self.engine.hang_up(call)
                return
        self.early = None
        if self.verb.record and self.bridged is not None and self.recording == "off":
            if self.owner.record_bridge(self, *self.bridged):
                self.recording = "running"
        if self.parent.handle is not None and call.handle is not None:
            self.reinvites = ReinviteRelay(self.calls, self.parent.handle, call.handle)
            self.reinvites.start()
        talked = (self.engine.clock.wall() - call.answered_at).total_seconds() if call.answered_at else 0.0
        self._limit = self.loop.call_later(max(0.0, self.verb.time_limit - talked), self._time_limit)
        log.info("[%s] <Dial>: %s answered, bridged", self.parent.sid, call.sid)

    def _early_media(self, branch: Branch) -> None:
        """The callee sends early media (183 with SDP): the caller hears it until someone answers. A caller that
        still rings gets early media of its own first (183 with our answer), and its 200 waits for the callee's."""
        if self.engine.early_media(self.parent) and self._bridge(branch):
            self.early = branch

    def _bridge(self, branch: Branch) -> bool:
        assert branch.call is not None
        a, b = self.engine.leg_of(self.parent), self.engine.leg_of(branch.call)
        if a is None or b is None:
            return False
        try:
            self.media.bridge(a, b)
        except CallplaneError as e:
            log.warning("[%s] cannot bridge %s: %s", self.parent.sid, branch.call.sid, e)
            return False
        self.bridged = (a, b)
        return True

    def _unbridge(self) -> None:
        if self.bridged is not None:
            a, _ = self.bridged
            self.bridged = None
            try:
                self.media.unbridge(a)
            except CallplaneError:
                pass  # the leg is gone already

    def _release(self, branch: Branch) -> None:
        """Let the connected leg go on its own (ChildCallMode=Move): no bridge, no longer ours."""
        self._unbridge()
        self._cancel_limit()
        self._stop_relaying()
        if branch.call is not None:
            branch.call.observer = None
        branch.status = "completed"

    def _stop_ringing(self) -> None:
        parent = self.parent
        if parent.dial_ringing_since is not None:
            parent.unbilled_s += max(0.0, (self.engine.clock.wall() - parent.dial_ringing_since).total_seconds())
            parent.dial_ringing_since = None

    # -- while bridged --------------------------------------------------------------------------------------
    def _parent_digit(self, digit: str) -> None:
        winner = self.winner
        if digit == "*" and self.verb.hangup_on_star and winner is not None and winner.status is None:
            assert winner.call is not None
            log.info("[%s] <Dial hangupOnStar>: * from the caller ends %s", self.parent.sid, winner.call.sid)
            self.stopping = "star"
            self.engine.hang_up(winner.call)

    def _time_limit(self) -> None:
        self._limit = None
        winner = self.winner
        if winner is not None and winner.call is not None and winner.status is None:
            log.info("[%s] <Dial timeLimit=%d> reached", self.parent.sid, self.verb.time_limit)
            self.stopping = "time-limit"
            self.engine.hang_up(winner.call)

    def _cancel_limit(self) -> None:
        if self._limit is not None:
            self._limit.cancel()
            self._limit = None

    def _stop_relaying(self) -> None:
        relay, self.reinvites = self.reinvites, None
        if relay is not None:
            relay.stop()

    def _reinvite_event(self, call: LiveCall, event: object) -> None:
        if call.handle is None:
            return
        if self.reinvites is not None and call.handle in (self.reinvites.a, self.reinvites.b):
            self.reinvites.on_event(call.handle, event)
        elif isinstance(event, sip.ReinviteReceived):  # handed over just before the bridge ended
            try:
                answer_here(self.calls, call.handle, event)
            except (CallplaneError, ValueError) as e:
                log.warning("[%s] answering a re-INVITE failed: %s", call.sid, e)

    # -- the outcome ----------------------------------------------------------------------------------------
    def _live(self) -> list[Branch]:
        return [b for b in self.branches if b.call is not None and b.status is None]

    def recording_done(self, url: str | None) -> None:
        """The bridge's recording is written (``url`` its RecordingUrl; None when it was empty)."""
        self.recording = "done"
        self.recording_url = url
        self._check()

    def _check(self) -> None:
        if self.finished or self.placing or self._live():
            return
        if self.recording == "running":
            self._unbridge()  # the recording ends with the bridge; recording_done comes once it is saved
            return
        self.finished = True
        self._cancel_limit()
        self._unbridge()
        self._stop_ringing()
        if self.parent.observer is self:
            self.parent.observer = None
        params = self.params()
        log.info("[%s] <Dial> done: %s", self.parent.sid, dict(params).get("DialCallStatus"))
        self.owner.dial_done(self.ref, params)

    def params(self) -> Params:
        """The action parameters (restcomm-behaviour §5 Dial): DialCallSid, DialCallStatus, DialCallDuration,
        DialRingDuration, RecordingUrl, and for a ``<Sip>`` callee DialSipCallId, DialSipResponseCode and
        DialSipHeader_X-… (its last final response). Missing values are the string ``null``."""
        branch = self.winner
        status = "completed"
        if branch is None:
            ranked = sorted(
                (b for b in self.branches if b.status is not None),
                key=lambda b: _UNANSWERED.index(b.status) if b.status in _UNANSWERED else len(_UNANSWERED),
            )
            branch = ranked[0] if ranked else None
            status = branch.status or "failed" if branch is not None else "failed"
        call = branch.call if branch is not None else None
        if call is None:
            return (
                ("DialCallSid", "null"),
                ("DialCallStatus", status),
                ("DialCallDuration", "0"),
                ("DialRingDuration", "0"),
                ("RecordingUrl", self.recording_url or "null"),
            )
        end = call.ended_at or self.engine.clock.wall()
        answered = call.answered_at if branch is self.winner else None
        ring = _seconds(call.facts.created, answered or end)
        talk = math.ceil(max(0.0, (end - answered).total_seconds())) if answered is not None else 0
        params: list[tuple[str, str]] = [
            ("DialCallSid", call.sid),
            ("DialCallStatus", status),
            ("DialCallDuration", str(talk)),
            ("DialRingDuration", str(ring)),
            ("RecordingUrl", self.recording_url or "null"),
        ]
        if branch is not None and isinstance(branch.noun, v.Sip):
            params.append(("DialSipCallId", call.handle or "null"))
            params.append(("DialSipResponseCode", str(call.sip_status) if call.sip_status else "null"))
            params.extend((f"DialSipHeader_{name}", value) for name, value in call.sip_headers)
        return tuple(params)


def _seconds(start: datetime, end: datetime) -> int:
    return max(0, round((end - start).total_seconds()))
