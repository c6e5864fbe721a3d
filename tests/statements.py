"""The SQL statements a database runs: for tests that hold a hot path to its number of store round trips."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import event

from callplane.store.db import Database

__all__ = ["statements"]


@contextlib.contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements ``db`` runs meanwhile (on whichever of its engines runs them), one entry per execute or
    executemany."""
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    engines = [db.engine.sync_engine, *([db._sync] if db._sync is not None else [])]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
