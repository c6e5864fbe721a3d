"""The rig's packet observer: answer -> first RTP / first audio per call, and the RTP gaps, from kernel timestamps.

It runs in its own process with an AF_PACKET socket on ``lo`` and a kernel BPF filter, so it sees only the SIP
messages to and from SIPp and the RTP sent to SIPp's media port. It needs root (CAP_NET_RAW); without it, it sends
None.
"""

from __future__ import annotations

import ctypes
import mmap
import re
import select
import socket
import struct
from typing import Any

__all__ = ["observe"]


def _bpf(sip_port: int, media_port: int, low: int = 1, high: int = 0) -> bytes:
    """Classic BPF: incoming copies only (PACKET_HOST), UDP, and dst port in {SIP, media} or in ``low..high`` (the
    node's RTP ports: what the node receives), or src port SIP."""
    ins = [
        (0x20, 0, 0, 0xFFFFF004),  # 0: ld #pkttype
        (0x15, 0, 11, 0),  # 1: jeq PACKET_HOST, else drop
        (0x30, 0, 0, 9),  # 2: ldb [9] (IP protocol)
        (0x15, 0, 9, 17),  # 3: jeq UDP, else drop
        (0xB1, 0, 0, 0),  # 4: ldxb 4*([0]&0xf)
        (0x48, 0, 0, 2),  # 5: ldh [x+2] (dst port)
        (0x15, 5, 0, media_port),  # 6: accept
        (0x15, 4, 0, sip_port),  # 7: accept
        (0x35, 0, 1, low),  # 8: jge low, else to 10
        (0x25, 0, 2, high),  # 9: jgt high to 10, else accept
        (0x48, 0, 0, 0),  # 10: ldh [x+0] (src port)
        (0x15, 0, 1, sip_port),  # 11: accept, else drop
        (0x06, 0, 0, 0xFFFF),  # 12: accept
        (0x06, 0, 0, 0),  # 13: drop
    ]
    return b"".join(struct.pack("HBBI", *i) for i in ins)


SOL_PACKET, PACKET_RX_RING, PACKET_STATISTICS, PACKET_VERSION, TPACKET_V3 = 263, 5, 6, 10, 2
TP_STATUS_USER = 1
BLOCK_SIZE, BLOCKS, FRAME_SIZE = 1 << 20, 32, 2048
BLOCK_TIMEOUT_MS = 50  # a block is handed over when full or after this long; timestamps are the kernel's anyway
SILENCE = frozenset({0xFF, 0x7F, 0xD5, 0x55})  # PCMU and PCMA codes near zero
CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)\s*:\s*([^\r\n]+)", re.I)
M_LINE = re.compile(rb"\r\nm=audio (\d+) ")


def _ring(sip_port: int, media_port: int, low: int, high: int) -> tuple[socket.socket, mmap.mmap]:
    """A packet socket on ``lo`` with the filter attached and a TPACKET_V3 receive ring mapped: the kernel fills
    blocks of packets with their timestamps, and this process wakes once per block instead of once per packet."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    prog = _bpf(sip_port, media_port, low, high)
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("H6xQ", len(prog) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
    frames = BLOCK_SIZE * BLOCKS // FRAME_SIZE
    req = struct.pack("7I", BLOCK_SIZE, BLOCKS, FRAME_SIZE, frames, BLOCK_TIMEOUT_MS, 0, 0)
    sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
    ring = mmap.mmap(sock.fileno(), BLOCK_SIZE * BLOCKS, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    sock.bind(("lo", 0))
    return sock, ring


def observe(
    sip_port: int, media_port: int, ready: Any, stop: Any, out: Any, node_rtp: tuple[int, int] = (1, 0)
) -> None:
    """Runs in its own process: per call answer time, first RTP, first audio; RTP gaps per source port.

    Sends a dict of lists (``to_rtp``, ``to_audio``, ``gaps`` in ms), the number of calls answered, and the packets
    the kernel dropped because this process fell behind (``drops``; nonzero means the RTP figures are incomplete).
    With ``node_rtp`` (the node's RTP port range), ``in_gaps`` are the gaps of the RTP the node receives from
    anyone but the media port's owner, per destination port: the caller's own pacing, the baseline for the gaps of
    what the node relays to the media port (``gaps``)."""
    low, high = node_rtp
    try:
        sock, ring = _ring(sip_port, media_port, low, high)
    except OSError:  # no CAP_NET_RAW (or no packet sockets here)
        ready.set()
        out.send(None)
        return
    ready.set()
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    port_of_call: dict[str, int] = {}  # Call-ID -> our RTP port (from the INVITE's SDP)
    answered_calls: set[str] = set()
    answered: dict[int, float] = {}  # RTP port -> answer time of the call that has it now (ports are reused)
    want_rtp: set[int] = set()  # ports whose call has not sent its first RTP packet yet
    want_audio: set[int] = set()  # ... nor its first non-silent one
    to_rtp: list[float] = []
    to_audio: list[float] = []
    last: dict[int, float] = {}
    gaps: list[float] = []
    last_in: dict[int, float] = {}
    in_gaps: list[float] = []
    packets = 0
    unpack_from = struct.unpack_from
    block = 0
    while True:
        base = block * BLOCK_SIZE
        if not unpack_from("I", ring, base + 8)[0] & TP_STATUS_USER:
            if stop.is_set():
                break
            poller.poll(200)
            continue
        count, offset = unpack_from("II", ring, base + 12)
        at = base + offset
        for _ in range(count):
            next_offset, sec, nsec, snaplen, _, _, _, net = unpack_from("IIIIIIHH", ring, at)
            ts = sec + nsec * 1e-9
            ip = at + net
            ihl = (ring[ip] & 0x0F) * 4
            src, dst = unpack_from("!HH", ring, ip + ihl)
            udp = ip + ihl + 8
            end = ip + snaplen
            at += next_offset
            packets += 1
            if dst == media_port:
                if end - udp < 12 or ring[udp + 1] & 0x7F not in (0, 8):
                    continue
                prev = last.get(src)
                if prev is not None:
                    gaps.append((ts - prev) * 1000.0)
                last[src] = ts
                if src in want_rtp:
                    want_rtp.discard(src)
                    to_rtp.append((ts - answered[src]) * 1000.0)
                if src in want_audio and len(set(ring[udp + 12 : end]) - SILENCE) > 20:
                    want_audio.discard(src)
                    to_audio.append((ts - answered[src]) * 1000.0)
                continue
            if low <= dst <= high:
                # what the node receives from the caller (not the callee's echo, which follows our own pacing)
                if src != media_port and end - udp >= 12 and ring[udp + 1] & 0x7F in (0, 8):
                    prev = last_in.get(dst)
                    if prev is not None and ts - prev < 1.0:  # a port reused by a later call starts afresh
                        in_gaps.append((ts - prev) * 1000.0)
                    last_in[dst] = ts
                continue
            payload = ring[udp:end]
            if dst == sip_port and payload.startswith(b"INVITE "):
                cid, m = CALL_ID.search(payload), M_LINE.search(payload)
                if cid and m:
                    port_of_call[cid.group(1).strip().decode()] = int(m.group(1))
            elif src == sip_port and payload.startswith(b"SIP/2.0 200") and b"INVITE" in payload.split(b"\r\n\r\n")[0]:
                cid = CALL_ID.search(payload)
                if cid:
                    call = cid.group(1).strip().decode()
                    port = port_of_call.get(call)
                    if port is not None and call not in answered_calls:  # not a retransmitted 200
                        answered_calls.add(call)
                        answered[port] = ts
                        last.pop(port, None)  # a reused port starts a new call
                        want_rtp.add(port)
                        want_audio.add(port)
        struct.pack_into("I", ring, base + 8, 0)  # hand the block back to the kernel
        block = (block + 1) % BLOCKS
    _, drops, _ = struct.unpack("III", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
    # Gaps over 1 s are a port reused by a later call, not pacing.
    out.send(
        {
            "to_rtp": to_rtp,
            "to_audio": to_audio,
            "gaps": [g for g in gaps if g < 1000.0],
            "in_gaps": in_gaps,
            "calls": len(answered_calls),
            "packets": packets,
            "drops": drops,
        }
    )
