"""Shared fixtures: a migrated database on each backend (SQLite file and throwaway PostgreSQL)."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from callplane.store.db import Database
from tests.pg import throwaway_cluster

BACKENDS = ["sqlite", "postgresql"]
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str | None]:
    with throwaway_cluster() as url:
        yield url


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate once per run; each test copies the file (alembic per test would dominate the run time)."""
    import asyncio

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"

    async def build() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        await db.migrate()
        await db.close()

    asyncio.run(build())
    return path


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str | None) -> str | None:
    """A migrated template database; tests clone it with CREATE DATABASE … TEMPLATE (fast)."""
    import asyncio

    if pg_admin_url is None:
        return None

    async def build() -> None:
        conn = await asyncpg.connect(_plain(pg_admin_url))
        try:
            await conn.execute("DROP DATABASE IF EXISTS callplane_template")
            await conn.execute("CREATE DATABASE callplane_template")
        finally:
            await conn.close()
        db = Database(pg_admin_url.rsplit("/", 1)[0] + "/callplane_template")
        await db.migrate()
        await db.close()

    asyncio.run(build())
    return "callplane_template"


@pytest.fixture(params=BACKENDS)
async def db(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    pg_admin_url: str | None,
    pg_template: str | None,
) -> AsyncIterator[Database]:
    """A freshly migrated, empty database on each backend."""
    if request.param == "sqlite":
        target = tmp_path / "callplane.db"
        shutil.copy(sqlite_template, target)
        database = Database(f"sqlite+aiosqlite:///{target}")
        yield database
        await database.close()
        return
    if pg_admin_url is None or pg_template is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; `make test` installs it")
        pytest.skip("PostgreSQL is not installed")
    name = f"callplane_t{os.getpid()}_{next(_counter)}"
    conn = await asyncpg.connect(_plain(pg_admin_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    finally:
        await conn.close()
    database = Database(pg_admin_url.rsplit("/", 1)[0] + "/" + name)
    yield database
    await database.close()
    conn = await asyncpg.connect(_plain(pg_admin_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()
