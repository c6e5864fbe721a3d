"""POST Calls and live call modification: parameter validation (every bad value is a 400 naming it)."""

from __future__ import annotations

import pytest

from callplane.api.call_control import parse_call_request, parse_call_update
from callplane.core.errors import ApiError
from callplane.engine.control import CallRequest, CallUpdate
from tests.api.conftest import ADMIN, ADMIN_SID, Api

AC = ADMIN_SID
GOOD = {"From": "+15551234", "To": "sip:bob@127.0.0.1:5090", "Url": "http://127.0.0.1:8000/rcml"}


def test_defaults() -> None:
    assert parse_call_request(AC, dict(GOOD)) == CallRequest(
        account_sid=AC, from_="+15551234", to="sip:bob@127.0.0.1:5090", url="http://127.0.0.1:8000/rcml"
    )


def test_every_parameter() -> None:
    req = parse_call_request(
        AC,
        {
            **GOOD,
            "Method": "get",
            "FallbackUrl": "https://AC1:tok@app.example/fallback",
            "FallbackMethod": "GET",
            "StatusCallback": "http://127.0.0.1:8000/status",
            "StatusCallbackMethod": "GET",
            "StatusCallbackEvent": "completed, initiated ringing,answered",
            "Timeout": "10",
            "Username": "u",
            "Password": "p",
            "X-Custom-Header2": "432",
        },
    )
    assert req.method == "GET" and req.fallback_method == "GET" and req.status_callback_method == "GET"
    assert req.status_callback_events == ("initiated", "ringing", "answered", "completed")
    assert (req.timeout, req.username, req.password) == (10, "u", "p")
    assert req.headers == (("X-Custom-Header2", "432"),)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"From": ""}, "From"),
        ({"To": " "}, "To"),
        ({"Url": ""}, "Url"),
        ({"Url": "ftp://x/y"}, "Url"),
        ({"Url": "/relative"}, "Url"),
        ({"Method": "PUT"}, "Method"),
        ({"FallbackUrl": "nope"}, "FallbackUrl"),
        ({"FallbackMethod": "DELETE"}, "FallbackMethod"),
        ({"StatusCallback": "mailto:a@b"}, "StatusCallback"),
        ({"StatusCallbackMethod": "HEAD"}, "StatusCallbackMethod"),
        ({"StatusCallbackEvent": "answered,hungup"}, "StatusCallbackEvent"),
        ({"Timeout": "ten"}, "Timeout"),
        ({"Timeout": "0"}, "Timeout"),
        ({"Timeout": "601"}, "Timeout"),
        ({"X-Bad Header": "1"}, "X-Bad Header"),
        ({"X-Injected": "a\r\nVia: evil"}, "X-Injected"),
    ],
)
def test_bad_values_are_400_naming_the_parameter(change: dict[str, str], named: str) -> None:
    fields = {**GOOD, **change}
    with pytest.raises(ApiError) as err:
        parse_call_request(AC, fields)
    assert err.value.status == 400
    assert named in err.value.message


def test_update_parsing() -> None:
    assert parse_call_update({"Url": "http://h/x", "Method": "GET"}) == CallUpdate(url="http://h/x", method="GET")
    assert parse_call_update({"Status": "Completed"}).status == "completed"
    assert parse_call_update({"Mute": "true"}).mute is True
    assert parse_call_update({"Mute": "false", "Url": "http://h/x"}).mute is False
    assert parse_call_update({"Url": "http://h/x"}).mute is None  # absent means untouched (not Restcomm's unmute)
    for bad in ({}, {"Status": "ringing"}, {"Mute": "yes"}, {"Url": "h/x"}):
        with pytest.raises(ApiError) as err:
            parse_call_update(bad)
        assert err.value.status == 400


def test_child_call_mode_parsing() -> None:
    url = {"Url": "http://h/x"}
    assert parse_call_update(url).child_call_mode == "hangup"
    assert parse_call_update({**url, "ChildCallMode": "StayConnected"}).child_call_mode == "stay"
    assert parse_call_update({**url, "ChildCallMode": "move"}).child_call_mode == "move"
    assert parse_call_update({**url, "MoveConnectedCallLeg": "TRUE"}).child_call_mode == "move"
    assert parse_call_update({**url, "MoveConnectedCallLeg": "false"}).child_call_mode == "hangup"
    for bad in ({"ChildCallMode": "Park"}, {"MoveConnectedCallLeg": "yes"}):
        with pytest.raises(ApiError) as err:
            parse_call_update({**url, **bad})
        assert err.value.status == 400 and next(iter(bad)) in err.value.message


async def test_without_an_engine_post_calls_answers_503_after_validation(api: Api) -> None:
    url = f"/2012-04-24/Accounts/{ADMIN_SID}/Calls.json"
    bad = await api.client.post(url, data={"From": "a", "To": "b"}, auth=ADMIN)
    assert bad.status_code == 400
    assert bad.json() == {
        "code": 20001,
        "message": "Url is required",
        "more_info": "https://www.twilio.com/docs/errors/20001",
        "status": 400,
    }
    r = await api.client.post(url, data=GOOD, auth=ADMIN)
    assert r.status_code == 503
    assert r.json()["message"] == "The call engine is not running on this node"
    unauth = await api.client.post(url, data=GOOD, auth=(ADMIN_SID, "wrong-token-123456"))
    assert unauth.status_code == 401
