"""Outbound proxies: parsing the setting, the pool's health rules in virtual time, the per-call next proxy."""

from __future__ import annotations

import pytest

from callplane import cli
from callplane.core.errors import ConfigError
from callplane.core.settings import Settings
from callplane.engine.trunks import ProxyPool, Trunks, parse_proxies

A, B, C = "sip:10.0.0.1", "sip:10.0.0.2:5070", "sip:carrier.example;transport=tcp"


def pool(*uris: str, failures: int = 3, retry: float = 30.0) -> ProxyPool:
    return ProxyPool(parse_proxies(",".join(uris)), failures=failures, retry=retry)


def names(p: ProxyPool, now: float) -> str | None:
    chosen = p.choose(now)
    return str(chosen) if chosen is not None else None


# -- the setting ------------------------------------------------------------------------------------------------
def test_parse_keeps_the_order_of_preference() -> None:
    proxies = parse_proxies(f" {A} , {B},{C} ")
    assert [str(p) for p in proxies] == [A, B, C]
    assert parse_proxies("") == () and parse_proxies(None) == () and parse_proxies("  ") == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{A},10.0.0.9", "entry '10.0.0.9' is not a SIP URI (malformed URI); expected sip:host"),
        (f"{A},sips:10.0.0.9", "entry 'sips:10.0.0.9' is not a sip: URI"),
        (f"{A},sip:10.0.0.9:99999", "entry 'sip:10.0.0.9:99999' is not a SIP URI (malformed port)"),
        ("sip:trunk@10.0.0.9", "entry 'sip:trunk@10.0.0.9' is not sip:host[:port][;params]"),
        ("sip:10.0.0.9;transport=sctp", "entry 'sip:10.0.0.9;transport=sctp' is not usable: transport must be"),
        (f"{A},,{B}", "CALLPLANE_OUTBOUND_PROXY has an empty entry"),
        (f"{A},{B},{A}", f"CALLPLANE_OUTBOUND_PROXY lists '{A}' twice"),
        (f"{A},SIP:10.0.0.1;transport=UDP", "CALLPLANE_OUTBOUND_PROXY lists 'SIP:10.0.0.1;transport=UDP' twice"),
    ],
)
def test_a_bad_entry_is_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_proxies(text)
    assert message in str(e.value)


def test_serve_refuses_a_bad_proxy_before_starting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLPLANE_OUTBOUND_PROXY", f"{A},sip:10.0.0.9;transport=sctp")
    assert cli.main(["serve", "--data", "/nonexistent/never-created"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("callplane: error: CALLPLANE_OUTBOUND_PROXY entry 'sip:10.0.0.9;transport=sctp'")
    monkeypatch.setenv("CALLPLANE_OUTBOUND_PROXY", A)
    assert cli.main(["serve", "--data", "/nonexistent/never-created", "--outbound-proxy-failures", "0"]) == 2
    assert "CALLPLANE_OUTBOUND_PROXY_FAILURES is a number from 1 to 1000, got '0'" in capsys.readouterr().err
    assert cli.main(["serve", "--data", "/nonexistent/never-created", "--outbound-proxy-retry", "soon"]) == 2
    assert "CALLPLANE_OUTBOUND_PROXY_RETRY is a number of seconds" in capsys.readouterr().err


def test_settings_defaults_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    s = Settings.from_env({})
    assert (s.outbound_proxy_failure_limit, s.outbound_proxy_retry_seconds) == (3, 30.0)
    s = Settings.from_env({"CALLPLANE_OUTBOUND_PROXY_FAILURES": "5", "CALLPLANE_OUTBOUND_PROXY_RETRY": "2.5"})
    assert (s.outbound_proxy_failure_limit, s.outbound_proxy_retry_seconds) == (5, 2.5)
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = capsys.readouterr().out
    for env in ("CALLPLANE_OUTBOUND_PROXY_FAILURES; default 3", "CALLPLANE_OUTBOUND_PROXY_RETRY; default 30"):
        assert env in " ".join(text.split())


# -- the pool ---------------------------------------------------------------------------------------------------
def test_the_first_proxy_is_preferred() -> None:
    p = pool(A, B, C)
    assert names(p, 0.0) == A
    assert ProxyPool(()).choose(0.0) is None


def test_n_failures_in_a_row_skip_a_proxy_until_the_cool_down_ends() -> None:
    p = pool(A, B, failures=3, retry=30.0)
    a = p.proxies[0]
    p.failed(a, 1.0)
    p.failed(a, 2.0)
    assert names(p, 2.0) == A  # two failures: still first
    p.failed(a, 3.0)
    assert names(p, 3.0) == B and not p.usable(a, 3.0)
    assert names(p, 32.9) == B
    assert names(p, 33.0) == A  # 30 s after the third failure it is tried again


def test_a_proxy_back_from_its_cool_down_is_skipped_again_after_one_failure() -> None:
    p = pool(A, B, failures=3, retry=10.0)
    a = p.proxies[0]
    for t in (1.0, 2.0, 3.0):
        p.failed(a, t)
    assert names(p, 13.0) == A
    p.failed(a, 13.0)
    assert names(p, 13.0) == B and names(p, 22.9) == B and names(p, 23.0) == A


def test_a_success_resets_the_count() -> None:
    p = pool(A, B, failures=3)
    a = p.proxies[0]
    p.failed(a, 1.0)
    p.failed(a, 2.0)
    p.succeeded(a)
    p.failed(a, 3.0)
    p.failed(a, 4.0)
    assert names(p, 4.0) == A  # 2 in a row since the success, not 4
    p.failed(a, 5.0)
    assert names(p, 5.0) == B
    p.succeeded(a)  # e.g. a call that was already on its way to A got answered
    assert names(p, 5.0) == A


def test_failures_of_one_proxy_do_not_touch_another() -> None:
    p = pool(A, B, failures=1)
    p.failed(p.proxies[1], 1.0)
    assert names(p, 1.0) == A and not p.usable(p.proxies[1], 1.0) and p.usable(p.proxies[0], 1.0)


def test_when_every_proxy_is_skipped_the_least_recently_failed_is_used() -> None:
    p = pool(A, B, C, failures=1, retry=100.0)
    a, b, c = p.proxies
    p.failed(b, 1.0)
    p.failed(c, 2.0)
    p.failed(a, 3.0)
    assert names(p, 4.0) == B
    p.failed(b, 5.0)
    assert names(p, 6.0) == C
    assert names(p, 101.0) == C  # still all skipped: A until 103, B until 105, C until 102
    assert names(p, 102.0) == C  # C usable again
    assert names(p, 103.0) == A


# -- a call's fail-over -----------------------------------------------------------------------------------------
def test_a_failed_invite_goes_to_the_next_usable_proxy_and_never_back() -> None:
    t = Trunks(pool(A, B, C, failures=1, retry=30.0))
    first = t.target("+15551234", 0.0)
    assert first == ("sip:+15551234@10.0.0.1", "sip:+15551234@10.0.0.1")
    assert t.ended(first[0], 503, 1.0)  # counted against A
    second = t.next_target(first[0], 1.0)
    assert second == ("sip:+15551234@10.0.0.2:5070", "sip:+15551234@10.0.0.2:5070")
    assert t.ended(second[0], 408, 2.0)
    third = t.next_target(second[0], 2.0)
    assert third == ("sip:+15551234@carrier.example;transport=tcp", "sip:+15551234@carrier.example")
    assert t.ended(third[0], 503, 3.0)
    assert t.next_target(third[0], 3.0) is None  # the last one: the call fails


def test_the_next_proxy_skips_those_cooling_down() -> None:
    t = Trunks(pool(A, B, C, failures=1))
    b = t.pool.proxies[1]
    t.pool.failed(b, 0.0)
    first = t.target("911", 1.0)
    assert first is not None and t.ended(first[0], 503, 1.0)
    assert t.next_target(first[0], 1.0) == ("sip:911@carrier.example;transport=tcp", "sip:911@carrier.example")


@pytest.mark.parametrize("status", [200, 404, 480, 486, 487, 500, 603])
def test_other_outcomes_show_the_proxy_works(status: int) -> None:
    t = Trunks(pool(A, B, failures=2))
    a = t.pool.proxies[0]
    t.pool.failed(a, 0.0)
    assert not t.ended("sip:123@10.0.0.1", status, 1.0)
    t.pool.failed(a, 2.0)
    assert t.target("1", 2.0) == ("sip:1@10.0.0.1", "sip:1@10.0.0.1")  # one failure since the reset


def test_only_calls_through_a_proxy_are_trunk_calls() -> None:
    t = Trunks(pool(A, B, C, failures=1))
    assert t.proxy_of("sip:1@10.0.0.1") is t.pool.proxies[0]
    assert t.proxy_of("sip:1@10.0.0.1:5060") is None  # another port
    assert t.proxy_of("sip:1@10.0.0.2:5070;transport=tcp") is None  # another transport
    assert t.proxy_of("sip:1@CARRIER.example;transport=TCP") is t.pool.proxies[2]
    assert t.proxy_of("sip:alice@192.0.2.7:5062") is None and t.proxy_of("not a uri") is None
    assert not t.ended("sip:alice@192.0.2.7:5062", 503, 0.0)
    assert t.next_target("sip:alice@192.0.2.7:5062", 0.0) is None
    assert t.target("1", 0.0) == ("sip:1@10.0.0.1", "sip:1@10.0.0.1")  # nothing was counted against A
    assert not Trunks(ProxyPool(())) and Trunks(ProxyPool(())).target("1", 0.0) is None
