"""A whole callplane node inside a test: store, SIP, media, engine, webhook delivery and the API.

Everything is the real component on loopback (SIP on a free port, RTP on free ports, the API through httpx on the
real ASGI app); only the database is the test's. ``api`` posts as the administrator::

    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To="sip:svc@127.0.0.1:5090", Url=app.url("/rcml"))
        await node.wait_status(r["sid"], "completed")
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from callplane.api.app import create_app
from callplane.core.clock import SystemClock
from callplane.core.ids import IdSource
from callplane.core.secrets import hash_token
from callplane.engine.delivery import StoreOutbox
from callplane.engine.engine import CallEngine, EngineConfig
from callplane.engine.media_session import MediaCalls
from callplane.engine.script import ScriptServices
from callplane.engine.writer import RecordWriter
from callplane.media.aio import MediaEngine
from callplane.media.httpcache import HttpAudioCache
from callplane.media.tts import make_default_tts
from callplane.media.workers import MediaWorkers
from callplane.sip.aio import SipEndpoint
from callplane.sip.ua import UserAgent
from callplane.store import accounts
from callplane.store import calls as store_calls
from callplane.store.accounts import AccountRecord
from callplane.store.calls import CallRecord
from callplane.store.db import Database
from callplane.store.outbox import TableOutbox
from callplane.webhooks.fetch import Limits, WebClient
from callplane.webhooks.outbox import Deliverer, RetryPolicy

__all__ = ["ACCOUNT", "TOKEN", "EngineNode"]

LOOPBACK = "127.0.0.1"
ACCOUNT = "AC" + "e" * 32
TOKEN = "engine-token-0123456789"
INSTANCE = "ID" + "7" * 32
PUBLIC_URL = "http://callplane.test"


class EngineNode:
    def __init__(
        self,
        db: Database,
        data: Path,
        *,
        scripts: bool = True,
        retry: RetryPolicy | None = None,
        outbound_proxy: str | None = None,
    ) -> None:
        self.db = db
        self.data = data
        self.scripts = scripts
        self.retry = retry or RetryPolicy(first=0.2)
        self.outbound_proxy = outbound_proxy
        self.ids = IdSource()
        self.clock = SystemClock()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> EngineNode:
        now = self.clock.wall()
        await accounts.create(
            self.db,
            AccountRecord(ACCOUNT, "engine tests", "active", hash_token(TOKEN, iterations=1000), now, now),
        )
        self.endpoint = SipEndpoint(ids=self.ids, host=LOOPBACK, port=0)
        await self.endpoint.start()
        self.ua = UserAgent(self.ids, self.endpoint.local, tl=self.endpoint.layer)
        self.media = MediaEngine(host=LOOPBACK, port_range=(40000, 60000), ids=self.ids, rtcp_interval=3600.0)
        await self.media.start()
        self.web = WebClient(Limits(connect_timeout=1.0, total_timeout=2.0))
        self.outbox = StoreOutbox(TableOutbox(self.db, INSTANCE))
        self.deliverer = Deliverer(
            self.outbox, self.web, clock=lambda: self.clock.wall().timestamp(), policy=self.retry, poll=0.2
        )
        self.writer = RecordWriter(self.db, INSTANCE, on_commit=self.deliverer.wake)
        self.writer.start()
        self.workers = MediaWorkers(self.data / "pcm")
        self.audio = HttpAudioCache(self.workers, self.data / "http")
        self.calls = MediaCalls(self.ua, self.endpoint, self.media)
        config = EngineConfig(
            instance_id=INSTANCE,
            domain=f"{LOOPBACK}:{self.endpoint.port}",
            outbound_proxy=self.outbound_proxy,
            recordings_dir=self.data / "recordings",
        )
        self.engine = CallEngine(self.db, self.ids, self.clock, self.calls, config, writer=self.writer)
        if self.scripts:
            self.engine.script_factory = ScriptServices(
                engine=self.engine,
                media=self.media,
                web=self.web,
                tts=make_default_tts(self.workers),
                audio=self.audio,
                writer=self.writer,
                ids=self.ids,
                recordings_dir=config.recordings_dir,
                public_url=PUBLIC_URL,
            )
        self.calls.on_event = self.engine.on_event
        self.calls.attach()
        self._tasks.append(asyncio.create_task(self.deliverer.run()))
        app = create_app(
            self.db, ids=self.ids, clock=self.clock, control=self.engine, recordings_dir=config.recordings_dir
        )
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://callplane.test")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.engine.close()
        await self.writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()
        await self.web.close()
        await self.audio.aclose()
        await self.workers.aclose()
        self.calls.close()
        await self.media.close()
        await self.endpoint.close()

    @property
    def sip_port(self) -> int:
        return self.endpoint.port

    async def post_call(self, **fields: str) -> httpx.Response:
        data = {"From": "+15550001111", **fields}
        return await self.client.post(f"/2012-04-24/Accounts/{ACCOUNT}/Calls.json", data=data, auth=(ACCOUNT, TOKEN))

    async def modify(self, sid: str, **fields: str) -> httpx.Response:
        url = f"/2012-04-24/Accounts/{ACCOUNT}/Calls/{sid}.json"
        return await self.client.post(url, data=fields, auth=(ACCOUNT, TOKEN))

    async def get(self, path: str) -> Any:
        r = await self.client.get(f"/2012-04-24/Accounts/{ACCOUNT}/{path}", auth=(ACCOUNT, TOKEN))
        assert r.status_code == 200, r.text
        return r.json()

    async def fetch(self, url: str) -> httpx.Response:
        """GET an absolute URL the node handed out (RecordingUrl) with the account's credentials."""
        return await self.client.get(url, auth=(ACCOUNT, TOKEN))

    async def record(self, sid: str) -> CallRecord:
        record = await store_calls.get(self.db, sid)
        assert record is not None
        return record

    async def wait_status(self, sid: str, *statuses: str, timeout: float = 10.0) -> CallRecord:
        async with asyncio.timeout(timeout):
            while True:
                await self.writer.flush()
                record = await self.record(sid)
                if record.status in statuses:
                    return record
                await asyncio.sleep(0.05)
