"""A raw Python RTP peer for loopback tests: a UDP socket on an ephemeral port and a few helpers."""

from __future__ import annotations

import asyncio
import socket

from callplane.media.rtp import RtpPacket


class RawPeer:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.addr: tuple[str, int] = self.sock.getsockname()

    @property
    def port(self) -> int:
        return self.addr[1]

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    async def recv(self, n: int, timeout: float = 5.0, rtp_only: bool = True) -> list[RtpPacket]:
        """The next ``n`` RTP packets (RTCP skipped)."""
        loop = asyncio.get_running_loop()
        out: list[RtpPacket] = []

        async def go() -> None:
            while len(out) < n:
                data, _ = await loop.sock_recvfrom(self.sock, 2048)
                if rtp_only and 200 <= data[1] <= 204:
                    continue
                out.append(RtpPacket.parse(data))

        await asyncio.wait_for(go(), timeout)
        return out

    def close(self) -> None:
        self.sock.close()
