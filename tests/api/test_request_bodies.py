"""POST bodies: form encoding only (415 otherwise), read as a stream and refused with 413 past the cap."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callplane.api.forms import MAX_BODY
from tests.api.conftest import ADMIN, ADMIN_SID, Api

ACCOUNT = f"/2012-04-24/Accounts/{ADMIN_SID}.json"


async def _name(api: Api) -> str:
    name: str = (await api.client.get(ACCOUNT, auth=ADMIN)).json()["friendly_name"]
    return name


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        (b'{"FriendlyName": true}', "application/json"),
        (b'{"FriendlyName": ["a"]}', "application/json; charset=utf-8"),
        (b"FriendlyName=x", "text/plain"),
        (b"FriendlyName=x", None),
        (
            b'--b\r\nContent-Disposition: form-data; name="FriendlyName"\r\n\r\nx\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        ),
    ],
)
async def test_anything_but_a_form_is_415_and_changes_nothing(api: Api, content: bytes, ctype: str | None) -> None:
    before = await _name(api)
    headers = {"Content-Type": ctype} if ctype else {}
    r = await api.client.post(ACCOUNT, content=content, headers=headers, auth=ADMIN)
    assert r.status_code == 415, r.text
    assert "application/x-www-form-urlencoded" in r.json()["message"]
    assert await _name(api) == before


async def test_a_form_is_read_and_an_empty_body_is_no_fields(api: Api) -> None:
    r = await api.client.post(ACCOUNT, data={"FriendlyName": "Zoë & co"}, auth=ADMIN)
    assert r.status_code == 200 and r.json()["friendly_name"] == "Zoë & co"
    r = await api.client.post(ACCOUNT, auth=ADMIN)
    assert r.status_code == 200 and r.json()["friendly_name"] == "Zoë & co"


async def test_a_declared_oversized_body_is_413(api: Api) -> None:
    r = await api.client.post(
        ACCOUNT, data={"FriendlyName": "x" * MAX_BODY}, auth=ADMIN, headers={"Accept": "application/json"}
    )
    assert r.status_code == 413
    assert str(MAX_BODY) in r.json()["message"]


async def test_an_undeclared_oversized_body_is_refused_before_it_is_read_whole(api: Api) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b"FriendlyName="
        for _ in range(1000):  # 16 MB if it were all read
            sent += 1
            yield b"x" * 16_384

    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    r = await api.client.post(ACCOUNT, content=chunks(), headers=headers, auth=ADMIN)
    assert r.status_code == 413
    assert sent <= MAX_BODY // 16_384 + 2
    assert await _name(api) != "x"


async def test_a_nul_in_a_form_field_is_400_and_changes_nothing(api: Api) -> None:
    before = await _name(api)
    r = await api.client.post(
        ACCOUNT,
        content=b"FriendlyName=a%00b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=ADMIN,
    )
    assert r.status_code == 400, r.text
    assert r.json()["message"] == "Parameter 'FriendlyName' contains a NUL character"
    assert await _name(api) == before


@pytest.mark.parametrize("query", ["To=%00", "From=a%00", "StartTime=%002020-01-01", "Status=%00"])
async def test_a_nul_in_a_query_parameter_is_400(api: Api, query: str) -> None:
    r = await api.client.get(f"/2012-04-24/Accounts/{ADMIN_SID}/Calls.json?{query}", auth=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["message"] == "Query parameters may not contain a NUL character (%00)"
    r = await api.client.get(f"/2012-04-24/Accounts/{ADMIN_SID}/Calls?{query}", auth=ADMIN)
    assert r.status_code == 400 and r.text.startswith("<?xml") and "NUL character" in r.text
