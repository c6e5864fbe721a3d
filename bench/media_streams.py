"""Media engine benchmark: a separate peer process drives N bidirectional PCMU streams at the engine.

    .venv/bin/python bench/media_streams.py --quick               # 10 s, 100 streams
    .venv/bin/python bench/media_streams.py --streams 500         # the target: p99 gap <= 25 ms, drift <= 10 ms
    .venv/bin/python bench/media_streams.py --conference 50       # one 50-party mix-minus conference
    .venv/bin/python bench/media_streams.py --streams 450 --conference 50   # both on the same tick
    .venv/bin/python bench/media_streams.py --streams 500 --api-load http://127.0.0.1:8080/...   # + HTTP GET load
    .venv/bin/python bench/media_streams.py --streams 500 --faulty 1   # one leg's source raises mid-run
    .venv/bin/python bench/media_streams.py --calls 40 --duration 20   # call churn: media CPU per call
    .venv/bin/python bench/media_streams.py --bridges 500 --compare    # 500 bridged calls: relay vs decode

The engine process (this one) plays a source to every leg (a tone, or ``--file`` decoded to 8 kHz) and records
what arrives (streams mode: an in-memory recorder per leg) or mixes it (conference mode). The peer process sends
20 ms PCMU frames on every stream from one paced epoll loop and takes the kernel's receive timestamp of every
packet (SO_TIMESTAMPNS: on loopback, the moment the engine sent it, free of the peer's own delays): inter-packet gap
per stream (median / p99 / max), drift (arrival time minus RTP media time, its minimum over the last second
compared with the first second after warm-up, so jitter does not count as drift), lost frames (sequence gaps).
Engine CPU is getrusage of the engine process over the measured window, as % of one core. With ``--api-load``
a third process runs a steady GET load against the URL and reports its latency. With ``--faulty N``, N of the
streams play a source that raises (or, every other one, returns a short frame) after 2-3 s: those legs are closed
(``LegFailed``) and stop sending; the figures at the peer are those of the healthy streams, to compare with a
run without ``--faulty``.

``--calls RATE`` measures what one call of ``bench/call_cps.py`` costs the media engine, without SIP, HTTP or the
store: at RATE per second a leg is created (sockets, port), pointed at an echo peer in its own process (SIPp's
``-rtp_echo``: every RTP packet goes back to where it came from), and after ``--answer-ms`` plays one shared prompt
(``--prompt-s`` seconds of PCM, the same bytes object for every call, as the TTS cache hands out) through a
playlist; when it ends the leg is closed (RTCP BYE, port released). Printed: engine CPU per call, and the gaps
between each call's RTP packets as the echo peer receives them (kernel timestamps).

``--bridges N`` measures bridged calls (issue 9): 2N legs, bridged in pairs, each pointed at one stream of the peer
process, which sends 20 ms PCMU on every stream (a distinct tone each) and measures what comes back on each: what
leg 2i sends its peer is what the peer sent leg 2i+1, relayed without decoding (the default) or, with
``--force-decode``, decoded, jitter-buffered and re-encoded on the tick (the path every bridge took before, and
still takes for a transcode, a recording, hold or mute). Printed: engine CPU (% of one core, per stream, and per
packet received, also without the ticks), the legs off the tick at mid-run, the gap between packets at the peer (all
gaps: median / p99 / max; per stream: the median and the worst of the streams' own p99), lost frames. ``--compare``
runs relay and decode back to back (``--repeat`` times, alternating) against fresh peers and prints each run and the
same-run ratios. ``--no-io`` measures the same bridges without sockets or peer (the sans-IO core in virtual time:
every leg gets one packet per tick): the Python work per packet of each mode, free of the machine's scheduling and
of system calls, and the tick's own CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import logging
import math
import os
import platform
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from callplane.media import g711  # noqa: E402
from callplane.media.sources import SILENCE, PcmSource, ToneSource  # noqa: E402

HDR = struct.Struct("!BBHII")
SO_TIMESTAMPNS = 35  # Linux: kernel receive timestamps as struct timespec (SCM_TIMESTAMPNS has the same value)
TIMESPEC = struct.Struct("@qq")
ANC_SPACE = socket.CMSG_SPACE(TIMESPEC.size)
WARMUP_S = 1.0  # gaps in the first second (legs still being wired) are not counted


# ---------------------------------------------------------------------------------------------- peer
def bind_pairs(n: int) -> list[socket.socket]:
    """n RTP sockets on even ports whose port + 1 is also held (so the engine's RTCP lands on our socket)."""
    out: list[socket.socket] = []
    held: list[socket.socket] = []
    port = 40000 + (os.getpid() * 2) % 10000
    while len(out) < n:
        port = 40000 if port >= 59998 else port + 2
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            a.bind(("127.0.0.1", port))
            b.bind(("127.0.0.1", port + 1))
        except OSError:
            a.close()
            b.close()
            continue
        a.setblocking(False)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        a.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        out.append(a)
        held.append(b)
    bind_pairs.held = held  # type: ignore[attr-defined]
    return out


def peer_main(n: int, duration: float, tone_hz: int) -> None:
    engine_ports: list[int] = json.loads(sys.stdin.readline())["ports"]
    socks = bind_pairs(n)
    print(json.dumps({"ports": [s.getsockname()[1] for s in socks]}), flush=True)
    ep = select.epoll()
    fd_index = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        fd_index[s.fileno()] = i
    # Each stream sends its own tone frequency so a conference mix is a sum of distinct tones.
    payloads = []
    for i in range(n):
        src = ToneSource([tone_hz + 10 * (i % 50)], None, 0.05)
        payloads.append([g711.encode(src.read() or SILENCE, 0) for _ in range(50)])
    ssrc = [0x10000 + i for i in range(n)]
    dests = [("127.0.0.1", p) for p in engine_ports]
    first_t = [0.0] * n
    first_ts = [0] * n
    last_t = [0.0] * n
    last_ts = [0] * n
    last_seq = [-1] * n
    ext = [0] * n
    received = [0] * n
    gaps: list[list[float]] = [[] for _ in range(n)]
    inf = float("inf")
    off_start, off_end, off_min, off_max = [inf] * n, [inf] * n, [inf] * n, [-inf] * n
    t0 = time.monotonic()
    end_send = t0 + duration
    end = end_send + 0.3
    warm = t0 + WARMUP_S
    k = 0
    next_send = t0
    send_overruns = 0
    send_gaps: list[float] = []  # between our own send bursts: the input's pacing (what a relay passes on)
    last_send = t0
    rusage0 = resource.getrusage(resource.RUSAGE_SELF)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if next_send <= end_send and now >= next_send:
            if now >= warm:
                send_gaps.append(now - last_send)
            last_send = now
            frame_i = k % 50
            for i in range(n):
                try:
                    socks[i].sendto(
                        HDR.pack(0x80, 0, k & 0xFFFF, (k * 160) & 0xFFFFFFFF, ssrc[i]) + payloads[i][frame_i], dests[i]
                    )
                except OSError:  # send buffer full, or the engine closed that leg (--faulty)
                    pass
            k += 1
            next_send = t0 + k * 0.02
            if time.monotonic() - next_send > 0.02:
                skip = math.floor((time.monotonic() - t0) / 0.02)
                send_overruns += skip - k
                k = skip
                next_send = t0 + k * 0.02
            continue
        timeout = max(0.0, min(next_send, end) - now)
        for fd, _ in ep.poll(timeout):
            i = fd_index[fd]
            s = socks[i]
            while True:
                try:
                    data, anc, _flags, _addr = s.recvmsg(2048, ANC_SPACE)
                except BlockingIOError:
                    break
                if len(data) < 12 or 200 <= data[1] <= 204:
                    continue
                now = time.monotonic()
                # Kernel receive timestamp: on loopback that is the moment the engine's sendto ran, so what
                # the peer measures is the engine's pacing, not the peer's own scheduling delays.
                arr = now
                for level, kind, raw in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = TIMESPEC.unpack(raw[: TIMESPEC.size])
                        arr = sec + nsec * 1e-9
                _, _, seq, ts, _ = HDR.unpack_from(data)
                if last_seq[i] < 0:
                    first_t[i], first_ts[i] = arr, ts
                else:
                    d = ((seq - last_seq[i] + 0x8000) & 0xFFFF) - 0x8000
                    if d <= 0:
                        continue  # reordered/duplicate: not expected on loopback
                    ext[i] += d
                    if now >= warm:
                        gaps[i].append(arr - last_t[i])
                        # offset = arrival time minus media time; its minimum over a window filters out jitter
                        off = (arr - first_t[i]) - ((ts - first_ts[i]) & 0xFFFFFFFF) / 8000
                        if now < warm + 1.0:
                            off_start[i] = min(off_start[i], off)
                        elif now >= end_send - 1.0:
                            off_end[i] = min(off_end[i], off)
                        off_min[i] = min(off_min[i], off)
                        off_max[i] = max(off_max[i], off)
                last_seq[i], last_t[i], last_ts[i] = seq, arr, ts
                received[i] += 1
    rusage1 = resource.getrusage(resource.RUSAGE_SELF)
    peer_cpu = (rusage1.ru_utime + rusage1.ru_stime - rusage0.ru_utime - rusage0.ru_stime) / (end - t0)
    drifts = []
    late_max = 0.0
    lost = 0
    for i in range(n):
        if received[i] > 1:
            lost += (ext[i] + 1) - received[i]
        if off_start[i] < inf and off_end[i] < inf:
            drifts.append(off_end[i] - off_start[i])
            late_max = max(late_max, off_max[i] - off_min[i])
    all_gaps = sorted(g for gs in gaps for g in gs)
    stream_p99 = sorted(sorted(gs)[min(len(gs) - 1, int(0.99 * len(gs)))] * 1000 for gs in gaps if gs)

    def pct(p: float) -> float:
        return all_gaps[min(len(all_gaps) - 1, int(p * len(all_gaps)))] * 1000 if all_gaps else float("nan")

    print(
        json.dumps(
            {
                "sent_per_stream": k,
                "send_overruns": send_overruns,
                "streams_heard": sum(1 for r in received if r),
                "received": sum(received),
                "lost": lost,
                "gap_median_ms": pct(0.5),
                "gap_p99_ms": pct(0.99),
                "gap_max_ms": all_gaps[-1] * 1000 if all_gaps else float("nan"),
                "gap_mean_ms": 1000 * sum(all_gaps) / len(all_gaps) if all_gaps else float("nan"),
                "stream_p99_median_ms": stream_p99[len(stream_p99) // 2] if stream_p99 else float("nan"),
                "send_gap_p99_ms": 1000 * sorted(send_gaps)[int(0.99 * len(send_gaps))] if send_gaps else float("nan"),
                "send_gap_max_ms": 1000 * max(send_gaps, default=float("nan")),
                "stream_p99_max_ms": stream_p99[-1] if stream_p99 else float("nan"),
                "drift_worst_ms": 1000 * max(drifts, key=abs) if drifts else float("nan"),
                "lateness_max_ms": late_max * 1000,
                "peer_cpu_pct": 100 * peer_cpu,
            }
        ),
        flush=True,
    )


# ------------------------------------------------------------------------------------------ API load
def api_load_main(url: str, rate: float, duration: float) -> None:
    import httpx

    lat: list[float] = []
    errors = 0
    t0 = time.monotonic()
    k = 0
    parsed = httpx.URL(url)
    auth = (parsed.username, parsed.password) if parsed.username else None
    url = str(parsed.copy_with(username=None, password=None))
    with httpx.Client(timeout=5.0, auth=auth) as client:
        while time.monotonic() < t0 + duration:
            t = time.monotonic()
            try:
                r = client.get(url)
                if r.status_code >= 400:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            lat.append(time.monotonic() - t)
            k += 1
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    lat.sort()
    print(
        json.dumps(
            {
                "requests": len(lat),
                "errors": errors,
                "rate": len(lat) / duration,
                "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
                "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
            }
        ),
        flush=True,
    )


# -------------------------------------------------------------------------------------------- engine
class LoopSource:
    """Loops a decoded buffer (a file played to each leg)."""

    def __init__(self, pcm: bytes) -> None:
        self.pcm = pcm
        self.src = PcmSource(pcm)

    def read(self) -> bytes | None:
        f = self.src.read()
        if f is None:
            self.src = PcmSource(self.pcm)
            f = self.src.read()
        return f

    def stop(self) -> None:
        self.src.stop()


class FaultySource:
    """A source that plays ``frames`` frames of silence, then raises (or returns a 100-byte frame: ``short``)."""

    def __init__(self, frames: int, short: bool) -> None:
        self.left = frames
        self.short = short

    def read(self) -> bytes | None:
        self.left -= 1
        if self.left >= 0:
            return SILENCE
        if self.short:
            return bytes(100)
        raise RuntimeError("injected fault")

    def stop(self) -> None:
        pass


async def baseline_main(args: argparse.Namespace) -> dict[str, Any]:
    """The design the reference measured first and we did not take: one paced asyncio task per stream (as aiortp
    does), each sleeping to its own drift-free deadline, encoding a tone frame and sending it; a DatagramProtocol per
    stream decodes what arrives into a list (the recorder's work). Same peer, same measurements."""
    loop = asyncio.get_running_loop()
    n = args.streams
    socks = bind_pairs(n)
    frames = [g711.encode(f, 0) for f in (ToneSource([1000], None, 0.2).read() for _ in range(50)) if f]
    received: list[list[bytes]] = [[] for _ in range(n)]

    class Receiver(asyncio.DatagramProtocol):
        def __init__(self, i: int) -> None:
            self.i = i

        def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
            if len(data) > 12 and data[1] & 0x7F == 0:
                received[self.i].append(g711.decode(data[12:], 0))

    transports = []
    for i, sock in enumerate(socks):
        transport, _ = await loop.create_datagram_endpoint(functools.partial(Receiver, i), sock=sock)
        transports.append(transport)
    me = [sys.executable, __file__]
    peer = await asyncio.create_subprocess_exec(
        *me, "--role", "peer", "--streams", str(n), "--duration", str(args.duration),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert peer.stdin is not None and peer.stdout is not None
    peer.stdin.write((json.dumps({"ports": [s.getsockname()[1] for s in socks]}) + "\n").encode())
    await peer.stdin.drain()
    peer_ports = json.loads(await peer.stdout.readline())["ports"]

    async def stream(i: int, port: int) -> None:
        transport, ssrc, seq, ts = transports[i], 0x5000 + i, 0, 0
        start = loop.time()
        k = 0
        while True:
            k += 1
            delay = start + k * 0.020 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
            transport.sendto(header + frames[k % len(frames)], ("127.0.0.1", port))
            seq, ts = seq + 1, ts + 160

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    tasks = [asyncio.create_task(stream(i, port)) for i, port in enumerate(peer_ports)]
    out = await peer.stdout.readline()
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await peer.wait()
    for transport in transports:
        transport.close()
    result: dict[str, Any] = json.loads(out)
    result.update(
        {
            "engine_cpu_pct": 100 * (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / wall,
            "engine_sys_pct": 100 * (ru1.ru_stime - ru0.ru_stime) / wall,
            "engine_received": sum(len(r) for r in received),
        }
    )
    return result


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python {platform.python_version()}"


async def start_node_api(records: int) -> tuple[str, Any]:
    """The node's HTTP API in THIS process and event loop, over a SQLite database of ``records`` synthetic calls:
    the API load then competes with the media ticker for the same loop, as in ``callplane serve``."""
    import socket
    import tempfile
    from datetime import UTC, datetime

    import uvicorn

    from callplane.api.app import create_app
    from callplane.core.clock import SystemClock
    from callplane.core.ids import IdSource
    from callplane.store import calls
    from callplane.store.bootstrap import ensure_admin
    from callplane.store.db import Database
    from callplane.store.synthetic import generate_rows

    sid, token = "AC" + "d" * 32, "media-bench-token-000"
    db = Database(f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='callplane-media-bench-')}/node.db")
    await db.migrate()
    await ensure_admin(db, IdSource(), SystemClock(), sid, token)
    await calls.bulk_load_rows(db, generate_rows(sid, "ID" + "d" * 32, records, now=datetime.now(UTC)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(db), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    url = f"http://{sid}:{token}@127.0.0.1:{port}/2012-04-24/Accounts/{sid}/Calls.json?PageSize=50&Status=completed"
    return url, (server, task, db)


async def engine_main(args: argparse.Namespace) -> dict[str, Any]:
    from callplane.media.aio import MediaEngine
    from callplane.media.recorder import Recorder

    if args.faulty:  # each closed leg logs its traceback once; the figures are what this run is about
        logging.getLogger("callplane.media.core").setLevel(logging.CRITICAL)
    node = None
    if args.api_node:
        args.api_load, node = await start_node_api(args.api_node)

    n = args.conference + args.streams
    eng = MediaEngine(port_range=(20000, 39998), io_mode=args.io, rtcp_interval=5.0)
    await eng.start()
    legs = [eng.create_leg() for _ in range(n)]
    pcm = None
    if args.file:
        from callplane.media.player import decode_file

        pcm = decode_file(args.file)
    loop = asyncio.get_running_loop()
    me = [sys.executable, __file__]
    peer = await asyncio.create_subprocess_exec(
        *me, "--role", "peer", "--streams", str(n), "--duration", str(args.duration),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert peer.stdin is not None and peer.stdout is not None
    peer.stdin.write((json.dumps({"ports": [p for _, p in legs]}) + "\n").encode())
    await peer.stdin.drain()
    peer_ports = json.loads(await peer.stdout.readline())["ports"]
    api = None
    if args.api_load:
        api = await asyncio.create_subprocess_exec(
            *me, "--role", "api", "--api-load", args.api_load, "--api-rate", str(args.api_rate),
            "--duration", str(args.duration), stdout=subprocess.PIPE,
        )  # fmt: skip
    gc_pauses: list[float] = []
    gc_t = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_t[0] = time.perf_counter()
        elif info.get("generation", 0) >= 1:
            gc_pauses.append(time.perf_counter() - gc_t[0])

    gc.callbacks.append(on_gc)
    if args.gc_freeze:
        gc.freeze()  # legs, sockets and sources made at setup are never scanned again
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    busy0, cpu0, over0 = eng.ticker.busy_s, eng.ticker.busy_cpu_s, eng.ticker.overruns
    recorders = []
    for k, ((leg_id, _), port) in enumerate(zip(legs, peer_ports, strict=True)):
        eng.set_remote(leg_id, "127.0.0.1", port)
        if k < args.conference:
            eng.join("bench", leg_id, beep=False)
        elif k < args.conference + args.faulty:
            eng.set_source(leg_id, FaultySource(100 + 50 * (k - args.conference) // max(1, args.faulty), k % 2 == 1))
        else:
            eng.set_source(leg_id, LoopSource(pcm) if pcm is not None else ToneSource([1000], None, 0.2))
            rec = Recorder(max_length_s=None)
            recorders.append(rec)
            eng.add_sink(leg_id, rec)
    out = await peer.stdout.readline()
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    busy, overruns = eng.ticker.busy_s - busy0, eng.ticker.overruns - over0
    busy_cpu = eng.ticker.busy_cpu_s - cpu0
    await peer.wait()
    result: dict[str, Any] = json.loads(out)
    api_result = None
    if api is not None:
        assert api.stdout is not None
        api_result = json.loads(await api.stdout.readline())
        await api.wait()
    live = [lid for lid, _ in legs if lid in eng.core.legs]
    jl = sum(eng.leg(lid).jitter.stats.lost for lid in live)
    rx = sum(eng.leg(lid).packets_received for lid in live)
    failed = len(legs) - len(live)
    sched = eng.ticker.schedule
    await eng.close()
    if node is not None:
        server, task, db = node
        server.should_exit = True
        await task
        await db.close()
    del loop
    result.update(
        {
            "engine_cpu_pct": 100 * (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / wall,
            "engine_sys_pct": 100 * (ru1.ru_stime - ru0.ru_stime) / wall,
            "tick_busy_pct": 100 * busy / wall,
            "tick_cpu_pct": 100 * busy_cpu / wall,
            "tick_overruns": overruns,
            "legs_failed": failed,
            "tick_max_lateness_ms": 1000 * sched.max_lateness if sched else None,
            "engine_received": rx,
            "engine_jitter_lost": jl,
            "recorded_s": sum(r.duration_s for r in recorders) / max(1, len(recorders)),
            "api": api_result,
            "gc_gen12_collections": len(gc_pauses),
            "gc_max_pause_ms": 1000 * max(gc_pauses, default=0.0),
        }
    )
    return result


# ------------------------------------------------------------------------------------------ bridges
async def bridges_main(args: argparse.Namespace, relay: bool) -> dict[str, Any]:
    """``--bridges N``: N bridged pairs of legs fed by the peer process (see the docstring)."""
    from callplane.media.aio import MediaEngine

    n = 2 * args.bridges
    eng = MediaEngine(port_range=(20000, 39998), io_mode=args.io, rtcp_interval=5.0, relay=relay)
    await eng.start()
    legs = [leg_id for leg_id, _ in (eng.create_leg() for _ in range(n))]
    ports = [eng._socks[leg_id].port for leg_id in legs]
    me = [sys.executable, __file__]
    peer = await asyncio.create_subprocess_exec(
        *me, "--role", "peer", "--streams", str(n), "--duration", str(args.duration),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert peer.stdin is not None and peer.stdout is not None
    peer.stdin.write((json.dumps({"ports": ports}) + "\n").encode())
    await peer.stdin.drain()
    peer_ports = json.loads(await peer.stdout.readline())["ports"]
    if args.gc_freeze:
        gc.freeze()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    busy0, over0 = eng.ticker.busy_cpu_s, eng.ticker.overruns
    for leg_id, port in zip(legs, peer_ports, strict=True):
        eng.set_remote(leg_id, "127.0.0.1", port)
    for i in range(0, n, 2):
        eng.bridge(legs[i], legs[i + 1])
    parked: list[int] = []
    asyncio.get_running_loop().call_later(args.duration / 2, lambda: parked.append(eng.core.parked))
    out = await peer.stdout.readline()
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    busy, overruns = eng.ticker.busy_cpu_s - busy0, eng.ticker.overruns - over0
    await peer.wait()
    live = [eng.leg(leg_id) for leg_id in legs if leg_id in eng.core.legs]
    result: dict[str, Any] = json.loads(out)
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    result.update(
        {
            "mode": "relay" if relay else "decode",
            "streams": n,
            "engine_cpu_pct": 100 * cpu / wall,
            "engine_sys_pct": 100 * (ru1.ru_stime - ru0.ru_stime) / wall,
            "engine_cpu_pct_per_stream": 100 * cpu / wall / n,
            "tick_cpu_pct": 100 * busy / wall,
            "tick_overruns": overruns,
            "legs_relaying": sum(1 for leg in live if leg.relay_to is not None),
            "legs_parked": parked[0] if parked else None,  # mid-run (off the tick: see media.core)
            "us_per_packet": 1e6 * cpu / max(1, sum(leg.packets_received for leg in live)),
            "us_per_packet_rx": 1e6 * (cpu - busy) / max(1, sum(leg.packets_received for leg in live)),
            "frames_decoded": sum(leg.jitter.stats.pushed for leg in live),
            "engine_received": sum(leg.packets_received for leg in live),
            "engine_sent": sum(leg.packets_sent for leg in live),
        }
    )
    await eng.close()
    return result


def bridges_no_io(bridges: int, relay: bool, ticks: int = 500) -> tuple[float, float, float]:
    """``--no-io``: for ``bridges`` bridged pairs in virtual time, microseconds of CPU per packet (receive + tick)
    and the tick's own CPU time, median and p99, in milliseconds."""
    from callplane.core.ids import IdSource
    from callplane.media.core import MediaCore
    from callplane.media.leg import RtpLeg

    core = MediaCore(IdSource(1))
    core.relay = relay
    n = 2 * bridges
    addrs = [("127.0.0.1", 40000 + 2 * i) for i in range(n)]
    legs = [core.add_leg(RtpLeg(f"L{i}", core.ids, remote=addrs[i], rtcp_interval=5.0)) for i in range(n)]
    for i in range(0, n, 2):
        core.bridge(legs[i].leg_id, legs[i + 1].leg_id)
    frames = [g711.encode(ToneSource([400 + 10 * (i % 50)], None, 0.05).read() or SILENCE, 0) for i in range(n)]
    tick_cpu: list[float] = []
    started = time.thread_time()
    for k in range(ticks):
        now = k * 0.02
        t = time.thread_time()
        core.tick(now, k)
        tick_cpu.append(time.thread_time() - t)
        for i, leg in enumerate(legs):
            # the packets of one tick arrive spread over it, as from independent senders
            at = now + 0.02 * i / n
            leg.receive_rtp(HDR.pack(0x80, 0, k & 0xFFFF, 160 * k, 0x10000 + i) + frames[i], addrs[i], at)
    assert all((leg.relay_to is not None) == relay for leg in legs)
    per_packet = (time.thread_time() - started) / (ticks * n) * 1e6
    tick_cpu = sorted(tick_cpu[ticks // 10 :])  # after the first ticks (relay decided, pairs parked)
    return per_packet, 1000 * tick_cpu[len(tick_cpu) // 2], 1000 * tick_cpu[int(0.99 * len(tick_cpu))]


def print_bridges(res: dict[str, Any]) -> None:
    print(
        f"  {res['mode']:>6}: engine CPU {res['engine_cpu_pct']:5.1f}% of one core "
        f"({res['engine_cpu_pct_per_stream'] * 1000:.1f} milli-% per stream; kernel {res['engine_sys_pct']:.1f}%; "
        f"{res['us_per_packet']:.1f} us per packet received, {res['us_per_packet_rx']:.1f} outside the ticks; "
        f"ticks {res['tick_cpu_pct']:.1f}%, overruns {res['tick_overruns']}); "
        f"gap median {res['gap_median_ms']:.2f} / p99 {res['gap_p99_ms']:.2f} / max {res['gap_max_ms']:.1f} ms; "
        f"per-stream p99 median {res['stream_p99_median_ms']:.2f} / worst {res['stream_p99_max_ms']:.2f} ms; "
        f"lost {res['lost']} of {res['received']} (the peer skipped {res['send_overruns'] * res['streams']} frames of "
        f"its own: a relay passes them on as gaps); legs relaying {res['legs_relaying']}, parked {res['legs_parked']}, "
        f"frames decoded {res['frames_decoded']}; peer CPU {res['peer_cpu_pct']:.0f}%, "
        f"send overruns {res['send_overruns']}, its send gaps p99 {res['send_gap_p99_ms']:.2f} / "
        f"max {res['send_gap_max_ms']:.1f} ms"
    )


def run_bridges(args: argparse.Namespace) -> None:
    if args.no_io:
        print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
        for _ in range(args.repeat):
            relay, r50, r99 = bridges_no_io(args.bridges, True)
            decode, d50, d99 = bridges_no_io(args.bridges, False)
            print(
                f"  {args.bridges} bridges, no I/O: relay {relay:.2f} us, decode {decode:.2f} us of CPU per packet "
                f"(receive + tick); decode / relay {decode / relay:.2f}x; the tick's CPU p50 / p99: relay "
                f"{r50:.3f} / {r99:.3f} ms, decode {d50:.3f} / {d99:.3f} ms"
            )
        return
    import uvloop

    runner = uvloop.run if args.loop == "uvloop" else asyncio.run
    modes = [True, False] * args.repeat if args.compare else [not args.force_decode] * args.repeat
    results = []
    for relay in modes:
        results.append(runner(bridges_main(args, relay)))
    if args.json:
        print(json.dumps(results))
        return
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"run: {args.bridges} bridged calls ({2 * args.bridges} legs, PCMU both sides, fed by one peer process), "
        f"{args.duration:.0f} s each, loop={args.loop}, io={args.io}"
    )
    for res in results:
        print_bridges(res)
    if args.compare:
        for key, label in (("engine_cpu_pct", "CPU"), ("gap_p99_ms", "p99 gap"), ("gap_max_ms", "max gap")):
            ratios = [d[key] / r[key] for r, d in zip(results[0::2], results[1::2], strict=True) if r[key]]
            print(f"  decode / relay {label}: " + ", ".join(f"{x:.2f}x" for x in ratios))


# ------------------------------------------------------------------------------------------ call churn
def echo_main(duration: float) -> None:
    """The callee of ``--calls``: echo every datagram to its sender; the gaps between RTP packets per sender."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.settimeout(0.2)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    last: dict[tuple[str, int], float] = {}
    gaps: list[float] = []
    packets = 0
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        try:
            data, anc, _flags, addr = sock.recvmsg(2048, ANC_SPACE)
        except TimeoutError:
            continue
        with contextlib.suppress(OSError):
            sock.sendto(data, addr)
        if len(data) < 12 or 200 <= data[1] <= 204:
            continue
        packets += 1
        arr = 0.0
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = TIMESPEC.unpack(raw[: TIMESPEC.size])
                arr = sec + nsec * 1e-9
        prev = last.get(addr)
        if prev is not None:
            gaps.append(arr - prev)
        last[addr] = arr
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    gaps.sort()

    def pct(p: float) -> float:
        return gaps[min(len(gaps) - 1, int(p * len(gaps)))] * 1000 if gaps else float("nan")

    print(
        json.dumps(
            {
                "packets": packets,
                "streams": len(last),
                "gap_median_ms": pct(0.5),
                "gap_p99_ms": pct(0.99),
                "gap_max_ms": gaps[-1] * 1000 if gaps else float("nan"),
                "peer_cpu_s": ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime,
            }
        ),
        flush=True,
    )


async def calls_main(args: argparse.Namespace) -> dict[str, Any]:
    """``--calls``: legs churned at a rate, each playing one shared prompt to an echoing peer (see the docstring)."""
    from callplane.media.aio import MediaEngine
    from callplane.media.playlist import PlayItem, Playlist
    from callplane.media.sources import tone_pcm

    loop = asyncio.get_running_loop()
    eng = MediaEngine(port_range=(20000, 39998), io_mode=args.io, rtcp_interval=5.0)
    await eng.start()
    prompt = tone_pcm([440.0, 660.0], args.prompt_s, 0.2)
    total = int(args.calls * args.duration)
    me = [sys.executable, __file__]
    peer = await asyncio.create_subprocess_exec(
        *me, "--role", "echo", "--duration", str(args.duration + 3.0 + args.prompt_s), stdout=subprocess.PIPE
    )
    assert peer.stdout is not None
    echo_port = json.loads(await peer.stdout.readline())["port"]
    done = asyncio.Event()
    closed = [0]

    def finished(leg_id: str) -> None:
        eng.close_leg(leg_id)
        closed[0] += 1
        if closed[0] == total:
            done.set()

    def play(leg_id: str) -> None:
        def ended(_stopped: bool) -> None:
            loop.call_soon(finished, leg_id)  # not from inside the tick that read the playlist's end

        eng.set_source(leg_id, Playlist([PlayItem(prompt)], on_finished=ended))

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    busy0 = eng.ticker.busy_cpu_s
    t0 = loop.time()
    for i in range(total):
        delay = t0 + i / args.calls - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        leg_id, _ = eng.create_leg()
        eng.set_remote(leg_id, "127.0.0.1", echo_port)
        loop.call_later(args.answer_ms / 1000, play, leg_id)
    await asyncio.wait_for(done.wait(), args.prompt_s + 30)
    wall = loop.time() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    busy = eng.ticker.busy_cpu_s - busy0
    overruns = eng.ticker.overruns
    await eng.close()
    result: dict[str, Any] = json.loads(await peer.stdout.readline())
    await peer.wait()
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    result.update(
        {
            "calls": total,
            "wall_s": wall,
            "engine_cpu_ms_per_call": 1000 * cpu / total,
            "engine_sys_ms_per_call": 1000 * (ru1.ru_stime - ru0.ru_stime) / total,
            "tick_cpu_ms_per_call": 1000 * busy / total,
            "tick_overruns": overruns,
        }
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, help="bidirectional streams (default 500, or 0 with --conference)")
    ap.add_argument("--conference", type=int, default=0, help="one N-party mix-minus conference (plus --streams)")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="10 s, 100 streams")
    ap.add_argument("--file", help="play this WAV/MP3 (decoded to 8 kHz) instead of a tone")
    ap.add_argument("--io", choices=["reader", "poll", "protocol"], default="reader")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    ap.add_argument("--api-load", metavar="URL", help="run a steady HTTP GET load against URL during the run")
    ap.add_argument("--api-rate", type=float, default=50.0, help="GET requests per second for --api-load")
    ap.add_argument(
        "--api-node",
        type=int,
        metavar="RECORDS",
        default=0,
        help="serve the node's HTTP API in the engine's own process and loop, over RECORDS synthetic calls, "
        "and run the GET load (list calls) against it",
    )
    ap.add_argument("--calls", type=float, metavar="RATE", help="call churn at RATE calls/s (see the docstring)")
    ap.add_argument("--prompt-s", type=float, default=0.8, help="--calls: seconds of prompt each call plays")
    ap.add_argument("--answer-ms", type=float, default=100.0, help="--calls: from the leg's creation to the prompt")
    ap.add_argument("--role", choices=["engine", "peer", "api", "echo"], default="engine", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="also run the rejected design (one paced task per stream) with the same peer, and print the ratios",
    )
    ap.add_argument("--faulty", type=int, default=0, metavar="N", help="N streams get a source that fails mid-run")
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after setup")
    ap.add_argument("--bridges", type=int, default=0, metavar="N", help="N bridged calls (2N legs), see the docstring")
    ap.add_argument("--force-decode", action="store_true", help="--bridges: decode every bridge (no relay)")
    ap.add_argument("--compare", action="store_true", help="--bridges: relay and decode back to back")
    ap.add_argument("--repeat", type=int, default=1, help="--bridges: runs of each mode")
    ap.add_argument("--no-io", action="store_true", help="--bridges: the sans-IO core alone, both modes")
    args = ap.parse_args()
    if args.streams is None:
        args.streams = 0 if args.conference else (100 if args.quick else 500)
    if args.quick:
        args.duration = 10.0
    if args.role == "peer":
        peer_main(args.streams, args.duration, 400)
        return
    if args.role == "api":
        api_load_main(args.api_load, args.api_rate, args.duration)
        return
    if args.role == "echo":
        echo_main(args.duration)
        return
    if args.bridges:
        run_bridges(args)
        return
    import uvloop

    if args.calls:
        runner = uvloop.run if args.loop == "uvloop" else asyncio.run
        res = runner(calls_main(args))
        if args.json:
            print(json.dumps(res))
            return
        print(f"machine: {machine()}")
        print(
            f"run: {res['calls']} calls at {args.calls:g}/s, {args.prompt_s:g} s prompt after {args.answer_ms:g} ms, "
            f"loop={args.loop}, io={args.io}; done in {res['wall_s']:.1f} s"
        )
        print(
            f"engine CPU per call: {res['engine_cpu_ms_per_call']:.3f} ms ({res['engine_sys_ms_per_call']:.3f} ms "
            f"kernel); in ticks {res['tick_cpu_ms_per_call']:.3f} ms; tick overruns {res['tick_overruns']}"
        )
        print(
            f"at the echo peer: {res['packets']} RTP packets from {res['streams']} legs; gap median "
            f"{res['gap_median_ms']:.2f} / p99 {res['gap_p99_ms']:.2f} / max {res['gap_max_ms']:.2f} ms"
        )
        return

    if args.loop == "uvloop":
        result = uvloop.run(engine_main(args))
    else:
        result = asyncio.run(engine_main(args))
    if args.json:
        print(json.dumps(result))
        return
    mode = " + ".join(
        x
        for x in (
            f"{args.streams} bidirectional streams" if args.streams else "",
            f"a {args.conference}-party conference" if args.conference else "",
        )
        if x
    )
    print(f"machine: {machine()}")
    print(f"run: {mode}, PCMU 20 ms, {args.duration:.0f} s, loop={args.loop}, io={args.io}")
    print(
        f"engine CPU: {result['engine_cpu_pct']:.1f}% of one core ({result['engine_sys_pct']:.1f}% kernel); "
        f"ticks: {result['tick_cpu_pct']:.1f}% CPU, {result['tick_busy_pct']:.1f}% wall "
        "(the difference is time the OS ran something else)"
    )
    print(f"ticker: overruns {result['tick_overruns']}, max lateness {result['tick_max_lateness_ms']:.2f} ms")
    if args.faulty:
        print(f"faulty legs: {args.faulty} injected, {result['legs_failed']} closed (figures below: the others)")
    print(
        f"at the peer: gap median {result['gap_median_ms']:.2f} / p99 {result['gap_p99_ms']:.2f} / "
        f"max {result['gap_max_ms']:.2f} ms (mean {result['gap_mean_ms']:.3f})"
    )
    print(
        f"worst drift {result['drift_worst_ms']:+.2f} ms (arrival vs RTP time, first vs last second), "
        f"worst delay spread {result['lateness_max_ms']:.2f} ms"
    )
    print(
        f"lost frames: {result['lost']} at the peer (of {result['received']} received on "
        f"{result['streams_heard']} streams); engine received {result['engine_received']}, "
        f"jitter-buffer losses {result['engine_jitter_lost']}"
    )
    if args.streams:
        print(f"recorded per stream: {result['recorded_s']:.1f} s (in-memory recorder on every stream)")
    print(f"GC: {result['gc_gen12_collections']} gen1/2 collections, longest {result['gc_max_pause_ms']:.1f} ms")
    print(f"peer CPU {result['peer_cpu_pct']:.1f}%, peer send overruns {result['send_overruns']}")
    if result["api"]:
        a = result["api"]
        print(f"API load: {a['requests']} GETs ({a['rate']:.1f}/s), errors {a['errors']}, p50 {a['p50_ms']:.1f} ms, "
              f"p99 {a['p99_ms']:.1f} ms")  # fmt: skip
    if args.baseline and args.streams and not args.conference:
        runner = uvloop.run if args.loop == "uvloop" else asyncio.run
        base = runner(baseline_main(args))
        print(f"\nbaseline, same peer, same machine: one paced asyncio task per stream ({args.streams} streams)")
        print(
            f"  engine CPU {base['engine_cpu_pct']:.1f}% of one core; gap median {base['gap_median_ms']:.2f} / "
            f"p99 {base['gap_p99_ms']:.2f} / max {base['gap_max_ms']:.2f} ms; "
            f"worst drift {base['drift_worst_ms']:+.2f} ms; lost {base['lost']}"
        )
        print(
            f"  ratios baseline / callplane: CPU {base['engine_cpu_pct'] / result['engine_cpu_pct']:.2f}x, "
            f"p99 gap {base['gap_p99_ms'] / result['gap_p99_ms']:.2f}x, "
            f"max gap {base['gap_max_ms'] / result['gap_max_ms']:.2f}x "
            "(the baseline only encodes, sends and decodes: no jitter buffer, recorder, RTCP or latching)"
        )


if __name__ == "__main__":
    main()
