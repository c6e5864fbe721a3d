"""IncomingPhoneNumbers through the real API on both databases: representations, E.164 input, update, delete,
listing (paging, filters, sorting), bad input, uniqueness on the cluster and the account-tree rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from callplane.api.app import create_app
from callplane.core.clock import FakeClock
from callplane.core.ids import IdSource
from callplane.store import numbers
from callplane.store.listing import ListQuery
from tests.api.conftest import ADMIN, ADMIN_SID, T0, Api

CHILD_SID = "AC" + "c" * 32
CHILD = (CHILD_SID, "child-token-0123456789")
SIBLING_SID = "AC" + "d" * 32
SIBLING = (SIBLING_SID, "sibling-token-0123456789")
BASE = f"/2012-04-24/Accounts/{ADMIN_SID}/IncomingPhoneNumbers"
DATE = "Thu, 1 Jan 2026 00:00:00 +0000"


@dataclass
class Node:
    client: httpx.AsyncClient
    clock: FakeClock
    api: Api

    async def create(self, auth: tuple[str, str] = ADMIN, base: str = BASE, **fields: str) -> dict[str, Any]:
        r = await self.client.post(f"{base}.json", data=fields, auth=auth)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


@pytest.fixture
async def node(api: Api) -> AsyncIterator[Node]:
    """The app with a clock the test moves, an administrator (ADMIN), its sub-account CHILD and CHILD's sibling."""
    await api.add_account(CHILD_SID, CHILD[1], parent=ADMIN_SID)
    await api.add_account(SIBLING_SID, SIBLING[1], parent=ADMIN_SID)
    clock = FakeClock(wall=T0)
    app = create_app(api.db, ids=IdSource(7), clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://callplane.test") as client:
        yield Node(client, clock, api)


def _expected(sid: str, number: str, **overrides: Any) -> dict[str, Any]:
    """The JSON of a number created with only PhoneNumber, in the §6 key order (null keys omitted)."""
    body: dict[str, Any] = {
        "sid": sid,
        "account_sid": ADMIN_SID,
        "friendly_name": number,
        "phone_number": number,
        "voice_url": None,
        "voice_method": "POST",
        "voice_fallback_url": None,
        "voice_fallback_method": "POST",
        "status_callback": None,
        "status_callback_method": "POST",
        "voice_caller_id_lookup": False,
        "voice_application_sid": None,
        "date_created": DATE,
        "date_updated": DATE,
        "sms_url": None,
        "sms_method": "POST",
        "sms_fallback_url": None,
        "sms_fallback_method": "POST",
        "sms_application_sid": None,
        "ussd_url": None,
        "ussd_method": "POST",
        "ussd_fallback_url": None,
        "ussd_fallback_method": "POST",
        "ussd_application_sid": None,
        "refer_url": None,
        "refer_method": "POST",
        "refer_application_sid": None,
        "capabilities": {"voice_capable": True, "sms_capable": False, "mms_capable": False, "fax_capable": False},
        "api_version": "2012-04-24",
        "uri": f"{BASE}/{sid}.json",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def test_create_normalises_to_e164_and_get_returns_the_same(node: Node) -> None:
    sid = IdSource(7).phone_number_sid()
    created = await node.create(PhoneNumber="+1 (555) 123-0000", VoiceUrl="https://app.test/voice", VoiceMethod="get")
    expected = _expected(sid, "+15551230000", voice_url="https://app.test/voice", voice_method="GET")
    assert list(created) == list(expected)  # the §6 key order
    assert created == expected
    got = await node.client.get(f"{BASE}/{sid}.json", auth=ADMIN)
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    assert got.json() == expected
    assert await numbers.by_phone_number(node.api.db, "+15551230000") is not None


@pytest.mark.parametrize(
    ("given", "e164"),
    [("0044 20 7946 0000", "+442079460000"), ("15551230001", "+15551230001"), ("+1.555.123.0002", "+15551230002")],
)
async def test_phone_number_input_forms(node: Node, given: str, e164: str) -> None:
    created = await node.create(PhoneNumber=given)
    assert (created["phone_number"], created["friendly_name"]) == (e164, e164)


async def test_xml_representation_of_create_get_and_list(node: Node) -> None:
    sid = IdSource(7).phone_number_sid()
    r = await node.client.post(BASE, data={"PhoneNumber": "+15551230000", "FriendlyName": "Sales & <Co>"}, auth=ADMIN)
    assert r.status_code == 200 and r.headers["content-type"] == "application/xml"
    one = (
        "<IncomingPhoneNumber>"
        f"<Sid>{sid}</Sid><AccountSid>{ADMIN_SID}</AccountSid><FriendlyName>Sales &amp; &lt;Co&gt;</FriendlyName>"
        "<PhoneNumber>+15551230000</PhoneNumber><VoiceUrl/><VoiceMethod>POST</VoiceMethod><VoiceFallbackUrl/>"
        "<VoiceFallbackMethod>POST</VoiceFallbackMethod><StatusCallback/><StatusCallbackMethod>POST"
        "</StatusCallbackMethod><VoiceCallerIdLookup>false</VoiceCallerIdLookup><VoiceApplicationSid/>"
        f"<DateCreated>{DATE}</DateCreated><DateUpdated>{DATE}</DateUpdated>"
        "<SmsUrl/><SmsMethod>POST</SmsMethod><SmsFallbackUrl/><SmsFallbackMethod>POST</SmsFallbackMethod>"
        "<SmsApplicationSid/><UssdUrl/><UssdMethod>POST</UssdMethod><UssdFallbackUrl/>"
        "<UssdFallbackMethod>POST</UssdFallbackMethod><UssdApplicationSid/><ReferUrl/><ReferMethod>POST</ReferMethod>"
        "<ReferApplicationSid/><Capabilities><VoiceCapable>true</VoiceCapable><SmsCapable>false</SmsCapable>"
        "<MmsCapable>false</MmsCapable><FaxCapable>false</FaxCapable></Capabilities>"
        f"<ApiVersion>2012-04-24</ApiVersion><Uri>{BASE}/{sid}</Uri>"
        "</IncomingPhoneNumber>"
    )
    head = '<?xml version="1.0" encoding="UTF-8"?>\n<RestcommResponse>'
    assert r.text == f"{head}{one}</RestcommResponse>"
    assert (await node.client.get(f"{BASE}/{sid}", auth=ADMIN)).text == r.text
    listing = await node.client.get(BASE, auth=ADMIN)
    first = f"{BASE}?Page=0&amp;PageSize=50&amp;Limit=10000"
    assert listing.text == (
        f'{head}<IncomingPhoneNumbers page="0" numpages="0" pagesize="50" total="1" limit="10000" start="0" end="1" '
        f'uri="{BASE}" firstpageuri="{first}" previouspageuri="null" nextpageuri="null" lastpageuri="{first}">'
        f"{one}</IncomingPhoneNumbers></RestcommResponse>"
    )


async def test_every_field_is_stored_and_returned(node: Node) -> None:
    fields = {
        "PhoneNumber": "+15551230000",
        "FriendlyName": "  Support line  ",
        "VoiceUrl": "http://app.test/v",
        "VoiceMethod": "GET",
        "VoiceFallbackUrl": "http://app.test/vf",
        "VoiceFallbackMethod": "get",
        "StatusCallback": "https://app.test/status",
        "StatusCallbackMethod": "GET",
        "VoiceCallerIdLookup": "TRUE",
        "VoiceApplicationSid": "AP" + "1" * 32,
        "SmsUrl": "http://app.test/s",
        "SmsMethod": "GET",
        "SmsFallbackUrl": "http://app.test/sf",
        "SmsFallbackMethod": "GET",
        "SmsApplicationSid": "AP" + "2" * 32,
        "UssdUrl": "http://app.test/u",
        "UssdMethod": "GET",
        "UssdFallbackUrl": "http://app.test/uf",
        "UssdFallbackMethod": "GET",
        "UssdApplicationSid": "AP" + "3" * 32,
        "ReferUrl": "http://app.test/r",
        "ReferMethod": "GET",
        "ReferApplicationSid": "AP" + "4" * 32,
        "VoiceCapable": "false",
        "SmsCapable": "true",
        "MmsCapable": "true",
        "FaxCapable": "true",
        "AreaCode": "555",  # Restcomm's purchase search: ignored
    }
    created = await node.create(ADMIN, BASE, **fields)
    sid = created["sid"]
    assert created == {
        "sid": sid,
        "account_sid": ADMIN_SID,
        "friendly_name": "Support line",
        "phone_number": "+15551230000",
        "voice_url": "http://app.test/v",
        "voice_method": "GET",
        "voice_fallback_url": "http://app.test/vf",
        "voice_fallback_method": "GET",
        "status_callback": "https://app.test/status",
        "status_callback_method": "GET",
        "voice_caller_id_lookup": True,
        "voice_application_sid": "AP" + "1" * 32,
        "date_created": DATE,
        "date_updated": DATE,
        "sms_url": "http://app.test/s",
        "sms_method": "GET",
        "sms_fallback_url": "http://app.test/sf",
        "sms_fallback_method": "GET",
        "sms_application_sid": "AP" + "2" * 32,
        "ussd_url": "http://app.test/u",
        "ussd_method": "GET",
        "ussd_fallback_url": "http://app.test/uf",
        "ussd_fallback_method": "GET",
        "ussd_application_sid": "AP" + "3" * 32,
        "refer_url": "http://app.test/r",
        "refer_method": "GET",
        "refer_application_sid": "AP" + "4" * 32,
        "capabilities": {"voice_capable": False, "sms_capable": True, "mms_capable": True, "fax_capable": True},
        "api_version": "2012-04-24",
        "uri": f"{BASE}/{sid}.json",
    }
    assert (await node.client.get(f"{BASE}/{sid}.json", auth=ADMIN)).json() == created


@pytest.mark.parametrize("kind", ["Local", "TollFree", "Mobile"])
async def test_local_tollfree_and_mobile_are_aliases_of_create(node: Node, kind: str) -> None:
    sid = IdSource(7).phone_number_sid()
    r = await node.client.post(f"{BASE}/{kind}.json", data={"PhoneNumber": "+18005550100"}, auth=ADMIN)
    assert r.status_code == 200
    assert r.json() == _expected(sid, "+18005550100")
    restcomm = await node.client.post(
        f"/restcomm{BASE}/{kind}",
        data={"PhoneNumber": "+18005550101"},
        headers={"Accept": "application/json"},
        auth=ADMIN,
    )
    assert restcomm.status_code == 200 and restcomm.json()["phone_number"] == "+18005550101"


async def test_update_writes_only_the_given_fields(node: Node) -> None:
    created = await node.create(
        PhoneNumber="+15551230000", VoiceUrl="http://app.test/v", StatusCallback="http://s.test/"
    )
    sid = created["sid"]
    node.clock.advance(65)
    r = await node.client.post(
        f"{BASE}/{sid}.json", data={"FriendlyName": "Renamed", "VoiceMethod": "get", "SmsCapable": "true"}, auth=ADMIN
    )
    assert r.status_code == 200
    later = "Thu, 1 Jan 2026 00:01:05 +0000"
    expected = created | {"friendly_name": "Renamed", "voice_method": "GET", "date_updated": later}
    expected["capabilities"] = created["capabilities"] | {"sms_capable": True}
    assert r.json() == expected
    assert (await node.client.get(f"{BASE}/{sid}.json", auth=ADMIN)).json() == expected

    # PUT is the same update; an empty URL clears it, an empty method resets it to POST.
    node.clock.advance(5)
    put = await node.client.put(
        f"{BASE}/{sid}.json", data={"VoiceUrl": "", "VoiceMethod": "", "PhoneNumber": "+1 555 123 0000"}, auth=ADMIN
    )
    assert put.status_code == 200
    cleared = {k: v for k, v in expected.items() if k != "voice_url"}
    assert put.json() == cleared | {"voice_method": "POST", "date_updated": "Thu, 1 Jan 2026 00:01:10 +0000"}
    stored = await numbers.get(node.api.db, sid)
    assert stored is not None and stored.voice_url is None and stored.status_callback == "http://s.test/"

    # Nothing changes: the record (and its date_updated) stays as it was.
    node.clock.advance(5)
    same = await node.client.post(f"{BASE}/{sid}.json", data={"FriendlyName": "Renamed"}, auth=ADMIN)
    assert same.json() == put.json()
    # In XML, the update answers the document GET gives.
    xml = await node.client.post(f"{BASE}/{sid}", data={"MmsCapable": "true"}, auth=ADMIN)
    assert xml.headers["content-type"] == "application/xml"
    assert "<FriendlyName>Renamed</FriendlyName>" in xml.text and "<MmsCapable>true</MmsCapable>" in xml.text
    assert "<VoiceUrl/>" in xml.text and "<DateUpdated>Thu, 1 Jan 2026 00:01:15 +0000</DateUpdated>" in xml.text
    assert xml.text == (await node.client.get(f"{BASE}/{sid}", auth=ADMIN)).text


async def test_the_number_itself_cannot_be_changed(node: Node) -> None:
    sid = (await node.create(PhoneNumber="+15551230000"))["sid"]
    r = await node.client.post(f"{BASE}/{sid}.json", data={"PhoneNumber": "+15551230001"}, auth=ADMIN)
    assert r.status_code == 400
    assert r.json()["message"] == "PhoneNumber cannot be changed: delete this number and provision the new one"
    assert (await numbers.by_phone_number(node.api.db, "+15551230000")) is not None


async def test_delete_releases_the_number(node: Node) -> None:
    sid = (await node.create(PhoneNumber="+15551230000"))["sid"]
    gone = await node.client.delete(f"{BASE}/{sid}.json", auth=ADMIN)
    assert (gone.status_code, gone.content) == (204, b"")
    assert await numbers.by_phone_number(node.api.db, "+15551230000") is None
    missing = await node.client.get(f"{BASE}/{sid}.json", auth=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["message"] == f"IncomingPhoneNumber {sid} was not found in account {ADMIN_SID}"
    assert (await node.client.delete(f"{BASE}/{sid}.json", auth=ADMIN)).status_code == 404
    assert (await node.client.post(f"{BASE}/{sid}.json", data={"FriendlyName": "x"}, auth=ADMIN)).status_code == 404
    # Released, it can be provisioned again (by any account).
    again = await node.create(
        CHILD, f"/2012-04-24/Accounts/{CHILD_SID}/IncomingPhoneNumbers", PhoneNumber="15551230000"
    )
    assert again["account_sid"] == CHILD_SID


_NOT_A_NUMBER = (
    "is not a phone number: give it in E.164 (+, the country code and the number, at most 15 digits; spaces, "
    "dashes, dots and parentheses are ignored)"
)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "PhoneNumber is required"),
        ({"PhoneNumber": "  "}, "PhoneNumber is required"),
        ({"PhoneNumber": "alice"}, f"PhoneNumber 'alice' {_NOT_A_NUMBER}"),
        ({"PhoneNumber": "+0123"}, f"PhoneNumber '+0123' {_NOT_A_NUMBER}"),
        ({"PhoneNumber": "+1234567890123456"}, f"PhoneNumber '+1234567890123456' {_NOT_A_NUMBER}"),
        (
            {"PhoneNumber": "+15551230000", "VoiceUrl": "ftp://app.test/"},
            "VoiceUrl must be an absolute http or https URL, got 'ftp://app.test/'",
        ),
        (
            {"PhoneNumber": "+15551230000", "StatusCallback": "/relative"},
            "StatusCallback must be an absolute http or https URL, got '/relative'",
        ),
        ({"PhoneNumber": "+15551230000", "VoiceMethod": "PUT"}, "VoiceMethod must be GET or POST, got 'PUT'"),
        ({"PhoneNumber": "+15551230000", "SmsFallbackMethod": "x"}, "SmsFallbackMethod must be GET or POST, got 'x'"),
        (
            {"PhoneNumber": "+15551230000", "VoiceCallerIdLookup": "yes"},
            "VoiceCallerIdLookup must be true or false, got 'yes'",
        ),
        ({"PhoneNumber": "+15551230000", "FaxCapable": "1"}, "FaxCapable must be true or false, got '1'"),
        (
            {"PhoneNumber": "+15551230000", "VoiceApplicationSid": "AP1"},
            "VoiceApplicationSid must be an application Sid (AP and 32 hex digits), got 'AP1'",
        ),
        ({"PhoneNumber": "+15551230000", "FriendlyName": " "}, "FriendlyName must be 1 to 256 characters"),
        ({"PhoneNumber": "+15551230000", "FriendlyName": "x" * 257}, "FriendlyName must be 1 to 256 characters"),
        (
            {"PhoneNumber": "+15551230000", "FriendlyName": "a\x00b"},
            "Parameter 'FriendlyName' contains a NUL character",
        ),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(node: Node, fields: dict[str, str], message: str) -> None:
    r = await node.client.post(f"{BASE}.json", data=fields, auth=ADMIN)
    assert r.status_code == 400
    assert r.json() == {
        "code": 20001,
        "message": message,
        "more_info": "https://www.twilio.com/docs/errors/20001",
        "status": 400,
    }
    assert (await numbers.list_page(node.api.db, ADMIN_SID, ListQuery()))[0] == 0


async def test_bad_update_changes_nothing(node: Node) -> None:
    created = await node.create(PhoneNumber="+15551230000", VoiceUrl="http://app.test/v")
    r = await node.client.post(
        f"{BASE}/{created['sid']}.json", data={"FriendlyName": "new", "VoiceFallbackUrl": "nope"}, auth=ADMIN
    )
    assert r.status_code == 400
    assert r.json()["message"] == "VoiceFallbackUrl must be an absolute http or https URL, got 'nope'"
    assert (await node.client.get(f"{BASE}/{created['sid']}.json", auth=ADMIN)).json() == created


async def test_a_number_is_unique_on_the_cluster(node: Node) -> None:
    await node.create(PhoneNumber="+15551230000")
    conflict = {
        "code": 20409,
        "message": "PhoneNumber +15551230000 is already provisioned",
        "more_info": "https://www.twilio.com/docs/errors/20409",
        "status": 409,
    }
    same = await node.client.post(f"{BASE}.json", data={"PhoneNumber": "1 555 123 0000"}, auth=ADMIN)
    assert (same.status_code, same.json()) == (409, conflict)
    sibling_base = f"/2012-04-24/Accounts/{SIBLING_SID}/IncomingPhoneNumbers"
    other = await node.client.post(f"{sibling_base}.json", data={"PhoneNumber": "+15551230000"}, auth=SIBLING)
    assert (other.status_code, other.json()) == (409, conflict)
    xml = await node.client.post(sibling_base, data={"PhoneNumber": "+15551230000"}, auth=SIBLING)
    assert xml.status_code == 409 and "<Code>20409</Code>" in xml.text
    owner = await numbers.by_phone_number(node.api.db, "+15551230000")
    assert owner is not None and owner.account_sid == ADMIN_SID


async def test_account_tree_rules(node: Node) -> None:
    child_base = f"/2012-04-24/Accounts/{CHILD_SID}/IncomingPhoneNumbers"
    child_number = await node.create(CHILD, child_base, PhoneNumber="+15551230000")
    sid = child_number["sid"]
    # The parent acts on the child's numbers through the child's URL (create too) ...
    assert (await node.client.get(f"{child_base}/{sid}.json", auth=ADMIN)).json() == child_number
    by_parent = await node.create(ADMIN, child_base, PhoneNumber="+15551230001")
    assert by_parent["account_sid"] == CHILD_SID
    # ... but not through its own: the number is not the parent's.
    assert (await node.client.get(f"{BASE}/{sid}.json", auth=ADMIN)).status_code == 404
    assert (await node.client.delete(f"{BASE}/{sid}.json", auth=ADMIN)).status_code == 404
    # The child may not reach its parent's account, nor a sibling its sibling's.
    parent_number = await node.create(PhoneNumber="+15551230002")
    for auth, base in [(CHILD, BASE), (SIBLING, child_base)]:
        assert (await node.client.get(f"{base}.json", auth=auth)).status_code == 403
        assert (
            await node.client.post(f"{base}.json", data={"PhoneNumber": "+15551239999"}, auth=auth)
        ).status_code == 403
    assert (await node.client.get(f"{BASE}/{parent_number['sid']}.json", auth=CHILD)).status_code == 403
    assert (await node.client.delete(f"{child_base}/{sid}.json", auth=SIBLING)).status_code == 403
    assert (await node.client.post(f"{child_base}/{sid}.json", data={}, auth=SIBLING)).status_code == 403
    unknown = f"/2012-04-24/Accounts/AC{'9' * 32}/IncomingPhoneNumbers.json"
    assert (await node.client.get(unknown, auth=ADMIN)).status_code == 404
    assert (await node.client.get(f"{BASE}.json")).status_code == 401
    assert await numbers.by_phone_number(node.api.db, "+15551239999") is None


async def _provision(node: Node, entries: list[tuple[str, str]]) -> dict[str, str]:
    """Numbers (number, name) of the administrator; returns number -> sid."""
    return {n: (await node.create(PhoneNumber=n, FriendlyName=name))["sid"] for n, name in entries}


_ENTRIES = [
    ("+15551230003", "sales"),
    ("+442079460000", "London"),
    ("+15551230001", "Support"),
    ("+15551240002", "support"),
    ("+15551230004", "sales desk"),
]


async def test_list_envelope_and_default_order(node: Node) -> None:
    sids = await _provision(node, _ENTRIES)
    await node.create(CHILD, f"/2012-04-24/Accounts/{CHILD_SID}/IncomingPhoneNumbers", PhoneNumber="+15551230000")
    page = (await node.client.get(f"{BASE}.json?PageSize=2", auth=ADMIN)).json()
    ordered = ["+15551230001", "+15551230003", "+15551230004", "+15551240002", "+442079460000"]
    assert {k: v for k, v in page.items() if k != "incomingPhoneNumbers"} == {
        "page": 0,
        "num_pages": 2,
        "page_size": 2,
        "total": 5,
        "limit": 10000,
        "start": "0",
        "end": "1",
        "uri": BASE,
        "first_page_uri": f"{BASE}?Page=0&PageSize=2&Limit=10000",
        "previous_page_uri": "null",
        "next_page_uri": f"{BASE}?Page=1&PageSize=2&AfterSid={sids[ordered[1]]}&Limit=10000",
        "last_page_uri": f"{BASE}?Page=2&PageSize=2&Limit=10000",
    }
    assert list(page)[-1] == "incomingPhoneNumbers"
    assert [n["phone_number"] for n in page["incomingPhoneNumbers"]] == ordered[:2]
    assert (
        page["incomingPhoneNumbers"][0] == (await node.client.get(f"{BASE}/{sids[ordered[0]]}.json", auth=ADMIN)).json()
    )
    # Following next_page_uri (the AfterSid cursor) and asking by Page give the same pages.
    cursor = (await node.client.get(page["next_page_uri"].replace(BASE, BASE + ".json"), auth=ADMIN)).json()
    by_page = (await node.client.get(f"{BASE}.json?PageSize=2&Page=1", auth=ADMIN)).json()
    assert [n["phone_number"] for n in cursor["incomingPhoneNumbers"]] == ordered[2:4]
    assert cursor["incomingPhoneNumbers"] == by_page["incomingPhoneNumbers"]
    last = (await node.client.get(f"{BASE}.json?PageSize=2&Page=2", auth=ADMIN)).json()
    assert (last["start"], last["end"], last["next_page_uri"]) == ("4", "5", "null")
    assert [n["phone_number"] for n in last["incomingPhoneNumbers"]] == ordered[4:]
    beyond = await node.client.get(f"{BASE}.json?PageSize=2&Page=3", auth=ADMIN)
    assert beyond.status_code == 400
    assert beyond.json()["message"] == "Page 3 is beyond the last page (2) of this list"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("SortBy=PhoneNumber:desc", ["+442079460000", "+15551240002", "+15551230004", "+15551230003", "+15551230001"]),
        (
            "SortBy=PhoneNumber&Reverse=true",
            ["+442079460000", "+15551240002", "+15551230004", "+15551230003", "+15551230001"],
        ),
        # Byte order, case-sensitive: capitals first.
        ("SortBy=FriendlyName", ["+442079460000", "+15551230001", "+15551230003", "+15551230004", "+15551240002"]),
        (
            "SortBy=FriendlyName:asc&Reverse=True",
            ["+15551240002", "+15551230004", "+15551230003", "+15551230001", "+442079460000"],
        ),
        (
            "SortBy=FriendlyName:desc&Reverse=true",
            ["+442079460000", "+15551230001", "+15551230003", "+15551230004", "+15551240002"],
        ),
        # PhoneNumber: any part; + anchors at the start; * is one digit; separators are ignored.
        ("PhoneNumber=0000", ["+442079460000"]),
        ("PhoneNumber=555123", ["+15551230001", "+15551230003", "+15551230004"]),
        ("PhoneNumber=%2B1555124", ["+15551240002"]),
        ("PhoneNumber=%2B44", ["+442079460000"]),
        ("PhoneNumber=0044", []),  # only + anchors: here 00 is two digits
        ("PhoneNumber=%2B4", ["+442079460000"]),
        ("PhoneNumber=%2B1%20(555)%20123-0004", ["+15551230004"]),
        ("PhoneNumber=123000*", ["+15551230001", "+15551230003", "+15551230004"]),
        ("PhoneNumber=%2B1555*2*000", ["+15551230001", "+15551230003", "+15551230004", "+15551240002"]),
        ("PhoneNumber=99", []),
        ("PhoneNumber=%2B5", []),
        # FriendlyName: the whole name, case-sensitive; % and _ are wildcards.
        ("FriendlyName=sales", ["+15551230003"]),
        ("FriendlyName=Sales", []),
        ("FriendlyName=sales%25", ["+15551230003", "+15551230004"]),
        ("FriendlyName=%25port", ["+15551230001", "+15551240002"]),
        ("FriendlyName=_upport", ["+15551230001", "+15551240002"]),
        ("FriendlyName=s%25", ["+15551230003", "+15551230004", "+15551240002"]),
        ("FriendlyName=sales%25&PhoneNumber=0004&SortBy=FriendlyName", ["+15551230004"]),
    ],
)
async def test_list_filters_and_sorting(node: Node, query: str, expected: list[str]) -> None:
    await _provision(node, _ENTRIES)
    r = await node.client.get(f"{BASE}.json?{query}", auth=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [n["phone_number"] for n in body["incomingPhoneNumbers"]] == expected
    assert body["total"] == len(expected)


async def test_sorted_cursor_pages_follow_the_sort(node: Node) -> None:
    await _provision(node, _ENTRIES)
    seen: list[str] = []
    url = f"{BASE}.json?SortBy=FriendlyName&Reverse=true&PageSize=2"
    while url != "null":
        body = (await node.client.get(url, auth=ADMIN)).json()
        seen += [n["friendly_name"] for n in body["incomingPhoneNumbers"]]
        nxt = body["next_page_uri"]
        url = nxt if nxt == "null" else nxt.replace(BASE, BASE + ".json") + "&SortBy=FriendlyName&Reverse=true"
    assert seen == ["support", "sales desk", "sales", "Support", "London"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SortBy=DateCreated", "SortBy field 'DateCreated' is not one of PhoneNumber, FriendlyName"),
        ("SortBy=PhoneNumber:up", "Error parsing the SortBy parameter: sort direction needs to be either ASC or DESC"),
        ("Reverse=yes", "Reverse must be true or false, got 'yes'"),
        (
            "PhoneNumber=alice",
            "PhoneNumber filter must be up to 15 digits, optionally after +, with * for any one digit; got 'alice'",
        ),
        ("PageSize=0", "PageSize must be between 1 and 1000, got 0"),
        ("AfterSid=PN1", "AfterSid 'PN1' is not in this list"),
        ("FriendlyName=a%00", "Query parameters may not contain a NUL character (%00)"),
    ],
)
async def test_bad_list_parameters(node: Node, query: str, message: str) -> None:
    await _provision(node, _ENTRIES[:1])
    r = await node.client.get(f"{BASE}.json?{query}", auth=ADMIN)
    assert (r.status_code, r.json()["message"]) == (400, message)


async def test_unsupported_methods_are_405_with_allow(node: Node) -> None:
    # /Local is also a {PhoneNumberSid} path: its GET, PUT and DELETE answer 404 (no number has that sid).
    for path, allowed in [
        (BASE, "GET, POST"),
        (f"{BASE}/PN1", "GET, POST, PUT, DELETE"),
        (f"{BASE}/Local", "GET, POST, PUT, DELETE"),
    ]:
        r = await node.client.patch(f"{path}.json", auth=ADMIN)
        assert (r.status_code, r.headers["allow"]) == (405, allowed), path
