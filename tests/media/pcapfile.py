"""A few lines of struct code to pull UDP payloads out of a classic libpcap file (Ethernet/IPv4 or Linux SLL)."""

from __future__ import annotations

import struct
from pathlib import Path

SIPP = Path("/usr/share/sip-tester")


def udp_payloads(path: Path) -> list[bytes]:
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    link_len = {1: 14, 113: 16, 0: 4}[linktype]
    pos = 24
    out: list[bytes] = []
    while pos + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(endian + "IIII", data, pos)
        pkt = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ip = pkt[link_len:]
        if not ip or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        udp = ip[ihl:total]
        out.append(bytes(udp[8:]))
    return out
