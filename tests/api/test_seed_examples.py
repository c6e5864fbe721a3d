"""The seed specification's four JSON list examples, reproduced exactly (keys, types, arithmetic, URIs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from callplane.store import calls
from tests.api.conftest import Api
from tests.api.seed import example, filler, record_from_json

AC_JANE = "AC61148eb9d61281750ccc0e13c6094fe1"
AC_LIMIT = "ACae6e420f425248d6a26948c17a9e2acf"
AC_SORT = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
TOKEN = "seed-example-token-000"


def _envelope(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "calls"}


async def _jane_account(api: Api) -> None:
    """75 calls: the three newest are from Jane (example 1), the others older and from elsewhere."""
    await api.add_account(AC_JANE, TOKEN)
    jane = [record_from_json(c) for c in example(1)["calls"]]
    oldest = min(c.date_created for c in jane)
    others = [
        filler(AC_JANE, f"CA{n:032x}", oldest - timedelta(hours=n + 1), sender=f"1555000{n:04d}") for n in range(72)
    ]
    await calls.insert_many(api.db, jane + others)


async def test_example_1_filter_from(api: Api) -> None:
    await _jane_account(api)
    r = await api.client.get(f"/restcomm/2012-04-24/Accounts/{AC_JANE}/Calls.json?From=Jane", auth=(AC_JANE, TOKEN))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == example(1)


async def test_example_2_page_size_one(api: Api) -> None:
    await _jane_account(api)
    r = await api.client.get(f"/2012-04-24/Accounts/{AC_JANE}/Calls.json?PageSize=1", auth=(AC_JANE, TOKEN))
    assert r.status_code == 200
    assert r.json() == example(2)


async def test_example_2_next_page_uri_is_followable(api: Api) -> None:
    await _jane_account(api)
    first = (
        await api.client.get(f"/2012-04-24/Accounts/{AC_JANE}/Calls.json?PageSize=1", auth=(AC_JANE, TOKEN))
    ).json()
    follow = await api.client.get(first["next_page_uri"].replace("/Calls?", "/Calls.json?"), auth=(AC_JANE, TOKEN))
    body = follow.json()
    assert follow.status_code == 200
    assert (body["page"], body["start"], body["end"]) == (1, "1", "1")
    assert [c["sid"] for c in body["calls"]] == [example(1)["calls"][1]["sid"]]


async def test_example_3_limit(api: Api) -> None:
    await api.add_account(AC_LIMIT, TOKEN)
    newest = datetime(2021, 12, 15, 10, 0, tzinfo=UTC)
    records = [filler(AC_LIMIT, f"CA{n:032x}", newest - timedelta(minutes=n)) for n in range(442)]
    records[9] = filler(AC_LIMIT, "CA79805ad182e148799cb2b6fb9381a674", newest - timedelta(minutes=9))
    await calls.insert_many(api.db, records)
    r = await api.client.get(
        f"/2012-04-24/Accounts/{AC_LIMIT}/Calls.json?PageSize=10&Limit=500", auth=(AC_LIMIT, TOKEN)
    )
    assert r.status_code == 200
    body = r.json()
    assert _envelope(body) == _envelope(example(3))
    assert len(body["calls"]) == 10


async def test_example_4_sort_ascending(api: Api) -> None:
    await api.add_account(AC_SORT, TOKEN)
    shown = [record_from_json(c) for c in example(4)["calls"]]
    latest = max(c.date_created for c in shown)
    later = [filler(AC_SORT, f"CA{n:032x}", latest + timedelta(hours=n + 1)) for n in range(72)]
    later[46] = filler(
        AC_SORT,
        "ID463178db235c4f5d88dcaa2e93c891ea-CA77a54b061666eabb5cf2cfb56f7552c8@sip.nexmo.com",
        latest + timedelta(hours=47),
    )
    await calls.insert_many(api.db, shown + later)
    r = await api.client.get(f"/2012-04-24/Accounts/{AC_SORT}/Calls.json?SortBy=DateCreated:asc", auth=(AC_SORT, TOKEN))
    assert r.status_code == 200
    body = r.json()
    assert _envelope(body) == _envelope(example(4))
    assert len(body["calls"]) == 50
    assert body["calls"][:3] == example(4)["calls"]
