"""The Clients resource through the real API on both databases (issue 9; restcomm-behaviour §6)."""

from __future__ import annotations

import asyncio
import hashlib
import xml.etree.ElementTree as ET

import httpx
import pytest

from callplane.api.app import create_app
from callplane.core.clock import FakeClock
from callplane.core.ids import IdSource
from callplane.store import clients as store_clients
from callplane.store import registrations
from callplane.store.registrations import BindingRow
from tests.api.conftest import ADMIN, ADMIN_SID, T0, Api

CHILD = ("AC" + "c" * 32, "child-token-0123456789")
SIBLING = ("AC" + "e" * 32, "sibling-token-0123456789")
BASE = f"/2012-04-24/Accounts/{ADMIN_SID}/Clients"
DATE = "Thu, 1 Jan 2026 00:00:00 +0000"
PASSWORD = "Secret-2026"


async def _create(api: Api, login: str = "alice", base: str = BASE, auth: tuple[str, str] = ADMIN, **more: str) -> dict:  # type: ignore[type-arg]
    r = await api.client.post(f"{base}.json", data={"Login": login, "Password": PASSWORD, **more}, auth=auth)
    assert r.status_code == 200, r.text
    body: dict = r.json()  # type: ignore[type-arg]
    return body


def _expected(sid: str, login: str = "alice", **changed: object) -> dict[str, object]:
    """The JSON of a Client; null values are omitted, as in every representation of the API."""
    full: dict[str, object] = {
        "sid": sid,
        "date_created": DATE,
        "date_updated": DATE,
        "account_sid": ADMIN_SID,
        "api_version": "2012-04-24",
        "friendly_name": login,
        "login": login,
        "password_algorithm": "MD5",
        "status": 1,
        "voice_url": None,
        "voice_method": "POST",
        "voice_fallback_url": None,
        "voice_fallback_method": "POST",
        "voice_application_sid": None,
        "uri": f"{BASE}/{sid}.json",
    } | changed
    return {k: v for k, v in full.items() if v is not None}


async def test_create_get_list_update_delete_json(api: Api) -> None:
    made = await _create(api)
    sid = made["sid"]
    assert sid.startswith("CL") and len(sid) == 34
    assert made == _expected(sid)
    assert list(made) == list(_expected(sid))  # §6's order
    assert (await api.client.get(f"{BASE}/{sid}.json", auth=ADMIN)).json() == made
    second = await _create(api, "bob", FriendlyName="Bob's desk", VoiceUrl="https://app.test/bob", VoiceMethod="get")
    assert second == _expected(
        second["sid"], "bob", friendly_name="Bob's desk", voice_url="https://app.test/bob", voice_method="GET"
    )
    listing = await api.client.get(f"{BASE}.json", auth=ADMIN)
    # A plain array, oldest first (then by sid: the fake clock stands still).
    assert listing.status_code == 200 and listing.json() == sorted([made, second], key=lambda c: c["sid"])

    changes = {
        "FriendlyName": "Alice",
        "Status": "0",
        "VoiceUrl": "http://app.test/a",
        "VoiceMethod": "GET",
        "VoiceFallbackUrl": "http://app.test/fb",
        "VoiceFallbackMethod": "get",
        "VoiceApplicationSid": "AP" + "1" * 32,
    }
    updated = await api.client.post(f"{BASE}/{sid}.json", data=changes, auth=ADMIN)
    assert updated.status_code == 200
    assert updated.json() == _expected(
        sid,
        friendly_name="Alice",
        status=0,
        voice_url="http://app.test/a",
        voice_method="GET",
        voice_fallback_url="http://app.test/fb",
        voice_fallback_method="GET",
        voice_application_sid="AP" + "1" * 32,
    )
    put = await api.client.put(f"{BASE}/{sid}.json", data={"Status": "true", "VoiceUrl": ""}, auth=ADMIN)
    assert (put.json()["status"], put.json().get("voice_url"), put.json()["friendly_name"]) == (1, None, "Alice")

    gone = await api.client.delete(f"{BASE}/{sid}.json", auth=ADMIN)
    assert gone.status_code == 204 and gone.content == b""
    missing = await api.client.get(f"{BASE}/{sid}.json", auth=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["message"] == f"Client {sid} was not found in account {ADMIN_SID}"
    assert (await api.client.delete(f"{BASE}/{sid}.json", auth=ADMIN)).status_code == 404
    assert [c["login"] for c in (await api.client.get(f"{BASE}.json", auth=ADMIN)).json()] == ["bob"]


async def test_xml_representations(api: Api) -> None:
    sid = (await _create(api, VoiceUrl="http://app.test/x"))["sid"]
    one = await api.client.get(f"{BASE}/{sid}", auth=ADMIN)
    assert one.headers["content-type"] == "application/xml"
    client = ET.fromstring(one.content).find("Client")
    assert client is not None
    assert [(e.tag, e.text) for e in client] == [
        ("Sid", sid),
        ("DateCreated", DATE),
        ("DateUpdated", DATE),
        ("AccountSid", ADMIN_SID),
        ("ApiVersion", "2012-04-24"),
        ("FriendlyName", "alice"),
        ("Login", "alice"),
        ("PasswordAlgorithm", "MD5"),
        ("Status", "1"),
        ("VoiceUrl", "http://app.test/x"),
        ("VoiceMethod", "POST"),
        ("VoiceFallbackUrl", None),
        ("VoiceFallbackMethod", "POST"),
        ("VoiceApplicationSid", None),
        ("Uri", f"{BASE}/{sid}"),
        ("PushClientIdentity", None),
    ]
    listing = ET.fromstring((await api.client.get(BASE, auth=ADMIN)).content)
    assert [c.findtext("Sid") for c in listing.iterfind("Clients/Client")] == [sid]
    created = await api.client.post(BASE, data={"Login": "bob", "Password": PASSWORD}, auth=ADMIN)
    assert ET.fromstring(created.content).findtext("Client/Login") == "bob"


async def test_the_password_is_stored_as_ha1_only_and_never_returned(api: Api) -> None:
    sid = (await _create(api))["sid"]
    await api.client.post(f"{BASE}/{sid}.json", data={"Password": "Other-Pass-99"}, auth=ADMIN)
    texts = [
        (await api.client.get(f"{BASE}/{sid}.json", auth=ADMIN)).text,
        (await api.client.get(f"{BASE}/{sid}", auth=ADMIN)).text,
        (await api.client.get(f"{BASE}.json", auth=ADMIN)).text,
        (await api.client.get(BASE, auth=ADMIN)).text,
        (await api.client.post(f"{BASE}/{sid}", data={"Password": "Third-Pass-77"}, auth=ADMIN)).text,
    ]
    for text in texts:
        assert 'password"' not in text.lower() and "<Password>" not in text
        assert "Pass-" not in text and PASSWORD not in text
    stored = await store_clients.get(api.db, sid)
    assert stored is not None and stored.realm == "callplane"
    assert stored.ha1_md5 == hashlib.md5(b"alice:callplane:Third-Pass-77").hexdigest()
    assert stored.ha1_sha256 == hashlib.sha256(b"alice:callplane:Third-Pass-77").hexdigest()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"Password": PASSWORD}, "Login is required"),
        ({"Login": "  ", "Password": PASSWORD}, "Login is required"),
        ({"Login": "alice"}, "Password is required"),
        ({"Login": "a" * 65, "Password": PASSWORD}, "Login is longer than 64 characters"),
        (
            {"Login": "al ice", "Password": PASSWORD},
            "Login 'al ice' cannot be a SIP user name: use letters, digits and - _ . ! ~ * ' ( ) & = + $",
        ),
        (
            {"Login": "a@b", "Password": PASSWORD},
            "Login 'a@b' cannot be a SIP user name: use letters, digits and - _ . ! ~ * ' ( ) & = + $",
        ),
        ({"Login": "alice", "Password": "x" * 129}, "Password is longer than 128 characters"),
        ({"Login": "alice", "Password": "secret"}, "Password too weak"),
        ({"Login": "alice", "Password": "alllowercase1"}, "Password too weak"),
        ({"Login": "alice", "Password": "Alice-2026!"}, "Password too weak"),  # contains the login
        (
            {"Login": "alice", "Password": PASSWORD, "VoiceUrl": "ftp://x/y"},
            "VoiceUrl must be an absolute http or https URL, got 'ftp://x/y'",
        ),
        (
            {"Login": "alice", "Password": PASSWORD, "VoiceFallbackUrl": "/relative"},
            "VoiceFallbackUrl must be an absolute http or https URL, got '/relative'",
        ),
        ({"Login": "alice", "Password": PASSWORD, "VoiceMethod": "PUT"}, "VoiceMethod must be GET or POST, got 'PUT'"),
        (
            {"Login": "alice", "Password": PASSWORD, "VoiceFallbackMethod": "x"},
            "VoiceFallbackMethod must be GET or POST, got 'x'",
        ),
        (
            {"Login": "alice", "Password": PASSWORD, "Status": "enabled"},
            "Status must be 1 (enabled) or 0 (disabled), got 'enabled'",
        ),
        (
            {"Login": "alice", "Password": PASSWORD, "VoiceApplicationSid": "AP1"},
            "VoiceApplicationSid must be AP followed by 32 hex digits, got 'AP1'",
        ),
        ({"Login": "alice", "Password": PASSWORD, "FriendlyName": " "}, "FriendlyName must be 1 to 256 characters"),
        (
            {"Login": "alice", "Password": PASSWORD, "FriendlyName": "a\x07b"},
            "FriendlyName must not contain control characters",
        ),
        (
            {"Login": "alice", "Password": PASSWORD, "VoiceUrl": "http://app.test/a\x7f"},
            "VoiceUrl must be an absolute http or https URL, got 'http://app.test/a\\x7f'",
        ),
    ],
)
async def test_bad_input_is_400_naming_the_field(api: Api, form: dict[str, str], message: str) -> None:
    r = await api.client.post(f"{BASE}.json", data=form, auth=ADMIN)
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == 20001
    if message == "Password too weak":
        assert body["message"] == (
            "Password too weak: use at least 8 characters with three of lower-case letters, capitals, digits and "
            "symbols, not containing the Login"
        )
    else:
        assert body["message"] == message
    assert (await api.client.get(f"{BASE}.json", auth=ADMIN)).json() == []  # nothing was stored


async def test_bad_updates_are_400_and_change_nothing(api: Api) -> None:
    made = await _create(api)
    url = f"{BASE}/{made['sid']}.json"
    for form, message in [
        ({"Login": "bob"}, "Login cannot be changed: delete the Client and create another"),
        ({"Password": "weak"}, "Password too weak"),
        ({"Status": "2"}, "Status must be 1 (enabled) or 0 (disabled), got '2'"),
        ({"VoiceUrl": "nope", "FriendlyName": "x"}, "VoiceUrl must be an absolute http or https URL, got 'nope'"),
    ]:
        r = await api.client.post(url, data=form, auth=ADMIN)
        assert r.status_code == 400 and r.json()["message"].startswith(message), r.text
    assert (await api.client.get(url, auth=ADMIN)).json() == made
    same_login = await api.client.post(url, data={"Login": "alice", "FriendlyName": "A"}, auth=ADMIN)
    assert same_login.status_code == 200 and same_login.json()["friendly_name"] == "A"


async def test_a_login_is_unique_on_the_whole_cluster(api: Api) -> None:
    await api.add_account(CHILD[0], CHILD[1], parent=ADMIN_SID)
    await api.add_account(SIBLING[0], SIBLING[1], parent=ADMIN_SID)
    await _create(api)
    for base, auth in [(BASE, ADMIN), (f"/2012-04-24/Accounts/{CHILD[0]}/Clients", CHILD)]:
        r = await api.client.post(f"{base}.json", data={"Login": "alice", "Password": "Another-1x"}, auth=auth)
        assert r.status_code == 409
        assert r.json() == {
            "code": 20409,
            "message": "Login alice is already used by another Client",
            "more_info": "https://www.twilio.com/docs/errors/20409",
            "status": 409,
        }
    assert [c["login"] for c in (await api.client.get(f"{BASE}.json", auth=ADMIN)).json()] == ["alice"]


async def test_the_account_tree_rule(api: Api) -> None:
    await api.add_account(CHILD[0], CHILD[1], parent=ADMIN_SID)
    await api.add_account(SIBLING[0], SIBLING[1], parent=ADMIN_SID)
    child_base = f"/2012-04-24/Accounts/{CHILD[0]}/Clients"
    mine = await _create(api, "kid", base=child_base, auth=CHILD)
    assert mine["account_sid"] == CHILD[0] and mine["uri"] == f"{child_base}/{mine['sid']}.json"
    by_parent = await _create(api, "kid2", base=child_base, auth=ADMIN)  # the parent acts on its sub-account
    assert by_parent["account_sid"] == CHILD[0]
    admins = await _create(api, "boss")
    # The parent reads and changes its sub-account's Clients.
    assert (await api.client.get(f"{child_base}/{mine['sid']}.json", auth=ADMIN)).status_code == 200
    assert (await api.client.post(f"{child_base}/{mine['sid']}.json", data={"Status": "0"}, auth=ADMIN)).json()[
        "status"
    ] == 0
    # A sibling and a child may not touch the account; the list does not include sub-accounts' Clients.
    for url, auth in [
        (f"{child_base}.json", SIBLING),
        (f"{child_base}/{mine['sid']}.json", SIBLING),
        (f"{BASE}.json", CHILD),
        (f"{BASE}/{admins['sid']}.json", CHILD),
    ]:
        r = await api.client.get(url, auth=auth)
        assert r.status_code == 403, url
    assert (await api.client.delete(f"{child_base}/{mine['sid']}.json", auth=SIBLING)).status_code == 403
    assert [c["login"] for c in (await api.client.get(f"{BASE}.json", auth=ADMIN)).json()] == ["boss"]
    # Another account's Client under this account's URL is not found, whoever asks.
    for auth in (ADMIN, CHILD):
        r = await api.client.get(f"{child_base}/{admins['sid']}.json", auth=auth)
        assert r.status_code == 404
        assert r.json()["message"] == f"Client {admins['sid']} was not found in account {CHILD[0]}"
    assert (await api.client.delete(f"{child_base}/{admins['sid']}.json", auth=ADMIN)).status_code == 404
    assert (await api.client.get(f"{BASE}/CL{'0' * 32}.json", auth=ADMIN)).status_code == 404
    unknown = await api.client.get(f"/2012-04-24/Accounts/AC{'9' * 32}/Clients.json", auth=ADMIN)
    assert unknown.status_code == 404
    assert (await api.client.get(f"{BASE}.json")).status_code == 401


def _binding(login: str, account_sid: str, contact: str, domain: str = "callplane", scheme: str = "sip") -> BindingRow:
    return BindingRow(
        aor=f"{scheme}:{login}@{domain}",
        contact=contact,
        expires_at=4_000_000_000.0,
        call_id=f"{login}-{contact}",
        cseq=1,
        account_sid=account_sid,
    )


async def _bind(api: Api, *rows: BindingRow) -> None:
    for row in rows:
        await registrations.apply(api.db, row.aor, [row], [])


async def _aors(api: Api) -> list[str]:
    return sorted(f"{r.aor} {r.contact}" for r in await registrations.load_all(api.db, 0.0))


async def test_deleting_or_disabling_a_client_removes_its_registrations(api: Api) -> None:
    alice = await _create(api, "alice")
    await _create(api, "alice2")
    carol = await _create(api, "carol")
    await _bind(
        api,
        _binding("alice", ADMIN_SID, "<sip:alice@10.0.0.1:5060>"),
        _binding("alice", ADMIN_SID, "<sip:alice@10.0.0.2:5060>", domain="127.0.0.1"),
        _binding("alice", ADMIN_SID, "<sips:alice@10.0.0.3:5061>", scheme="sips"),
        _binding("alice2", ADMIN_SID, "<sip:alice2@10.0.0.4:5060>"),  # a login that starts with "alice"
        _binding("carol", ADMIN_SID, "<sip:carol@10.0.0.5:5060>"),
    )
    assert len(await registrations.lookup_login(api.db, "alice", 0.0, account_sid=ADMIN_SID)) == 2

    assert (await api.client.delete(f"{BASE}/{alice['sid']}.json", auth=ADMIN)).status_code == 204
    assert await registrations.lookup_login(api.db, "alice", 0.0, account_sid=ADMIN_SID) == []
    assert await _aors(api) == [
        "sip:alice2@callplane <sip:alice2@10.0.0.4:5060>",
        "sip:carol@callplane <sip:carol@10.0.0.5:5060>",
    ]

    # Renaming keeps the bindings; disabling drops them; enabling again does not bring them back.
    url = f"{BASE}/{carol['sid']}.json"
    await api.client.post(url, data={"FriendlyName": "Carol"}, auth=ADMIN)
    assert len(await registrations.lookup_login(api.db, "carol", 0.0, account_sid=ADMIN_SID)) == 1
    assert (await api.client.post(url, data={"Status": "false"}, auth=ADMIN)).json()["status"] == 0
    assert await registrations.lookup_login(api.db, "carol", 0.0, account_sid=ADMIN_SID) == []
    await api.client.post(url, data={"Status": "1"}, auth=ADMIN)
    assert await _aors(api) == ["sip:alice2@callplane <sip:alice2@10.0.0.4:5060>"]


async def test_seeding_creates_missing_clients_once(api: Api) -> None:
    await _create(api, "alice")
    passwords = {"alice": "ignored", "dev": "dev"}
    made = await store_clients.seed(
        api.db, passwords, account_sid=ADMIN_SID, realm="callplane", ids=IdSource(7), now=T0
    )
    assert made == ["dev"]
    again = await asyncio.gather(
        *(
            store_clients.seed(api.db, passwords | {"eve": "eve"}, account_sid=ADMIN_SID, realm="r", ids=ids, now=T0)
            for ids in (IdSource(8), IdSource(9))
        )
    )
    assert sorted(again) == [[], ["eve"]]  # two workers seeding at once: one creates, the other skips
    listed = {c["login"]: c for c in (await api.client.get(f"{BASE}.json", auth=ADMIN)).json()}
    assert set(listed) == {"alice", "dev", "eve"} and listed["dev"]["friendly_name"] == "dev"
    alice = await store_clients.by_login(api.db, "alice")
    assert alice is not None and alice.ha1_md5 == hashlib.md5(f"alice:callplane:{PASSWORD}".encode()).hexdigest()


async def test_an_update_stamps_date_updated_and_a_no_op_does_not(api: Api) -> None:
    clock = FakeClock(wall=T0)
    app = create_app(api.db, ids=IdSource(5), clock=clock, sip_realm="example.org")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://callplane.test") as client:
        made = (await client.post(f"{BASE}.json", data={"Login": "alice", "Password": PASSWORD}, auth=ADMIN)).json()
        url = f"{BASE}/{made['sid']}.json"
        clock.advance(90)
        same = (await client.post(url, data={"FriendlyName": "alice", "Status": "1"}, auth=ADMIN)).json()
        assert same["date_updated"] == DATE
        changed = (await client.put(url, data={"FriendlyName": "Alice"}, auth=ADMIN)).json()
        assert (changed["date_created"], changed["date_updated"]) == (DATE, "Thu, 1 Jan 2026 00:01:30 +0000")
    stored = await store_clients.get(api.db, made["sid"])
    assert stored is not None and stored.realm == "example.org"  # the node's realm, given to the app
    assert stored.ha1_md5 == hashlib.md5(f"alice:example.org:{PASSWORD}".encode()).hexdigest()
