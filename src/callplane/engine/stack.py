"""The call engine's parts, assembled once: what ``callplane serve`` and the tests' whole-node harness both run.

:class:`EngineStack` takes the node's SIP endpoint, UA and event dispatcher (the SIP service owns those) and adds
the media engine, the off-loop workers (TTS, audio decoding), the HTTP client for developers' servers, the record
writer, the status-callback delivery worker, and the :class:`~callplane.engine.engine.CallEngine` itself, which is
the API's :class:`~callplane.engine.control.CallControl`. ``start`` and ``close`` bring them up and down in order.
With ``StackOptions.inbound`` the engine also takes the INVITEs to the node (:mod:`.inbound`), authenticating
Clients with ``digest``, the node's shared digest server (``SipService.digest``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from callplane.core.clock import Clock
from callplane.core.ids import IdSource
from callplane.engine.delivery import StoreOutbox, failure_notification
from callplane.engine.dispatch import SipEventDispatcher
from callplane.engine.engine import CallEngine, EngineConfig
from callplane.engine.inbound import InboundPolicy, InboundRouter
from callplane.engine.media_session import MediaCalls
from callplane.engine.recovery import recover_callbacks
from callplane.engine.script import ScriptServices
from callplane.engine.writer import RecordWriter, Write
from callplane.media.aio import MediaEngine
from callplane.media.httpcache import HttpAudioCache
from callplane.media.tts import make_default_tts
from callplane.media.workers import MediaWorkers
from callplane.sip.aio import SipEndpoint
from callplane.sip.digest import DigestServer
from callplane.sip.ua import UserAgent
from callplane.store.db import Database
from callplane.store.outbox import TableOutbox
from callplane.webhooks.fetch import FetchError, Limits, WebClient
from callplane.webhooks.outbox import Callback, Deliverer, RetryPolicy

__all__ = ["EngineStack", "StackOptions"]

log = logging.getLogger("callplane.engine")


@dataclass(frozen=True, slots=True)
class StackOptions:
    media_host: str
    rtp_ports: tuple[int, int]
    data: Path  # caches and recordings live under it
    rtcp_interval: float = 5.0
    fetch_limits: Limits = Limits()
    retry: RetryPolicy = RetryPolicy()
    scripts: bool = True
    inbound: InboundPolicy | None = None  # None: INVITEs to the node are left to the 404 fallback


class EngineStack:
    def __init__(
        self,
        db: Database,
        ids: IdSource,
        clock: Clock,
        endpoint: SipEndpoint,
        ua: UserAgent,
        dispatcher: SipEventDispatcher,
        config: EngineConfig,
        options: StackOptions,
        *,
        digest: DigestServer | None = None,
    ) -> None:
        self.db = db
        self.ids = ids
        self.clock = clock
        self.config = config
        self.options = options
        self.media = MediaEngine(
            host=options.media_host, port_range=options.rtp_ports, ids=ids, rtcp_interval=options.rtcp_interval
        )
        self.workers = MediaWorkers(options.data / "cache" / "pcm")
        self.web = WebClient(options.fetch_limits)
        # <Play> fetches share the webhooks' pooled client (closed with it; the cache sets its own timeout and
        # follows redirects itself, within its limits).
        self.audio = HttpAudioCache(self.workers, options.data / "cache" / "http", client=self.web.http)
        self.writer = RecordWriter(db, config.instance_id)
        self.outbox = StoreOutbox(TableOutbox(db, config.instance_id), self.writer)
        self.deliverer = Deliverer(
            self.outbox,
            self.web,
            clock=lambda: clock.wall().timestamp(),
            policy=options.retry,
            on_failure=self._delivery_failed,
        )
        self.writer.on_commit = self.deliverer.wake
        self.calls = MediaCalls(ua, endpoint, self.media)
        self.engine = CallEngine(db, ids, clock, self.calls, config, writer=self.writer)
        if options.scripts:
            self.engine.script_factory = ScriptServices(
                engine=self.engine,
                media=self.media,
                web=self.web,
                tts=make_default_tts(self.workers),
                audio=self.audio,
                writer=self.writer,
                ids=ids,
                recordings_dir=config.recordings_dir,
                public_url=config.public_url,
            )
        self.calls.on_event = self.engine.on_event
        self.calls.attach(dispatcher)
        if options.inbound is not None:
            self.engine.inbound = InboundRouter(db, digest, options.inbound)
            self.engine.attach(dispatcher)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await recover_callbacks(self.db, self.config.instance_id, self.clock.wall())
        await self.media.start()
        self.config.recordings_dir.mkdir(parents=True, exist_ok=True)
        self.writer.start()
        self._tasks.append(asyncio.create_task(self.deliverer.run(), name="callback-delivery"))

    async def close(self) -> None:
        """Hang up what is live, write the final records, then stop every part."""
        try:
            await self.engine.close()
            await self.writer.close()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.web.close()
            await self.audio.aclose()
            await self.workers.aclose()
            self.calls.close()
            await self.media.close()

    async def _delivery_failed(self, item: Callback, error: FetchError, final: bool) -> None:
        account = item.account_sid
        if not account:
            return
        note = failure_notification(
            self.ids,
            account_sid=account,
            call_sid=item.call_sid,
            error=error,
            method=item.method,
            params=item.params,
            when=self.clock.wall(),
            final=final,
        )
        self.writer.submit(Write(item.call_sid, account, notification=note))
