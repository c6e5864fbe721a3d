"""The harness's parsers on fixed text (no peers started): SIPp's message log and stats CSV, baresip's SIP trace,
and the digest check used to judge what a peer received."""

from __future__ import annotations

from pathlib import Path

from tests.interop.peers import BaresipRun, SippStats, digest_response, parse_digest, parse_trace

SIPP_LOG = (
    "----------------------------------------------- 2026-11-26 16:27:54.704420\n"
    "UDP message received [320] bytes :\n\n"
    "INVITE sip:svc@127.0.0.1:45060 SIP/2.0\r\n"
    "v: SIP/2.0/UDP 127.0.0.1:45062;branch=z9hG4bK-1\r\n"
    "From: <sip:a@127.0.0.1>;tag=f1\r\n"
    "To: <sip:svc@127.0.0.1>\r\n"
    "Call-ID: 1@x\r\n"
    "CSeq: 1 INVITE\r\n"
    "Subject: folded\r\n  line\r\n"
    "Content-Length: 4\r\n\r\n"
    "v=0\n\n"
    "----------------------------------------------- 2026-11-26 16:27:54.704528\n"
    "Ignoring provisional UDP message for transaction t1:\n\nSIP/2.0 100 Trying\n\n"
    "----------------------------------------------- 2026-11-26 16:27:54.705622\n"
    "UDP message sent (200 bytes):\n\n"
    "SIP/2.0 486 Busy Here\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:45062;branch=z9hG4bK-1\r\n"
    "To: <sip:svc@127.0.0.1>;tag=t9\r\n"
    "CSeq: 1 INVITE\r\n"
    "Content-Length: 0\r\n\r\n\n"
)


def test_sipp_message_log() -> None:
    invite, busy = parse_trace(SIPP_LOG)
    assert (invite.direction, invite.method, invite.request_uri) == ("received", "INVITE", "sip:svc@127.0.0.1:45060")
    assert invite.branch == "z9hG4bK-1"  # found through the compact form "v:"
    assert invite.header("subject") == "folded line"
    assert invite.body == "v=0\n" and invite.wall == "2026-11-26 16:27:54.704420"
    assert (busy.direction, busy.status, busy.method, busy.to_tag) == ("sent", 486, "INVITE", "t9")


def test_sipp_stats_last_row(tmp_path: Path) -> None:
    path = tmp_path / "stats.csv"
    header = "StartTime;ElapsedTime(C);CallRate(C);TotalCallCreated;SuccessfulCall(C);FailedCall(C);Retransmissions(C);"
    path.write_text(f"{header}\nx;00:00:01;1;1;0;0;0;\nx;00:01:02:500000;9.5;10;9;1;3;\n")
    stats = SippStats.parse(path)
    assert (stats.created, stats.successful, stats.failed, stats.retransmissions) == (10, 9, 1, 3)
    assert (stats.call_rate, stats.elapsed) == (9.5, 62.0)


def test_baresip_trace_with_status_text_before_the_marker() -> None:
    text = (
        "\x1b[36;1m#\nUDP 127.0.0.1:5000 -> 127.0.0.1:6000\nSIP/2.0 200 OK\nCSeq: 1 INVITE\nContent-Length: 5\n\n"
        "v=0\n\x1b[;m\nbob: Call established\n[0:00:00] audio=0/0 (bit/s)    \x1b[36;1m#\n"
        "UDP 127.0.0.1:6000 -> 127.0.0.1:5000\nACK sip:x SIP/2.0\nCSeq: 1 ACK\nContent-Length: 0\n\n\x1b[;m\nbob: hi\n"
        "\x1b[36;1m#\nUDP 127.0.0.1:6000 -> 127.0.0.1:5000\nINFO sip:x SIP/2.0\nCSeq: 2 INFO\nContent-Length: 9\n\n"
        "Signal=#\n\x1b[;m\n"
    )

    class Output:
        def stdout(self) -> str:
            return text

    run = BaresipRun.__new__(BaresipRun)
    run.peer = Output()  # type: ignore[assignment]
    run.sip_port = 5000
    ok, ack, info = run.messages()
    assert (ok.direction, ok.status, ok.body) == ("sent", 200, "v=0\n")
    assert (ack.direction, ack.method, ack.body) == ("received", "ACK", "")
    assert info.body == "Signal=#\n"


def test_digest_check_on_the_rfc_2617_example() -> None:
    value = (
        'Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    params = parse_digest(value)
    assert params["nc"] == "00000001" and params["uri"] == "/dir/index.html"
    assert digest_response(params, "GET", "Circle Of Life") == params["response"]
    assert digest_response(params, "GET", "circle of life") != params["response"]
