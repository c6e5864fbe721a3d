"""Authentication, the account-tree rule, and the Accounts resource."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from xml.etree import ElementTree

import httpx
import pytest

from callplane.api.app import create_app
from callplane.core.clock import FakeClock
from callplane.core.ids import IdSource
from callplane.core.secrets import hash_token
from callplane.store import accounts, registrations
from callplane.store.db import Database
from callplane.store.registrations import BindingRow
from tests.api.conftest import ADMIN, ADMIN_SID, ADMIN_TOKEN, T0, Api

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


async def test_unknown_users_cost_one_full_key_derivation_like_a_wrong_token(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown AccountSid or email is refused only after the same PBKDF2 work as a known one with a wrong token,
    so response times do not reveal which accounts exist."""
    made = await api.client.post(
        "/2012-04-24/Accounts.json", data={"FriendlyName": "real", "EmailAddress": "r@x.io"}, auth=ADMIN
    )
    real = made.json()["sid"]  # created by the API: a production-cost hash
    derivations: list[int] = []
    original = hashlib.pbkdf2_hmac

    def counting(name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
        derivations.append(iterations)
        return original(name, password, salt, iterations)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counting)
    costs = {}
    for user in (real, "AC" + "9" * 32, "r@x.io", "nobody@x.io"):
        derivations.clear()
        assert (await api.client.get(_calls(real), auth=(user, "wrong-token-123456"))).status_code == 401
        costs[user] = list(derivations)
    assert len(set(map(tuple, costs.values()))) == 1 and len(costs[real]) == 1, costs


async def test_suspending_an_account_suspends_its_sub_accounts_and_reactivating_restores_them(tree: Api) -> None:
    url = f"/2012-04-24/Accounts/{CHILD[0]}.json"
    grandchild_url = f"/2012-04-24/Accounts/{GRANDCHILD[0]}.json"
    assert (await tree.client.post(url, data={"Status": "suspended"}, auth=ADMIN)).json()["status"] == "suspended"
    assert (await tree.client.get(_calls(GRANDCHILD[0]), auth=GRANDCHILD)).status_code == 403
    assert (await tree.client.get(grandchild_url, auth=ADMIN)).json()["status"] == "suspended"
    assert (await tree.client.get(_calls(SIBLING[0]), auth=SIBLING)).status_code == 200  # not in the subtree
    assert (await tree.client.post(url, data={"Status": "active"}, auth=ADMIN)).json()["status"] == "active"
    assert (await tree.client.get(_calls(GRANDCHILD[0]), auth=GRANDCHILD)).status_code == 200
    # A closed sub-account stays closed whatever its parent does.
    assert (await tree.client.post(grandchild_url, data={"Status": "closed"}, auth=ADMIN)).status_code == 200
    await tree.client.post(url, data={"Status": "suspended"}, auth=ADMIN)
    await tree.client.post(url, data={"Status": "active"}, auth=ADMIN)
    assert (await tree.client.get(grandchild_url, auth=ADMIN)).json()["status"] == "closed"


async def test_xml_output_replaces_characters_xml_cannot_carry(api: Api) -> None:
    url = f"/2012-04-24/Accounts/{ADMIN_SID}"
    r = await api.client.post(url, data={"FriendlyName": "Bell\x07 Esc\x1b Tab\there"}, auth=ADMIN)
    assert r.status_code == 200
    root = ElementTree.fromstring(r.content)  # a well-formed document
    assert root.findtext("Account/FriendlyName") == "Bell\ufffd Esc\ufffd Tab\there"
    assert (await api.client.get(url + ".json", auth=ADMIN)).json()["friendly_name"] == "Bell\x07 Esc\x1b Tab\there"


async def test_a_rename_by_the_parent_and_a_token_rotation_at_once_both_take_effect(tree: Api) -> None:
    url = f"/2012-04-24/Accounts/{CHILD[0]}.json"
    renamed, rotated = await asyncio.gather(
        tree.client.post(url, data={"FriendlyName": "Renamed by parent"}, auth=ADMIN),
        tree.client.post(url, data={"RotateAuthToken": "true"}, auth=CHILD),
    )
    assert renamed.status_code == rotated.status_code == 200
    fresh = (CHILD[0], rotated.json()["auth_token"])
    now = await tree.client.get(url, auth=fresh)  # the rotation held
    assert now.status_code == 200 and now.json()["friendly_name"] == "Renamed by parent"  # and so did the rename
    assert (await tree.client.get(url, auth=CHILD)).status_code == 401


async def test_a_change_made_elsewhere_applies_within_a_second_and_a_token_rotated_elsewhere_at_once(
    db: Database,
) -> None:
    clock = FakeClock(wall=T0)
    app = create_app(db, ids=IdSource(7), clock=clock)
    api = Api(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://callplane.test"), db)
    await api.add_account(ADMIN_SID, ADMIN_TOKEN)
    await api.add_account(*CHILD, parent=ADMIN_SID)
    async with api.client:
        assert (await api.client.get(_calls(CHILD[0]), auth=CHILD)).status_code == 200
        # Another node suspends the account: this node reuses the row it read for up to a second.
        await accounts.update(db, CHILD[0], {"status": "suspended"})
        assert (await api.client.get(_calls(CHILD[0]), auth=CHILD)).status_code == 200
        clock.advance(1.0)
        assert (await api.client.get(_calls(CHILD[0]), auth=CHILD)).status_code == 403
        await accounts.update(db, CHILD[0], {"status": "active"})
        clock.advance(1.0)
        assert (await api.client.get(_calls(CHILD[0]), auth=CHILD)).status_code == 200
        # Another node rotates the token: the new one works at once.
        fresh = "rotated-token-000000"
        await accounts.update(db, CHILD[0], {"auth_token_hash": hash_token(fresh, iterations=1000)})
        assert (await api.client.get(_calls(CHILD[0]), auth=(CHILD[0], fresh))).status_code == 200
        clock.advance(1.0)
        assert (await api.client.get(_calls(CHILD[0]), auth=CHILD)).status_code == 401


async def test_closing_releases_the_subtrees_numbers_and_clients_and_suspending_keeps_them(tree: Api) -> None:
    """As Restcomm did: a closed account's numbers can be taken by another account, its Clients are gone (with
    their registrations); a suspension only blocks them."""

    def base(who: tuple[str, str]) -> str:
        return f"/2012-04-24/Accounts/{who[0]}"

    for n, who in enumerate((CHILD, GRANDCHILD, SIBLING)):
        form = {"PhoneNumber": f"+1555000{n}"}
        number = await tree.client.post(f"{base(who)}/IncomingPhoneNumbers.json", data=form, auth=who)
        assert number.status_code in (200, 201), number.text
        form = {"Login": f"user{n}", "Password": "Secret-2026"}
        client = await tree.client.post(f"{base(who)}/Clients.json", data=form, auth=who)
        assert client.status_code in (200, 201), client.text
    phone = BindingRow("sip:user1@127.0.0.1", "<sip:user1@127.0.0.1:5062>", 2e9, "cid", 1, account_sid=GRANDCHILD[0])
    await registrations.apply(tree.db, phone.aor, [phone], [])
    assert len(await registrations.lookup(tree.db, phone.aor, 0.0)) == 1

    async def held(who: tuple[str, str]) -> tuple[int, int]:
        numbers = await tree.client.get(f"{base(who)}/IncomingPhoneNumbers.json", auth=ADMIN)
        clients = await tree.client.get(f"{base(who)}/Clients.json", auth=ADMIN)
        return len(numbers.json()["incomingPhoneNumbers"]), len(clients.json())

    child_url = f"/2012-04-24/Accounts/{CHILD[0]}.json"
    assert (await tree.client.post(child_url, data={"Status": "suspended"}, auth=ADMIN)).status_code == 200
    assert [await held(w) for w in (CHILD, GRANDCHILD, SIBLING)] == [(1, 1)] * 3
    assert (await tree.client.post(child_url, data={"Status": "closed"}, auth=ADMIN)).status_code == 200
    assert [await held(w) for w in (CHILD, GRANDCHILD, SIBLING)] == [(0, 0), (0, 0), (1, 1)]
    assert await registrations.lookup(tree.db, phone.aor, 0.0) == []
    # The grandchild's number is free again: the sibling takes it.
    form = {"PhoneNumber": "+15550001"}
    again = await tree.client.post(f"{base(SIBLING)}/IncomingPhoneNumbers.json", data=form, auth=SIBLING)
    assert again.status_code in (200, 201), again.text
