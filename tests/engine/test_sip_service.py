"""The node's SIP service over real loopback sockets and a real database (both backends).

A callplane UA registers with digest auth; the binding lands in the store, survives a restart of the service, and is
visible to another node sharing the database. Unroutable INVITEs get 404; wrong passwords get no binding.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from callplane.core.clock import SystemClock
from callplane.core.ids import IdSource
from callplane.engine.sip_service import KeyedLocks, SipService, StaticClientSecrets
from callplane.sip.digest import Challenge, Credentials, DigestClient
from callplane.sip.events import CallFailed, Registered, RegistrationFailed
from callplane.sip.message import Response, parse_message
from callplane.store import registrations
from callplane.store.db import Database
from tests.interop.uadriver import UaDriver, offer_sdp
from tests.sip.test_aio import UdpPeer

INSTANCE = "ID" + "9" * 32
OWNER = "AC" + "5" * 32


def _service(db: Database) -> SipService:
    return SipService(
        db,
        IdSource(),
        SystemClock(),
        host="127.0.0.1",
        port=0,
        instance_id=INSTANCE,
        realm="callplane.test",
        clients=StaticClientSecrets({"alice": "wonderland-42"}, account_sid=OWNER),
    )


@pytest.fixture
async def service(db: Database) -> AsyncIterator[SipService]:
    svc = _service(db)
    await svc.start()
    yield svc
    await svc.close()


def _target(svc: SipService) -> str:
    host, port = svc.local["UDP"]
    return f"sip:{host}:{port}"


async def test_register_with_digest_is_persisted_and_survives_restart(db: Database, service: SipService) -> None:
    async with UaDriver(credentials=Credentials("alice", "wonderland-42")) as phone:
        phone.act(phone.ua.register, _target(service), "sip:alice@127.0.0.1", expires=600)
        granted = await phone.wait_for(Registered)
        assert granted.expires == 600
        phone_port = phone.port
    rows = await registrations.lookup(db, "sip:alice@127.0.0.1", SystemClock().wall().timestamp())
    assert len(rows) == 1
    assert f":{phone_port}" in rows[0].contact and rows[0].instance_id == INSTANCE
    assert rows[0].account_sid == OWNER  # the binding belongs to the Client's account
    await service.close()
    again = _service(db)  # a restart, or a second node on the same database
    await again.start()
    try:
        assert [b.contact for b in await again.lookup("sip:alice@127.0.0.1")] == [rows[0].contact]
    finally:
        await again.close()


async def test_wrong_password_is_refused_and_nothing_is_stored(db: Database, service: SipService) -> None:
    async with UaDriver(credentials=Credentials("alice", "not-the-password")) as phone:
        phone.act(phone.ua.register, _target(service), "sip:alice@127.0.0.1", expires=600)
        failed = await phone.wait_for(RegistrationFailed)
        assert failed.status in (401, 403)
    assert await registrations.load_all(db, SystemClock().wall().timestamp()) == []


async def test_unknown_client_and_unroutable_invite(db: Database, service: SipService) -> None:
    async with UaDriver(credentials=Credentials("mallory", "whatever-123")) as phone:
        phone.act(phone.ua.register, _target(service), "sip:mallory@127.0.0.1", expires=600)
        assert (await phone.wait_for(RegistrationFailed)).status in (401, 403)
        phone.act(
            phone.ua.invite, f"sip:+15550100@127.0.0.1:{service.local['UDP'][1]}", "sip:bob@127.0.0.1", offer_sdp(phone)
        )
        failed = await phone.wait_for(CallFailed)
        assert failed.status == 404


def _register_bytes(port: int, user: str, n: int) -> bytes:
    return (
        f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKflood{n};rport\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag=f{n}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: flood-{n}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port}>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def test_a_flood_of_distinct_aors_leaves_no_lock_behind(service: SipService) -> None:
    peer = UdpPeer()
    try:
        for n in range(40):
            peer.sock.sendto(_register_bytes(peer.port, f"u{n}", n), service.local["UDP"])
        statuses = [parse_message(await peer.recv()) for _ in range(40)]
        assert {r.status for r in statuses if isinstance(r, Response)} == {401}
        assert len(service.aor_locks) == 0
    finally:
        peer.close()


async def test_keyed_locks_serialise_one_key_and_forget_it() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def user(name: str, key: str) -> None:
        async with locks.hold(key):
            order.append(f"{name}+")
            await asyncio.sleep(0)
            order.append(f"{name}-")

    await asyncio.gather(user("a", "k"), user("b", "k"), user("c", "other"))
    assert order.index("a-") < order.index("b+")  # same key: one at a time
    assert len(locks) == 0


@pytest.mark.parametrize("field", ["response", "nonce"])
async def test_non_ascii_digest_gets_401_and_no_traceback(
    service: SipService, caplog: pytest.LogCaptureFixture, field: str
) -> None:
    peer = UdpPeer()
    port = peer.port
    try:
        peer.sock.sendto(_register_bytes(port, "alice", 1), service.local["UDP"])
        challenge = parse_message(await peer.recv())
        assert isinstance(challenge, Response) and challenge.status == 401
        nonce = Challenge.parse(challenge.headers.get_all("www-authenticate")[0]).nonce
        params = {"nonce": nonce, "response": "0" * 31 + "é"}
        params[field] = params[field][:-1] + "é"
        auth = (
            f'Authorization: Digest username="alice", realm="callplane.test", nonce="{params["nonce"]}", '
            f'uri="sip:127.0.0.1", response="{params["response"]}", algorithm=MD5, qop=auth, nc=00000001, '
            'cnonce="abc"\r\n'
        )
        raw = _register_bytes(port, "alice", 2).replace(b"Content-Length", auth.encode() + b"Content-Length")
        peer.sock.sendto(raw, service.local["UDP"])
        answer = parse_message(await peer.recv())
        assert isinstance(answer, Response) and answer.status == 401
        assert not [r for r in caplog.records if r.exc_info]
    finally:
        peer.close()


async def test_requests_to_a_client_registered_over_tcp_reuse_its_connection(service: SipService) -> None:
    reader, writer = await asyncio.open_connection(*service.local["TCP"])
    port = writer.get_extra_info("sockname")[1]

    def register(cseq: int, auth: str = "") -> bytes:
        return (
            f"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKtcpreg{cseq}\r\n"
            "From: <sip:alice@127.0.0.1>;tag=tcp1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: tcp-reg\r\n"
            f"CSeq: {cseq} REGISTER\r\nContact: <sip:alice@127.0.0.1:9;transport=tcp>\r\nMax-Forwards: 70\r\n"
            f"{auth}Content-Length: 0\r\n\r\n"
        ).encode()

    async def response() -> Response:
        async with asyncio.timeout(5):
            msg = parse_message(await reader.readuntil(b"\r\n\r\n"), stream=True)
        assert isinstance(msg, Response)
        return msg

    try:
        writer.write(register(1))
        challenge = Challenge.parse((await response()).headers.get_all("www-authenticate")[0])
        value = DigestClient(IdSource(3)).authorization(
            challenge, Credentials("alice", "wonderland-42"), "REGISTER", "sip:127.0.0.1"
        )
        writer.write(register(2, f"Authorization: {value}\r\n"))
        assert (await response()).status == 200
        # Port 9 has no listener: the INVITE can only reach the phone on the connection it registered on.
        service.ua.invite("sip:alice@127.0.0.1:9;transport=tcp", "sip:+15550100@127.0.0.1", None, service._now())
        service.endpoint.flush()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"INVITE sip:alice@127.0.0.1:9;transport=tcp SIP/2.0\r\n")
    finally:
        writer.close()
