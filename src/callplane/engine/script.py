"""Running a call's RCML: the interpreter's commands become fetches, prompts, recordings and hang-ups.

Theory of operation
-------------------
One :class:`RcmlScript` per answered call joins the sans-IO :class:`~callplane.rcml.interpreter.Interpreter` to
the node. After every input (:meth:`start`, a digit, a media event, a finished task, the timer) it drains the
interpreter's commands and runs each:

* ``Fetch``: an HTTP exchange through :class:`~callplane.webhooks.fetch.WebClient` with the §4.2 call parameters
  plus the verb's own; the body becomes a document (parsed off the event loop when it is large) or a
  ``FetchFailed`` with the Notification code, and a Notification is written for the failure;
* ``Say`` / ``Play``: TTS or the HTTP audio cache, both decoding off the loop, then a :class:`Playlist` on the
  call's leg whose end reports ``PromptDone``; ``StopPrompt`` stops it (barge-in);
* ``StartRecord`` / ``StopRecord``: an optional beep, then the media engine's recorder; the WAV lands under
  the recordings directory, a Recording row is written (empty recordings are dropped) and ``RecordingDone``
  carries the absolute ``RecordingUrl``;
* ``Answer`` (an inbound call's first verb that needs the call answered): the engine answers it
  (:meth:`CallEngine.answer`), then ``Answered`` goes back to the interpreter;
* ``Hangup`` / ``Reject`` and the end of the script: the engine hangs the call up. An inbound call that was not
  answered is refused instead (:meth:`CallEngine.refuse`): ``Reject`` with 603 (``rejected``: the record ends
  ``no-answer``) or 486 (``busy``); a document that could not be fetched with 404 (Notification 21402) or 500, and
  the record ends ``failed``; a Hangup or an empty document with 487, ``canceled`` (restcomm-behaviour §4.3, §5);
* ``Notify``: a Notification row for the call;
* ``Dial``: a :class:`~callplane.engine.dial.DialRun` rings the nouns and bridges the winner; its outcome comes back
  as ``DialDone`` (``StopDial``, on a redirect, ends it). A screening document (a Dial noun's ``url``) runs as a
  script on the callee whose end of document lets the Dial bridge the call instead of hanging up.

Every task is the call's own: a failure in one ends in a Notification and, at worst, a hang-up of that call.
The interpreter's one deadline is one ``loop.call_at``, re-armed only when it changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlencode

from callplane.core.errors import CallplaneError, RcmlError
from callplane.core.ids import IdSource
from callplane.engine.callstate import CallState
from callplane.engine.dial import DialRun
from callplane.engine.params import rcml_params
from callplane.engine.writer import RecordWriter, Write
from callplane.media import events as media_events
from callplane.media.aio import MediaEngine
from callplane.media.playlist import PlayItem, Playlist
from callplane.media.recorder import Recorder
from callplane.media.sources import tone_pcm
from callplane.rcml import commands as cmd
from callplane.rcml import events as ev
from callplane.rcml.interpreter import Interpreter
from callplane.rcml.parser import document_for_response
from callplane.rcml.verbs import Document
from callplane.store import recordings as store_recordings
from callplane.store.notifications import ERROR, WARNING, NotificationRecord
from callplane.store.recordings import RecordingRecord
from callplane.webhooks.fetch import NOT_FOUND, FetchError, WebClient

if TYPE_CHECKING:
    from callplane.engine.engine import CallEngine, LiveCall

__all__ = ["ParsedDocuments", "RcmlScript", "ScriptServices"]

log = logging.getLogger("callplane.engine.script")

INLINE_PARSE_BYTES = 16 * 1024
BEEP = tone_pcm([1000.0], 0.25)
PROMPT_FAILED = 12400
#: ``<Reject reason>`` -> (SIP status, call-record event): 603 Decline ends ``no-answer``, 486 Busy Here ``busy``.
REJECTS = {"rejected": (603, "no_answer"), "busy": (486, "busy")}


class AudioSource(Protocol):
    """What Play needs: ``await get(url)`` -> 8 kHz s16le PCM (the HTTP audio cache)."""

    async def get(self, url: str) -> bytes: ...


class Speech(Protocol):
    """What Say needs: ``cached(text, voice, language)`` -> PCM already in memory or None (no I/O), else
    ``await synthesize(text, voice, language)`` -> PCM (the caching TTS)."""

    def cached(self, text: str, voice: str, language: str) -> bytes | None: ...

    async def synthesize(self, text: str, voice: str, language: str) -> bytes: ...


class ParsedDocuments:
    """Parsed RCML by (body, Content-Type, URL), for bodies up to :data:`INLINE_PARSE_BYTES`.

    Most applications answer every call with the same document (a static IVR), and a :class:`Document` is
    immutable, so it is parsed once and shared. At most ``size`` documents are held (emptied when full); a body
    that does not parse is not remembered (its error is raised again)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._docs: dict[tuple[bytes, str | None, str], Document] = {}
        self.hits = 0

    def __len__(self) -> int:
        return len(self._docs)

    def parse(self, body: bytes, content_type: str | None, url: str) -> Document:
        key = (body, content_type, url)
        doc = self._docs.get(key)
        if doc is not None:
            self.hits += 1
            return doc
        doc = document_for_response(body, content_type, url)
        if len(self._docs) >= self.size:
            self._docs.clear()
        self._docs[key] = doc
        return doc


@dataclass
class ScriptServices:
    """The node's shared resources every script uses."""

    engine: CallEngine
    media: MediaEngine
    web: WebClient
    tts: Speech
    audio: AudioSource
    writer: RecordWriter
    ids: IdSource
    recordings_dir: Path
    public_url: str
    documents: ParsedDocuments = field(default_factory=ParsedDocuments)

    def __call__(self, call: LiveCall) -> RcmlScript:
        return RcmlScript(self, call)


class RcmlScript:
    """The RCML of one call. With ``on_screened`` it is a <Dial> callee's screening document: running out of verbs
    calls it instead of hanging up."""

    def __init__(
        self, services: ScriptServices, call: LiveCall, *, on_screened: Callable[[], None] | None = None
    ) -> None:
        self.s = services
        self.call = call
        self._on_screened = on_screened
        self._dial: DialRun | None = None
        self._dial_recording: tuple[DialRun, str, str] | None = None  # (its Dial, RecordingSid, path)
        req = call.request
        self.interp = Interpreter(
            req.url,
            req.method,  # type: ignore[arg-type]
            req.fallback_url,
            req.fallback_method,  # type: ignore[arg-type]
            answered=call.incoming is None or call.answered_at is not None,
            name=call.sid,
        )
        self.loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._prompts: dict[int, Playlist] = {}
        self._recording: tuple[int, str, str] | None = None  # (ref, RecordingSid, path)
        self._ended = False
        self._hung_up = False
        self._failed_fetch: tuple[int, str, str, list[tuple[str, str]], bytes] | None = None
        self._fetch_error: int | None = None  # the code of the last fetch, while it failed

    # -- inputs ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.interp.start(self.loop.time())
        self._pump()

    def redirect(self, url: str, method: str, fallback_url: str | None, fallback_method: str) -> None:
        self._feed(ev.Redirected(url, method, fallback_url, fallback_method))  # type: ignore[arg-type]

    def on_digit(self, digit: str) -> None:
        self._feed(ev.DigitReceived(digit))

    def on_media_event(self, event: object) -> None:
        if isinstance(event, media_events.RecordingFinished):
            if self._dial_recording is not None:
                self._dial_recording_finished(event)
            else:
                self._recording_finished(event)

    def ended(self) -> None:
        """The call is over: stop what plays, keep what was recorded, let a last action run."""
        if self._ended:
            return
        self._ended = True
        for playlist in self._prompts.values():
            playlist.stop()
        self._prompts.clear()
        self._feed(ev.CallEnded())
        if self.interp.done:
            self._close()

    # -- machinery ------------------------------------------------------------------------------------------
    def _feed(self, event: ev.Event) -> None:
        try:
            self.interp.handle_event(event, self.loop.time())
        except Exception:
            log.exception("[%s] the interpreter failed on %r", self.call.sid, event)
            self._hangup(failed=True)
            return
        self._pump()

    def _pump(self) -> None:
        for command in self.interp.commands_to_run():
            try:
                self._run(command)
            except Exception:
                log.exception("[%s] running %r failed", self.call.sid, command)
                self._notify(PROMPT_FAILED, f"running {type(command).__name__} failed", ERROR)
        deadline = self.interp.get_timer()
        if deadline != self._deadline:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._deadline = deadline
            if deadline is not None:
                self._timer = self.loop.call_at(deadline, self._on_timer)
        if self.interp.state.value == "ended" and not self._ended:
            self._hangup()
        if self._ended and self.interp.done:
            self._close()

    def _on_timer(self) -> None:
        armed = self._deadline
        self._timer = None
        self._deadline = None
        try:
            # The loop ran the timer, so by its clock it is due: uvloop rounds timers to whole milliseconds and may
            # run one a fraction of a millisecond early; "not yet" would re-arm it at once, again and again.
            self.interp.handle_timer(self.loop.time() if armed is None else max(self.loop.time(), armed))
        except Exception:
            log.exception("[%s] the interpreter timer failed", self.call.sid)
            self._hangup(failed=True)
            return
        self._pump()

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("[%s] a script task failed", self.call.sid)

        task = self.loop.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _leg(self) -> str | None:
        return self.s.engine.leg_of(self.call)

    def _run(self, c: cmd.Command) -> None:
        if isinstance(c, cmd.Fetch):
            self._spawn(self._fetch(c))
        elif isinstance(c, cmd.Say):
            pcm = self.s.tts.cached(c.text, c.voice, c.language)
            if pcm is not None:  # the usual case: a prompt the node has spoken before plays at once, no task
                self._play(c.ref, c.loop, pcm)
            else:
                self._spawn(self._prompt(c.ref, c.loop, lambda: self.s.tts.synthesize(c.text, c.voice, c.language)))
        elif isinstance(c, cmd.Play):
            self._spawn(self._prompt(c.ref, c.loop, lambda: self.s.audio.get(c.url)))
        elif isinstance(c, cmd.StopPrompt):
            playlist = self._prompts.pop(c.ref, None)
            if playlist is not None:
                playlist.stop()
        elif isinstance(c, cmd.StartRecord):
            self._start_record(c)
        elif isinstance(c, cmd.StopRecord):
            leg = self._leg()
            if leg is not None:
                self.s.media.stop_recording(leg)
        elif isinstance(c, cmd.Hangup) and c.end_of_document and self._on_screened is not None:
            self._screened()
        elif isinstance(c, cmd.Reject):
            if self._unanswered():
                self._hung_up = True
                self.s.engine.refuse(self.call, *REJECTS[c.reason])
            else:
                self._hangup()
        elif isinstance(c, cmd.Hangup):
            self._hangup()
        elif isinstance(c, cmd.Notify):
            failed, self._failed_fetch = self._failed_fetch, None
            level = ERROR if c.level == "error" else WARNING
            if failed is not None and failed[0] == c.code:
                _, url, method, params, body = failed
                self._notify(c.code, c.message, level, url=url, method=method, params=params, body=body)
            else:
                self._notify(c.code, c.message, level)
        elif isinstance(c, cmd.Answer):
            if self.s.engine.answer(self.call):
                self._feed(ev.Answered())
        elif isinstance(c, cmd.Dial):
            self._dial = DialRun(self.s.engine, self.s.media, self.call, c.ref, c.verb, self)
            self._dial.start()
        elif isinstance(c, cmd.StopDial):
            dial, self._dial = self._dial, None
            if dial is not None:
                dial.stop()
        # Silence, StartGather, StopGather: nothing to do on the media side.

    # -- Dial (DialOwner) -----------------------------------------------------------------------------------
    def dial_done(self, ref: int, params: tuple[tuple[str, str], ...]) -> None:
        self._dial = None
        self.loop.call_soon(self._feed, ev.DialDone(ref, params))

    def parent_answered(self) -> None:
        self.loop.call_soon(self._feed, ev.Answered())

    def dial_notice(self, code: int, message: str) -> None:
        self._notify(code, message, WARNING)

    def record_bridge(self, dial: DialRun, a: str, b: str) -> bool:
        """``<Dial record="true">``: record the bridge of legs ``a`` (the caller's) and ``b`` in two channels."""
        sid = self.s.ids.recording_sid()
        self.s.recordings_dir.mkdir(parents=True, exist_ok=True)
        path = str(self.s.recordings_dir / f"{sid}.wav")
        try:
            self.s.media.record_bridge(a, b, path, Recorder(max_length_s=None, start=self.loop.time()))
        except CallplaneError as e:
            self._notify(PROMPT_FAILED, f"the bridged call cannot be recorded: {e}", ERROR)
            return False
        self._dial_recording = (dial, sid, path)
        return True

    def _dial_recording_finished(self, event: media_events.RecordingFinished) -> None:
        assert self._dial_recording is not None
        dial, sid, path = self._dial_recording
        self._dial_recording = None
        self._keep_recording(sid, path, event, dial.recording_done)

    def screen(self, call: LiveCall, on_screened: Callable[[], None]) -> RcmlScript:
        return RcmlScript(self.s, call, on_screened=on_screened)

    def _screened(self) -> None:
        """The screening document ran out of verbs: the callee is accepted (the Dial bridges it)."""
        done, self._on_screened = self._on_screened, None
        if done is None or self._hung_up or self._ended:
            return
        self._hung_up = self._ended = True
        self._close()
        done()

    # -- fetch ----------------------------------------------------------------------------------------------
    async def _fetch(self, c: cmd.Fetch) -> None:
        if self._ended:
            status = "completed"
        else:
            status = "ringing" if self.call.state is CallState.RINGING else "in-progress"
        params = [*rcml_params(self.call.facts, status, self.call.request.api_version), *c.params]
        try:
            reply = await self.s.web.request(c.url, c.method, params)
        except FetchError as e:
            # The interpreter reports the failure (Notify); this lets it carry the request's details.
            self._failed_fetch = (e.code, e.url, c.method, params, e.body)
            self._fetch_error = e.code
            self._feed(ev.FetchFailed(c.ref, e.url, str(e), e.code))
            return
        try:
            if len(reply.body) <= INLINE_PARSE_BYTES:
                document: Document = self.s.documents.parse(reply.body, reply.content_type, reply.url)
            else:
                document = await asyncio.to_thread(document_for_response, reply.body, reply.content_type, reply.url)
        except RcmlError as e:
            code = e.code or 12100
            self._failed_fetch = (code, reply.url, c.method, params, reply.body)
            self._fetch_error = code
            self._feed(ev.FetchFailed(c.ref, reply.url, str(e), code))
            return
        self._fetch_error = None
        self._feed(ev.DocumentLoaded(c.ref, document))

    # -- prompts --------------------------------------------------------------------------------------------
    async def _prompt(self, ref: int, loop: int, produce: Callable[[], Awaitable[bytes]]) -> None:
        try:
            pcm = await produce()
        except (CallplaneError, OSError) as e:
            self._notify(PROMPT_FAILED, f"the prompt could not be prepared: {e}", ERROR)
            self._feed(ev.PromptDone(ref))
            return
        self._play(ref, loop, pcm)

    def _play(self, ref: int, loop: int, pcm: bytes) -> None:
        leg = self._leg()
        if leg is None or self._ended:
            return

        def finished(stopped: bool) -> None:
            if self._prompts.pop(ref, None) is not None and not stopped:
                self.loop.call_soon(self._feed, ev.PromptDone(ref))

        playlist = Playlist([PlayItem(pcm, loop)], on_finished=finished)
        self._prompts[ref] = playlist
        self.s.media.set_source(leg, playlist)

    # -- recording ------------------------------------------------------------------------------------------
    def _start_record(self, c: cmd.StartRecord) -> None:
        leg = self._leg()
        if leg is None:
            self._feed(ev.RecordingDone(c.ref, 0.0, "hangup"))
            return
        sid = self.s.ids.recording_sid()
        self.s.recordings_dir.mkdir(parents=True, exist_ok=True)
        path = str(self.s.recordings_dir / f"{sid}.wav")
        self._recording = (c.ref, sid, path)

        def begin() -> None:
            current = self._leg()
            if current is None or self._recording is None or self._recording[0] != c.ref:
                return
            recorder = Recorder(
                max_length_s=float(c.max_length) if c.max_length > 0 else None,
                silence_timeout_s=float(c.timeout) if c.timeout > 0 else None,
                finish_on_key=c.finish_on_key,
                start=self.loop.time(),
            )
            self.s.media.record(current, path, recorder)

        if c.beep:

            def after_beep(stopped: bool) -> None:
                self.loop.call_soon(begin)

            beep = Playlist([PlayItem(BEEP)], on_finished=after_beep)
            self.s.media.set_source(leg, beep)
        else:
            begin()

    def _recording_finished(self, event: media_events.RecordingFinished) -> None:
        if self._recording is None:
            return
        ref, sid, path = self._recording
        self._recording = None
        reasons = {"max-length": "max", "silence": "silence", "key": "key", "stopped": "stopped"}
        reason = "hangup" if self._ended else reasons.get(event.reason, "stopped")

        def saved(url: str | None) -> None:
            duration = event.duration_s if url is not None else 0.0
            self._feed(ev.RecordingDone(ref, duration, reason, event.digit, url))  # type: ignore[arg-type]

        self._keep_recording(sid, path, event, saved)

    def _keep_recording(
        self, sid: str, path: str, event: media_events.RecordingFinished, then: Callable[[str | None], None]
    ) -> None:
        """A Recording row for a finished recording, then ``then(RecordingUrl)``; an empty one is dropped
        (``then(None)``)."""
        if event.duration_s <= 0 or event.path is None:
            Path(path).unlink(missing_ok=True)
            then(None)
            return
        url = f"{self.s.public_url.rstrip('/')}/2012-04-24/Accounts/{self.call.account_sid}/Recordings/{sid}.wav"
        record = RecordingRecord(
            sid=sid,
            account_sid=self.call.account_sid,
            call_sid=self.call.sid,
            date_created=self.s.engine.clock.wall(),
            duration_ms=round(event.duration_s * 1000),
            file=Path(path).name,
        )

        async def save() -> None:
            await store_recordings.add(self.s.engine.db, record)
            then(url)

        self._spawn(save())

    # -- endings and notifications --------------------------------------------------------------------------
    def _unanswered(self) -> bool:
        """An inbound call that still rings: it is refused, not hung up."""
        return self.call.incoming is not None and self.call.state is CallState.RINGING

    def _hangup(self, *, failed: bool = False) -> None:
        if self._hung_up or self._ended:
            return
        self._hung_up = True
        if not self._unanswered():
            self.s.engine.hang_up(self.call)
        elif self._fetch_error is not None:
            self.s.engine.refuse(self.call, 404 if self._fetch_error == NOT_FOUND else 500, "fail")
        elif failed:
            self.s.engine.refuse(self.call, 500, "fail")
        else:
            self.s.engine.refuse(self.call, 487, "cancel")

    def _close(self) -> None:
        self.s.engine.script_closed(self.call)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()

    def _notify(
        self,
        code: int,
        message: str,
        log_level: int,
        *,
        url: str = "",
        method: str = "",
        params: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        note = NotificationRecord(
            sid=self.s.ids.notification_sid(),
            account_sid=self.call.account_sid,
            call_sid=self.call.sid,
            date_created=self.s.engine.clock.wall(),
            log=log_level,
            error_code=code,
            message_text=message,
            request_url=url,
            request_method=method,
            request_variables=urlencode(params or []),
            response_body=body[:2048].decode("utf-8", "replace"),
        )
        self.s.writer.submit(Write(self.call.sid, self.call.account_sid, notification=note))
