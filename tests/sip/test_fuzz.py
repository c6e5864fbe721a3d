"""Fuzzing: mutated real messages and random bytes into the parser, the stream framer and the transaction layer.

Nothing but the documented SipParseError (a ValueError and SipError) may escape the parser, and the transaction
layer must accept whatever the parser lets through. ``bench/sip_fuzz.py`` runs the same for a million inputs.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callplane.core.ids import IdSource
from callplane.sip.headers import SipParseError
from callplane.sip.message import Request, StreamFramer, can_answer, parse_message
from callplane.sip.transaction import TransactionLayer
from callplane.sip.transaction_events import Peer

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
