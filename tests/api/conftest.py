"""API fixtures: the real app over a real temporary database, driven through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from callplane.api.app import create_app
from callplane.core.clock import FakeClock
from callplane.core.ids import IdSource
from callplane.core.secrets import hash_token
from callplane.store import accounts
from callplane.store.accounts import AccountRecord
from callplane.store.db import Database

ADMIN_SID = "AC" + "a" * 32
ADMIN_TOKEN = "admin-token-0123456789"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Api:
    client: httpx.AsyncClient
    db: Database

    async def add_account(
        self, sid: str, token: str, *, parent: str | None = None, status: str = "active", email: str | None = None
    ) -> AccountRecord:
        record = AccountRecord(
            sid=sid,
            friendly_name=f"account {sid[:6]}",
            status=status,
            auth_token_hash=hash_token(token, iterations=1000),
            date_created=T0,
            date_updated=T0,
            parent_sid=parent,
            email_address=email,
        )
        return await accounts.create(self.db, record)


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    app = create_app(db, ids=IdSource(42), clock=FakeClock(wall=T0))
    helper = Api(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://callplane.test"), db)
    await helper.add_account(ADMIN_SID, ADMIN_TOKEN)
    async with helper.client:
        yield helper


ADMIN = (ADMIN_SID, ADMIN_TOKEN)
