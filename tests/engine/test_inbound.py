"""Inbound routing and authentication on their own (engine/inbound.py), against a real store; the calls themselves
are judged with SIPp in tests/interop/test_inbound_calls.py."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from callplane.core.ids import IdSource
from callplane.core.secrets import digest_ha1
from callplane.engine.inbound import (
    InboundPolicy,
    InboundRouter,
    Refusal,
    Route,
    forwarded_from,
    sip_header_params,
    uri_user,
)
from callplane.sip.digest import Challenge, Credentials, DigestClient, DigestServer
from callplane.sip.events import IncomingCall
from callplane.store import accounts, clients, numbers
from callplane.store.clients import ClientRecord
from callplane.store.numbers import NumberRecord
from tests.api.conftest import ADMIN_SID, T0, Api
from tests.statements import statements

REALM = "callplane"
NOW = 1_800_000_000.0
RURI = "sip:+15551230000@192.0.2.1:5080"
TRUNK = InboundPolicy((ipaddress.ip_network("10.0.0.0/24"),))


def invite(
    request_uri: str = RURI, from_uri: str = "sip:+15550001111@10.0.0.9", source: str = "10.0.0.9"
) -> IncomingCall:
    return IncomingCall("c1", request_uri, from_uri, None, request_uri, None, None, (), (source, 5060, "UDP"))


def alice(**changes: object) -> ClientRecord:
    md5, sha = digest_ha1("alice", REALM, "wonderland-42")
    record = ClientRecord(
        "CL" + "1" * 32, ADMIN_SID, T0, T0, "Alice", "alice", REALM, md5, sha, voice_url="http://app/alice"
    )
    return replace(record, **changes)  # type: ignore[arg-type]


NUMBER = NumberRecord(
    "PN" + "1" * 32,
    ADMIN_SID,
    T0,
    T0,
    "main",
    "+15551230000",
    voice_url="http://app/rcml",
    voice_method="GET",
    voice_fallback_url="http://app/fallback",
    status_callback="http://app/status",
)


def digest(secret: bytes = b"k" * 32) -> DigestServer:
    return DigestServer(REALM, secret, IdSource(1), algorithms=("MD5",))


PHONE = DigestClient(IdSource(2))  # one phone: its nonce counts grow, as a real one's do


def answer(refusal: Route | Refusal, password: str = "wonderland-42", uri: str = RURI, user: str = "alice") -> str:
    assert isinstance(refusal, Refusal) and refusal.status == 407
    (name, value), *_ = refusal.headers
    assert name == "Proxy-Authenticate"
    return PHONE.authorization(Challenge.parse(value), Credentials(user, password), "INVITE", uri)


def test_headers_become_sip_header_params_in_order() -> None:
    headers = (
        ("User-Agent", "phone"),
        ("X-Tenant", "a"),
        ("diversion", "<tel:+1001>;reason=busy, <sip:+1002@h>;reason=unconditional"),
        ("History-Info", "<sip:a@h>;index=1"),
        ("Diversion", "<sip:+1003@h>"),
        ("x-lower", "b"),
        ("P-Asserted-Identity", "<sip:x@h>"),
    )
    assert sip_header_params(headers) == (
        ("X-Tenant", "a"),
        ("Diversion", "<tel:+1001>;reason=busy"),
        ("Diversion", "<sip:+1002@h>;reason=unconditional"),
        ("History-Info", "<sip:a@h>;index=1"),
        ("Diversion", "<sip:+1003@h>"),
        ("x-lower", "b"),
    )
    assert forwarded_from(headers) == "+1001"
    assert forwarded_from((("Diversion", "garbage"),)) is None and forwarded_from(()) is None
    assert uri_user("tel:+15550001111;phone-context=x") == "+15550001111"
    assert uri_user("sip:bob@h") == "bob" and uri_user("sip:h") == "" and uri_user("<<") == ""


def test_trusted_peers_are_cidrs_and_loopback_is_not_implied() -> None:
    assert TRUNK.trusts("10.0.0.200") and not TRUNK.trusts("10.0.1.1")
    assert not TRUNK.trusts("127.0.0.1") and not TRUNK.trusts("not-an-address")
    assert not InboundPolicy().trusts("127.0.0.1")


async def test_a_trunk_reaches_a_number_after_e164_normalisation(api: Api) -> None:
    await numbers.add(api.db, NUMBER)
    router = InboundRouter(api.db, digest(), TRUNK)
    route = await router.route(invite("sip:001-555-123-0000@192.0.2.1"), (), b"", NOW)
    assert route == Route(
        ADMIN_SID, "http://app/rcml", "GET", "http://app/fallback", "POST", "http://app/status", "POST", NUMBER.sid
    )
    assert await router.route(invite("sip:+15559999999@h"), (), b"", NOW) == Refusal(404, "Not Found")
    # A number without an application is not a route either.
    router = InboundRouter(api.db, digest(), TRUNK)
    await numbers.add(api.db, replace(NUMBER, sid="PN" + "2" * 32, phone_number="+15551230001", voice_url=None))
    assert await router.route(invite("sip:+15551230001@h"), (), b"", NOW) == Refusal(404, "Not Found")


@pytest.mark.parametrize("anonymous", [False, True])
async def test_anonymous_callers_reach_numbers_only_when_allowed(api: Api, anonymous: bool) -> None:
    await numbers.add(api.db, NUMBER)
    router = InboundRouter(api.db, digest(), InboundPolicy(TRUNK.trusted, anonymous))
    outsider = invite(source="203.0.113.5")
    route = await router.route(outsider, (), b"", NOW)
    unknown = await router.route(invite("sip:+15559999999@h", source="203.0.113.5"), (), b"", NOW)
    if anonymous:
        assert isinstance(route, Route) and route.phone_number_sid == NUMBER.sid
        assert unknown == Refusal(404, "Not Found")
    else:
        assert route == unknown == Refusal(403, "Forbidden")


async def test_a_client_is_challenged_then_routed(api: Api) -> None:
    await numbers.add(api.db, NUMBER)
    await clients.add(api.db, alice())
    router = InboundRouter(api.db, digest(), InboundPolicy())
    from_alice = invite(from_uri="sip:alice@192.0.2.1", source="203.0.113.5")
    challenge = await router.route(from_alice, (), b"", NOW)
    auth = answer(challenge)
    # To a number: the number's application; elsewhere: the Client's own.
    route = await router.route(from_alice, (auth,), b"", NOW)
    assert isinstance(route, Route) and (route.kind, route.phone_number_sid) == ("number", NUMBER.sid)
    to_bob = replace(from_alice, request_uri="sip:bob@192.0.2.1:5080")
    route = await router.route(to_bob, (answer(challenge, uri="sip:bob@192.0.2.1:5080"),), b"", NOW)
    assert route == Route(ADMIN_SID, "http://app/alice", kind="client")
    # SIPp's digest uri leaves the user out: the same host and port are accepted, another host is not.
    assert isinstance(await router.route(from_alice, (answer(challenge, uri="sip:192.0.2.1:5080"),), b"", NOW), Route)
    wrong_host = answer(challenge, uri="sip:192.0.2.99:5080")
    assert await router.route(from_alice, (wrong_host,), b"", NOW) == Refusal(400, "Digest URI Mismatch")


async def test_bad_credentials(api: Api) -> None:
    await clients.add(api.db, alice())
    await clients.add(api.db, replace(alice(), sid="CL" + "2" * 32, login="bob", status=0))
    router = InboundRouter(api.db, digest(), InboundPolicy())
    from_alice = invite(from_uri="sip:alice@192.0.2.1", source="203.0.113.5")
    challenge = await router.route(from_alice, (), b"", NOW)
    assert await router.route(from_alice, (answer(challenge, "guess"),), b"", NOW) == Refusal(403, "Forbidden")
    # Credentials of another user, and a disabled Client: 403 (after the challenge).
    assert await router.route(from_alice, (answer(challenge, user="mallory"),), b"", NOW) == Refusal(403, "Forbidden")
    from_bob = invite(from_uri="sip:bob@192.0.2.1", source="203.0.113.5")
    assert (await router.route(from_bob, (), b"", NOW)).status == 407  # type: ignore[union-attr]
    assert await router.route(from_bob, (answer(challenge, user="bob"),), b"", NOW) == Refusal(403, "Forbidden")
    # The same credentials again (a replayed nonce count) are challenged again.
    once = answer(challenge)
    assert isinstance(await router.route(from_alice, (once,), b"", NOW), Route)
    assert (await router.route(from_alice, (once,), b"", NOW)).status == 407  # type: ignore[union-attr]
    # A nonce that is too old is challenged again, stale; one that is not ours, again.
    stale = await router.route(from_alice, (answer(challenge),), b"", NOW + 3600)
    assert isinstance(stale, Refusal) and stale.status == 407 and "stale=true" in stale.headers[0][1]
    elsewhere = await InboundRouter(api.db, digest(b"x" * 32), InboundPolicy()).route(from_alice, (), b"", NOW)
    assert (await router.route(from_alice, (answer(elsewhere),), b"", NOW)).status == 407  # type: ignore[union-attr]


async def test_a_trusted_proxy_vouches_for_a_client(api: Api) -> None:
    await clients.add(api.db, alice())
    router = InboundRouter(api.db, digest(), TRUNK)
    route = await router.route(invite("sip:bob@h", from_uri="sip:alice@h"), (), b"", NOW)
    assert route == Route(ADMIN_SID, "http://app/alice", kind="client")


async def test_a_suspended_or_closed_accounts_numbers_and_clients_take_no_calls(api: Api) -> None:
    """Restcomm's CallLifecycleTest: a call to or from a suspended or closed account is rejected."""
    child = "AC" + "c" * 32
    await api.add_account(child, "child-token-0000000", parent=ADMIN_SID)
    await numbers.add(api.db, replace(NUMBER, account_sid=child))
    await clients.add(api.db, alice(account_sid=child))
    router = InboundRouter(api.db, digest(), TRUNK)
    from_alice = invite(from_uri="sip:alice@192.0.2.1", source="203.0.113.5")
    assert isinstance(await router.route(invite(), (), b"", NOW), Route)
    for status in ("suspended", "closed"):
        await accounts.update(api.db, child, {"status": status})
        assert await router.route(invite(), (), b"", NOW) == Refusal(403, "Forbidden")
        # The Client is still challenged first (nothing is told before it proves who it is), then refused.
        challenge = await router.route(from_alice, (), b"", NOW)
        assert await router.route(from_alice, (answer(challenge),), b"", NOW) == Refusal(403, "Forbidden")
    await accounts.update(api.db, child, {"status": "active"})
    assert isinstance(await router.route(invite(), (), b"", NOW), Route)


async def test_a_trunks_call_to_a_number_reads_the_store_once(api: Api) -> None:
    """The Client lookup is for callers who must authenticate, and for a trunk's calls no number answers."""
    await numbers.add(api.db, NUMBER)
    await clients.add(api.db, alice())
    router = InboundRouter(api.db, digest(), TRUNK)
    with statements(api.db) as seen:
        route = await router.route(invite(from_uri="sip:alice@h"), (), b"", NOW)
    assert isinstance(route, Route) and route.phone_number_sid == NUMBER.sid
    assert len(seen) == 1 and "incoming_phone_numbers" in seen[0]
