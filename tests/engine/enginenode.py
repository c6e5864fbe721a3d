"""A whole callplane node inside a test: store, SIP, media, engine, webhook delivery and the API.

Everything is the real component on loopback (SIP on a free port, RTP on free ports, the API through httpx on the
real ASGI app, assembled by the same :class:`~callplane.engine.stack.EngineStack` as ``callplane serve``); only the
database is the test's::

    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To="sip:svc@127.0.0.1:5090", Url=app.url("/rcml"))
        await node.wait_status(r.json()["sid"], "completed")
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
from callplane.engine.dispatch import SipEventDispatcher
from callplane.engine.engine import EngineConfig
from callplane.engine.inbound import InboundPolicy
from callplane.engine.sip_service import node_digest
from callplane.engine.stack import EngineStack, StackOptions
from callplane.sip.aio import SipEndpoint
from callplane.sip.transaction import TimerConfig
from callplane.sip.ua import UserAgent
from callplane.store import accounts
from callplane.store import calls as store_calls
from callplane.store.accounts import AccountRecord
from callplane.store.calls import CallRecord
from callplane.store.db import Database
from callplane.webhooks.fetch import Limits
from callplane.webhooks.outbox import RetryPolicy

__all__ = ["ACCOUNT", "INSTANCE", "PUBLIC_URL", "REALM", "TOKEN", "EngineNode"]

LOOPBACK = "127.0.0.1"
ACCOUNT = "AC" + "e" * 32
TOKEN = "engine-token-0123456789"
INSTANCE = "ID" + "7" * 32
PUBLIC_URL = "http://callplane.test"
REALM = "callplane"  # the digest realm of inbound calls from Clients


class EngineNode:
    def __init__(
        self,
        db: Database,
        data: Path,
        *,
        scripts: bool = True,
        retry: RetryPolicy | None = None,
        outbound_proxy: str | None = None,
        outbound: dict[str, Any] | None = None,
        timers: TimerConfig | None = None,
        inbound: InboundPolicy | None = None,
    ) -> None:
        self.db = db
        self.data = data
        self.scripts = scripts
        self.retry = retry or RetryPolicy(first=0.2)
        self.outbound_proxy = outbound_proxy
        self.outbound = outbound or {}  # more EngineConfig outbound_* fields (credentials, fail-over settings)
        self.timers = timers  # SIP timers (a short T1 makes Timer B, the INVITE timeout, short)
        self.inbound = inbound  # take INVITEs to the node (issue 9), with this policy
        self.ids = IdSource()
        self.clock = SystemClock()

    async def __aenter__(self) -> EngineNode:
        now = self.clock.wall()
        await accounts.create(
            self.db,
            AccountRecord(ACCOUNT, "engine tests", "active", hash_token(TOKEN, iterations=1000), now, now),
        )
        self.endpoint = SipEndpoint(ids=self.ids, timers=self.timers, host=LOOPBACK, port=0)
        await self.endpoint.start()
        self.ua = UserAgent(self.ids, self.endpoint.local, tl=self.endpoint.layer)
        self.dispatcher = SipEventDispatcher()
        self.dispatcher.attach(self.endpoint, self.ua)
        config = EngineConfig(
            instance_id=INSTANCE,
            domain=f"{LOOPBACK}:{self.endpoint.port}",
            outbound_proxy=self.outbound_proxy,
            **self.outbound,
            public_url=PUBLIC_URL,
            recordings_dir=self.data / "recordings",
        )
        options = StackOptions(
            media_host=LOOPBACK,
            rtp_ports=(40000, 60000),
            data=self.data,
            rtcp_interval=3600.0,
            fetch_limits=Limits(connect_timeout=1.0, total_timeout=2.0),
            retry=self.retry,
            scripts=self.scripts,
            inbound=self.inbound,
        )
        digest = await node_digest(self.db, self.ids, REALM)
        self.stack = EngineStack(
            self.db, self.ids, self.clock, self.endpoint, self.ua, self.dispatcher, config, options, digest=digest
        )
        await self.stack.start()
        self.engine, self.writer, self.deliverer, self.media = (
            self.stack.engine,
            self.stack.writer,
            self.stack.deliverer,
            self.stack.media,
        )
        app = create_app(
            self.db, ids=self.ids, clock=self.clock, control=self.engine, recordings_dir=config.recordings_dir
        )
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://callplane.test")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.stack.close()
        finally:
            await self.client.aclose()
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
