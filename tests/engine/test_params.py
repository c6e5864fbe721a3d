"""Webhook parameters: exact names, values and order."""

from __future__ import annotations

from datetime import UTC, datetime

from callplane.engine.params import CallFacts, rcml_params, status_params

CALL = CallFacts(
    sid="ID" + "0" * 32 + "-CA" + "c" * 32,
    instance_id="ID" + "0" * 32,
    account_sid="AC" + "a" * 32,
    from_="bob",
    to="+1111",
    direction="inbound",
    created=datetime(2021, 12, 15, 9, 29, 28, 539000, tzinfo=UTC),
    sip_headers=(
        ("Diversion", '<tel:+19195551002>;reason=user-busy;screen="yes";privacy="off"'),
        ("Diversion", '<tel:+19195551001>;reason=unconditional;screen="yes";privacy="full"'),
    ),
)


def test_rcml_parameters_follow_the_seed_example() -> None:
    assert rcml_params(CALL, "ringing") == [
        ("CallSid", CALL.sid),
        ("InstanceId", CALL.instance_id),
        ("AccountSid", CALL.account_sid),
        ("From", "bob"),
        ("To", "+1111"),
        ("CallStatus", "ringing"),
        ("ApiVersion", "2012-04-24"),
        ("Direction", "inbound"),
        ("CallerName", "null"),
        ("ForwardedFrom", "null"),
        ("CallTimestamp", "2021-12-15T09:29:28.539Z"),
        ("SipHeader_Diversion", '<tel:+19195551002>;reason=user-busy;screen="yes";privacy="off"'),
        ("SipHeader_Diversion", '<tel:+19195551001>;reason=unconditional;screen="yes";privacy="full"'),
    ]


def test_status_callback_adds_progress_fields_and_duration_only_on_completed() -> None:
    when = datetime(2026, 11, 30, 5, 1, 2, tzinfo=UTC)
    answered = status_params(CALL, "answered", when)
    assert answered[-3:] == [
        ("Timestamp", "Mon, 30 Nov 2026 05:01:02 +0000"),
        ("CallbackSource", "call-progress-events"),
        ("SequenceNumber", "2"),
    ]
    assert ("CallStatus", "answered") in answered
    assert all(k != "CallDuration" for k, _ in answered)
    completed = status_params(CALL, "completed", when, duration=11)
    assert ("CallDuration", "11") in completed
    assert completed[-1] == ("SequenceNumber", "3")
    assert [k for k, _ in completed].count("SipHeader_Diversion") == 2
