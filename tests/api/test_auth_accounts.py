"""Authentication, the account-tree rule, and the Accounts resource."""

from __future__ import annotations

import base64

import pytest

from callplane.store import accounts
from tests.api.conftest import ADMIN, ADMIN_SID, ADMIN_TOKEN, Api

CHILD = ("AC" + "c" * 32, "child-token-0000000")
GRANDCHILD = ("AC" + "d" * 32, "grandchild-token-000")
SIBLING = ("AC" + "e" * 32, "sibling-token-000000")


@pytest.fixture
async def tree(api: Api) -> Api:
    await api.add_account(*CHILD, parent=ADMIN_SID, email="child@example.com")
    await api.add_account(*GRANDCHILD, parent=CHILD[0])
    await api.add_account(*SIBLING, parent=ADMIN_SID)
    return api


def _calls(sid: str) -> str:
    return f"/2012-04-24/Accounts/{sid}/Calls.json"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Basic " + base64.b64encode(f"{ADMIN_SID}:wrong".encode()).decode()},
        {"Authorization": "Basic " + base64.b64encode(f"AC{'9' * 32}:{ADMIN_TOKEN}".encode()).decode()},
    ],
)
async def test_missing_or_bad_credentials_are_401(api: Api, headers: dict[str, str]) -> None:
    r = await api.client.get(_calls(ADMIN_SID), headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Basic realm="callplane"'
    assert r.json()["code"] == 20003


async def test_email_works_as_username(tree: Api) -> None:
    r = await tree.client.get(_calls(CHILD[0]), auth=("child@example.com", CHILD[1]))
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("caller", "target", "status"),
    [
        (ADMIN, ADMIN_SID, 200),
        (ADMIN, CHILD[0], 200),  # parent
        (ADMIN, GRANDCHILD[0], 200),  # grand-parent
        (CHILD, GRANDCHILD[0], 200),
        (CHILD, CHILD[0], 200),
        (CHILD, ADMIN_SID, 403),  # child -> parent
        (GRANDCHILD, CHILD[0], 403),
        (CHILD, SIBLING[0], 403),  # sibling
        (ADMIN, "AC" + "f" * 32, 404),  # unknown (Restcomm answered 500)
        (ADMIN, "not-a-sid", 404),
    ],
)
async def test_account_tree_rule(tree: Api, caller: tuple[str, str], target: str, status: int) -> None:
    r = await tree.client.get(_calls(target), auth=caller)
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["status"] == status


@pytest.mark.parametrize("state", ["suspended", "closed"])
async def test_inactive_account_is_403(api: Api, state: str) -> None:
    await api.add_account(*CHILD, parent=ADMIN_SID, status=state)
    r = await api.client.get(_calls(CHILD[0]), auth=CHILD)
    assert r.status_code == 403
    assert state in r.json()["message"]


async def test_create_sub_account_returns_a_working_token(api: Api) -> None:
    r = await api.client.post(
        "/2012-04-24/Accounts.json", data={"FriendlyName": "Team A", "EmailAddress": "a@example.com"}, auth=ADMIN
    )
    assert r.status_code == 200
    body = r.json()
    assert body["friendly_name"] == "Team A" and body["email_address"] == "a@example.com"
    assert body["status"] == "active" and body["owner_account_sid"] == ADMIN_SID
    assert body["sid"].startswith("AC") and len(body["sid"]) == 34
    assert len(body["auth_token"]) >= 32
    assert body["uri"] == f"/2012-04-24/Accounts/{body['sid']}.json"
    assert body["subresource_uris"]["calls"] == f"/2012-04-24/Accounts/{body['sid']}/Calls.json"
    stored = await accounts.get(api.db, body["sid"])
    assert stored is not None and body["auth_token"] not in stored.auth_token_hash
    mine = await api.client.get(_calls(body["sid"]), auth=(body["sid"], body["auth_token"]))
    assert mine.status_code == 200
    shown_again = await api.client.get(f"/2012-04-24/Accounts/{body['sid']}.json", auth=ADMIN)
    assert "auth_token" not in shown_again.json()


@pytest.mark.parametrize(
    ("form", "status", "word"),
    [
        ({}, 400, "FriendlyName"),
        ({"FriendlyName": "   "}, 400, "FriendlyName"),
        ({"FriendlyName": "x", "EmailAddress": "nope"}, 400, "EmailAddress"),
        ({"FriendlyName": "x", "EmailAddress": "child@example.com"}, 409, "EmailAddress"),
    ],
)
async def test_create_sub_account_bad_input(tree: Api, form: dict[str, str], status: int, word: str) -> None:
    r = await tree.client.post("/2012-04-24/Accounts.json", data=form, auth=ADMIN)
    assert r.status_code == status
    assert word in r.json()["message"]


async def test_list_accounts_shows_self_and_descendants(tree: Api) -> None:
    r = await tree.client.get("/2012-04-24/Accounts.json", auth=CHILD)
    assert sorted(a["sid"] for a in r.json()) == sorted([CHILD[0], GRANDCHILD[0]])


async def test_update_name_status_and_rotate_token(tree: Api) -> None:
    url = f"/2012-04-24/Accounts/{CHILD[0]}.json"
    r = await tree.client.post(url, data={"FriendlyName": "Renamed", "RotateAuthToken": "true"}, auth=CHILD)
    assert r.status_code == 200 and r.json()["friendly_name"] == "Renamed"
    fresh = r.json()["auth_token"]
    assert (await tree.client.get(_calls(CHILD[0]), auth=CHILD)).status_code == 401
    assert (await tree.client.get(_calls(CHILD[0]), auth=(CHILD[0], fresh))).status_code == 200
    # Only an ancestor changes the status; closing cascades to the subtree.
    assert (await tree.client.post(url, data={"Status": "suspended"}, auth=(CHILD[0], fresh))).status_code == 403
    assert (await tree.client.post(url, data={"Status": "bogus"}, auth=ADMIN)).status_code == 400
    closed = await tree.client.post(url, data={"Status": "closed"}, auth=ADMIN)
    assert closed.json()["status"] == "closed"
    assert (await tree.client.get(_calls(GRANDCHILD[0]), auth=GRANDCHILD)).status_code == 403
    reopened = await tree.client.post(url, data={"Status": "active"}, auth=ADMIN)
    assert reopened.json()["status"] == "active"


async def test_account_xml(api: Api) -> None:
    r = await api.client.get(f"/2012-04-24/Accounts/{ADMIN_SID}", auth=ADMIN)
    assert r.headers["content-type"] == "application/xml"
    assert f"<RestcommResponse><Account><Sid>{ADMIN_SID}</Sid>" in r.text
