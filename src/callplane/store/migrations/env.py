"""Alembic environment: runs migrations over the async engine the node uses."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from callplane.store.db import MIGRATION_LOCK
from callplane.store.schema import metadata

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    locking = connection.dialect.name == "postgresql"
    if locking:
        # Nodes sharing a database may start together. A session lock, taken and committed before alembic reads
        # the current revision: a node that waited here then finds the revision the first node wrote, and has
        # nothing left to do. (SQLite admits one writer at a time by itself.)
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()
    try:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if locking:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()


async def _run_async() -> None:
    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
