"""The database handle: engine creation, SQLite tuning, migrations and driver-error translation."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Table, create_engine, event, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import Executable

from callplane.core.errors import Conflict, StoreError

T = TypeVar("T")

_MIGRATIONS = Path(__file__).with_name("migrations")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# pg_advisory_lock key that serialises migrations between nodes ("callplan" in ASCII: unlikely to clash).
MIGRATION_LOCK = 0x63616C6C706C616E


def to_us(value: datetime) -> int:
    """Aware datetime -> integer microseconds since the epoch (the storage form of every timestamp)."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, UTC)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Driver errors become the store's own error types at this one boundary."""
    try:
        yield
    except exc.IntegrityError as e:
        raise Conflict(str(e.orig)) from e
    except exc.SQLAlchemyError as e:
        raise StoreError(str(e)) from e
    except OSError as e:
        raise StoreError(str(e)) from e


def _alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


_ALEMBIC = threading.Lock()  # alembic's ``context`` is one module-global proxy: one upgrade per process at a time


def _upgrade(url: str) -> None:
    with _ALEMBIC, _sqlite_file_lock(url):
        command.upgrade(_alembic_config(url), "head")


@contextlib.contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    """Serialise migrations of one SQLite file between processes (PostgreSQL's advisory lock is in env.py).

    SQLite admits one writer at a time, but alembic reads the revision before it writes, so two processes that
    start together would both try to create the tables."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        yield
        return
    with open(f"{parsed.database}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Database:
    """One engine per process. SQLite runs in WAL mode; PostgreSQL uses asyncpg with a bounded pool.

    :meth:`run` executes a whole unit of work (a plain function of a sync ``Connection``) in one transaction. It is
    the hot path's door (the engine's record writer, the outbox reads): on a SQLite file the unit runs in the
    store's own thread on the synchronous driver, one hand-over for the whole transaction instead of several per
    statement through aiosqlite (about a tenth of the CPU); elsewhere it runs on the async engine
    (``AsyncConnection.run_sync``)."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self._sync: Engine | None = None
        self._sync_conn: Connection | None = None  # the store thread's own, kept open (no pool checkout per unit)
        self._thread: ThreadPoolExecutor | None = None
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                self._sync = create_engine(
                    parsed.set(drivername="sqlite+pysqlite"),
                    pool_size=1,
                    max_overflow=0,
                    connect_args={"check_same_thread": False},  # used by the store thread only; closed from the loop
                )
                event.listen(self._sync, "connect", _sqlite_pragmas)
                self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
            self.engine: AsyncEngine = create_async_engine(url, pool_size=pool_size, max_overflow=4)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(url, pool_size=pool_size, max_overflow=4, pool_pre_ping=True)

    def insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """An INSERT of this backend's dialect: both offer ``on_conflict_do_update`` / ``on_conflict_do_nothing``."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    async def migrate(self) -> None:
        """Upgrade the schema to the newest revision (alembic runs its own loop, so in a worker thread).

        Nodes sharing a PostgreSQL database may start together: ``migrations/env.py`` holds an advisory lock for
        the whole upgrade, so one node migrates and the others wait, then find the schema current. SQLite admits one
        writer at a time by itself."""
        with translate_errors():
            await asyncio.to_thread(_upgrade, self.url)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        with translate_errors():
            async with self.engine.connect() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        with translate_errors():
            async with self.engine.begin() as conn:
                yield conn

    async def run(self, unit: Callable[[Connection], T]) -> T:
        """``unit(conn)`` in one transaction, committed when it returns, rolled back when it raises (see the class)."""
        with translate_errors():
            if self._sync is None or self._thread is None:
                async with self.engine.begin() as conn:
                    return await conn.run_sync(unit)
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._run_sync, unit)

    def _run_sync(self, unit: Callable[[Connection], T]) -> T:
        assert self._sync is not None
        conn = self._sync_conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._sync_conn = self._sync.connect()
        with conn.begin():
            return unit(conn)

    def _close_sync(self) -> None:
        if self._sync_conn is not None:
            self._sync_conn.close()
            self._sync_conn = None
        if self._sync is not None:
            self._sync.dispose()

    async def analyze(self) -> None:
        """Refresh planner statistics after a bulk load. On PostgreSQL also VACUUM, which sets the visibility map
        so the covering indexes answer counts with index-only scans instead of visiting every heap page."""
        with translate_errors():
            async with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    await conn.execute(text("VACUUM (ANALYZE)"))
                else:
                    await conn.execute(text("ANALYZE"))
                    await conn.commit()

    async def close(self) -> None:
        if self._sync is not None and self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close_sync)
            self._thread.shutdown()
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        "busy_timeout=5000",
        "cache_size=-65536",
        "temp_store=MEMORY",
        "mmap_size=268435456",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


async def first_with_status(
    db: Database, query: Executable, params: dict[str, Any]
) -> tuple[dict[str, Any], str] | None:
    """The first row of ``query`` (a record's columns joined with its account's, labelled ``account_status``), in one
    unit of work on the store's cheap path: the record's columns and the account's status apart; None for no row."""
    row = await db.run(lambda conn: conn.execute(query, params).mappings().first())
    if row is None:
        return None
    values = dict(row)
    return values, str(values.pop("account_status"))
