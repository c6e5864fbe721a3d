"""Fuzzing: mutated real messages and random bytes into the parser, the stream framer, the transaction layer and the
UA cores (from every call state, through the sans-IO entry and through the asyncio adapter).

Nothing but the documented SipParseError (a ValueError and SipError) may escape the parser, and the transaction
layer must accept whatever the parser lets through. ``bench/sip_fuzz.py`` runs the same for a million inputs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callplane.core.ids import IdSource
from callplane.sip.aio import SipEndpoint
from callplane.sip.events import Event, IncomingCall
from callplane.sip.headers import SipParseError
from callplane.sip.message import Request, StreamFramer, can_answer, parse_message
from callplane.sip.transaction import TransactionLayer
from callplane.sip.transaction_events import Peer
from callplane.sip.ua import UserAgent
from tests.sip.uapair import ALICE, A, B, Link, answer_for, first_line, offer, start_call

DATA = Path(__file__).parent.parent / "data" / "sip"
SEEDS = [p.read_bytes() for p in sorted(DATA.glob("*.sip"))]
TOKENS = [b"\r\n", b"\r\n ", b":", b";", b",", b"<", b">", b'"', b"\\", b"@", b"[", b"]", b"=", b" ", b"\x00", b"\xff"]
TOKENS += [b"SIP/2.0", b"z9hG4bK", b"Content-Length: 99999", b"l: 1", b"v: SIP/2.0/TCP h", b"CSeq: 1 ACK", b"rport"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == 2:
            end = draw(st.integers(pos, min(len(data), pos + 40)))
            del data[pos:end]
        elif op == 3:
            data = data[:pos]
        else:
            line_start = data.rfind(b"\r\n", 0, pos) + 2
            line_end = data.find(b"\r\n", pos)
            if line_end > line_start:
                data[line_end:line_end] = b"\r\n" + data[line_start:line_end]  # duplicate a header line
    return bytes(data)


def check(data: bytes, layer: TransactionLayer, now: float) -> None:
    for stream in (False, True):
        try:
            msg = parse_message(data, stream=stream)
        except SipParseError as exc:
            assert isinstance(exc, ValueError)
            partial = can_answer(exc)
            if partial is not None:
                bytes(partial.create_response(exc.status or 400))
            continue
        bytes(msg)  # serialisable
        if isinstance(msg, Request):
            _ = msg.max_forwards, msg.uri
        layer.receive(msg, Peer("UDP", "127.0.0.1", 5060), now)
        while layer.next_event() is not None:
            pass
        layer.datagrams_to_send()
    try:
        StreamFramer(4096).feed(data)
    except SipParseError:
        pass


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(mutated(), min_size=1, max_size=4))
def test_mutated_real_messages(inputs: list[bytes]) -> None:
    layer = TransactionLayer(IdSource(1))
    for i, data in enumerate(inputs):
        check(data, layer, float(i))
    layer.handle_timer(100.0)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    check(data, TransactionLayer(IdSource(1)), 0.0)


@FUZZ
@given(
    st.sampled_from(SEEDS), st.text(max_size=60), st.sampled_from(["Via", "From", "To", "CSeq", "Call-ID", "Contact"])
)
def test_random_header_values(seed: bytes, value: str, name: str) -> None:
    lines = seed.split(b"\r\n")
    out = []
    for line in lines:
        if line.lower().startswith(name.lower().encode() + b":"):
            line = name.encode() + b": " + value.encode("utf-8", "surrogatepass")
        out.append(line)
    check(b"\r\n".join(out), TransactionLayer(IdSource(1)), 0.0)


def test_typed_accessors_only_raise_the_documented_error() -> None:
    """Lazy views (Contact, all Vias) on mutated messages raise SipParseError or nothing."""
    rng = IdSource(9)
    for i in range(3000):
        data = bytearray(SEEDS[i % len(SEEDS)])
        pos = rng.u32() % len(data)
        data[pos] = rng.u32() % 256
        try:
            msg = parse_message(bytes(data))
            _ = msg.contacts, msg.vias, msg.content_type
        except SipParseError:
            pass


# ------------------------------------------------------------------------------ the UA from every call state
# A UAC ("a") and a UAS ("b") are brought to one call state, then one side gets a mutated copy of a message from a
# complete set of flows built with the same seeds and addresses (so Call-ID, tags and branches match the live call
# and the mutations reach the dialog and transaction code, not only the parser). Afterwards every timer runs out.
# The same runs go through the asyncio adapter: the side under test is a real SipEndpoint on loopback UDP.

STATES = ("calling", "early", "cancelling", "confirmed", "terminating", "reinvite")
LOSE: Callable[[bytes], bool] = lambda _: False  # noqa: E731


class Pair(Protocol):
    a: UserAgent
    b: UserAgent
    bob: str

    @property
    def now(self) -> float: ...

    def pass_(self, src: str, keep: Callable[[bytes], bool] = ...) -> list[bytes]: ...

    def pump(self) -> None: ...

    def events(self, ua: UserAgent) -> list[Event]: ...


def reach(link: Pair, state: str) -> None:
    """Drive a (UAC) and b (UAS) to ``state``: the datagram that would move them on is lost."""
    handle = link.a.invite(link.bob, ALICE, offer(), link.now)
    if state == "calling":
        link.pass_("a", LOSE)
        return
    link.pump()
    (incoming,) = [e for e in link.events(link.b) if isinstance(e, IncomingCall)]
    link.b.ring(incoming.call, link.now)
    link.pump()
    if state == "early":
        return
    if state == "cancelling":
        link.a.cancel(handle, link.now)
        link.pass_("a", LOSE)
        return
    link.b.answer(incoming.call, answer_for(incoming), link.now)
    link.pump()
    if state == "terminating":
        link.a.bye(handle, link.now)
        link.pass_("a", LOSE)
    elif state == "reinvite":
        link.a.hold(handle, link.now)
        link.pass_("a")  # b answers the re-INVITE; its 200 is lost, so both sides have one pending
        link.pass_("b", LOSE)


def flows(pa: Peer, pb: Peer) -> list[tuple[str, bytes]]:
    """Every datagram of: a call with INFO, hold, resume and BYE; a cancelled call; a rejected call."""
    out: list[tuple[str, bytes]] = []
    link = Link(pa, pb)
    handle, incoming = start_call(link)
    link.b.ring(handle, link.now)
    link.b.answer(handle, answer_for(incoming), link.now)
    link.pump()
    dialog = link.a.call(handle).dialog
    assert dialog is not None
    info = dialog.create_request("INFO", body=b"Signal=5\r\nDuration=160\r\n", content_type="application/dtmf-relay")
    link.a.tl.send_request(info, pb, link.now)
    link.pump()
    link.a.hold(handle, link.now)
    link.pump()
    link.b.hold(handle, link.now, "inactive")
    link.pump()
    link.b.bye(handle, link.now)
    link.pump()
    out += link.log
    for end in ("cancel", "reject"):
        link = Link(pa, pb)
        handle, _ = start_call(link)
        link.b.ring(handle, link.now)
        link.pump()
        if end == "cancel":
            link.a.cancel(handle, link.now)
        else:
            link.b.reject(handle, 486, link.now)
        link.pump()
        out += link.log
    return out


def mutate(data: bytes, edits: list[tuple[int, bytes]], drops: Sequence[int] = ()) -> bytes:
    """Drop whole lines (header or SDP; Content-Length follows the body), then overwrite bytes."""
    head, sep, body = data.partition(b"\r\n\r\n")
    head_lines, body_lines = head.split(b"\r\n"), body.split(b"\r\n")
    for line in drops:
        lines = body_lines if line % 2 and len(body_lines) > 1 else head_lines
        if len(lines) > 1:
            del lines[1 + line // 2 % (len(lines) - 1)]
    body = b"\r\n".join(body_lines)
    head_lines = [
        b"Content-Length: %d" % len(body) if h.lower().startswith(b"content-length:") else h for h in head_lines
    ]
    buf = bytearray(b"\r\n".join(head_lines) + sep + body)
    for pos, chunk in edits:
        pos = min(pos, len(buf))
        buf[pos : pos + len(chunk)] = chunk
    return bytes(buf)


POOL = flows(A, B)
EDITS = st.lists(st.tuples(st.integers(0, 1500), st.binary(max_size=8)), max_size=4)
DROPS = st.lists(st.integers(0, 60), max_size=2)
UA_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@UA_FUZZ
@given(st.sampled_from(STATES), st.sampled_from("ab"), st.integers(0, len(POOL) - 1), EDITS, DROPS)
def test_ua_from_every_state_never_raises(
    state: str, side: str, index: int, edits: list[tuple[int, bytes]], drops: list[int]
) -> None:
    link = Link()
    reach(link, state)
    link.strict = False
    data = mutate(POOL[index][1], edits, drops)
    link.ua(side).receive_datagram(data, B if side == "a" else A, link.now)
    link.pump()
    link.advance(100.0)
    link.pump()
    assert (link.a.faults, link.b.faults) == (0, 0)


SDP_CASES = [
    (i, drop)
    for i, (_, data) in enumerate(POOL)
    if b"\r\n\r\nv=0" in data
    for drop in range(1, 2 * data.partition(b"\r\n\r\n")[2].count(b"\r\n"), 2)
]


@pytest.mark.parametrize("state", STATES)
def test_every_sdp_line_dropped_from_every_state(state: str) -> None:
    """Exhaustive where random edits are thin: each line of each SDP body in the flows is dropped in turn (an answer
    without ``c=``, without ``m=``, without its rtpmap...) and the message goes to both sides."""
    for index, drop in SDP_CASES:
        for side in "ab":
            link = Link()
            reach(link, state)
            link.strict = False
            link.ua(side).receive_datagram(mutate(POOL[index][1], [], [drop]), B if side == "a" else A, link.now)
            link.pump()
            link.advance(100.0)
            assert (link.a.faults, link.b.faults) == (0, 0), (state, side, first_line(POOL[index][1]), drop)


class AioPair:
    """The side under test is a UserAgent on a real SipEndpoint (loopback UDP, port 0); the other side is a sans-IO
    UserAgent behind a plain UDP socket that this class pumps by hand. Waits are counted, never timed guesses."""

    def __init__(self, loop: asyncio.AbstractEventLoop, side: str) -> None:
        self.loop = loop
        self.side = side
        ids = IdSource(1 if side == "a" else 2)  # same seeds as Link, so the flows' ids match
        self.ep = SipEndpoint(ids=ids, port=0, tcp=False)
        loop.run_until_complete(self.ep.start())
        self.ua = UserAgent(ids, self.ep.local, tl=self.ep.layer)
        self.seen: list[Event] = []
        self.ep.attach(self.ua, self.seen.append)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.here = Peer("UDP", "127.0.0.1", self.ep.port)
        self.there = Peer("UDP", "127.0.0.1", self.sock.getsockname()[1])
        self.peer = UserAgent(IdSource(2 if side == "a" else 1), {"UDP": (self.there.host, self.there.port)})
        self.pa, self.pb = (self.here, self.there) if side == "a" else (self.there, self.here)
        self.a, self.b = (self.ua, self.peer) if side == "a" else (self.peer, self.ua)
        self.bob = f"sip:bob@{self.pb.host}:{self.pb.port}"
        self.read = 0

    @property
    def now(self) -> float:
        return self.loop.time()

    def _run_until(self, done: Callable[[], bool]) -> None:
        for _ in range(500):
            if done():
                return
            self.loop.run_until_complete(asyncio.sleep(0.001))

    def send_to_endpoint(self, data: bytes) -> None:
        expected = self.ep.stats["received"] + 1
        self.sock.sendto(data, (self.here.host, self.here.port))
        self._run_until(lambda: self.ep.stats["received"] >= expected)

    def _from_endpoint(self) -> list[bytes]:
        self.ep.flush()
        out: list[bytes] = []

        def drained() -> bool:
            while True:
                try:
                    out.append(self.sock.recv(70000))
                    self.read += 1
                except BlockingIOError:
                    return self.read >= self.ep.stats["sent"]

        self._run_until(drained)
        return out

    def pass_(self, src: str, keep: Callable[[bytes], bool] = lambda _: True) -> list[bytes]:
        delivered = []
        if src == self.side:
            for data in self._from_endpoint():
                if keep(data):
                    self.peer.receive_datagram(data, self.here, self.now)
                    delivered.append(data)
        else:
            for data, _ in self.peer.datagrams_to_send():
                if keep(data):
                    self.send_to_endpoint(data)
                    delivered.append(data)
        return delivered

    def pump(self) -> None:
        while self.pass_("a") + self.pass_("b"):
            pass

    def events(self, ua: UserAgent) -> list[Event]:
        if ua is self.ua:
            out, self.seen = self.seen, []
            return out
        return Link.events(ua)

    def close(self) -> None:
        self.sock.close()
        self.loop.run_until_complete(self.ep.close())


class Tracebacks(logging.Handler):
    """Every log record that carries an exception (the adapter's and the UA's error boundaries log one)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(STATES), st.sampled_from("ab"), st.integers(0, 10**6), EDITS, DROPS)
def test_ua_over_asyncio_from_every_state_never_raises(
    state: str, side: str, index: int, edits: list[tuple[int, bytes]], drops: list[int]
) -> None:
    loop = asyncio.new_event_loop()
    log = logging.getLogger("callplane.sip")
    catcher, level = Tracebacks(), log.level
    log.addHandler(catcher)
    log.setLevel(logging.DEBUG)
    pair = AioPair(loop, side)
    try:
        reach(pair, state)
        pool = flows(pair.pa, pair.pb)
        data = mutate(pool[index % len(pool)][1], edits, drops)
        pair.send_to_endpoint(data)
        pair.pump()
        assert (pair.ua.faults, pair.peer.faults) == (0, 0)
        assert catcher.records == []
    finally:
        pair.close()
        loop.close()
        log.removeHandler(catcher)
        log.setLevel(level)


@pytest.mark.parametrize("state", STATES)
def test_every_state_is_reached_over_asyncio(state: str) -> None:
    """The harness itself: each state is the one its name says, on both sides."""
    expected = {
        "calling": ("calling", None),
        "early": ("proceeding", "ringing"),
        "cancelling": ("cancelling", "ringing"),
        "confirmed": ("confirmed", "confirmed"),
        "terminating": ("ending", "confirmed"),
        "reinvite": ("confirmed", "confirmed"),
    }[state]
    for side in "ab":
        loop = asyncio.new_event_loop()
        pair = AioPair(loop, side)
        try:
            reach(pair, state)
            calls = [list(ua._calls.values()) for ua in (pair.a, pair.b)]
            assert tuple(c[0].state if c else None for c in calls) == expected
            if state == "reinvite":
                assert all(c[0].reinvite is not None for c in calls)
        finally:
            pair.close()
            loop.close()
