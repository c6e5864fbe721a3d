"""The media engine through real SIP calls with real peers on 127.0.0.1 (issue 4, "Checked by", first bullet).

Our side is the node's plumbing (:class:`tests.engine.medianode.MediaNode`: SipEndpoint + UserAgent + MediaEngine
joined by :class:`callplane.engine.media_session.MediaCalls`). The peers judge:

* SIPp UAS with ``-rtp_echo`` returns our stream: the echoed audio has our tone's frequency and nearly every frame;
  SIPp echoing our RFC 4733 events back shows the digits we sent;
* SIPp UAC plays its RFC 2833 captures: we detect exactly the digits it played, each once;
* baresip records what we play (``sndfile``): the WAV it decoded has our tone / our TTS prompt.
"""

from __future__ import annotations

import asyncio
import re
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from callplane.engine.media_session import CallDigit
from callplane.media.events import DigitsSent, SourceFinished
from callplane.media.sources import SAMPLE_RATE, SILENCE, PcmSource, Source, ToneSource, tone_pcm
from callplane.media.tts import make_default_tts
from callplane.media.workers import MediaWorkers
from callplane.sip.events import CallAnswered, CallConfirmed, CallEnded, IncomingCall
from tests.engine.medianode import MediaNode
from tests.interop.conftest import need
from tests.interop.peers import (
    LOOPBACK,
    BaresipControl,
    Peer,
    PeerGroup,
    SippRun,
    baresip_ports,
    wait_udp_bound,
)

pytestmark = pytest.mark.interop


def dominant_hz(pcm: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """The frequency of the largest FFT bin (Hann window), in Hz."""
    x = pcm.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / len(x))


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0


class FrameCollector:
    """A sink keeping every frame the leg heard that is not silence (what SIPp echoed back)."""

    def __init__(self, threshold: float = 500.0) -> None:
        self.threshold = threshold
        self.frames: list[bytes] = []

    def write(self, frame: bytes, now: float) -> None:
        if frame != SILENCE and rms(np.frombuffer(frame, dtype="<i2")) > self.threshold:
            self.frames.append(frame)

    def pcm(self) -> np.ndarray:
        return np.frombuffer(b"".join(self.frames), dtype="<i2")


async def sipp_done(run: SippRun, timeout: float = 15.0) -> None:
    rc = await asyncio.to_thread(run.wait, timeout)
    assert rc == 0, run.report()
    stats = run.stats()
    assert (stats.successful, stats.failed) == (1, 0), run.report()


# a. our UAC -> SIPp UAS with -rtp_echo ------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "pt"), [("PCMU", 0), ("PCMA", 8)])
async def test_sipp_echoes_our_tone_through_a_call(peers: PeerGroup, codec: str, pt: int) -> None:
    need("sipp")
    uas = peers.sipp("media_uas_echo", keys={"pt": str(pt), "codec": codec})
    async with MediaNode() as node:
        mc = node.calls.invite(f"sip:echo@{LOOPBACK}:{uas.port}", f"sip:app@{LOOPBACK}")
        answered = await node.wait_for(CallAnswered)
        assert answered.media is not None and (answered.media.codec, answered.media.port) == (codec, uas.media_port)
        leg = node.media.leg(mc.leg_id)
        assert leg.payload_type == pt
        echoed = FrameCollector()
        node.media.add_sink(mc.leg_id, echoed)
        sent_before = leg.packets_sent
        node.media.set_source(mc.leg_id, ToneSource([1000.0], 2.0))
        await node.wait_for(SourceFinished)
        tone_frames = 100
        assert leg.packets_sent - sent_before >= tone_frames
        await asyncio.sleep(0.5)  # the last echoes are on their way back
        node.calls.hangup(mc.call)
        await node.wait_for(CallEnded)
    await sipp_done(uas)
    invite = uas.messages(received=True)[0]
    assert f"m=audio {mc.port} RTP/AVP 0 8 101" in invite.body
    assert len(echoed.frames) >= 0.9 * tone_frames, f"{len(echoed.frames)} of {tone_frames} tone frames came back"
    assert len(echoed.frames) <= tone_frames + 1
    assert abs(dominant_hz(echoed.pcm()) - 1000.0) <= 10.0


# b. SIPp UAC plays RFC 2833 captures -> our UAS ---------------------------------------------------------------------


async def test_sipp_rfc2833_captures_are_detected_once_each(peers: PeerGroup) -> None:
    need("sipp")
    async with MediaNode() as node:
        uac = peers.sipp("media_uac_dtmf", (LOOPBACK, node.port), service="app")
        incoming = await node.wait_for(IncomingCall)
        mc = node.calls.answer(incoming)
        assert mc.remote is not None and (mc.remote.port, mc.remote.telephone_event_pt) == (uac.media_port, 101)
        ended = await node.wait_for(CallEnded, timeout=15)
        assert ended.by == "remote"
        await sipp_done(uac)
        assert len(node.calls) == 0 and mc.leg_id not in node.media.core.legs
    digits = node.of(CallDigit)
    assert [(d.digit, d.method) for d in digits] == [("1", "rfc4733"), ("5", "rfc4733"), ("#", "rfc4733")]
    assert {d.call for d in digits} == {incoming.call}
    ok = next(m for m in uac.messages(received=True) if m.status == 200 and "m=audio" in m.body)
    assert f"m=audio {mc.port} RTP/AVP 0 101" in ok.body


# late offer: SIPp UAC sends no SDP, answers ours in the ACK, echoes our tone ------------------------------------------


async def test_late_offer_answer_in_ack_and_our_tone_echoed(peers: PeerGroup) -> None:
    need("sipp")
    async with MediaNode() as node:
        uac = peers.sipp("media_uac_late_offer", (LOOPBACK, node.port), service="app")
        incoming = await node.wait_for(IncomingCall)
        assert incoming.sdp is None
        mc = node.calls.answer(incoming)
        confirmed = await node.wait_for(CallConfirmed)
        assert confirmed.media is not None and mc.remote == confirmed.media
        assert (mc.remote.port, mc.remote.codec) == (uac.media_port, "PCMU")
        echoed = FrameCollector()
        node.media.add_sink(mc.leg_id, echoed)
        node.media.set_source(mc.leg_id, ToneSource([700.0], 1.0))
        ended = await node.wait_for(CallEnded, timeout=15)
        assert ended.by == "remote"
        await sipp_done(uac)
    ok = next(m for m in uac.messages(received=True) if m.status == 200 and "m=audio" in m.body)
    assert f"m=audio {mc.port} RTP/AVP 0 8 101" in ok.body  # our offer, in the 200
    assert len(echoed.frames) >= 45, f"{len(echoed.frames)} of 50 tone frames came back"
    assert abs(dominant_hz(echoed.pcm()) - 700.0) <= 10.0


# d (SIPp variant). our RFC 4733 digits, echoed back by SIPp, are detected as sent -----------------------------------


async def test_our_rfc4733_digits_come_back_from_sipp_echo(peers: PeerGroup) -> None:
    need("sipp")
    uas = peers.sipp("media_uas_echo")
    async with MediaNode() as node:
        mc = node.calls.invite(f"sip:echo@{LOOPBACK}:{uas.port}", f"sip:app@{LOOPBACK}")
        await node.wait_for(CallAnswered)
        node.calls.send_digits(mc.call, "1234#*0")
        sent = await node.wait_for(DigitsSent)
        assert sent.digits == "1234#*0"
        await asyncio.sleep(0.3)
        node.calls.hangup(mc.call)
        await node.wait_for(CallEnded)
    await sipp_done(uas)
    # Our own events, echoed: the same SSRC and timestamps, so each digit is reported once.
    assert "".join(d.digit for d in node.of(CallDigit)) == "1234#*0"
    assert {d.method for d in node.of(CallDigit)} == {"rfc4733"}


# c. baresip records what we play ------------------------------------------------------------------------------------

BARESIP_TONE_HZ = 1800.0  # what baresip itself sends: far from ours, so the two dump files cannot be confused


@dataclass
class Recorder:
    """A headless baresip with the ``sndfile`` module: every call is dumped to ``rec`` as ``dump-*-enc.wav`` (what
    baresip encoded and sent) and ``dump-*-dec.wav`` (what it received and decoded)."""

    peer: Peer
    sip_port: int
    rec: Path
    control: BaresipControl | None = None

    def dumps(self) -> dict[str, tuple[int, np.ndarray]]:
        """``{"enc": (rate, samples), "dec": (rate, samples)}`` of the one call recorded."""
        out: dict[str, tuple[int, np.ndarray]] = {}
        for path in sorted(self.rec.glob("dump-*.wav")):
            kind = path.stem.rsplit("-", 1)[1]
            assert kind not in out, f"more than one call recorded: {sorted(self.rec.iterdir())}"
            with wave.open(str(path), "rb") as w:
                assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
                out[kind] = (w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"))
        return out

    def received_events(self) -> list[tuple[str, int]]:
        """RFC 4733 events baresip logged as received: ``(digit, end)``."""
        text = self.peer.stdout() + self.peer.stderr()
        return [(m.group(1), int(m.group(2))) for m in re.finditer(r"received event: '(.)' \(end=(\d)\)", text)]


def baresip(
    peers: PeerGroup,
    tmp: Path,
    *commands: str,
    hz: float = BARESIP_TONE_HZ,
    codec: str = "PCMU",
    seconds: float = 10.0,
    name: str = "baresip-rec",
    account: str | None = None,
    control: bool = False,
) -> Recorder:
    """baresip (appendix B of the reference, without stdio.so) recording with sndfile, its own audio a tone of
    ``hz`` for ``seconds`` in ``codec``, with one ``account`` line (default: bob, answering automatically, not
    registering); ``commands`` run at start (``/dial ...``). ``control``: also listen for ctrl_tcp commands
    (:attr:`Recorder.control`: ``/sndcode 12#``, ``/hangup``...). Several run side by side under different
    ``name`` s."""
    need("baresip")
    d = tmp / name
    rec = d / "rec"
    rec.mkdir(parents=True)
    source = d / "source.wav"
    with wave.open(str(source), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(tone_pcm([hz], seconds, 0.25))
    sip_port, ctrl, rtp = baresip_ports()
    config = [
        "poll_method epoll",
        f"sip_listen {LOOPBACK}:{sip_port}",
        "audio_player aubridge,nil",
        f"audio_source aufile,{source}",
        "audio_alert aubridge,nil",
        f"rtp_ports {rtp}-{rtp + 19}",
        "module_path /usr/lib/baresip/modules",
        "module g711.so",
        "module aufile.so",
        "module aubridge.so",
        "module sndfile.so",
        f"snd_path {rec}",
        "module_app account.so",
        "module_app menu.so",
    ]
    ctrl_port = ctrl if control else None
    if ctrl_port is not None:
        config += ["module_app ctrl_tcp.so", f"ctrl_tcp_listen {LOOPBACK}:{ctrl_port}"]
    (d / "config").write_text("\n".join(config) + "\n")
    if account is None:
        account = f"<sip:bob@{LOOPBACK}>;regint=0;answermode=auto;audio_codecs={codec}"
    (d / "accounts").write_text(account + "\n")
    (d / "contacts").write_text("")
    argv = ["baresip", "-f", str(d)]
    for cmd in commands:
        argv += ["-e", cmd]
    peer = peers.start(name, argv, cwd=d)
    wait_udp_bound(sip_port, peer=peer, timeout=10)
    control_client = None
    if ctrl_port is not None:
        wait_udp_bound(ctrl_port, proto="tcp", peer=peer, timeout=10)
        control_client = BaresipControl(ctrl_port)
        peers._closers.append(control_client.close)
    return Recorder(peer, sip_port, rec, control_client)


async def play_to_baresip(node: MediaNode, phone: Recorder, source: Source) -> None:
    """Call baresip, play ``source`` from the moment it answers, hang up when the source ends."""
    mc = node.calls.invite(f"sip:bob@{LOOPBACK}:{phone.sip_port}", f"sip:app@{LOOPBACK}")
    answered = await node.wait_for(CallAnswered)
    assert answered.media is not None and answered.media.codec == "PCMU"
    node.media.set_source(mc.leg_id, source)
    await node.wait_for(SourceFinished, timeout=15)
    await asyncio.sleep(0.1)  # the last frames reach baresip before the BYE does
    node.calls.hangup(mc.call)
    await node.wait_for(CallEnded)
    # The dump files are complete once baresip has torn the call down.
    await asyncio.to_thread(phone.peer.wait_output, r"terminated \(duration", 5.0)


async def test_baresip_records_our_440_hz_tone(peers: PeerGroup, tmp_path: Path) -> None:
    phone = baresip(peers, tmp_path)
    async with MediaNode() as node:
        await play_to_baresip(node, phone, ToneSource([440.0], 2.0))
    dumps = phone.dumps()
    assert set(dumps) == {"enc", "dec"}
    rate, heard = dumps["dec"]
    _, sent = dumps["enc"]
    # Reading both files settles which is which: "dec" holds our tone, "enc" baresip's own.
    assert abs(dominant_hz(heard, rate) - 440.0) <= 10.0
    assert abs(dominant_hz(sent, dumps["enc"][0]) - BARESIP_TONE_HZ) <= 10.0
    assert abs(len(heard) / rate - 2.0) <= 0.5


async def test_baresip_records_our_tts_prompt(peers: PeerGroup, tmp_path: Path) -> None:
    need("espeak-ng")
    workers = MediaWorkers(tmp_path / "tts-cache")
    try:
        tts = make_default_tts(workers)
        pcm = await tts.synthesize("Thank you for calling. Please hold while we connect you.", "woman", "en-US")
    finally:
        await workers.aclose()
    prompt_s = len(pcm) / 2 / SAMPLE_RATE
    assert prompt_s > 2.0
    phone = baresip(peers, tmp_path)
    async with MediaNode() as node:
        await play_to_baresip(node, phone, PcmSource(pcm))
    rate, heard = phone.dumps()["dec"]
    assert abs(len(heard) / rate - prompt_s) <= 0.5, (len(heard) / rate, prompt_s)
    assert rms(heard) > 300.0  # speech, not silence (espeak at full scale is ~2000-4000 RMS)
    # What baresip decoded is about as loud as the prompt we played (G.711 keeps the level).
    assert rms(heard) >= 0.5 * rms(np.frombuffer(pcm, dtype="<i2"))


# d. baresip dials in; it receives our RFC 4733 digits ---------------------------------------------------------------


async def test_baresip_receives_our_rfc4733_digits(peers: PeerGroup, tmp_path: Path) -> None:
    async with MediaNode() as node:
        phone = baresip(peers, tmp_path, f"/dial sip:app@{LOOPBACK}:{node.port}")
        incoming = await node.wait_for(IncomingCall)
        assert incoming.media is not None and incoming.media.telephone_event_pt is not None
        mc = node.calls.answer(incoming)
        await node.wait_for(CallConfirmed)
        node.calls.send_digits(mc.call, "1234#")
        await node.wait_for(DigitsSent)
        await asyncio.to_thread(phone.peer.wait_output, r"received event: '#' \(end=1\)", 5.0)
        node.calls.hangup(mc.call)
        await node.wait_for(CallEnded)
    events = phone.received_events()
    assert [d for d, end in events if end] == ["1", "2", "3", "4", "#"]
    assert [d for d, end in events if not end] == ["1", "2", "3", "4", "#"]
