"""First-start duties: the administrator account and this node's InstanceId."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from callplane.core.clock import Clock
from callplane.core.errors import ConfigError
from callplane.core.ids import IdSource
from callplane.core.secrets import hash_token, verify_token
from callplane.store import accounts, node_settings
from callplane.store.accounts import AccountRecord
from callplane.store.db import Database

ADMIN_KEY = "admin_account_sid"
_ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
_INSTANCE_ID = re.compile(r"ID[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class AdminCredentials:
    account: AccountRecord
    new_token: str | None  # set only when a token was generated now: the one time it can be shown


async def ensure_admin(db: Database, ids: IdSource, clock: Clock, sid: str = "", token: str = "") -> AdminCredentials:
    """Create the administrator on the very first start; honour configured sid/token; reuse on later starts."""
    if sid and not _ACCOUNT_SID.fullmatch(sid):
        raise ConfigError(f"CALLPLANE_ADMIN_ACCOUNT_SID must be AC followed by 32 lowercase hex digits, got {sid!r}")
    if token and len(token) < 16:
        raise ConfigError("CALLPLANE_ADMIN_AUTH_TOKEN must be at least 16 characters")
    sid = sid or await node_settings.get_setting(db, ADMIN_KEY) or ""
    existing = await accounts.get(db, sid) if sid else None
    if existing is not None:
        if token and not await asyncio.to_thread(verify_token, token, existing.auth_token_hash):
            new_hash = await asyncio.to_thread(hash_token, token)
            existing = await accounts.update(db, existing.sid, {"auth_token_hash": new_hash})
        await node_settings.put_setting(db, ADMIN_KEY, existing.sid)
        return AdminCredentials(existing, None)
    generated = not token
    token = token or ids.token()
    now = clock.wall()
    record = AccountRecord(
        sid=sid or ids.account_sid(),
        friendly_name="Administrator",
        status="active",
        auth_token_hash=await asyncio.to_thread(hash_token, token),
        date_created=now,
        date_updated=now,
        role="Administrator",
    )
    await accounts.create(db, record)
    await node_settings.put_setting(db, ADMIN_KEY, record.sid)
    return AdminCredentials(record, token if generated else None)


def ensure_instance_id(data: Path, ids: IdSource, configured: str = "") -> str:
    """This node's InstanceId: configured, or generated once and kept in ``DATA/instance_id``."""
    if configured:
        if not _INSTANCE_ID.fullmatch(configured):
            raise ConfigError(
                f"CALLPLANE_INSTANCE_ID must be ID followed by 32 lowercase hex digits, got {configured!r}"
            )
        return configured
    path = data / "instance_id"
    if path.exists():
        value = path.read_text().strip()
        if _INSTANCE_ID.fullmatch(value):
            return value
    data.mkdir(parents=True, exist_ok=True)
    value = ids.instance_id()
    path.write_text(value + "\n")
    return value
