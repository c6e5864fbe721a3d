"""The caller's audio in ``bench/call_cps.py --dial``: one paced process plays a PCMU tone on every bridged call.

Why not SIPp's own players: ``play_pcap_audio`` sends through one raw ``IPPROTO_UDP`` socket per playing call and
never reads them, and the kernel hands a clone of every UDP datagram on the host to every such socket (they are
full, so the clone is dropped at once). At 500 calls every RTP packet of the node, of the callee and of the
caller costs 500 clones: ``raw_local_deliver`` alone took 11% of the node's CPU, a cost no real deployment has.
``rtp_stream`` has no raw sockets, but paces badly with several calls per thread (its streams send on a shared
20 ms grid and a stream that just misses it catches up with two packets: its own p99 gap was 36 ms).

So SIPp does the signalling and this process is the caller's phone. SIPp offers, per call, the next port of
:func:`injection_file` (``m=audio [field0]``, lines taken in order). The port is armed: the first datagram that
arrives on it (the node fills a quiet relay with silence) gives the node's address, as a phone behind NAT learns it
(symmetric RTP), and from then on a 1 kHz tone goes there every 20 ms from that port, for ``hold`` seconds (the
call's length), from one epoll loop: each stream keeps its own 20 ms grid, the streams' phases are spread as their
calls are, and what arrives after the first datagram is left to the kernel (the socket's buffer fills and drops,
as SIPp's UAC left it). A port is re-armed ``QUIET_S`` after its stream ends (its old packets drained), and the
pool is larger than the calls up at once, so SIPp reuses a port only long after its call ended.
"""

from __future__ import annotations

import heapq
import random
import resource
import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

from callplane.media import g711
from callplane.media.sources import ToneSource

__all__ = ["FRAME_S", "QUIET_S", "bind_ports", "injection_file", "play"]

FRAME_S = 0.02
QUIET_S = 1.0  # after a stream ends: late datagrams of its call are drained before the port is armed again
_RTP = struct.Struct("!BBHII")
_SEND, _REARM = 0, 1


def bind_ports(
    count: int, host: str = "127.0.0.1", low: int = 40000, high: int = 60000
) -> tuple[list[socket.socket], list[socket.socket]]:
    """``count`` non-blocking UDP sockets on even ports from ``low``, and the sockets holding each port + 1 (the
    node's RTCP lands there and is never read; keep them open). Ports that are taken are skipped."""
    socks: list[socket.socket] = []
    held: list[socket.socket] = []
    port = low
    while len(socks) < count:
        if port >= high:
            raise OSError(f"only {len(socks)} of {count} even port pairs free in {low}-{high}")
        a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            a.bind((host, port))
            b.bind((host, port + 1))
        except OSError:
            a.close()
            b.close()
        else:
            a.setblocking(False)
            a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            socks.append(a)
            held.append(b)
        port += 2
    return socks, held


def injection_file(path: Path, ports: list[int]) -> Path:
    """SIPp's ``-inf`` file: one line per call, in order (``[field0]`` is the port the call offers)."""
    path.write_text("SEQUENTIAL\n" + "".join(f"{p};\n" for p in ports))
    return path


def tone_frames(hz: float = 1000.0, amplitude: float = 0.3) -> list[bytes]:
    """One second of a PCMU tone, 50 frames of 20 ms: the stream loops over them."""
    tone = ToneSource([hz], None, amplitude)
    return [g711.encode(tone.read() or b"", g711.PCMU) for _ in range(50)]


def play(count: int, hold: float, ready: Any, stop: Any, out: Any) -> None:
    """Runs in its own process: binds ``count`` ports, sends their numbers (``out``), plays until ``stop``, then
    sends its figures: streams played, packets sent, sends later than 2 ms, and its CPU seconds."""
    socks, _rtcp = bind_ports(count)  # _rtcp: held open until the process ends
    out.send([s.getsockname()[1] for s in socks])
    frames = tone_frames()
    by_fd = {s.fileno(): i for i, s in enumerate(socks)}
    ep = select.epoll()
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    dest: list[Any] = [None] * count
    end = [0.0] * count
    seq = [0] * count
    first = [0] * count
    ssrc = [0] * count
    heap: list[tuple[float, int, int]] = []
    streams = sent = late = 0
    pack, push, pop, now_of = _RTP.pack, heapq.heappush, heapq.heappop, time.monotonic
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    ready.set()
    while not stop.is_set():
        now = now_of()
        timeout = 0.2 if not heap else min(0.2, max(0.0, heap[0][0] - now))
        for fd, _ in ep.poll(timeout):
            i = by_fd[fd]
            s = socks[i]
            try:
                _, addr = s.recvfrom(2048)
            except OSError:
                continue
            ep.unregister(fd)  # playing: what arrives from now on is left to the kernel
            now = now_of()
            dest[i], end[i], ssrc[i] = addr, now + hold, random.getrandbits(32)
            seq[i] = first[i] = random.getrandbits(15)
            streams += 1
            push(heap, (now, i, _SEND))
        now = now_of()
        while heap and heap[0][0] <= now + 0.0002:
            due, i, kind = pop(heap)
            if kind == _REARM:
                s = socks[i]
                while True:  # what the ended call's node leg sent after we stopped listening
                    try:
                        s.recv(2048)
                    except OSError:
                        break
                ep.register(s.fileno(), select.EPOLLIN)
                continue
            if due >= end[i]:
                push(heap, (due + QUIET_S, i, _REARM))
                continue
            n = seq[i]
            header = pack(0x80, 0x80 if n == first[i] else 0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, ssrc[i])
            try:
                socks[i].sendto(header + frames[n % 50], dest[i])
                sent += 1
            except OSError:  # buffer full, or the node's port is gone (an ICMP error): the next frame goes out
                pass
            if now - due > 0.002:
                late += 1
            seq[i] = n + 1
            push(heap, (due + FRAME_S, i, _SEND))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    out.send({"streams": streams, "sent": sent, "late": late, "cpu": cpu})
