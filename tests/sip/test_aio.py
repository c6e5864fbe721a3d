"""The asyncio adapter over real loopback sockets (port 0)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from callplane.core.ids import IdSource
from callplane.sip.aio import SipEndpoint
from callplane.sip.headers import URI
from callplane.sip.message import Headers, Request, Response, parse_message
from callplane.sip.transaction import TimerConfig, UnsupportedTransport
from callplane.sip.transaction_events import (
    Peer,
    RequestReceived,
    ResponseReceived,
    TransactionTimeout,
    TransportError,
    TxEvent,
)


class Recorder:
    """Collects events; answers requests with ``answer`` (status) when set."""

    def __init__(self, answer: int | None = 200) -> None:
        self.events: list[TxEvent] = []
        self.answer = answer
        self.endpoint: SipEndpoint | None = None
        self.arrived = asyncio.Event()

    def __call__(self, event: TxEvent) -> None:
        self.events.append(event)
        self.arrived.set()
        if isinstance(event, RequestReceived) and self.answer is not None and self.endpoint is not None:
            self.endpoint.send_response(event.request.create_response(self.answer, to_tag="uas1"))

    async def wait_for(self, kind: type, count: int = 1) -> list[TxEvent]:
        async with asyncio.timeout(5):
            while len(found := [e for e in self.events if isinstance(e, kind)]) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return found


@pytest.fixture
async def uas() -> AsyncIterator[tuple[SipEndpoint, Recorder]]:
    rec = Recorder()
    ep = SipEndpoint(rec, ids=IdSource(1), port=0)
    rec.endpoint = ep
    await ep.start()
    yield ep, rec
    await ep.close()


@contextlib.asynccontextmanager
async def running(seed: int, *, udp: bool = True, tcp: bool = True) -> AsyncIterator[tuple[SipEndpoint, Recorder]]:
    """A started endpoint on free ports whose events a Recorder keeps (it answers nothing)."""
    rec = Recorder(answer=None)
    ep = SipEndpoint(rec, ids=IdSource(seed), port=0, udp=udp, tcp=tcp)
    await ep.start()
    try:
        yield ep, rec
    finally:
        await ep.close()


class UdpPeer:
    """A bare UDP socket playing the remote side."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    async def recv(self, timeout: float = 5.0) -> bytes:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            return await loop.sock_recv(self.sock, 70000)

    async def nothing(self, wait: float = 0.2) -> bool:
        try:
            await self.recv(wait)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def invite(port: int, target: int, branch: str = "z9hG4bKloop1", extra: str = "") -> bytes:
    return (
        f"INVITE sip:app@127.0.0.1:{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch={branch};rport\r\n"
        f"From: <sip:caller@127.0.0.1:{port}>;tag=c1\r\n"
        f"To: <sip:app@127.0.0.1:{target}>\r\n"
        f"Call-ID: loop-{branch}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_udp_invite_answered_via_rport_and_retransmission_absorbed(uas: tuple[SipEndpoint, Recorder]) -> None:
    ep, rec = uas
    peer = UdpPeer()
    try:
        peer.sock.sendto(invite(peer.port, ep.port), ("127.0.0.1", ep.port))
        ok = parse_message(await peer.recv())
        # Answered while the INVITE was handled: the 200 goes alone, no 100 Trying before it (§17.2.1).
        assert isinstance(ok, Response) and ok.status == 200
        # rport/received were stamped and the response went to the source port, not the sent-by port 9.
        assert str(ok.via) == f"SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKloop1;rport={peer.port};received=127.0.0.1"
        assert ok.to.tag == "uas1"
        peer.sock.sendto(invite(peer.port, ep.port), ("127.0.0.1", ep.port))
        # Absorbed: no second event (RFC 6026 accepted state), and the 2xx retransmission timer keeps going.
        again = parse_message(await peer.recv(2.0))
        assert isinstance(again, Response) and again.status == 200
        assert len([e for e in rec.events if isinstance(e, RequestReceived)]) == 1
    finally:
        peer.close()


@pytest.mark.parametrize(
    ("payload", "status", "warning"),
    [
        # Still answered: the response copies what the request had (RFC 4475 §3.1.2; the UAC matches on Via + CSeq).
        (invite(1, 2).replace(b"Call-ID: loop-z9hG4bKloop1\r\n", b""), 400, "missing mandatory header Call-ID"),
        (invite(1, 2).replace(b"To: <sip:app@127.0.0.1:2>\r\n", b"To: <sip:app@\r\n"), 400, "malformed address"),
        (invite(1, 2).replace(b"Call-ID: loop-z9hG4bKloop1\r\n", b"").replace(b"INVITE", b"ACK"), None, None),
        (invite(1, 2).replace(b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKloop1;rport\r\n", b""), None, None),
        (invite(1, 2).replace(b"Content-Length: 0", b"Content-Length: 50"), 400, "body shorter than Content-Length"),
        (invite(1, 2).replace(b"Content-Length: 0", b"Content-Length: x"), 400, "malformed Content-Length"),
        (invite(1, 2).replace(b"Max-Forwards: 70", b"Max-Forwards: many"), 400, "malformed Max-Forwards"),
        (invite(1, 2).replace(b"SIP/2.0/UDP", b"SIP/2.0/FOO"), 400, "unsupported transport in Via"),
        (invite(1, 2).replace(b"INVITE sip:app", b"INVITE mailto:app"), 416, "unsupported URI scheme"),
    ],
)
async def test_malformed_requests_answered_or_dropped(
    uas: tuple[SipEndpoint, Recorder], payload: bytes, status: int | None, warning: str | None
) -> None:
    ep, rec = uas
    peer = UdpPeer()
    try:
        peer.sock.sendto(payload, ("127.0.0.1", ep.port))
        if status is None:
            assert await peer.nothing()
            assert ep.stats["dropped"] == 1
        else:
            lines = (await peer.recv()).decode().split("\r\n")
            assert lines[0].startswith(f"SIP/2.0 {status} ")
            assert f'Warning: 399 callplane "{warning}"' in lines
            assert "branch=z9hG4bKloop1" in [line for line in lines if line.startswith("Via: ")][0]
            assert ep.stats["answered_bad"] == 1
        assert rec.events == []
    finally:
        peer.close()


async def test_garbage_flood_leaves_the_endpoint_answering(uas: tuple[SipEndpoint, Recorder]) -> None:
    ep, rec = uas
    peer = UdpPeer()
    try:
        rng = IdSource(3)
        for i in range(300):
            peer.sock.sendto(bytes.fromhex(rng.hex(1 + i % 200)), ("127.0.0.1", ep.port))
        peer.sock.sendto(b"\r\n\r\n", ("127.0.0.1", ep.port))  # keep-alive: ignored
        peer.sock.sendto(b"SIP/2.0 200 OK\r\n\r\n", ("127.0.0.1", ep.port))  # response without headers: dropped
        # The kernel may drop part of the burst (and the INVITE behind it): retransmit like a real UAC.
        for _ in range(10):
            peer.sock.sendto(invite(peer.port, ep.port, branch="z9hG4bKafter"), ("127.0.0.1", ep.port))
            try:
                first = parse_message(await peer.recv(0.5))
                break
            except TimeoutError:
                continue
        assert isinstance(first, Response) and first.status == 200
        assert len(await rec.wait_for(RequestReceived)) == 1
        assert ep.stats["bad"] == ep.stats["dropped"] >= 100
        dropped = ep.stats["dropped"]
        ep._on_datagram(b"x" * 70000, "127.0.0.1", peer.port)  # larger than any UDP payload: dropped
        assert ep.stats["dropped"] == dropped + 1
    finally:
        peer.close()


async def test_tcp_byte_by_byte_and_answer_on_same_connection(uas: tuple[SipEndpoint, Recorder]) -> None:
    ep, rec = uas
    reader, writer = await asyncio.open_connection("127.0.0.1", ep.port)
    port = writer.get_extra_info("sockname")[1]
    try:
        data = invite(0, ep.port, branch="z9hG4bKtcp").replace(b"SIP/2.0/UDP 127.0.0.1:9", b"SIP/2.0/TCP 127.0.0.1:9")
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            if i % 50 == 0:
                await writer.drain()
        await writer.drain()
        got: list[Request | Response] = []
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            got.append(parse_message(head, stream=True))
        assert [getattr(m, "status", None) for m in got] == [200]
        assert got[0].headers.get("Via") == f"SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKtcp;rport={port};received=127.0.0.1"
        writer.write(b"\r\n\r\n")  # keep-alive ping -> pong
        await writer.drain()
        async with asyncio.timeout(5):
            assert await reader.readexactly(2) == b"\r\n"
        # A stream that cannot be framed is closed.
        writer.write(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: nope\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            assert await reader.read() == b""
    finally:
        writer.close()


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_two_endpoints_options(uas: tuple[SipEndpoint, Recorder], transport: str) -> None:
    server, _ = uas
    rec = Recorder(answer=None)
    client = SipEndpoint(rec, ids=IdSource(2), port=0)
    await client.start()
    try:
        h = Headers([("From", "<sip:a@127.0.0.1>;tag=f1"), ("To", "<sip:b@127.0.0.1>"), ("Call-ID", "opt-1")])
        h.add("CSeq", "1 OPTIONS")
        req = Request("OPTIONS", URI.parse(f"sip:b@127.0.0.1:{server.port}"), h)
        key = client.send_request(req, Peer(transport, "127.0.0.1", server.port))
        (ev,) = await rec.wait_for(ResponseReceived)
        assert isinstance(ev, ResponseReceived) and ev.key == key and ev.response.status == 200
        assert ev.response.via.transport == transport and ev.response.via.port == client.port
    finally:
        await client.close()


async def test_client_retransmits_and_times_out_against_a_silent_peer() -> None:
    rec = Recorder(answer=None)
    ep = SipEndpoint(rec, ids=IdSource(4), port=0, tcp=False, timers=TimerConfig(t1=0.01, t2=0.04, t4=0.05))
    await ep.start()
    peer = UdpPeer()
    try:
        h = Headers([("From", "<sip:a@x>;tag=1"), ("To", "<sip:b@x>"), ("Call-ID", "silent"), ("CSeq", "1 OPTIONS")])
        key = ep.send_request(Request("OPTIONS", URI.parse("sip:b@x"), h), Peer("UDP", "127.0.0.1", peer.port))
        (ev,) = await rec.wait_for(TransactionTimeout)
        assert ev == TransactionTimeout(key, "F")
        copies: list[bytes] = []
        while True:
            try:
                copies.append(await peer.recv(0.1))
            except TimeoutError:
                break
        # The first send plus Timer E retransmissions (0.01, 0.03, 0.07, then every T2=0.04) until F at 0.64 s.
        assert len(copies) >= 10 and len(set(copies)) == 1
        assert parse_message(copies[0]).headers.get("Call-ID") == "silent"  # first send + Timer E retransmissions
        assert len(ep.layer) == 0
    finally:
        peer.close()
        await ep.close()


async def test_tcp_connect_failure_is_reported_as_transport_error() -> None:
    rec = Recorder(answer=None)
    ep = SipEndpoint(rec, ids=IdSource(6), port=0)
    await ep.start()
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    try:
        h = Headers([("From", "<sip:a@x>;tag=1"), ("To", "<sip:b@x>"), ("Call-ID", "refused"), ("CSeq", "1 OPTIONS")])
        key = ep.send_request(Request("OPTIONS", URI.parse("sip:b@x"), h), Peer("TCP", "127.0.0.1", closed_port))
        (ev,) = await rec.wait_for(TransportError)
        assert ev == TransportError(key)
        assert len(ep.layer) == 0
    finally:
        await ep.close()


async def test_endpoint_drives_a_user_agent_core() -> None:
    """attach(): the UA core (built on ep.layer) gets the input, and what it sends from the callback goes out."""
    from callplane.sip.events import IncomingCall
    from callplane.sip.ua import UserAgent

    ep = SipEndpoint(ids=IdSource(7), port=0, tcp=False)
    await ep.start()
    ua = UserAgent(IdSource(8), ep.local, tl=ep.layer)
    loop = asyncio.get_running_loop()
    seen: list[object] = []

    def on_event(ev: object) -> None:
        seen.append(ev)
        if isinstance(ev, IncomingCall):
            ua.reject(ev.call, 486, loop.time())

    ep.attach(ua, on_event)
    peer = UdpPeer()
    try:
        contact = f"Contact: <sip:caller@127.0.0.1:{peer.port}>\r\n"
        peer.sock.sendto(invite(peer.port, ep.port, "z9hG4bKua", contact), ("127.0.0.1", ep.port))
        statuses = []
        resp = parse_message(await peer.recv())
        assert isinstance(resp, Response)
        statuses.append(resp.status)
        assert statuses == [486] and await peer.nothing(0.1)  # rejected at once: no 100 Trying
        assert [type(e).__name__ for e in seen] == ["IncomingCall"]
        ack = invite(peer.port, ep.port, "z9hG4bKua").replace(b"INVITE", b"ACK")
        ack = ack.replace(b"To: <sip:app@127.0.0.1:" + str(ep.port).encode() + b">", b"To: " + str(resp.to).encode())
        peer.sock.sendto(ack, ("127.0.0.1", ep.port))
        assert await peer.nothing(0.7)  # ACKed: Timer G stops, no 486 retransmission (first would be at 0.5 s)
    finally:
        peer.close()
        await ep.close()


async def test_ipv6_loopback_and_advertised_host() -> None:
    rec = Recorder(answer=None)
    ep = SipEndpoint(rec, ids=IdSource(9), host="::1", port=0)
    try:
        await ep.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert ep.local == {"UDP": ("[::1]", ep.port), "TCP": ("[::1]", ep.port)}
        h = Headers([("From", "<sip:a@x>;tag=1"), ("To", "<sip:b@x>"), ("Call-ID", "v6"), ("CSeq", "1 OPTIONS")])
        server = SipEndpoint(None, ids=IdSource(10), host="::1", port=0, advertise="sip.example.net")
        await server.start()
        assert server.local["UDP"] == ("sip.example.net", server.port)
        server.on_event = lambda ev: server.send_response(ev.request.create_response(200))
        try:
            ep.send_request(Request("OPTIONS", URI.parse("sip:b@x"), h), Peer("UDP", "::1", server.port))
            (ev,) = await rec.wait_for(ResponseReceived)
            assert isinstance(ev, ResponseReceived) and ev.response.status == 200
            assert ev.response.via.host == "[::1]"
        finally:
            await server.close()
    finally:
        await ep.close()


async def test_tcp_connection_limit() -> None:
    ep = SipEndpoint(None, ids=IdSource(11), port=0, udp=False, max_connections=1)
    await ep.start()
    try:
        _r1, w1 = await asyncio.open_connection("127.0.0.1", ep.port)
        r2, w2 = await asyncio.open_connection("127.0.0.1", ep.port)
        async with asyncio.timeout(5):
            assert await r2.read() == b""  # the second one is closed by the endpoint
        assert len(ep._connections) == 1
        w1.close()
        w2.close()
    finally:
        await ep.close()


def options(call_id: str) -> Request:
    h = Headers([("From", "<sip:a@x>;tag=1"), ("To", "<sip:b@x>"), ("Call-ID", call_id), ("CSeq", "1 OPTIONS")])
    return Request("OPTIONS", URI.parse("sip:b@x"), h)


async def test_udp_to_a_hostname_resolves_once_and_caches() -> None:
    ep = SipEndpoint(Recorder(answer=None), ids=IdSource(12), port=0, tcp=False)
    await ep.start()
    peer = UdpPeer()
    try:
        for n in range(3):  # three requests in the same tick share one lookup
            ep.send_request(options(f"named-{n}"), Peer("UDP", "localhost", peer.port))
        got = {parse_message(await peer.recv()).call_id for _ in range(3)}
        ep.send_request(options("named-3"), Peer("UDP", "localhost", peer.port))  # answered from the cache
        got.add(parse_message(await peer.recv()).call_id)
        assert got == {"named-0", "named-1", "named-2", "named-3"}
        assert ep.stats["lookups"] == 1
    finally:
        peer.close()
        await ep.close()


async def test_udp_to_an_unresolvable_name_fails_its_transaction() -> None:
    async with running(13, tcp=False) as (ep, rec):
        key = ep.send_request(options("nowhere"), Peer("UDP", "no-such-host.invalid", 5060))
        (ev,) = await rec.wait_for(TransportError)
        assert ev == TransportError(key) and len(ep.layer) == 0
        again = ep.send_request(options("nowhere-2"), Peer("UDP", "no-such-host.invalid", 5060))  # negative cache
        assert rec.events[-1] == TransportError(again) and ep.stats["lookups"] == 1


async def test_rfc4475_invalid_messages_over_udp() -> None:
    """The RFC 4475 §3.1.2 fixtures through the real receive path: the status each gets, or silence."""
    from tests.sip.test_message import DATA, TORTURE

    rec = Recorder(answer=None)
    ep = SipEndpoint(rec, ids=IdSource(14), port=0, tcp=False)
    await ep.start()
    peer = UdpPeer()
    try:
        for name, outcome in sorted(TORTURE.items()):
            data = (DATA / "rfc4475" / f"{name}.sip").read_bytes().replace(b";branch=", b";rport;branch=")
            peer.sock.sendto(data, ("127.0.0.1", ep.port))
            if outcome is None:
                assert await peer.nothing(0.2), name
            elif outcome == "parse":
                # Handed to the transaction user; the INVITE gets its 100 Trying, the REGISTER nothing yet.
                expected = b"SIP/2.0 100 " if b"INVITE" in data.split(b" ", 1)[0] else None
                assert (await peer.recv())[:12] == expected if expected else await peer.nothing(0.2), name
            else:
                first_line = (await peer.recv()).split(b"\r\n", 1)[0]
                assert first_line.startswith(f"SIP/2.0 {outcome} ".encode()), name
        assert ep.stats["answered_bad"] == sum(isinstance(o, int) for o in TORTURE.values())
        assert len([e for e in rec.events if isinstance(e, RequestReceived)]) == 2
    finally:
        peer.close()
        await ep.close()


@pytest.mark.parametrize(
    "target", ["sips:bob@127.0.0.1", "sip:bob@127.0.0.1;transport=tls", "sip:bob@127.0.0.1;transport=ws"]
)
async def test_secure_or_websocket_destinations_are_refused(target: str) -> None:
    from callplane.sip.ua import UserAgent

    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # would see a plain-TCP fallback
    port = listener.sockets[0].getsockname()[1]
    ep = SipEndpoint(ids=IdSource(15), port=0)
    await ep.start()
    ua = UserAgent(IdSource(16), ep.local, tl=ep.layer)
    ep.attach(ua)
    try:
        host_port = target.replace("@127.0.0.1", f"@127.0.0.1:{port}")
        with pytest.raises(UnsupportedTransport, match="not supported yet"):
            ua.invite(host_port, "sip:alice@127.0.0.1", None, asyncio.get_running_loop().time())
        ep.flush()
        await asyncio.sleep(0.1)
        assert ep.stats["sent"] == 0 and ep._connections == {} and len(ep.layer) == 0
    finally:
        await ep.close()
        listener.close()


async def test_wildcard_bind_writes_a_real_address_in_via() -> None:
    ep = SipEndpoint(Recorder(answer=None), ids=IdSource(17), host="0.0.0.0", port=0, tcp=False)
    await ep.start()
    peer = UdpPeer()
    try:
        host = ep.local["UDP"][0]
        assert host not in ("0.0.0.0", "") and socket.inet_aton(host)
        ep.send_request(options("wildcard"), Peer("UDP", "127.0.0.1", peer.port))
        sent = parse_message(await peer.recv())
        assert (sent.via.host, sent.via.port) == (host, ep.port)
    finally:
        peer.close()
        await ep.close()


async def test_tcp_connection_lost_fails_the_request_at_once() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with running(18, udp=False) as (ep, rec):
        key = ep.send_request(options("hangup"), Peer("TCP", "127.0.0.1", port))
        async with asyncio.timeout(2):  # Timer F would be 32 s
            (ev,) = await rec.wait_for(TransportError)
        assert ev == TransportError(key) and len(ep.layer) == 0
        server.close()


async def test_tcp_response_after_the_connection_dropped_goes_to_the_sent_by_port() -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def sent_by(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await got.put(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    listener = await asyncio.start_server(sent_by, "127.0.0.1", 0)
    listen_port = listener.sockets[0].getsockname()[1]
    async with running(19, udp=False) as (ep, rec):
        reader, writer = await asyncio.open_connection("127.0.0.1", ep.port)
        req = invite(0, ep.port, branch="z9hG4bKdrop").replace(
            b"UDP 127.0.0.1:9", f"TCP 127.0.0.1:{listen_port}".encode()
        )
        writer.write(req.replace(b"INVITE", b"OPTIONS"))
        await writer.drain()
        (ev,) = await rec.wait_for(RequestReceived)
        writer.close()
        async with asyncio.timeout(5):
            while ep._connections:
                await asyncio.sleep(0.01)
        assert isinstance(ev, RequestReceived)
        ep.send_response(ev.request.create_response(200, to_tag="late"))
        async with asyncio.timeout(5):
            answer = parse_message(await got.get(), stream=True)
        assert isinstance(answer, Response) and answer.status == 200 and answer.call_id == "loop-z9hG4bKdrop"
        listener.close()


async def test_idle_tcp_connections_are_closed() -> None:
    ep = SipEndpoint(None, ids=IdSource(20), port=0, udp=False, tcp_idle_timeout=0.2, max_connections=1)
    await ep.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", ep.port)
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the endpoint once idle
        _r2, w2 = await asyncio.open_connection("127.0.0.1", ep.port)  # the slot is free again
        await asyncio.sleep(0.05)
        assert len(ep._connections) == 1
        writer.close()
        w2.close()
    finally:
        await ep.close()


CONTACT = ("127.0.0.1", 9)  # a registered phone's Contact: nothing listens there


async def phone_on_a_flow(ep: SipEndpoint, rec: Recorder) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A phone that connected over TCP (as for its REGISTER) and whose Contact is bound to that connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", ep.port)
    client = writer.get_extra_info("sockname")[:2]
    writer.write(invite(0, ep.port, branch="z9hG4bKreg").replace(b"UDP", b"TCP").replace(b"INVITE", b"OPTIONS"))
    await writer.drain()
    await rec.wait_for(RequestReceived)
    ep.bind_flow(CONTACT, (str(client[0]), int(client[1])))
    return reader, writer


async def test_requests_to_a_bound_flow_reuse_the_inbound_connection() -> None:
    async with running(21, udp=False) as (ep, rec):
        reader, writer = await phone_on_a_flow(ep, rec)
        ep.send_request(options("to-client"), Peer("TCP", *CONTACT))
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert parse_message(head, stream=True).call_id == "to-client"
        writer.close()


async def test_a_request_on_a_flow_fails_at_once_when_that_connection_drops() -> None:
    async with running(22, udp=False) as (ep, rec):
        reader, writer = await phone_on_a_flow(ep, rec)
        key = ep.send_request(options("on-flow"), Peer("TCP", *CONTACT))
        async with asyncio.timeout(5):
            await reader.readuntil(b"\r\n\r\n")
        writer.close()  # the phone goes away without answering
        async with asyncio.timeout(2):  # not Timer F's 32 s
            while TransportError(key) not in rec.events:
                await rec.wait_for(TransportError, len([e for e in rec.events if isinstance(e, TransportError)]) + 1)
