"""Registrar bindings in the store: replace, remove, expire, and share across handles (nodes)."""

from __future__ import annotations

from callplane.store import registrations as regs
from callplane.store.db import Database
from callplane.store.registrations import BindingRow

NOW = 1_800_000_000.0


def _b(contact: str, ttl: float, aor: str = "sip:alice@callplane", cseq: int = 1) -> BindingRow:
    return BindingRow(aor, contact, NOW + ttl, "call-1", cseq, "127.0.0.1:5099", "UDP", "baresip", "ID" + "0" * 32)


async def test_apply_replace_remove_and_purge(db: Database) -> None:
    await regs.apply(db, "sip:alice@callplane", [_b("<sip:a@1.2.3.4>", 60), _b("<sip:a@5.6.7.8>", 3600)], [])
    assert [b.contact for b in await regs.lookup(db, "sip:alice@callplane", NOW)] == [
        "<sip:a@1.2.3.4>",
        "<sip:a@5.6.7.8>",
    ]
    refreshed = _b("<sip:a@1.2.3.4>", 7200, cseq=2)
    await regs.apply(db, "sip:alice@callplane", [refreshed], ["<sip:a@5.6.7.8>"])
    assert await regs.lookup(db, "sip:alice@callplane", NOW) == [refreshed]
    await regs.apply(db, "sip:bob@callplane", [_b("<sip:b@1.1.1.1>", 10, aor="sip:bob@callplane")], [])
    assert [b.aor for b in await regs.load_all(db, NOW)] == ["sip:alice@callplane", "sip:bob@callplane"]
    assert await regs.lookup(db, "sip:bob@callplane", NOW + 11) == []
    assert await regs.purge(db, NOW + 11) == 1
    assert [b.aor for b in await regs.load_all(db, NOW)] == ["sip:alice@callplane"]


async def test_bindings_are_visible_to_another_node(db: Database) -> None:
    await regs.apply(db, "sip:carol@callplane", [_b("<sip:c@9.9.9.9>", 60, aor="sip:carol@callplane")], [])
    other = Database(db.url)  # a second node sharing the database
    try:
        assert [b.contact for b in await regs.lookup(other, "sip:carol@callplane", NOW)] == ["<sip:c@9.9.9.9>"]
    finally:
        await other.close()
