"""GET one call, JSON/XML selection, the /restcomm mount, and the OpenAPI document."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from callplane.store import calls
from callplane.store.calls import CallRecord
from tests.api.conftest import ADMIN, ADMIN_SID, Api

SID = "ID" + "1" * 32 + "-CA" + "2" * 32
T = datetime(2020, 4, 7, 9, 5, 3, 250000, tzinfo=UTC)
CALL = CallRecord(
    sid=SID,
    instance_id="ID" + "1" * 32,
    account_sid=ADMIN_SID,
    date_created=T,
    date_updated=T + timedelta(seconds=11),
    to="client:alice",
    from_="+16175551212",
    status="completed",
    direction="outbound-api",
    parent_call_sid="ID" + "1" * 32 + "-CA" + "3" * 32,
    start_time=T,
    end_time=T + timedelta(seconds=10, milliseconds=100),
    duration=11,
    ring_duration=4,
    caller_name="Unknown",
)
EXPECTED = {
    "sid": SID,
    "InstanceId": "ID" + "1" * 32,
    "date_created": "Tue, 7 Apr 2020 09:05:03 +0000",
    "date_updated": "Tue, 7 Apr 2020 09:05:14 +0000",
    "parent_call_sid": "ID" + "1" * 32 + "-CA" + "3" * 32,
    "account_sid": ADMIN_SID,
    "to": "client:alice",
    "from": "+16175551212",
    "status": "completed",
    "start_time": "2020-04-07T09:05:03.250Z",
    "end_time": "2020-04-07T09:05:13.350Z",
    "duration": 11,
    "direction": "outbound-api",
    "api_version": "2012-04-24",
    "caller_name": "Unknown",
    "uri": f"/2012-04-24/Accounts/{ADMIN_SID}/Calls/{SID}.json",
    "ring_duration": 4,
    "subresource_uris": {
        "notifications": f"/2012-04-24/Accounts/{ADMIN_SID}/Calls/{SID}/Notifications.json",
        "recordings": f"/2012-04-24/Accounts/{ADMIN_SID}/Calls/{SID}/Recordings.json",
    },
}


@pytest.fixture
async def one(api: Api) -> Api:
    await calls.insert_one(api.db, CALL)
    return api


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (f"/2012-04-24/Accounts/{ADMIN_SID}/Calls/{SID}.json", {}),
        (f"/2012-04-24/Accounts/{ADMIN_SID}/Calls.json/{SID}", {}),
        (f"/restcomm/2012-04-24/Accounts/{ADMIN_SID}/Calls/{SID}.json", {}),
        (f"/2012-04-24/Accounts/{ADMIN_SID}/Calls/{SID}", {"Accept": "application/json"}),
        (f"/2012-04-24/Accounts/{ADMIN_SID}/Calls/{SID}", {"Accept": "text/html, application/vnd.x+json"}),
    ],
)
async def test_get_one_json(one: Api, path: str, headers: dict[str, str]) -> None:
    r = await one.client.get(path, headers=headers, auth=ADMIN)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == EXPECTED
    assert list(r.json()) == list(EXPECTED)  # key order of the seed


@pytest.mark.parametrize("accept", [None, "*/*", "application/xml"])
async def test_get_one_xml(one: Api, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    r = await one.client.get(f"/2012-04-24/Accounts/{ADMIN_SID}/Calls/{SID}", headers=headers, auth=ADMIN)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/xml"
    root = ET.fromstring(r.text)
    assert root.tag == "RestcommResponse"
    call = root.find("Call")
    assert call is not None
    assert [e.tag for e in call][:6] == [
        "Sid",
        "InstanceId",
        "DateCreated",
        "DateUpdated",
        "ParentCallSid",
        "AccountSid",
    ]
    assert call.findtext("Sid") == SID
    assert call.findtext("StartTime") == "2020-04-07T09:05:03.250Z"
    assert call.findtext("Duration") == "11"
    assert call.findtext("Uri") == f"/2012-04-24/Accounts/{ADMIN_SID}/Calls/{SID}"
    assert call.findtext("SubresourceUris/Recordings") == f"/2012-04-24/Accounts/{ADMIN_SID}/Calls/{SID}/Recordings"
    assert "<AnsweredBy/>" in r.text  # null values are empty elements


async def test_list_xml_total_is_the_count(one: Api) -> None:
    """Restcomm's XML put num_pages in `total`; ours carries the count."""
    r = await one.client.get(f"/2012-04-24/Accounts/{ADMIN_SID}/Calls?PageSize=1", auth=ADMIN)
    calls_el = ET.fromstring(r.text).find("Calls")
    assert calls_el is not None
    assert calls_el.attrib["total"] == "1" and calls_el.attrib["numpages"] == "1"
    assert calls_el.attrib["pagesize"] == "1" and calls_el.attrib["limit"] == "10000"
    assert [c.findtext("Sid") for c in calls_el.findall("Call")] == [SID]


async def test_unknown_call_is_404(one: Api) -> None:
    r = await one.client.get(f"/2012-04-24/Accounts/{ADMIN_SID}/Calls/CAdeadbeef.json", auth=ADMIN)
    assert r.status_code == 404
    assert r.json() == {
        "code": 20404,
        "message": f"Call CAdeadbeef was not found in account {ADMIN_SID}",
        "more_info": "https://www.twilio.com/docs/errors/20404",
        "status": 404,
    }


async def test_call_of_a_sub_account_is_not_visible_under_the_parent_url(one: Api) -> None:
    child = "AC" + "c" * 32
    await one.add_account(child, "child-token-0000000", parent=ADMIN_SID)
    theirs = CallRecord(
        **{**{f: getattr(CALL, f) for f in CALL.__slots__}, "sid": "CA" + "7" * 32, "account_sid": child}
    )
    await calls.insert_one(one.db, theirs)
    assert (
        await one.client.get(f"/2012-04-24/Accounts/{ADMIN_SID}/Calls/{theirs.sid}.json", auth=ADMIN)
    ).status_code == 404
    assert (
        await one.client.get(f"/2012-04-24/Accounts/{child}/Calls/{theirs.sid}.json", auth=ADMIN)
    ).status_code == 200


async def test_unknown_route_and_method(one: Api) -> None:
    r = await one.client.get("/2012-04-24/Nothing.json", auth=ADMIN)
    assert r.status_code == 404 and r.json()["code"] == 20404
    r = await one.client.delete(f"/2012-04-24/Accounts/{ADMIN_SID}/Calls/{SID}.json", auth=ADMIN)
    assert r.status_code == 405 and r.json()["status"] == 405


async def test_openapi_describes_the_routes_and_list_parameters(one: Api) -> None:
    doc = (await one.client.get("/openapi.json")).json()
    for prefix in ("/2012-04-24", "/restcomm/2012-04-24"):
        assert f"{prefix}/Accounts/{{AccountSid}}/Calls" in doc["paths"]
        assert f"{prefix}/Accounts/{{AccountSid}}/Calls/{{CallSid}}" in doc["paths"]
        assert "post" in doc["paths"][f"{prefix}/Accounts"]
    params = {p["name"] for p in doc["paths"]["/2012-04-24/Accounts/{AccountSid}/Calls"]["get"]["parameters"]}
    assert params >= {"AccountSid", "To", "From", "Status", "StartTime", "EndTime", "ParentCallSid", "SortBy"}
    assert params >= {"Page", "PageSize", "Limit", "AfterSid"}
    assert doc["components"]["securitySchemes"]["basic"]["scheme"] == "basic"
    assert doc["security"] == [{"basic": []}]
