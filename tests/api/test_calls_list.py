"""GET /Calls: filters, sorting, paging edges, representation selection and bad input, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callplane.store import calls
from callplane.store.calls import CallRecord
from tests.api.conftest import ADMIN, ADMIN_SID, Api

BASE = f"/2012-04-24/Accounts/{ADMIN_SID}/Calls"
T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _call(n: int, **over: Any) -> CallRecord:
    created = T + timedelta(minutes=n)
    values: dict[str, Any] = {
        "sid": f"ID{'0' * 32}-CA{n:032x}",
        "instance_id": "ID" + "0" * 32,
        "account_sid": ADMIN_SID,
        "date_created": created,
        "date_updated": created,
        "to": "+15550000000",
        "from_": "+15551111111",
        "status": "completed",
        "direction": "inbound",
        "start_time": created,
        "end_time": created + timedelta(seconds=n),
        "duration": n,
    }
    values.update(over)
    return CallRecord(**values)


SET = [
    _call(0, to="+14155550100", from_="client:alice", status="completed", direction="inbound"),
    _call(1, to="client:bob", from_="+14155550100", status="busy", direction="outbound-api", duration=0),
    _call(2, to="sip:carol@example.com", from_="client:alice", status="no-answer", direction="outbound-dial"),
    _call(3, to="+442071234567", from_="+14155550199", status="failed", direction="inbound"),
    _call(4, to="+14155550100", from_="client:malice", status="canceled", direction="outbound-api"),
    _call(5, to="client:bob", from_="+14155550100", status="in-progress", end_time=None, duration=None),
    _call(6, to="+14155550100", from_="client:alice", status="ringing", start_time=None, end_time=None),
    _call(7, to="+14155550100", from_="client:alice", status="queued", start_time=None, end_time=None),
]
CHILD = _call(8, parent_call_sid=SET[0].sid, direction="outbound-dial", to="client:bob", from_="+14155550100")


def _sids(body: dict[str, Any]) -> list[str]:
    return [c["sid"] for c in body["calls"]]


def _n(*ns: int) -> list[str]:
    return [f"ID{'0' * 32}-CA{n:032x}" for n in ns]


async def _get(api: Api, query: str = "", *, status: int = 200) -> dict[str, Any]:
    r = await api.client.get(f"{BASE}.json{query}", auth=ADMIN)
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture
async def loaded(api: Api) -> Api:
    await calls.insert_many(api.db, [*SET, CHILD])
    return api


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?From=client:alice", [7, 6, 2, 0]),  # suffix match: client:malice does not end with client:alice
        ("?From=alice", [7, 6, 4, 2, 0]),  # but it does end with alice
        ("?To=0100", [7, 6, 4, 0]),
        ("?To=%2B14155550100", [7, 6, 4, 0]),
        ("?To=client:bob", [8, 5, 1]),
        ("?To=sip:carol@example.com", [2]),
        ("?To=%2544%25", [3]),  # wildcard: anything containing 44 (in +442071234567)
        ("?From=%2B1415555019_", [3]),  # _ matches one character
        ("?Status=busy", [1]),
        ("?Status=in-progress", [5]),
        ("?Status=NO_ANSWER", [2]),
        ("?Status=Canceled", [4]),
        ("?Status=queued", [7]),
        ("?Status=ringing", [6]),
        ("?Status=failed", [3]),
        ("?Status=completed", [8, 0]),
        ("?ParentCallSid=" + SET[0].sid, [8]),
        ("?ParentCallSid=ID00-CAnothere", []),
        ("?From=client:alice&Status=completed", [0]),
        ("?StartTime=2024-05-01T12:03:00Z", [8, 5, 4, 3]),
        ("?StartTime=2024-05-01T14:03:00%2B02:00", [8, 5, 4, 3]),
        ("?StartTime=2024-05-02", []),
        ("?StartTime=2024-05-01", [8, 5, 4, 3, 2, 1, 0]),  # ringing/queued calls have not started
        ("?EndTime=2024-05-01T12:02:02Z", [2, 1, 0]),
        ("?EndTime=2024-05-01", [8, 4, 3, 2, 1, 0]),  # the whole day; unfinished calls have no end
        ("?EndTime=2024-04-30", []),
        ("?StartTime=2024-05-01 12:01:00.820000000&EndTime=2024-05-01T12:03:05Z", [3, 2]),
    ],
)
async def test_filters(loaded: Api, query: str, expected: list[int]) -> None:
    body = await _get(loaded, query)
    assert _sids(body) == _n(*expected)
    assert body["total"] == len(expected)


SORTS = {
    "DateCreated": lambda c: (c.date_created, c.sid),
    "From": lambda c: (c.from_, c.date_created, c.sid),
    "To": lambda c: (c.to, c.date_created, c.sid),
    "Direction": lambda c: (c.direction, c.date_created, c.sid),
    "Status": lambda c: (c.status, c.date_created, c.sid),
    "Duration": lambda c: (c.duration if c.end_time else 0, c.date_created, c.sid),
}


@pytest.mark.parametrize("field", list(SORTS))
@pytest.mark.parametrize("direction", ["", ":asc", ":desc", ":DESC"])
async def test_sort_every_field_both_directions(loaded: Api, field: str, direction: str) -> None:
    body = await _get(loaded, f"?SortBy={field}{direction}")
    expected = sorted([*SET, CHILD], key=SORTS[field], reverse=direction.lower() == ":desc")
    assert _sids(body) == [c.sid for c in expected]


async def test_default_order_is_newest_first(loaded: Api) -> None:
    assert _sids(await _get(loaded)) == _n(8, 7, 6, 5, 4, 3, 2, 1, 0)


@pytest.mark.parametrize("field", list(SORTS))
async def test_after_sid_walks_every_sort_without_gaps(loaded: Api, field: str) -> None:
    for direction in (":asc", ":desc"):
        everything = _sids(await _get(loaded, f"?SortBy={field}{direction}"))
        walked: list[str] = []
        page, after = 0, ""
        while True:
            body = await _get(loaded, f"?SortBy={field}{direction}&PageSize=2&Page={page}{after}")
            walked += _sids(body)
            if body["next_page_uri"] == "null":
                break
            page += 1
            after = "&AfterSid=" + body["calls"][-1]["sid"]
        assert walked == everything


async def test_paging_arithmetic_and_last_page(loaded: Api) -> None:
    first = await _get(loaded, "?PageSize=4")
    assert {k: first[k] for k in ("page", "num_pages", "page_size", "total", "start", "end")} == {
        "page": 0,
        "num_pages": 2,
        "page_size": 4,
        "total": 9,
        "start": "0",
        "end": "3",
    }
    assert first["previous_page_uri"] == "null"
    assert first["next_page_uri"] == f"{BASE}?Page=1&PageSize=4&AfterSid={_n(5)[0]}&Limit=10000"
    last = await _get(loaded, "?PageSize=4&Page=2")
    assert _sids(last) == _n(0)
    assert (last["start"], last["end"], last["next_page_uri"]) == ("8", "9", "null")
    assert last["previous_page_uri"] == f"{BASE}?Page=1&PageSize=4&Limit=10000"
    assert last["last_page_uri"] == f"{BASE}?Page=2&PageSize=4&Limit=10000"


async def test_page_size_one_and_limit_caps_total(loaded: Api) -> None:
    body = await _get(loaded, "?PageSize=1&Limit=3")
    assert (body["total"], body["num_pages"], body["limit"]) == (3, 3, 3)
    assert _sids(body) == _n(8)
    tail = await _get(loaded, "?PageSize=2&Limit=3&Page=1")
    assert _sids(tail) == _n(6)  # the listing spans only the first three records
    assert tail["end"] == "3"


async def test_empty_list(api: Api) -> None:
    body = await _get(api)
    assert body["calls"] == []
    assert (body["total"], body["num_pages"], body["start"], body["end"]) == (0, 0, "0", "0")
    assert body["next_page_uri"] == "null" and body["previous_page_uri"] == "null"


async def test_page_beyond_the_last_is_400(loaded: Api) -> None:
    body = await _get(loaded, "?PageSize=4&Page=3", status=400)
    assert body["status"] == 400 and "Page" in body["message"]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("?SortBy=Price", "SortBy"),
        ("?SortBy=:asc", "SortBy"),
        ("?SortBy=DateCreated:sideways", "SortBy"),
        ("?Page=abc", "Page"),
        ("?Page=-1", "Page"),
        ("?PageSize=0", "PageSize"),
        ("?PageSize=-5", "PageSize"),
        ("?PageSize=1001", "PageSize"),
        ("?PageSize=ten", "PageSize"),
        ("?Limit=0", "Limit"),
        ("?Limit=x", "Limit"),
        ("?Limit=100001", "Limit"),
        ("?StartTime=yesterday", "StartTime"),
        ("?EndTime=2024-13-45", "EndTime"),
        ("?Status=ringingg", "Status"),
        ("?AfterSid=CAnope", "AfterSid"),
    ],
)
async def test_bad_input_is_400_naming_the_parameter(loaded: Api, query: str, names: str) -> None:
    body = await _get(loaded, query, status=400)
    assert body["code"] == 20001 and body["status"] == 400
    assert names in body["message"]
    assert body["more_info"].endswith("/20001")


async def test_limit_up_to_its_cap_is_accepted(loaded: Api) -> None:
    body = await _get(loaded, "?Limit=100000")
    assert body["limit"] == 100000 and body["total"] == 9


async def test_bad_input_in_xml(loaded: Api) -> None:
    r = await loaded.client.get(f"{BASE}?PageSize=0", auth=ADMIN)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/xml"
    assert "<RestException><Code>20001</Code><Message>PageSize must be between 1 and 1000, got 0</Message>" in r.text


async def test_after_sid_of_another_account_is_400(loaded: Api) -> None:
    await loaded.add_account("AC" + "b" * 32, "other-token-0000000", parent=ADMIN_SID)
    other = _call(50, account_sid="AC" + "b" * 32, sid="CA" + "e" * 32)
    await calls.insert_one(loaded.db, other)
    await _get(loaded, f"?AfterSid={other.sid}", status=400)


ODD = [
    _call(20, to="client:Alice", from_="+1555\\"),
    _call(21, to="client:alice", from_="a*b?c[d]"),
]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        # Case-sensitive on both backends, with and without wildcards.
        ("To", "Alice", [20]),
        ("To", "ALICE", []),
        ("To", "%Alice", [20]),
        ("To", "%ALICE", []),
        ("To", "client:A%", [20]),
        ("To", "client:_lice", [21, 20]),
        # A backslash matches itself (PostgreSQL's LIKE would take it for an escape and fail at the end).
        ("From", "\\", [20]),
        ("From", "%\\", [20]),
        ("From", "5_\\", [20]),
        # SQLite's GLOB specials match themselves too.
        ("From", "b?c[d]", [21]),
        ("From", "%b?c[d]", [21]),
        ("From", "%a*", []),
        ("From", "%?c[d]", [21]),
        ("From", "%[d", []),
        ("From", "_[d]", [21]),
        # The range's upper bound cannot be formed past U+10FFFF: the LIKE answers instead (was a 500).
        ("To", "\U0010ffffalice", []),
        ("To", "\U0010ffff", []),
    ],
)
async def test_to_from_filters_answer_the_same_on_both_databases(
    api: Api, field: str, value: str, expected: list[int]
) -> None:
    await calls.insert_many(api.db, ODD)
    r = await api.client.get(f"{BASE}.json", params={field: value}, auth=ADMIN)
    assert r.status_code == 200, r.text
    assert _sids(r.json()) == _n(*expected)
