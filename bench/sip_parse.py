"""Parse cost of a ~900-byte INVITE, and the sans-IO cost of one call through two transaction layers.

    .venv/bin/python bench/sip_parse.py            # 20,000 parses, 2,000 calls
    .venv/bin/python bench/sip_parse.py --quick    # 2,000 parses, 200 calls

A "call" is INVITE, 100, 200, ACK, BYE, 200 between a UAC layer and a UAS layer (parse + transaction + serialise on
both sides, no sockets): the protocol share of the <= 2 ms CPU-per-call budget.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from callplane.core.ids import IdSource
from callplane.sip.headers import URI
from callplane.sip.message import Headers, Request, Response, parse_message
from callplane.sip.transaction import TransactionLayer
from callplane.sip.transaction_events import Peer, RequestReceived, ResponseReceived

SDP = (
    b"v=0\r\no=callplane 1732629000 1732629000 IN IP4 192.0.2.10\r\ns=callplane\r\nc=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\nm=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
INVITE = (
    b"INVITE sip:+15551234567@192.0.2.20:5080;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---7d8b1f0e3a2c;rport\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK8c1a2b3c4d5e;received=198.51.100.7\r\n"
    b"Max-Forwards: 69\r\n"
    b"Record-Route: <sip:198.51.100.7;lr;ftag=as5f1c2d3e>\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n"
    b'To: "Bob" <sip:+15551234567@example.com>\r\n'
    b'From: "Alice Example" <sip:alice@example.com>;tag=as5f1c2d3e\r\n'
    b"Call-ID: 3c26700d7f6e4c3aa1e9b1a8d0f2a9c1@192.0.2.10\r\n"
    b"CSeq: 102 INVITE\r\n"
    b"User-Agent: bench/1.0\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, MESSAGE\r\n"
    b"Supported: replaces, timer\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)


def percentiles(samples: list[float]) -> str:
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    return f"median {statistics.median(samples):.1f} µs, p99 {p99:.1f} µs"


def bench_parse(n: int) -> None:
    # A new call has a fresh From tag, Call-ID and branch: vary them so the From memo cannot hit (cold), then
    # parse one INVITE over and over (warm: what a retransmission or an in-dialog From/To costs).
    variants = [
        INVITE.replace(b"as5f1c2d3e", b"%010x" % i)
        .replace(b"3c26700d7f6e4c3a", b"%016x" % i)
        .replace(b"7d8b1f0e3a2c", b"%012x" % i)
        for i in range(n)
    ]
    for label, inputs in (("new calls", variants), ("same bytes", [INVITE] * n)):
        samples = []
        for data in inputs:
            t0 = time.perf_counter_ns()
            parse_message(data)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        print(f"parse INVITE ({len(INVITE)} bytes, Via/From/To/CSeq checked), {label}: {percentiles(samples)}")
    msg = parse_message(INVITE)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        bytes(msg)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    print(f"serialise INVITE: {percentiles(samples)}")


def one_call(uac: TransactionLayer, uas: TransactionLayer, i: int) -> None:
    a = Peer("UDP", "192.0.2.10", 5060)
    b = Peer("UDP", "192.0.2.20", 5080)
    now = float(i)
    h = Headers(
        [
            ("From", f"<sip:alice@example.com>;tag=f{i}"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", f"call-{i}"),
            ("CSeq", "1 INVITE"),
            ("Contact", "<sip:alice@192.0.2.10:5060>"),
            ("Content-Type", "application/sdp"),
        ]
    )
    uac.send_request(Request("INVITE", URI.parse("sip:bob@192.0.2.20:5080"), h, SDP), b, now)

    def deliver(src: TransactionLayer, dst: TransactionLayer, peer: Peer) -> None:
        for data, _ in src.datagrams_to_send():
            dst.receive(parse_message(data), peer, now)

    deliver(uac, uas, a)
    ev = uas.next_event()
    assert isinstance(ev, RequestReceived)
    ok = ev.request.create_response(200, to_tag=f"t{i}")
    ok.headers.add("Contact", "<sip:bob@192.0.2.20:5080>")
    ok.body = SDP
    uas.send_response(ok, now)
    deliver(uas, uac, b)
    final: Response | None = None
    while (e := uac.next_event()) is not None:
        if isinstance(e, ResponseReceived):
            final = e.response
    assert final is not None and final.status == 200
    for method, seq in (("ACK", 1), ("BYE", 2)):
        hh = Headers([("From", h.get("from") or ""), ("To", final.headers.get("to") or ""), ("Call-ID", f"call-{i}")])
        hh.add("CSeq", f"{seq} {method}")
        req = Request(method, URI.parse("sip:bob@192.0.2.20:5080"), hh)
        if method == "ACK":
            uac.send_stateless(req, b)
        else:
            uac.send_request(req, b, now)
        deliver(uac, uas, a)
        while (e2 := uas.next_event()) is not None:
            if isinstance(e2, RequestReceived):
                uas.send_response(e2.request.create_response(200), now)
    deliver(uas, uac, b)
    while uac.next_event() is not None:
        pass


def bench_calls(n: int) -> None:
    uac = TransactionLayer(IdSource(1))
    uas = TransactionLayer(IdSource(2))
    t0 = time.process_time()
    for i in range(n):
        one_call(uac, uas, i)
        if i % 100 == 0:
            uac.handle_timer(float(i))
            uas.handle_timer(float(i))
    cpu = time.process_time() - t0
    print(f"sans-IO call (INVITE/100/200/ACK/BYE/200, both sides): {cpu / n * 1e6:.0f} µs CPU per call ({n} calls)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(f"cpu: {platform.processor() or platform.machine()} x{os.cpu_count()}  python {platform.python_version()}")
    bench_parse(2_000 if args.quick else 20_000)
    bench_calls(200 if args.quick else 2_000)


if __name__ == "__main__":
    main()
