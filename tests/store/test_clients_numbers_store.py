"""Clients and IncomingPhoneNumbers rows on both backends: round trip, lookups, uniqueness."""

from __future__ import annotations

import pytest

from callplane.core.errors import Conflict
from callplane.core.phone import to_e164
from callplane.store import clients, numbers
from callplane.store.clients import ClientRecord
from callplane.store.numbers import NumberRecord
from tests.api.conftest import ADMIN_SID, T0, Api


def _client(sid: str, login: str) -> ClientRecord:
    return ClientRecord(sid, ADMIN_SID, T0, T0, login, login, "callplane", "0" * 32, "0" * 64, voice_url="http://a/")


async def test_client_round_trip_and_login_is_unique(api: Api) -> None:
    alice = _client("CL" + "1" * 32, "alice")
    await clients.add(api.db, alice)
    assert await clients.get(api.db, alice.sid) == alice
    assert await clients.by_login(api.db, "alice") == alice
    assert await clients.by_login(api.db, "bob") is None
    with pytest.raises(Conflict):
        await clients.add(api.db, _client("CL" + "2" * 32, "alice"))


async def test_number_round_trip_and_number_is_unique(api: Api) -> None:
    pn = NumberRecord("PN" + "1" * 32, ADMIN_SID, T0, T0, "main line", "+15551230000", voice_caller_id_lookup=True)
    await numbers.add(api.db, pn)
    assert await numbers.get(api.db, pn.sid) == pn
    assert await numbers.by_phone_number(api.db, "+15551230000") == pn
    with pytest.raises(Conflict):
        await numbers.add(api.db, NumberRecord("PN" + "2" * 32, ADMIN_SID, T0, T0, "again", "+15551230000"))


@pytest.mark.parametrize(
    ("given", "e164"),
    [
        ("+1 (555) 123-0000", "+15551230000"),
        ("0044 20 7946 0000", "+442079460000"),
        ("15551230000", "+15551230000"),
        ("alice", None),
        ("+0123", None),
        ("+1234567890123456", None),
        ("", None),
    ],
)
def test_to_e164(given: str, e164: str | None) -> None:
    assert to_e164(given) == e164
