"""An RTP leg (sans-IO): one remote peer, one payload type, sequence/timestamp/SSRC state, jitter buffer, sinks.

Theory of operation. The engine calls, on every 20 ms tick, in this order for all legs:

1. :meth:`RtpLeg.pull` pops this tick's inbound frame from the jitter buffer into ``heard`` and feeds the sinks
   (recorder, in-band DTMF detector, energy detector); silence is fed when nothing arrived, so recordings keep
   wall-clock length. Audio is decoded and buffered only while someone listens (a sink, a bridge or a
   conference): a leg that only plays prompts leaves ``heard`` at ``None``. RFC 4733 events that arrived since
   the last tick (and an event ended by the receiver's end timeout) go into ``heard_dtmf``.
2. Bridges and mixers read ``heard`` of their legs and set ``feed`` (what each leg should send); a bridge hands
   ``heard_dtmf`` to the other leg's :meth:`RtpLeg.relay_dtmf`.
3. :meth:`RtpLeg.produce` returns the RTP datagram for this tick: a telephone-event packet while digits are being
   sent, else ``feed`` (if attached to a bridge/mixer), else the next frame of ``source``, else silence.

The RTP timestamp is derived from the tick number (``ts0 + 160 * ticks``), so a tick the ticker had to skip also
advances the timestamp and the stream stays locked to the wall clock. The marker bit is set on the first packet
and on the first packet after a pause in sending (``sending`` off, no remote yet).

``sending`` (do we send to the peer) and ``muted`` (is what we hear from it passed on) are independent. A peer that
holds us (``sendonly``/``inactive``) stops our sending only: the music it plays is still heard by the bridge.

Accepted sources and latching (symmetric RTP, RFC 4961). Packets are taken only from the address they are
expected from; every other packet is dropped and counted in ``foreign_packets``, so a stranger who learns the port
can neither inject audio or digits nor steal the outbound stream. Until the peer's SDP is known (``set_remote``)
nothing is accepted. The SDP address is always accepted. Any other address is learned only during the latch
window (``latch_window`` seconds after ``set_remote`` names a new address), and only if nothing has been learned
yet in that window: the first valid RTP packet from it (a peer behind NAT) makes it the accepted source and, when
``symmetric``, moves the remote address there (a :class:`RemoteLatched` event); RTCP follows to port + 1 until
RTCP itself is seen. A new SSRC from the accepted source restarts the reception statistics and moves nothing.
RTCP is learned the same way (its SDP address is the RTP address, port + 1).

Relay (no decoding). A bridge whose direction ``src -> dst`` needs no listener (see :mod:`callplane.media.bridge`)
sets ``src.relay_to = dst``: :meth:`receive_rtp` then hands each audio or RFC 4733 packet straight to
:meth:`relay_packet` of ``dst``, which rewrites its header into ``dst``'s own stream and returns the datagram for
the adapter to send at once (on arrival; ``dst`` sends nothing on the tick meanwhile). The payload is untouched.
Rewriting (RFC 3550 §5.1, §8.2 for the SSRC): ``dst``'s SSRC; the sequence number and timestamp shifted by offsets
fixed on the first packet relayed from a source SSRC, so that packet continues ``dst``'s stream (next sequence
number; timestamp = the last one sent plus the 20 ms frames elapsed since, at least one). The source's own gaps,
reordering and timing pass through unchanged: the far peer's jitter buffer sees the original sender, only
renumbered. A new source SSRC, or a jump of more than ``RESYNC_GAP`` in its sequence, anchors afresh. When the
relay stops, the tick's clock is re-anchored the same way from the last relayed packet (``_regrid``), so relay
and decoded stretches follow each other without a jump backwards or a sequence gap. Packet and octet counts
include relayed packets, and the sender report's RTP timestamp follows the relayed stream (its clock is anchored
on each anchoring packet). RFC 4733 packets pass through under ``dst``'s telephone-event payload type; digits
are still reported (``DigitReceived``). A muted source's packets are dropped at once; one whose audio packets do
not hold 20 ms of the shared codec (another ptime, another payload type) sets ``relay_blocked``, and its bridge
decodes from the next tick. When nothing was relayed for ``RELAY_FILL`` (a source that went quiet), ``dst``'s
tick sends silence meanwhile, as decoding would, so its peer's RTP timeout does not fire; the source's next
packet then anchors afresh after the last filler. (A filler is made a tick ahead of its send time; the adapter
sends one still waiting before the relayed packet that follows it, so the two never cross: ``filler_for``.)
"""

from __future__ import annotations

import functools
import ipaddress

from callplane.core.errors import MediaError
from callplane.core.ids import IdSource
from callplane.media import g711, rtp
from callplane.media.dtmf import DtmfReceiver, DtmfSender, InbandDtmfDetector, ReceivedDigit, ReceiverEvent, ToneStarted
from callplane.media.events import (
    DigitReceived,
    DigitsSent,
    LegIdle,
    MediaEvent,
    RecordingFinished,
    RemoteLatched,
    SourceFinished,
)
from callplane.media.jitter import RESYNC_GAP, JitterBuffer
from callplane.media.recorder import Recorder
from callplane.media.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    RtcpParseError,
    Sdes,
    SenderReport,
    build_compound,
    ntp_timestamp,
    parse_compound,
)
from callplane.media.sources import FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE, SILENCE, Sink, Source

Addr = tuple[str, int]
Relayed = tuple[str, bytearray, Addr]  # (the leg that sends it, datagram, destination)

__all__ = ["RELAY_FILL", "Addr", "FrameError", "Relayed", "RtpLeg", "ip_literal"]

_HDR = rtp.HEADER
# An in-band digit is dropped as a copy when an RFC 4733 event of the same digit arrived while its tone did. The
# audio reaches the detector later than the events (jitter buffer, up to its capacity), hence the slack.
_INBAND_SLACK = 0.3
# A relay whose source sent nothing for this long is filled with silence on the tick (see the module docstring).
RELAY_FILL = 0.07
_RELAY_LEN = 12 + FRAME_SAMPLES  # an audio packet relayed as it is: the plain header and 20 ms of G.711
_NEVER = float("inf")


@functools.lru_cache(maxsize=1024)  # the same few peers (a gateway, a proxy) in every call's SDP
def ip_literal(host: str) -> str:
    """``host`` as a normalised IP address literal. A host name raises :class:`MediaError`: legs never resolve
    names (``sendto((name, port))`` would run a blocking lookup for every packet on the event loop)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise MediaError(f"{host!r} is not an IP address literal") from None


def _checked(addr: Addr) -> Addr:
    host, port = addr
    if not 0 < port < 65536:
        raise MediaError(f"RTP port {port} is out of range")
    return ip_literal(host), port


class FrameError(MediaError):
    """A source or feed broke the frame contract (20 ms = 320 bytes of s16le PCM): a fault of that leg."""


class RtpLeg:
    """One RTP session with one peer (PCMU or PCMA, ptime 20 ms, optional telephone-event)."""

    # Slots: the receive path reads and writes a dozen of these per packet, and with this many attributes an
    # instance dict would no longer share its keys (the interpreter's fast attribute paths need slots then).
    __slots__ = (
        "_buffering",
        "_dtmf_active",
        "_dtmf_pending",
        "_dtmf_rx",
        "_encode",
        "_encode_src",
        "_idle_reported",
        "_ids",
        "_last_rx",
        "_latch_until",
        "_marker",
        "_muted",
        "_out_at",
        "_out_ts",
        "_partial",
        "_reframe_seq",
        "_regrid",
        "_rl_last",
        "_rl_open",
        "_rl_seq_off",
        "_rl_ssrc",
        "_rl_ts_off",
        "_rtcp_from",
        "_rtp_from",
        "_sdp",
        "_sending",
        "_seq",
        "_t0",
        "_tick0",
        "_ts0",
        "_waking",
        "attached",
        "cname",
        "dtmf_in",
        "dtmf_out",
        "dtmf_payload_type",
        "events",
        "feed",
        "filler_for",
        "foreign_packets",
        "heard",
        "heard_dtmf",
        "idle_timeout",
        "inband",
        "jitter",
        "latch_window",
        "leg_id",
        "next_rtcp",
        "octets_sent",
        "packets_received",
        "packets_sent",
        "parked",
        "payload_type",
        "relay_blocked",
        "relay_to",
        "relayed",
        "relayed_at",
        "relaying_event",
        "remote",
        "remote_rtcp",
        "remote_ssrc",
        "rtcp_interval",
        "sinks",
        "source",
        "ssrc",
        "stats",
        "symmetric",
        "wall_offset",
    )

    def __init__(
        self,
        leg_id: str,
        ids: IdSource,
        *,
        payload_type: int = g711.PCMU,
        dtmf_payload_type: int | None = 101,
        remote: Addr | None = None,
        symmetric: bool = True,
        latch_window: float = 5.0,
        idle_timeout: float | None = None,
        jitter_depth: int = 3,
        rtcp_interval: float = 5.0,
        cname: str | None = None,
        start: float = 0.0,
        wall_offset: float = 0.0,
    ) -> None:
        self.leg_id = leg_id
        self.ssrc = ids.ssrc()
        self._seq = ids.u32() & 0xFFFF
        self._ts0 = ids.u32()
        self._tick0: int | None = None
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        if remote is not None:
            remote = _checked(remote)
        self.remote: Addr | None = remote
        self.remote_rtcp: Addr | None = None if remote is None else (remote[0], remote[1] + 1)
        self.symmetric = symmetric
        self.latch_window = latch_window
        self.idle_timeout = idle_timeout
        self.source: Source | None = None
        self.sinks: list[Sink] = []
        # Two independent switches (a peer's hold is the first alone: what it sends, its music, is still heard):
        self._sending = True  # False: nothing goes to the peer (RTP audio and digits), e.g. it does not want to receive
        self._muted = False  # True: what the peer says is not passed to bridges/mixers (sinks still get it)
        # Off the tick (see :mod:`callplane.media.core`): a change that may need the tick puts the leg on ``_waking``.
        self.parked = False
        self._waking: list[RtpLeg] = []  # the core's list, once the leg is added to one
        self.attached = False  # a bridge or mixer supplies ``feed``
        self.heard: bytes | None = None
        self.feed: bytes | None = None
        self.events: list[MediaEvent] = []
        self.jitter = JitterBuffer(jitter_depth)
        self.dtmf_in = DtmfReceiver()
        self.dtmf_out = DtmfSender()
        self.heard_dtmf: list[ReceiverEvent] = []  # RFC 4733 events heard this tick (a bridge relays them)
        self._dtmf_pending: list[ReceiverEvent] = []
        self._dtmf_rx = False  # pull() has RFC 4733 work: events to hand on or clear, or an end timeout to watch
        self.inband: InbandDtmfDetector | None = None
        self.rtcp_interval = rtcp_interval
        self._ids = ids
        # RFC 7022 §4.2: a random CNAME of at least 96 bits, so no two legs (nor two nodes) share one.
        self.cname = cname if cname is not None else ids.hex(12)
        self.wall_offset = wall_offset
        self.packets_sent = 0
        self.octets_sent = 0
        self.packets_received = 0
        self.remote_ssrc: int | None = None
        self.stats: ReceptionStats | None = None
        self.foreign_packets = 0  # RTP and RTCP dropped because they came from an address we do not accept
        self._sdp: Addr | None = remote  # where the peer's SDP says its RTP comes from
        self._rtp_from: Addr | None = None  # the accepted RTP source, once learned
        self._rtcp_from: Addr | None = None
        self._latch_until = start + latch_window if remote is not None else -1.0
        self._last_rx = start
        self._idle_reported = False
        self._marker = True
        self.next_rtcp = start + self._rtcp_delay() / 2  # RFC 3550 §6.2: the first report after half an interval
        self._t0 = start  # when the first tick's RTP timestamp (``_ts0``) was sampled
        self._partial = b""
        self._buffering = True  # inbound audio goes into the jitter buffer (see _listening)
        self._dtmf_active = False
        self._encode = g711.encoder(payload_type)  # a bridge/conference feed: live audio
        self._encode_src = g711.shared_encoder(payload_type)  # a source: prompts and tones that repeat
        self._reframe_seq = 0
        # Relay (see the module docstring). On the source leg:
        self.relay_to: RtpLeg | None = None
        self.relay_blocked = False  # its packets cannot be relayed as they are (ptime, payload type)
        # On the destination leg:
        self.relayed = False  # another leg's packets go to our peer as our stream; the tick sends nothing
        self._rl_ssrc: int | None = None  # the source SSRC the offsets were anchored on
        self._rl_seq_off = 0
        self._rl_ts_off = 0
        self._rl_last = 0  # highest source sequence number relayed
        self.relaying_event = False  # the last packet relayed was RFC 4733 (its end may be retransmitted yet)
        self._rl_open: tuple[int, int, int] | None = None  # (event, timestamp, duration) relayed, its end not yet
        self.relayed_at = 0.0  # when we last sent a relayed packet
        self.filler_for: float | None = None  # the send time of the last silence filler made (see the adapter)
        self._regrid = False  # the tick's clock continues from the last relayed packet
        self._out_ts = 0  # RTP timestamp and time of the last audio frame we sent (either way)
        self._out_at = 0.0

    @property
    def sending(self) -> bool:
        return self._sending

    @sending.setter
    def sending(self, on: bool) -> None:
        self._sending = on
        self._wake()

    @property
    def muted(self) -> bool:
        return self._muted

    @muted.setter
    def muted(self, on: bool) -> None:
        self._muted = on
        self._wake()

    # -- off the tick ---------------------------------------------------------------------------
    def _wake(self) -> None:
        """Something changed that the tick must see: back on it from the next tick (with the bridge's other leg)."""
        if self.parked:
            self.parked = False
            self._waking.append(self)

    def parkable(self, now: float) -> bool:
        """Whether this tick's work for us is nothing until :meth:`wake_at` (the caller checks the bridge): all we
        send is relayed, nobody hears our peer, and no digit, event or filler is under way."""
        return (
            self.relayed
            and self.relay_to is not None
            and not self.sinks
            and not self._buffering  # the tick saw that nobody listens (a stale jitter buffer is dropped)
            and not self._dtmf_rx
            and not self._dtmf_active
            and not self.events
            and not self._regrid
            and self._tick0 is not None
            and not self.dtmf_out.busy
            and (now - self.relayed_at < RELAY_FILL or not self._sending or self.remote is None)
        )

    def wake_at(self) -> float:
        """When a parked leg needs the tick again, unless something wakes it first: its next RTCP report, its idle
        timeout, the silence filler of a relay whose source went quiet. Relayed and received packets move the
        last two later; the core checks again when the time comes."""
        t = self.timers_due()
        if self.fills():
            t = min(t, self.relayed_at + RELAY_FILL)
        return t

    def timers_due(self) -> float:
        """The next RTCP report or idle timeout (while parked, packets received only move the latter later)."""
        t = self.next_rtcp if self.remote_rtcp is not None else _NEVER
        if self.idle_timeout is not None and not self._idle_reported:
            t = min(t, self._last_rx + self.idle_timeout)
        return t

    def fills(self) -> bool:
        """Whether our tick fills a relay that went quiet ``RELAY_FILL`` after ``relayed_at`` (we send at all)."""
        return self._sending and self.remote is not None

    # -- configuration ----------------------------------------------------------------------
    def set_remote(
        self,
        addr: Addr,
        payload_type: int | None = None,
        dtmf_payload_type: int | None = None,
        *,
        now: float | None = None,
    ) -> None:
        """Values from the peer's SDP (c= as an IP address literal, m= port, chosen codec, telephone-event PT).

        A new address opens the latch window at ``now`` (without ``now``, no window: only ``addr`` is accepted).
        The address we already send to (the latched one included) changes nothing but the codec. A host name or a
        port out of range raises :class:`MediaError`."""
        addr = _checked(addr)
        if addr != self.remote:
            self.remote = self._sdp = addr
            self.remote_rtcp = (addr[0], addr[1] + 1)
            self._rtp_from = self._rtcp_from = None
            self._latch_until = -1.0 if now is None else now + self.latch_window
        if payload_type is not None:
            if payload_type not in g711.ENCODING_NAMES:
                raise g711.UnsupportedCodec(f"payload type {payload_type} is not G.711")
            self.payload_type = payload_type
            self._encode = g711.encoder(payload_type)
            self._encode_src = g711.shared_encoder(payload_type)
        if dtmf_payload_type is not None:
            self.dtmf_payload_type = dtmf_payload_type
        self._wake()

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)
        self._wake()

    def remove_sink(self, sink: Sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)
        self._wake()

    def enable_inband_dtmf(self) -> None:
        """Detect DTMF in the audio itself, for peers that do not send RFC 4733."""
        if self.inband is None:
            self.inband = InbandDtmfDetector()
            self.add_sink(self.inband)

    def send_digits(self, digits: str) -> None:
        """Queue RFC 4733 digits (``w`` = 0.5 s pause); a :class:`DigitsSent` event follows the last end packet."""
        if self.dtmf_payload_type is None:
            raise MediaError("peer did not negotiate telephone-event")
        self.dtmf_out.queue(digits)
        self._dtmf_active = True
        self._wake()

    # -- inbound ----------------------------------------------------------------------------
    def receive_rtp(self, data: bytes, addr: Addr, now: float) -> Relayed | None:
        """Take one datagram from ``addr``; returns the datagram to send at once when it is relayed."""
        # This runs for every packet (a relayed one goes on in relay_packet): the plain header (no CSRC, extension
        # or padding) is the fast path, the payload is not copied out unless it is decoded or is an event.
        if len(data) < 12:
            return None
        b0, b1, seq, ts, ssrc = _HDR.unpack_from(data)
        if b0 != 0x80:  # CSRCs, extension or padding: parsed, then as if it had come with a plain header
            if b0 >> 6 != 2:
                return None
            try:
                p = rtp.RtpPacket.parse(data)
            except rtp.RtpParseError:
                return None
            data = _HDR.pack(0x80, b1, seq, ts, ssrc) + p.payload
        if addr != self._rtp_from and not self._learn_rtp(addr, now):
            self.foreign_packets += 1
            return None
        pt = b1 & 0x7F
        stats = self.stats
        if stats is None or ssrc != self.remote_ssrc:
            self.remote_ssrc = ssrc
            stats = self.stats = ReceptionStats(ssrc, seq)
            self.jitter.reset()
        self.packets_received += 1
        self._last_rx = now
        if self._idle_reported:  # its idle timeout runs again
            self._idle_reported = False
            self._wake()
        event = pt == self.dtmf_payload_type
        stats.update(seq, ts, now, not event)  # the packets of an event all carry its start timestamp
        dst = self.relay_to
        if dst is not None:
            if event:
                self._dtmf_rx = True
                self._wake()
                try:
                    self._rfc4733(self.dtmf_in.feed(ts, data[12:], now))
                except ValueError:
                    return None
            elif pt != self.payload_type or len(data) != _RELAY_LEN:
                if pt == 0 or pt == 8:
                    self.relay_blocked = True  # the bridge decodes from the next tick on
                    self._wake()
                return None
            if self._muted:
                return None
            return dst.relay_packet(data, seq, ts, b1 & 0x80, event, ssrc, now)
        payload = data[12:]
        if event:
            if self._listening():
                self.jitter.push(seq, b"")  # its sequence number is not an audio frame lost
            self._dtmf_rx = True
            self._wake()
            try:
                self._rfc4733(self.dtmf_in.feed(ts, payload, now))
            except ValueError:
                return None
        elif (pt == 0 or pt == 8) and self._listening():
            if len(payload) == FRAME_SAMPLES:
                self.jitter.push(seq, g711.decode(payload, pt))
            elif payload:
                self._reframe(g711.decode(payload, pt))
        return None

    # -- relay --------------------------------------------------------------------------------
    def start_relay(self, dst: RtpLeg) -> None:
        """Send what our peer says straight to ``dst``'s peer, as ``dst``'s stream (no decoding)."""
        self.relay_to = dst
        dst.relayed = True
        dst._rl_ssrc = None  # the first packet anchors the offsets
        dst.relayed_at = dst._out_at

    def stop_relay(self) -> None:
        """Back to decoding; the destination's tick takes its stream over where the relay left it."""
        dst, self.relay_to = self.relay_to, None
        self._wake()
        if dst is not None:
            dst._wake()
            dst.relayed = False
            dst._regrid = dst.packets_sent > 0
            if dst._rl_open is not None:  # stopped mid-digit (a mute, a hold): its end packets still go out
                dst.dtmf_out.finish(*dst._rl_open)
                dst._dtmf_active = True
                dst._rl_open = None

    def _next_ts(self, now: float) -> int:
        """The timestamp that continues our stream at ``now``: the last frame's plus the frames elapsed since
        (at least one), so the peer sees neither a jump backwards nor a repeat."""
        if not self.packets_sent:
            return self.rtp_timestamp_at(now)
        frames = max(1, round((now - self._out_at) * SAMPLE_RATE / FRAME_SAMPLES))
        return (self._out_ts + FRAME_SAMPLES * frames) & 0xFFFFFFFF

    def relay_packet(
        self, data: bytes, seq: int, ts: int, marker: int, event: bool, ssrc: int, now: float
    ) -> Relayed | None:
        """Another leg's packet (``data``: a plain 12-byte header, then the payload), rewritten into our stream (see
        the module docstring), or ``None`` if we do not send to our peer now."""
        remote = self.remote
        if not self._sending or remote is None:
            self._marker = True
            return None
        if event:
            pt = self.dtmf_payload_type
            if pt is None:
                # Our peer takes no telephone-event: the event stays here (its digit is reported all the same), and
                # our numbering closes over it so the peer sees no loss.
                if ssrc == self._rl_ssrc and rtp.seq_diff(seq, self._rl_last) > 0:
                    self._rl_last = seq
                    self._rl_seq_off = (self._rl_seq_off - 1) & 0xFFFF
                return None
        else:
            pt = self.payload_type
        d = ((seq - self._rl_last + 0x8000) & 0xFFFF) - 0x8000  # rtp.seq_diff, inline on this path
        if ssrc != self._rl_ssrc or not -RESYNC_GAP <= d <= RESYNC_GAP:
            self._rl_ssrc, self._rl_last = ssrc, seq
            self._rl_seq_off = self._seq - seq
            first = self._next_ts(now)
            self._rl_ts_off = first - ts
            self._ts0, self._t0 = first, now  # the sender report's clock follows the relayed stream
            d = 0
        out_seq = (seq + self._rl_seq_off) & 0xFFFF
        out_ts = (ts + self._rl_ts_off) & 0xFFFFFFFF
        if d >= 0:  # in order (a late packet goes out with its own, older number)
            self._rl_last = seq
            self._seq = (out_seq + 1) & 0xFFFF
            if event:
                self.relaying_event = True
                te = data[13] if len(data) >= 16 else 0x80
                self._rl_open = None if te & 0x80 else (data[12], out_ts, int.from_bytes(data[14:16]))
            else:
                if self.relaying_event:
                    self.relaying_event = False
                    self._rl_open = None
                self._out_ts, self._out_at = out_ts, now
        if self._marker:
            marker, self._marker = 0x80, False
        self.relayed_at = now
        self.packets_sent += 1
        self.octets_sent += len(data) - 12
        out = bytearray(data)  # one copy: the header rewritten in place, the payload untouched
        _HDR.pack_into(out, 0, 0x80, marker | pt, out_seq, out_ts, self.ssrc)
        return self.leg_id, out, remote

    def _listening(self) -> bool:
        """Whether anyone hears the peer's audio (a sink, a bridge or a conference). A leg nobody hears (a call
        that only plays prompts) neither decodes nor buffers what arrives; when someone starts listening the
        buffer starts afresh, as for a new sender."""
        if self.sinks or (self.attached and self.relay_to is None):
            if not self._buffering:
                self._buffering = True
                self.jitter.reset()
                self._partial = b""
            return True
        self._buffering = False
        return False

    @property
    def rtp_source(self) -> Addr | None:
        """The accepted RTP source once learned (the SDP address or the latched one)."""
        return self._rtp_from

    def sole_source(self) -> Addr | None:
        """The one address RTP is accepted from and sent to, once the peer spoke from its SDP address (no other
        address can be learned from then on, until ``set_remote`` names a new one); ``None`` otherwise. The adapter
        may connect the socket to it: the kernel then filters sources, and no address is parsed or built per
        packet."""
        src = self._rtp_from
        if src is not None and src == self._sdp and src == self.remote:
            return src
        return None

    def _learn_rtp(self, addr: Addr, now: float) -> bool:
        """Whether RTP from ``addr`` (not the accepted source) is accepted from now on; latches if so."""
        sdp = self._sdp
        if sdp is None or not (addr == sdp or (self._rtp_from is None and now <= self._latch_until)):
            return False
        self._rtp_from = addr
        if self.symmetric and addr != self.remote:
            self.remote = addr
            if self._rtcp_from is None:
                self.remote_rtcp = (addr[0], addr[1] + 1)
            self.events.append(RemoteLatched(self.leg_id, addr[0], addr[1]))
            self._wake()
        return True

    def _learn_rtcp(self, addr: Addr, now: float) -> bool:
        sdp, rtp_from = self._sdp, self._rtp_from
        if sdp is None:
            return False
        if not (
            addr == (sdp[0], sdp[1] + 1)
            or (rtp_from is not None and addr == (rtp_from[0], rtp_from[1] + 1))
            or (self._rtcp_from is None and now <= self._latch_until)
        ):
            return False
        self._rtcp_from = addr
        if self.symmetric:
            self.remote_rtcp = addr
        return True

    def _reframe(self, pcm: bytes) -> None:
        """A peer with ptime other than 20 ms: cut its audio into 20 ms frames. Such packets are taken in
        arrival order (no reordering) under a local frame counter."""
        buf = self._partial + pcm
        n = len(buf) // FRAME_BYTES * FRAME_BYTES
        for i in range(0, n, FRAME_BYTES):
            self.jitter.push(self._reframe_seq, buf[i : i + FRAME_BYTES])
            self._reframe_seq = (self._reframe_seq + 1) & 0xFFFF
        self._partial = buf[n:]

    def receive_rtcp(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            packets = parse_compound(data)
        except RtcpParseError:
            return
        if addr != self._rtcp_from and not self._learn_rtcp(addr, now):
            self.foreign_packets += 1
            return
        for p in packets:
            if isinstance(p, SenderReport) and self.stats is not None and p.ssrc == self.stats.ssrc:
                self.stats.last_sr = (p.ntp >> 16) & 0xFFFFFFFF
                self.stats.last_sr_at = now

    def _rfc4733(self, events: list[ReceiverEvent]) -> None:
        for ev in events:
            self._dtmf_pending.append(ev)
            if isinstance(ev, ReceivedDigit):
                self._digit(ev.digit, ev.duration_ms, "rfc4733")

    def relay_dtmf(self, events: list[ReceiverEvent]) -> None:
        """Send another leg's RFC 4733 events as our own (own timestamps, sequence numbers and SSRC)."""
        if self.dtmf_payload_type is None:
            return
        for ev in events:
            if isinstance(ev, ToneStarted):
                self.dtmf_out.begin(ev.digit)
            else:
                self.dtmf_out.end(ev.digit, ev.duration_ms)
        self._dtmf_active = True

    def _dtmf_tick(self, now: float) -> None:
        """End an event whose end packets were all lost; move this tick's RFC 4733 events into ``heard_dtmf``."""
        rx = self.dtmf_in
        if rx.deadline is not None:
            self._rfc4733(rx.poll(now))
        self.heard_dtmf, self._dtmf_pending = self._dtmf_pending, []
        self._dtmf_rx = bool(self.heard_dtmf) or rx.deadline is not None

    def _digit(self, digit: str, duration_ms: int, method: str) -> None:
        self.events.append(DigitReceived(self.leg_id, digit, duration_ms, method))
        self._wake()
        for s in list(self.sinks):
            if isinstance(s, Recorder) and s.on_digit(digit):
                self._recording_done(s)
                self.sinks.remove(s)

    def _recording_done(self, rec: Recorder) -> None:
        self.events.append(RecordingFinished(self.leg_id, rec.finished or "stopped", rec.duration_s, rec.digit))

    # -- the tick ---------------------------------------------------------------------------
    def pull(self, now: float) -> None:
        """Phase 1: this tick's inbound frame into ``heard`` and the sinks."""
        frame = self.jitter.pop() if self._listening() else None
        self.heard = None if self._muted else frame
        if self._dtmf_rx:
            self._dtmf_tick(now)
        if self.sinks:
            f = SILENCE if frame is None else frame
            done = None
            for s in self.sinks:
                s.write(f, now)
                if isinstance(s, Recorder) and s.finished is not None:
                    self._recording_done(s)
                    done = s
            if done is not None:
                self.sinks = [s for s in self.sinks if not (isinstance(s, Recorder) and s.finished is not None)]
            if self.inband is not None and self.inband.detected:
                for digit, ms in self.inband.detected:
                    if not self.dtmf_in.covers(digit, now - ms / 1000 - _INBAND_SLACK, now):
                        self._digit(digit, ms, "inband")
                self.inband.detected.clear()

    def produce(self, now: float, tick: int) -> bytes | None:
        """Phase 3: the RTP datagram to send to ``remote`` for this tick, or ``None``."""
        # This runs for every leg every 20 ms: attribute reads are kept few and the header is packed inline.
        if self._tick0 is None:
            self._tick0, self._t0 = tick, now
        elif self._regrid:  # a relay into us ended: continue its stream
            self._regrid = False
            self._ts0, self._tick0, self._t0 = self._next_ts(now), tick, now
        ts = (self._ts0 + FRAME_SAMPLES * (tick - self._tick0)) & 0xFFFFFFFF
        if self.idle_timeout is not None and not self._idle_reported and now - self._last_rx >= self.idle_timeout:
            self._idle_reported = True
            self.events.append(LegIdle(self.leg_id, now - self._last_rx))
        if self.relayed:
            if now - self.relayed_at < RELAY_FILL or not self._sending or self.remote is None:
                return None
            # The source went quiet (silence suppression, a peer on hold sending nothing): our peer still gets
            # a stream, as when decoding, and the source's next packet anchors afresh after this one.
            self._rl_ssrc = None
            self.filler_for = now
            return self._emit_audio(self._next_ts(now), self._encode_src(SILENCE), now)
        if self._dtmf_active:
            pkt = self._produce_dtmf(ts)
            if pkt is not None:
                self._out_ts, self._out_at = ts, now
                return pkt
        frame = self._read_frame()
        if not self._sending or self.remote is None:
            self._marker = True
            return None
        return self._emit_audio(ts, self._encode(frame) if self.attached else self._encode_src(frame), now)

    def _emit_audio(self, ts: int, payload: bytes, now: float) -> bytes:
        marker = self._marker
        if marker:
            self._marker = False
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += FRAME_SAMPLES
        self._out_ts, self._out_at = ts, now
        return _HDR.pack(0x80, (0x80 if marker else 0) | self.payload_type, seq, ts, self.ssrc) + payload

    def _produce_dtmf(self, ts: int) -> bytes | None:
        out = self.dtmf_out
        if not self._sending or self.dtmf_payload_type is None:
            return None
        ev = out.next_packet(ts)
        done = out.take_finished()
        if done is not None:
            self.events.append(DigitsSent(self.leg_id, done))
        if not out.busy:
            self._dtmf_active = False
        if ev is None:
            return None
        self._read_frame()  # the prompt keeps time while the digit plays
        return self._emit(self.dtmf_payload_type, ev.timestamp, ev.payload, ev.marker)

    def _read_frame(self) -> bytes:
        if self.attached:
            frame = self.feed
            if frame is None:
                return SILENCE
        else:
            src = self.source
            if src is None:
                return SILENCE
            frame = src.read()
            if frame is None:
                self.source = None
                self.events.append(SourceFinished(self.leg_id))
                return SILENCE
        if len(frame) != FRAME_BYTES:
            what = "bridge/conference feed" if self.attached else "source"
            raise FrameError(f"the {what} gave a {len(frame)}-byte frame, not {FRAME_BYTES}")
        return frame

    def _emit(self, pt: int, ts: int, payload: bytes, marker: bool) -> bytes:
        if self._marker:
            marker, self._marker = True, False
        pkt = rtp.build(pt, self._seq, ts, self.ssrc, payload, marker)
        self._seq = (self._seq + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return pkt

    # -- RTCP -------------------------------------------------------------------------------
    def rtcp_due(self, now: float) -> bytes | None:
        """A compound SR/RR + SDES about every ``rtcp_interval`` seconds (RFC 3550 §6.1), else ``None``."""
        if now < self.next_rtcp or self.remote_rtcp is None:
            return None
        self.next_rtcp = now + self._rtcp_delay()
        return self.rtcp_report(now)

    def _rtcp_delay(self) -> float:
        """RFC 3550 §6.3.1: the interval times a random factor in [0.5, 1.5), so that reports of sessions that
        started together (a bridge, a conference, a node restart) do not stay in step."""
        return self.rtcp_interval * (0.5 + self._ids.u32() / 4294967296)

    def rtp_timestamp_at(self, now: float) -> int:
        """The RTP timestamp of our stream for the instant ``now`` (the RTP clock runs at 8 kHz from the first tick)."""
        return (self._ts0 + round((now - self._t0) * SAMPLE_RATE)) & 0xFFFFFFFF

    def rtcp_report(self, now: float, bye: bool = False) -> bytes:
        blocks = () if self.stats is None else (self.stats.report_block(now),)
        first: SenderReport | ReceiverReport
        if self.packets_sent:
            ntp = ntp_timestamp(now + self.wall_offset)
            # RFC 3550 §6.4.1: the RTP timestamp for the same instant as the NTP timestamp, not the last packet's
            # (which may be old after a pause, or a telephone event's start).
            rtp_ts = self.rtp_timestamp_at(now)
            first = SenderReport(self.ssrc, ntp, rtp_ts, self.packets_sent, self.octets_sent, blocks)
        else:
            first = ReceiverReport(self.ssrc, blocks)
        if bye:
            return build_compound(first, Sdes(self.ssrc, self.cname), Bye((self.ssrc,)))
        return build_compound(first, Sdes(self.ssrc, self.cname))
