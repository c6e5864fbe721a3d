"""End-to-end calls per second through the API (issue 8 target): POST Calls -> SIP -> RCML -> audio -> callbacks.

    .venv/bin/python bench/call_cps.py                        # 100 calls/s for 60 s
    .venv/bin/python bench/call_cps.py --rate 50 --duration 10 # a quick look

The rig, all on 127.0.0.1:

* ``callplane serve`` as a user runs it (SQLite in a temporary data directory), in its own process;
* SIPp's built-in UAS (``sipp -sn uas -rtp_echo``) as the callee: 180, 200, waits for our BYE, echoes RTP;
* a local web app (uvicorn, in this process) serving ``<Response><Say>Hello.</Say><Hangup/></Response>`` and
  counting the ``completed`` status callbacks;
* this process POSTs ``/Calls`` at a fixed rate over keep-alive HTTP connections for ``--duration`` seconds;
* a packet observer in its own process (an AF_PACKET socket on ``lo`` with a kernel BPF filter, so it sees only
  the SIP messages to and from SIPp and the RTP sent to SIPp's media port, with kernel timestamps) measures for
  every call the time from SIPp's 200 OK to our first RTP packet and to our first non-silent packet (the prompt),
  and the gaps between our RTP packets (media pacing under load).

Printed: the achieved rate and failures (non-200 POSTs, calls that did not end ``completed``, missing callbacks),
POST latency p50/p99, answer -> first RTP and answer -> first audio p50/p99, the node's CPU per call (from
/proc/<pid>/stat), SIPp's CPU per call, and the RTP gap p50/p99/max. Baseline: Restcomm's best published figure,
26 calls/s for an IVR on a laptop (shared/reference/peers.md). Target: >= 100 calls/s, 0 failed calls, every
``completed`` callback delivered, RTP gap p99 <= 30 ms. The packet observer needs root (CAP_NET_RAW); without it
the RTP figures are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import multiprocessing as mp
import os
import re
import socket
import struct
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.common import machine, pct  # noqa: E402
from tests.interop.peers import LOOPBACK, PeerGroup, free_port, free_port_block, wait_udp_bound  # noqa: E402
from tests.webapp import Answer, Seen, WebApp  # noqa: E402

ACCOUNT = "AC" + "b" * 32
TOKEN = "bench-token-0123456789"
RCML = "<Response><Say>Hello.</Say><Hangup/></Response>"
TARGET_CPS = 100.0
BASELINE_CPS = 26.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------- packet observer
def _bpf(sip_port: int, media_port: int) -> bytes:
    """Classic BPF: incoming copies only (PACKET_HOST), UDP, and dst port in {SIP, media} or src port SIP."""
    ins = [
        (0x20, 0, 0, 0xFFFFF004),  # ld #pkttype
        (0x15, 0, 9, 0),  # jeq PACKET_HOST
        (0x30, 0, 0, 9),  # ldb [9] (IP protocol)
        (0x15, 0, 7, 17),  # jeq UDP
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)
        (0x48, 0, 0, 2),  # ldh [x+2] (dst port)
        (0x15, 3, 0, media_port),
        (0x15, 2, 0, sip_port),
        (0x48, 0, 0, 0),  # ldh [x+0] (src port)
        (0x15, 0, 1, sip_port),
        (0x06, 0, 0, 0xFFFF),  # accept
        (0x06, 0, 0, 0),  # drop
    ]
    return b"".join(struct.pack("HBBI", *i) for i in ins)


def observe(sip_port: int, media_port: int, ready: Any, stop: Any, out: Any) -> None:
    """Runs in its own process: per call answer time, first RTP, first audio; RTP gaps per source port."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    except PermissionError:
        ready.set()
        out.send(None)
        return
    prog = _bpf(sip_port, media_port)
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("H6xQ", len(prog) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
    sock.bind(("lo", 0))
    sock.settimeout(0.2)
    ready.set()
    port_of_call: dict[str, int] = {}
    answered: dict[int, float] = {}
    first_rtp: dict[int, float] = {}
    first_audio: dict[int, float] = {}
    last: dict[int, float] = {}
    gaps: list[float] = []
    silence = {0xFF, 0x7F, 0xD5, 0x55}
    call_id = re.compile(rb"\r\n(?:Call-ID|i)\s*:\s*([^\r\n]+)", re.I)
    m_line = re.compile(rb"\r\nm=audio (\d+) ")
    while not stop.is_set():
        try:
            data, anc, _, _ = sock.recvmsg(2048, 64)
        except TimeoutError:
            continue
        ts = time.time()
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == 35:
                sec, nsec = struct.unpack("qq", value[:16])
                ts = sec + nsec / 1e9
        ihl = (data[0] & 0x0F) * 4
        src, dst = struct.unpack("!HH", data[ihl : ihl + 4])
        payload = data[ihl + 8 :]
        if dst == media_port:
            if len(payload) < 12 or payload[1] & 0x7F not in (0, 8):
                continue
            prev = last.get(src)
            if prev is not None:
                gaps.append((ts - prev) * 1000.0)
            last[src] = ts
            if src in answered and src not in first_rtp:
                first_rtp[src] = ts
            if src in answered and src not in first_audio and len(set(payload[12:]) - silence) > 20:
                first_audio[src] = ts
        elif dst == sip_port and payload.startswith(b"INVITE "):
            cid, m = call_id.search(payload), m_line.search(payload)
            if cid and m:
                port_of_call[cid.group(1).strip().decode()] = int(m.group(1))
        elif src == sip_port and payload.startswith(b"SIP/2.0 200") and b"INVITE" in payload.split(b"\r\n\r\n")[0]:
            cid = call_id.search(payload)
            if cid:
                port = port_of_call.get(cid.group(1).strip().decode())
                if port is not None and port not in answered:
                    answered[port] = ts
                    last.pop(port, None)  # a reused port starts a new call
                    first_rtp.pop(port, None)
                    first_audio.pop(port, None)
    to_rtp = [(first_rtp[p] - answered[p]) * 1000 for p in first_rtp if p in answered]
    to_audio = [(first_audio[p] - answered[p]) * 1000 for p in first_audio if p in answered]
    # Gaps over 1 s are a port reused by a later call, not pacing.
    out.send({"to_rtp": to_rtp, "to_audio": to_audio, "gaps": [g for g in gaps if g < 1000.0], "calls": len(answered)})


# ------------------------------------------------------------------------------------------------------ the rig
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="call-cps-"))
    group = PeerGroup(workdir)
    completed: list[str] = []

    def status(seen: Seen) -> Answer:
        if seen.param("CallStatus") == "completed":
            completed.append(seen.param("CallSid") or "")
        return Answer(204)

    async with WebApp() as app:
        app.route("/rcml", Answer.xml(RCML))
        app.route("/status", status)
        sipp_port, sipp_media = free_port(), free_port_block(4)
        sipp = group.start(
            "sipp-uas",
            ["sipp", "-sn", "uas", "-rtp_echo", "-i", LOOPBACK, "-p", str(sipp_port), "-mi", LOOPBACK]
            + ["-mp", str(sipp_media), "-nostdin"],
            cwd=workdir,
        )
        wait_udp_bound(sipp_port, peer=sipp)
        sip, http = free_port(), free_port()
        argv = [sys.executable, "-m", "callplane", "serve", "--sip", f"{LOOPBACK}:{sip}"]
        argv += ["--http", f"{LOOPBACK}:{http}", "--data", str(workdir / "data"), "--log-level", "WARNING"]
        argv += ["--rtp-ports", "20000-39999"]
        env = {
            **os.environ,
            "CALLPLANE_ADMIN_ACCOUNT_SID": ACCOUNT,
            "CALLPLANE_ADMIN_AUTH_TOKEN": TOKEN,
            "PYTHONPATH": str(ROOT / "src"),
        }
        node = group.start("callplane", argv, env=env)
        node.wait_output(r"HTTP API on", timeout=60)
        ready, stop = mp.Event(), mp.Event()
        parent, child = mp.Pipe()
        observer = mp.Process(target=observe, args=(sipp_port, sipp_media, ready, stop, child), daemon=True)
        observer.start()
        ready.wait(10)
        url = f"http://{LOOPBACK}:{http}/2012-04-24/Accounts/{ACCOUNT}/Calls.json"
        form = {
            "From": "+15550001111",
            "To": f"sip:bench@{LOOPBACK}:{sipp_port}",
            "Url": app.url("/rcml"),
            "StatusCallback": app.url("/status"),
        }
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        latencies: list[float] = []
        failures: list[str] = []
        sids: list[str] = []
        async with httpx.AsyncClient(auth=(ACCOUNT, TOKEN), limits=limits, timeout=30) as client:

            async def post() -> None:
                started = time.perf_counter()
                try:
                    r = await client.post(url, data=form)
                except httpx.HTTPError as e:
                    failures.append(f"POST: {e!r}")
                    return
                latencies.append((time.perf_counter() - started) * 1000)
                if r.status_code != 200:
                    failures.append(f"POST {r.status_code}: {r.text[:200]}")
                else:
                    sids.append(r.json()["sid"])

            for _ in range(3):  # warm-up: TTS cache, connections
                await post()
            await asyncio.sleep(2)
            latencies.clear()
            warm = len(completed)
            cpu0, sipp_cpu0 = cpu_seconds(node.pid), cpu_seconds(sipp.pid)
            rig0 = cpu_seconds(os.getpid()) + cpu_seconds(observer.pid or 0)
            total = int(args.rate * args.duration)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            tasks = []
            for i in range(total):
                delay = t0 + i / args.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(post()))
            await asyncio.gather(*tasks)
            sent_for = loop.time() - t0
            deadline = loop.time() + 60
            while len(completed) - warm < len(sids) - 3 and loop.time() < deadline:
                await asyncio.sleep(0.2)
            done_for = loop.time() - t0
            cpu, sipp_cpu = cpu_seconds(node.pid) - cpu0, cpu_seconds(sipp.pid) - sipp_cpu0
            rig = cpu_seconds(os.getpid()) + cpu_seconds(observer.pid or 0) - rig0
            statuses: dict[str, int] = defaultdict(int)
            for sid in sids[3:][:: max(1, len(sids) // 200)]:  # a sample of records
                rec = (await client.get(url.replace("Calls.json", f"Calls/{sid}.json"))).json()
                statuses[rec.get("status", "?")] += 1
        stop.set()
        figures = parent.recv() if parent.poll(15) else None
        observer.join(5)
        group.close()
    ok = len(sids) - 3
    delivered = len(completed) - warm
    achieved = delivered / done_for if done_for else 0.0
    print(f"machine: {machine()}")
    print(f"offered: {args.rate:g} calls/s for {args.duration:g} s ({total} calls, sent in {sent_for:.1f} s)")
    print(
        f"POST: {ok} accepted, {len(failures)} failed; latency p50 {pct(latencies, 0.5):.1f} ms, "
        f"p99 {pct(latencies, 0.99):.1f} ms"
    )
    print(f"completed callbacks: {delivered} of {ok} within {done_for:.1f} s -> {achieved:.1f} calls/s end to end")
    print(f"record statuses (sample of {sum(statuses.values())}): {dict(statuses)}")
    print(
        f"node CPU: {cpu:.1f} s = {cpu / max(1, ok) * 1000:.2f} ms per call; "
        f"SIPp UAS CPU: {sipp_cpu / max(1, ok) * 1000:.2f} ms per call; "
        f"rest of the rig (client, web app, observer): {rig / max(1, ok) * 1000:.2f} ms per call"
    )
    if figures:
        print(
            f"answer -> first RTP: p50 {pct(figures['to_rtp'], 0.5):.1f} ms, p99 {pct(figures['to_rtp'], 0.99):.1f} ms"
            f" ({len(figures['to_rtp'])} calls)"
        )
        print(
            f"answer -> first audio: p50 {pct(figures['to_audio'], 0.5):.1f} ms, "
            f"p99 {pct(figures['to_audio'], 0.99):.1f} ms"
        )
        gaps = figures["gaps"]
        print(
            f"RTP gaps: p50 {pct(gaps, 0.5):.1f} ms, p99 {pct(gaps, 0.99):.1f} ms, max {max(gaps, default=0):.1f} ms "
            f"({len(gaps)} gaps)"
        )
    else:
        print("RTP figures skipped (the packet observer needs root)")
    for f in failures[:5]:
        print("  failure:", f)
    print(
        f"baseline: Restcomm's best published IVR figure, {BASELINE_CPS:g} calls/s on a laptop -> "
        f"{achieved / BASELINE_CPS:.1f}x"
    )
    met = (
        achieved >= TARGET_CPS * 0.98
        and not failures
        and delivered >= ok
        and (not figures or pct(figures["gaps"], 0.99) <= 30.0)
    )
    print(
        f"target (>= {TARGET_CPS:g} calls/s, 0 failures, every completed callback, gap p99 <= 30 ms): "
        f"{'met' if met else 'NOT met'}"
    )
    with contextlib.suppress(OSError):
        import shutil

        shutil.rmtree(workdir)
    return 0 if met else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=TARGET_CPS, help="calls per second offered (default 100)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
