"""Fuzz the SIP parser, stream framer and transaction layer with mutated real messages and random bytes.

Prints inputs/s and the number of escaped exceptions (anything but SipParseError out of the parser, anything at all
out of the transaction layer). The target is 0 escaped over >= 1,000,000 inputs:

    .venv/bin/python bench/sip_fuzz.py --count 1000000     # full run
    .venv/bin/python bench/sip_fuzz.py --quick              # 20,000 inputs
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
import traceback
from pathlib import Path

from callplane.core.ids import IdSource
from callplane.sip.headers import SipParseError
from callplane.sip.message import Request, StreamFramer, can_answer, parse_message
from callplane.sip.transaction import TransactionLayer
from callplane.sip.transaction_events import Peer

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "sip"
TOKENS = [b"\r\n", b"\r\n ", b"\r\n\r\n", b":", b";", b",", b"<", b">", b'"', b"\\", b"@", b"[", b"]", b"=", b" "]
TOKENS += [b"\x00", b"\xff", b"\xc3", b"SIP/2.0", b"z9hG4bK", b"Content-Length: 99999", b"l: 1", b"v: SIP/2.0/TCP h"]
TOKENS += [b"CSeq: 1 ACK", b"CSeq: 1 CANCEL", b";rport", b";received=", b"sip:", b"tel:", b"[::1]", b":99999"]


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    kind = rng.random()
    if kind < 0.1:
        return rng.randbytes(rng.randrange(0, 400))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = rng.choice(TOKENS)
        elif op == 2:
            del data[pos : pos + rng.randrange(1, 40)]
        elif op == 3:
            data = data[: pos + rng.randrange(0, 5)]
        elif op == 4:
            start = data.rfind(b"\r\n", 0, pos) + 2
            end = data.find(b"\r\n", pos)
            if end > start:
                data[end:end] = b"\r\n" + data[start:end]
        else:
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            data[pos:] = other[cut:]
    return bytes(data)


def run(count: int, seed: int, verbose: bool) -> int:
    rng = random.Random(seed)
    seeds = [p.read_bytes() for p in sorted(DATA.glob("*.sip"))]
    layer = TransactionLayer(IdSource(seed))
    peer = Peer("UDP", "127.0.0.1", 5060)
    escaped = 0
    parsed = 0
    start = time.perf_counter()
    for i in range(count):
        data = mutate(rng, seeds)
        now = i * 0.001
        try:
            try:
                msg = parse_message(data, stream=bool(i & 1))
            except SipParseError as exc:
                partial = can_answer(exc)
                if partial is not None:
                    bytes(partial.create_response(exc.status or 400))
                msg = None
            if msg is not None:
                parsed += 1
                bytes(msg)
                if isinstance(msg, Request):
                    _ = msg.uri, msg.max_forwards
                try:
                    _ = msg.contacts, msg.vias  # lazy views may raise only the documented error
                except SipParseError:
                    pass
                layer.receive(msg, peer, now)
                while layer.next_event() is not None:
                    pass
            if i % 7 == 0:
                try:
                    StreamFramer(8192).feed(data)
                except SipParseError:
                    pass
            if i % 1000 == 0:
                layer.handle_timer(now)
                layer.datagrams_to_send()
        except Exception:
            escaped += 1
            if verbose or escaped <= 3:
                print(f"ESCAPED on input {i}: {data[:120]!r}", file=sys.stderr)
                traceback.print_exc()
    elapsed = time.perf_counter() - start
    print(f"cpu: {platform.processor() or platform.machine()} x{os.cpu_count()}  python {platform.python_version()}")
    print(f"inputs: {count}  parsed OK: {parsed}  elapsed: {elapsed:.1f} s  inputs/s: {count / elapsed:,.0f}")
    print(f"escaped exceptions: {escaped}")
    return escaped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="20,000 inputs")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    count = 20_000 if args.quick else args.count
    sys.exit(1 if run(count, args.seed, args.verbose) else 0)


if __name__ == "__main__":
    main()
