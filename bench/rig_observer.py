"""The rig's packet observer: answer -> first RTP / first audio per call, and the RTP gaps, from kernel timestamps.

It runs in its own process with an AF_PACKET socket on ``lo`` and a kernel BPF filter, so it sees only the SIP
messages to and from SIPp and the RTP sent to SIPp's media port. It needs root (CAP_NET_RAW); without it, it sends
None.
"""

from __future__ import annotations

import ctypes
import re
import socket
import struct
import time
from typing import Any

__all__ = ["observe"]


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
