"""The asyncio adapter of the media plane: sockets, port allocation, the ticker, and the engine-facing facade.

No media logic lives here: datagrams go into :class:`~callplane.media.core.MediaCore`, the ticker calls its
``tick`` and the returned datagrams are sent. Three receive strategies are offered (``io_mode``):

- ``"reader"``: ``loop.add_reader`` on every RTP socket; a readable socket is drained with ``recvfrom`` until it
  would block. Packets are timestamped on arrival (RTCP jitter is meaningful).
- ``"poll"``: no reader registrations; at each tick one ``epoll_wait(0)`` finds the RTP sockets holding data and
  each is read once, just before the tick runs. The process wakes once per tick instead of once per burst of
  arrivals; arrival times (RTCP jitter) are quantised to the tick.
- ``"protocol"``: an asyncio ``DatagramProtocol`` per leg (``create_datagram_endpoint(sock=...)``); the loop's
  transport reads, in C under uvloop.

Sockets are plain non-blocking UDP sockets; ``sendto`` is called directly (a full send buffer drops the frame,
which is what real-time audio wants). Both were measured with ``bench/media_streams.py --io``.

Pinned sockets. Once a leg accepts RTP from one address only (:meth:`RtpLeg.sole_source`: the peer spoke from
its SDP address, the common case), its RTP socket is ``connect``-ed to it: the kernel drops every other source
(the leg's own check would have), the reader takes ``recv`` instead of ``recvfrom`` and what goes to the peer
leaves by ``send`` instead of ``sendto``, so no address is built, parsed or routed per packet (about 1 us of the
16-20 us a relayed packet costs here). A new remote address (``set_remote``) dissolves the connection first (a
``connect`` to ``AF_UNSPEC``), so the latch window works as before. Datagrams from other sources are then no
longer counted in ``foreign_packets``: the kernel answers them with ICMP port unreachable, as for a closed port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from callplane.core.errors import MediaError
from callplane.core.ids import IdSource
from callplane.media import g711
from callplane.media.core import MediaCore
from callplane.media.events import LegFailed, MediaEvent, RecordingFinished
from callplane.media.leg import RtpLeg
from callplane.media.mixer import Conference
from callplane.media.recorder import Recorder
from callplane.media.sources import Sink, Source
from callplane.media.ticker import PERIOD, Ticker

__all__ = ["MediaEngine", "PortAllocator"]

log = logging.getLogger(__name__)
_RECV = 2048
#: SO_RCVBUF of an RTP socket. Linux's default (208 KiB) queues about 5 s of a 20 ms stream, so a node that falls
#: behind would relay and play audio seconds late for as long as it stays behind; this bounds what waits to about
#: 40 packets (0.8 s) on loopback, fewer from a NIC (its buffers are larger): past that the kernel drops, and the
#: audio stays current. Real-time audio is better lost than late.
RTP_RCVBUF = 16384
_libc = ctypes.CDLL(None, use_errno=True)
_UNSPEC = (ctypes.c_char * 16)()  # a sockaddr of family AF_UNSPEC (0): connect(2) to it dissolves a UDP connection


def _disconnect(sock: socket.socket) -> None:
    """Undo ``sock.connect``: datagrams from any source are delivered again (the socket stays bound)."""
    if _libc.connect(sock.fileno(), _UNSPEC, ctypes.sizeof(_UNSPEC)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class PortAllocator:
    """Even RTP ports (RTCP on port + 1) from ``low..high``, handed out round-robin from a random start so a
    port just released is not reused at once (late packets of the old call would land in the new one)."""

    def __init__(self, low: int, high: int, host: str = "127.0.0.1", ids: IdSource | None = None) -> None:
        low += low % 2
        if high - low < 1:
            raise MediaError(f"RTP port range {low}-{high} holds no even/odd pair")
        self.host = host
        self._ports = list(range(low, high, 2))
        self._next = (ids or IdSource()).u32() % len(self._ports)
        self.in_use: set[int] = set()

    def allocate(self) -> tuple[socket.socket, socket.socket, int]:
        """Bind an RTP/RTCP socket pair; raises :class:`MediaError` when the range is exhausted."""
        for _ in range(len(self._ports)):
            port = self._ports[self._next]
            self._next = (self._next + 1) % len(self._ports)
            if port in self.in_use:
                continue
            rtp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtp_sock.bind((self.host, port))
                rtcp_sock.bind((self.host, port + 1))
            except OSError:
                rtp_sock.close()
                rtcp_sock.close()
                continue
            rtp_sock.setblocking(False)
            rtp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RTP_RCVBUF)
            rtcp_sock.setblocking(False)
            self.in_use.add(port)
            return rtp_sock, rtcp_sock, port
        raise MediaError("no free RTP port pair in range")

    def release(self, port: int) -> None:
        self.in_use.discard(port)


@dataclasses.dataclass(slots=True)
class _Socks:
    rtp: socket.socket
    rtcp: socket.socket
    port: int
    transport: asyncio.DatagramTransport | None = None  # io_mode "protocol"
    opening: asyncio.Task[None] | None = None
    reader: _RtpIn | None = None  # io_mode "reader" and "poll"
    peer: tuple[str, int] | None = None  # the leg's remote (that very object) while the RTP socket is pinned to it


class _RtpIn(asyncio.DatagramProtocol):
    """One leg's RTP input: ``readable`` for io_mode "reader" (a loop reader on the socket), ``datagram_received``
    for "protocol" (the loop's own UDP transport reads, in C with uvloop, and hands us each datagram). Once per
    packet: what they use is bound here, not looked up each time."""

    __slots__ = ("_all_socks", "_clock", "_receive", "_recv", "_recvfrom", "_tried", "engine", "leg", "pinned", "socks")

    def __init__(self, leg: RtpLeg, engine: MediaEngine, socks: _Socks, clock: Callable[[], float]) -> None:
        self.leg = leg
        self.engine = engine
        self.socks = socks
        self._recvfrom = socks.rtp.recvfrom
        self._recv = socks.rtp.recv
        self._receive = leg.receive_rtp
        self._clock = clock
        self._all_socks = engine._socks  # by leg id: where a relayed packet leaves
        self.pinned: tuple[str, int] | None = None  # the leg's accepted source, while the socket is connected to it
        self._tried: object = None  # the accepted source last considered for pinning

    def readable(self) -> None:
        # One datagram per call: the readiness is level-triggered, so a second queued datagram calls us again
        # on the next loop pass. Draining until EAGAIN would cost an extra syscall for every packet, since
        # packets of one stream arrive 20 ms apart.
        pinned = self.pinned
        if pinned is not None:  # the kernel let only the accepted source through
            try:
                data = self._recv(_RECV)
            except OSError:  # would block, or an ICMP error the connected socket reports: nothing to do
                return
            self.datagram_received(data, pinned)
            return
        try:
            data, addr = self._recvfrom(_RECV)
        except OSError:  # would block (another reader took it), or ICMP port unreachable: nothing to do
            return
        self.datagram_received(data, addr)
        if self.leg.rtp_source is not self._tried:
            self._pin()

    def _pin(self) -> None:
        """Connect the socket to the leg's sole source, if it has one now (see the module docstring)."""
        leg, socks = self.leg, self.socks
        self._tried = leg.rtp_source
        src = leg.sole_source()
        if src is None or socks.rtp.fileno() < 0:
            return
        try:
            socks.rtp.connect(src)
        except OSError as exc:
            log.debug("pinning %s to %s failed: %s", leg.leg_id, src, exc)
            return
        self.pinned, socks.peer = src, leg.remote

    def unpin(self) -> None:
        socks = self.socks
        self.pinned = socks.peer = None
        self._tried = None
        if socks.rtp.fileno() >= 0:
            _disconnect(socks.rtp)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            out = self._receive(data, addr, self._clock())
        except Exception as exc:  # nothing raises out of a receive path: the fault ends this leg only
            self.engine._fail(self.leg, exc)
            return
        if out is None:
            return
        # A bridge relays it: it goes out now, on the socket of the leg whose stream it joins, not on the tick.
        leg_id, pkt, to = out
        s = self._all_socks.get(leg_id)
        if s is None:
            return
        dst = self.leg.relay_to
        if dst is not None and dst.filler_for is not None:
            self.engine._filler_first(dst)
        try:
            if s.peer is to:
                s.rtp.send(pkt)
            else:
                s.rtp.sendto(pkt, to)
        except (BlockingIOError, InterruptedError):
            pass  # send buffer full: drop it, as the tick does
        except OSError as exc:
            log.debug("relay on %s to %s failed: %s", leg_id, to, exc)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from a peer that went away: the idle timer will tell


class MediaEngine:
    """The media plane of one node. See :mod:`callplane.media` for the API summary.

    Events (:mod:`callplane.media.events`) go to ``on_event`` if given, else into the ``events`` queue.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] = (20000, 29999),
        ids: IdSource | None = None,
        on_event: Callable[[MediaEvent], None] | None = None,
        idle_timeout: float | None = None,
        io_mode: str = "reader",
        rtcp_interval: float = 5.0,
        relay: bool = True,
    ) -> None:
        if io_mode not in ("reader", "poll", "protocol"):
            raise MediaError(f"unknown io_mode {io_mode!r}")
        self.ids = ids or IdSource()
        self.host = host
        self.ports = PortAllocator(port_range[0], port_range[1], host, self.ids)
        self.core = MediaCore(self.ids)
        self.core.relay = relay
        self.ticker = Ticker(self._tick)
        self.on_event = on_event
        self.events: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self.idle_timeout = idle_timeout
        self.io_mode = io_mode
        self.rtcp_interval = rtcp_interval
        self._socks: dict[str, _Socks] = {}
        self._pending: list[tuple[str, bytes, tuple[str, int]]] = []  # frames prepared for the next tick
        self._pending_for = 0.0  # the tick they are for
        self._epoll: select.epoll | None = None  # io_mode "poll"
        self._polled: dict[int, _RtpIn] = {}
        self._recordings: dict[str, tuple[Recorder, str]] = {}  # leg id -> recording in progress, its path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bg: set[asyncio.Task[None]] = set()
        self._wall_offset = time.time() - time.monotonic()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for leg_id, socks in self._socks.items():  # legs created before start
            self._watch(self.core.leg(leg_id), socks)
        self.ticker.start()

    def _watch(self, leg: RtpLeg, socks: _Socks) -> None:
        assert self._loop is not None
        if self.io_mode == "reader":
            socks.reader = _RtpIn(leg, self, socks, self._loop.time)
            self._loop.add_reader(socks.rtp.fileno(), socks.reader.readable)
        elif self.io_mode == "poll":
            if self._epoll is None:
                self._epoll = select.epoll()
            self._epoll.register(socks.rtp.fileno(), select.EPOLLIN)
            socks.reader = self._polled[socks.rtp.fileno()] = _RtpIn(leg, self, socks, self._loop.time)
        elif self.io_mode == "protocol":
            socks.opening = self._loop.create_task(self._open_transport(leg, socks))
        self._loop.add_reader(socks.rtcp.fileno(), self._rtcp_readable, socks.rtcp, leg)

    async def close(self) -> None:
        await self.ticker.stop()
        for leg_id in list(self._socks):
            self.close_leg(leg_id)
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        if self._bg:
            await asyncio.gather(*self._bg, return_exceptions=True)

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    # -- legs -----------------------------------------------------------------------------------
    def create_leg(
        self,
        leg_id: str | None = None,
        *,
        payload_type: int = g711.PCMU,
        dtmf_payload_type: int | None = 101,
        idle_timeout: float | None = None,
    ) -> tuple[str, int]:
        """Bind a socket pair and create a leg; returns ``(leg_id, local RTP port)`` for the SDP."""
        leg_id = leg_id or "LG" + self.ids.hex(8)
        if leg_id in self._socks:
            raise MediaError(f"leg {leg_id} exists")
        rtp_sock, rtcp_sock, port = self.ports.allocate()
        leg = RtpLeg(
            leg_id,
            self.ids,
            payload_type=payload_type,
            dtmf_payload_type=dtmf_payload_type,
            idle_timeout=idle_timeout if idle_timeout is not None else self.idle_timeout,
            start=self._now(),
            wall_offset=self._wall_offset,
            rtcp_interval=self.rtcp_interval,
        )
        self.core.add_leg(leg)
        socks = self._socks[leg_id] = _Socks(rtp_sock, rtcp_sock, port)
        if self._loop is not None:
            self._watch(leg, socks)
        return leg_id, port

    async def _open_transport(self, leg: RtpLeg, socks: _Socks) -> None:
        assert self._loop is not None
        loop = self._loop
        transport, _ = await loop.create_datagram_endpoint(lambda: _RtpIn(leg, self, socks, loop.time), sock=socks.rtp)
        socks.transport = transport
        socks.opening = None

    def leg(self, leg_id: str) -> RtpLeg:
        return self.core.leg(leg_id)

    def set_remote(
        self, leg_id: str, host: str, port: int, payload_type: int | None = None, dtmf_payload_type: int | None = None
    ) -> None:
        """Values from the peer's SDP. Packets from anywhere else are dropped, except that during the leg's latch
        window (from now) the first RTP source seen is latched to (a peer behind NAT).

        ``host`` must be an IPv4 address literal (the sockets are IPv4): a host name raises :class:`MediaError`
        instead of being looked up on the event loop. Resolve it first, off the loop, if you must."""
        if ":" in host:
            raise MediaError(f"{host!r}: the media sockets are IPv4 only")
        leg = self.core.leg(leg_id)
        leg.set_remote((host, port), payload_type, dtmf_payload_type, now=self._now())
        socks = self._socks.get(leg_id)
        if socks is not None and socks.reader is not None and socks.peer is not None and socks.peer != leg.remote:
            socks.reader.unpin()  # a new address: any source may be learned again in the latch window

    def set_source(self, leg_id: str, source: Source | None) -> None:
        """Play ``source`` on the leg (the previous one is stopped); ``None`` = silence."""
        leg = self.core.leg(leg_id)
        if leg.source is not None and leg.source is not source:
            leg.source.stop()
        leg.source = source

    def add_sink(self, leg_id: str, sink: Sink) -> None:
        self.core.leg(leg_id).add_sink(sink)

    def record(self, leg_id: str, path: str | Path, recorder: Recorder) -> None:
        """Record what the peer says; the WAV is written in a thread once it finishes, then the
        :class:`RecordingFinished` event (with ``path``) is delivered."""
        if leg_id in self._recordings:
            raise MediaError(f"leg {leg_id} is already recording")
        self.core.leg(leg_id).add_sink(recorder)
        self._recordings[leg_id] = (recorder, str(path))

    def record_bridge(self, a: str, b: str, path: str | Path, recorder: Recorder) -> None:
        """Record the bridge of legs ``a`` and ``b`` as a two-channel WAV (left: what ``a``'s peer says, right:
        ``b``'s; see :mod:`callplane.media.bridge`). Only the recorder's ``max_length_s`` applies (its silence
        timeout and finish-on-key are not used). It ends on the maximum length, on ``stop_recording(a)``, or when
        either leg closes or the bridge ends; then, once the file is written off the loop, ``a``'s
        :class:`RecordingFinished` (with ``path``) is delivered, as for :meth:`record`."""
        br = self.core.bridges.get(a)
        if br is None or {br.a.leg_id, br.b.leg_id} != {a, b}:
            raise MediaError(f"legs {a} and {b} are not bridged together")
        if a in self._recordings:
            raise MediaError(f"leg {a} is already recording")
        br.record(recorder, self.core.leg(a))
        self._recordings[a] = (recorder, str(path))

    def stop_recording(self, leg_id: str) -> None:
        self._stop_recording(self.core.leg(leg_id))

    def _stop_recording(self, leg: RtpLeg) -> None:
        entry = self._recordings.get(leg.leg_id)
        if entry is not None and entry[0].finished is None:
            rec = entry[0]
            rec.stop()
            leg.remove_sink(rec)
            leg.events.append(RecordingFinished(leg.leg_id, "stopped", rec.duration_s))

    def send_digits(self, leg_id: str, digits: str) -> None:
        self.core.leg(leg_id).send_digits(digits)

    def close_leg(self, leg_id: str) -> None:
        """Send RTCP BYE, release the sockets and the port (also of a leg the core took out after a fault)."""
        leg = self.core.legs.get(leg_id) or self.core.failed.pop(leg_id, None)
        if leg is not None:
            self._stop_recording(leg)  # a recording in progress is kept, not lost
            for ev in leg.events:
                self._dispatch(ev)
            leg.events.clear()
        self.core.remove_leg(leg_id)
        socks = self._socks.pop(leg_id, None)
        if socks is None:
            return
        if leg is not None and leg.remote_rtcp is not None:
            with contextlib.suppress(OSError):
                socks.rtcp.sendto(leg.rtcp_report(self._now(), bye=True), leg.remote_rtcp)
        if socks.opening is not None:
            socks.opening.cancel()
        if socks.transport is not None:
            socks.transport.close()
        elif self._polled.pop(socks.rtp.fileno(), None) is not None and self._epoll is not None:
            self._epoll.unregister(socks.rtp.fileno())
        elif self._loop is not None:
            self._loop.remove_reader(socks.rtp.fileno())
        if self._loop is not None:
            self._loop.remove_reader(socks.rtcp.fileno())
        socks.rtp.close()
        socks.rtcp.close()
        self.ports.release(socks.port)

    # -- bridges and conferences ------------------------------------------------------------------
    def bridge(self, a: str, b: str) -> None:
        self.core.bridge(a, b)

    def unbridge(self, leg_id: str) -> None:
        self.core.unbridge(leg_id)

    def join(self, conference: str, leg_id: str, *, muted: bool = False, beep: bool = True) -> Conference:
        return self.core.join(conference, leg_id, muted=muted, beep=beep)

    def leave(self, conference: str, leg_id: str, *, beep: bool = True) -> None:
        self.core.leave(conference, leg_id, beep=beep)

    def conference(self, name: str, music: Callable[[], Source] | None = None) -> Conference:
        """Create (or get) a conference; ``music`` makes the hold music a lone or held participant hears."""
        return self.core.conference(name, music)

    def mute(self, leg_id: str, muted: bool = True) -> None:
        """The leg's peer is no longer heard by the other side(s) of its bridge or conference."""
        self.core.leg(leg_id).muted = muted

    def hold(self, leg_id: str, held: bool = True, music: Source | None = None) -> None:
        """Hold a leg inside its bridge (it hears ``music``) or conference (it hears the conference music)."""
        leg = self.core.leg(leg_id)
        br = self.core.bridges.get(leg_id)
        if br is not None:
            if held:
                br.hold(leg, music)
            else:
                br.unhold(leg)
            return
        name = self.core.conference_of(leg_id)
        if name is None:
            raise MediaError(f"leg {leg_id} is neither bridged nor in a conference")
        self.core.conferences[name].hold(leg, held)

    # -- I/O ------------------------------------------------------------------------------------
    def _rtcp_readable(self, sock: socket.socket, leg: RtpLeg) -> None:
        try:
            data, addr = sock.recvfrom(_RECV)
        except OSError:  # would block, or ICMP port unreachable: nothing to do
            return
        try:
            leg.receive_rtcp(data, addr, self._now())
        except Exception as exc:  # nothing raises out of a receive path: the fault ends this leg only
            self._fail(leg, exc)

    def _filler_first(self, leg: RtpLeg) -> None:
        """A relayed packet for ``leg``: its silence filler still waiting for the next tick goes out first."""
        if leg.filler_for == self._pending_for:
            self._send_pending_of(leg.leg_id)
        leg.filler_for = None

    def _send_pending_of(self, leg_id: str) -> None:
        for i, (lid, pkt, addr) in enumerate(self._pending):
            if lid == leg_id and not 200 <= pkt[1] <= 204:
                del self._pending[i]
                with contextlib.suppress(OSError):  # full send buffer or ICMP: dropped, as on the tick
                    self._socks[leg_id].rtp.sendto(pkt, addr)
                return

    def _poll(self) -> None:
        # One epoll_wait(0) for all RTP sockets, then one recvfrom per ready socket; a socket holding more than
        # one datagram is still ready in the next round. No EAGAIN attempts, no wake-ups between ticks.
        ep = self._epoll
        if ep is None:  # no leg yet: nothing to read
            return
        polled = self._polled
        for _ in range(4):
            ready = ep.poll(0)
            if not ready:
                return
            for fd, _ev in ready:
                rtp_in = polled.get(fd)
                if rtp_in is not None:  # (a leg that failed in this round is gone)
                    rtp_in.readable()  # arrival time: the loop's clock, i.e. the tick's

    def _fail(self, leg: RtpLeg, exc: Exception) -> None:
        self.core.fail(leg, exc)
        for ev in self.core.drain_events():
            self._dispatch(ev)

    def _tick(self, now: float, n: int) -> None:
        # Pipelined: the frames for this tick were computed during the previous one, so the sends happen first,
        # right at the deadline, in the same order every tick; the variable work (receiving, jitter buffers,
        # recorders, mixing, encoding) comes after them and prepares the next tick. Every stream's packets then
        # leave at a fixed offset from the tick, whatever that work costs, at the price of one frame (20 ms) of
        # added latency through bridges and conferences.
        pending, self._pending = self._pending, []
        socks = self._socks
        for leg_id, pkt, addr in pending:
            s = socks.get(leg_id)
            if s is None:  # the leg was closed after its frame was prepared
                continue
            try:
                if s.peer is addr:
                    s.rtp.send(pkt)
                else:
                    (s.rtcp if 200 <= pkt[1] <= 204 else s.rtp).sendto(pkt, addr)
            except (BlockingIOError, InterruptedError):
                pass  # send buffer full: drop this frame rather than block the clock
            except OSError as exc:
                log.debug("send on %s to %s failed: %s", leg_id, addr, exc)
        if self.io_mode == "poll":
            self._poll()
        self._pending_for = now + PERIOD
        self._pending = self.core.tick(now + PERIOD, n + 1)
        if self.core.events:
            for ev in self.core.drain_events():
                self._dispatch(ev)

    def _dispatch(self, ev: MediaEvent) -> None:
        if isinstance(ev, LegFailed):
            self.close_leg(ev.leg_id)  # its sockets and port; a recording in progress is kept
        if isinstance(ev, RecordingFinished) and ev.leg_id in self._recordings:
            rec, path = self._recordings.pop(ev.leg_id)
            if self._loop is None or self._loop.is_closed():
                rec.save(path)  # not running: nothing to keep responsive
                self._deliver(dataclasses.replace(ev, path=path))
                return
            task = self._loop.create_task(self._save(rec, path, ev))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)
            return
        self._deliver(ev)

    async def _save(self, rec: Recorder, path: str, ev: RecordingFinished) -> None:
        try:
            await asyncio.to_thread(rec.save, path)
        except OSError as exc:
            log.error("writing recording %s failed: %s", path, exc)
            self._deliver(ev)
            return
        self._deliver(dataclasses.replace(ev, path=path))

    def _deliver(self, ev: MediaEvent) -> None:
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:
                log.exception("media event handler failed on %r", ev)
        else:
            self.events.put_nowait(ev)
