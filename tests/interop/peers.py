"""Start, watch and stop real SIP peers (SIPp, kamailio, baresip) on free loopback ports.

Every peer runs as a child process in its own session, with stdout and stderr captured to files in a work
directory, and is stopped by its process id (never by name). SIPp writes its statistics CSV (``-trace_stat``), its
message log (``-trace_msg``) and its errors into the same directory; this module parses them so tests can assert
what the peer counted and what it actually received.

Typical use from a test (the ``peers`` fixture in ``conftest.py`` owns a :class:`PeerGroup`)::

    uas = peers.sipp("uas_answer.xml", local_port=free_port())
    ...                                  # drive callplane against 127.0.0.1:uas.port
    assert uas.wait() == 0
    assert uas.stats().successful == 1
    assert [m.method for m in uas.messages(received=True)] == ["INVITE", "ACK", "BYE"]

Scenario files may carry the SIPp flags they need in a comment, ``<!-- sipp-args: -nr -->``; :meth:`PeerGroup.sipp`
adds them.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
LOOPBACK = "127.0.0.1"

__all__ = [
    "LOOPBACK",
    "SCENARIOS",
    "Peer",
    "PeerError",
    "BaresipControl",
    "BaresipRun",
    "KamailioRun",
    "PeerGroup",
    "SippRun",
    "SippStats",
    "TraceMessage",
    "free_port",
    "free_port_block",
    "digest_response",
    "parse_digest",
    "parse_sip",
    "parse_trace",
    "sip_ping",
    "wait_udp_bound",
]


class PeerError(RuntimeError):
    """A peer could not be started, did not become ready, or left no usable output."""


# Ports -------------------------------------------------------------------------------------------------------------


def _bindable(port: int, host: str = LOOPBACK) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


# Fixed ports for peers come from a range the kernel never hands out by itself: below ip_local_port_range
# (32768-60999 by default), where every outgoing connection and bind(0) takes its ports, and below the node's
# default RTP range (20000-29999). A port picked there cannot be taken by an unrelated ephemeral socket between
# the check and the peer's own bind; the ports handed out recently are not handed out again.
PEER_PORTS = (10000, 19999)
_recent: collections.deque[int] = collections.deque(maxlen=512)
_rng = random.Random()


def free_port_block(count: int, host: str = LOOPBACK, low: int = PEER_PORTS[0], high: int = PEER_PORTS[1]) -> int:
    """The first of ``count`` consecutive ports, free for both UDP and TCP on ``host`` right now (SIPp media uses
    -mp and -mp+2, baresip an RTP range)."""
    for _ in range(500):
        start = _rng.randrange(low, high - count)
        start -= start % 2 if count > 1 else 0  # blocks start even (RTP on even ports)
        block = range(start, start + count)
        if any(p in _recent for p in block):
            continue
        if all(_bindable(p, host) for p in block):
            _recent.extend(block)
            return start
    raise PeerError(f"no block of {count} free ports found in {low}-{high}")


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free for both UDP and TCP on ``host`` right now (see :data:`PEER_PORTS`)."""
    return free_port_block(1, host)


def baresip_ports() -> tuple[int, int, int]:
    """``(sip, ctrl_tcp, first of 20 RTP)`` from one free block: baresip also binds SIP/TLS on ``sip + 1`` and
    exits if that port is taken, so the block keeps it free too."""
    base = free_port_block(24)
    return base, base + 2, base + 4


def _bound_ports(proto: str) -> set[int]:
    """Local ports with a socket in /proc/net/<proto> (UDP: any state; TCP: LISTEN only)."""
    ports: set[int] = set()
    for name in (proto, proto + "6"):
        try:
            lines = Path("/proc/net", name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if proto == "tcp" and cols[3] != "0A":
                continue
            ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def wait_udp_bound(port: int, timeout: float = 5.0, proto: str = "udp", peer: Peer | None = None) -> None:
    """Wait until some process has a socket on ``port`` (read from /proc, so nothing is sent to the peer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port in _bound_ports(proto):
            return
        if peer is not None and peer.poll() is not None:
            raise PeerError(
                f"{peer.name} exited with {peer.poll()} before binding {proto} port {port}:\n{peer.output()}"
            )
        time.sleep(0.02)
    raise PeerError(f"nothing bound {proto} port {port} within {timeout} s")


def sip_ping(host: str, port: int, timeout: float = 1.0, transport: str = "udp") -> int | None:
    """Send one OPTIONS and return the status code of the first response (None if nothing came back)."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.settimeout(timeout)
    try:
        sock.bind((LOOPBACK, 0))
        lport = sock.getsockname()[1]
        tag = f"{random.getrandbits(32):08x}"
        msg = (
            f"OPTIONS sip:ping@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} {LOOPBACK}:{lport};branch=z9hG4bK{tag}ping;rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:probe@{LOOPBACK}:{lport}>;tag={tag}\r\n"
            f"To: <sip:ping@{host}:{port}>\r\n"
            f"Call-ID: ping-{tag}@{LOOPBACK}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Contact: <sip:probe@{LOOPBACK}:{lport}>\r\n"
            f"Accept: application/sdp\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        if transport == "udp":
            sock.sendto(msg, (host, port))
            data = sock.recv(65535)
        else:
            sock.connect((host, port))
            sock.sendall(msg)
            data = sock.recv(65535)
    except OSError:
        return None
    finally:
        sock.close()
    first = data.split(b"\r\n", 1)[0].decode("latin-1")
    m = re.match(r"SIP/2\.0 (\d{3})", first)
    return int(m.group(1)) if m else None


# Processes ---------------------------------------------------------------------------------------------------------


@dataclass
class Peer:
    """One child process with its output captured in ``workdir``."""

    name: str
    argv: list[str]
    workdir: Path
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the exit code; on timeout stop the process and raise."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise PeerError(f"{self.name} did not exit within {timeout} s:\n{self.output()}") from None

    def stop(self, grace: float = 3.0) -> int:
        """SIGTERM the process group this peer leads (it is alone in its session), then SIGKILL after ``grace``."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(grace)
        else:
            # The leader is gone; make sure no child it forked (kamailio workers) outlives it.
            self._signal(signal.SIGKILL)
        return int(self.proc.returncode)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def wait_output(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until stdout or stderr matches ``pattern`` (a regex, searched with re.M)."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.stdout(), re.M) or re.search(pattern, self.stderr(), re.M)
            if m:
                return m
            if self.poll() is not None or time.monotonic() > deadline:
                raise PeerError(f"{self.name}: no output matching {pattern!r}:\n{self.output()}")
            time.sleep(0.05)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def output(self, tail: int = 4000) -> str:
        text = f"$ {shlex.join(self.argv)}\n--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()}"
        return text[-tail:]


# SIPp results ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SippStats:
    """The cumulative columns of the last row of SIPp's ``-trace_stat`` CSV."""

    created: int
    successful: int
    failed: int
    retransmissions: int
    failed_unexpected: int
    failed_recv_timeout: int
    failed_max_udp_retrans: int
    out_of_call_msgs: int
    dead_call_msgs: int
    call_rate: float
    elapsed: float
    raw: dict[str, str] = field(repr=False)

    @classmethod
    def parse(cls, path: Path) -> SippStats:
        with path.open(newline="") as f:
            rows = [r for r in csv.reader(f, delimiter=";") if r]
        if len(rows) < 2:
            raise PeerError(f"SIPp stats file {path} has no data row")
        raw = dict(zip(rows[0], rows[-1], strict=False))

        def num(col: str) -> int:
            return int(raw.get(col + "(C)", "0") or 0)

        return cls(
            created=int(raw.get("TotalCallCreated", "0") or 0),
            successful=num("SuccessfulCall"),
            failed=num("FailedCall"),
            retransmissions=num("Retransmissions"),
            failed_unexpected=num("FailedUnexpectedMessage"),
            failed_recv_timeout=num("FailedTimeoutOnRecv"),
            failed_max_udp_retrans=num("FailedMaxUDPRetrans"),
            out_of_call_msgs=num("OutOfCallMsgs"),
            dead_call_msgs=num("DeadCallMsgs"),
            call_rate=float(raw.get("CallRate(C)", "0") or 0),
            elapsed=_hms(raw.get("ElapsedTime(C)", "00:00:00")),
            raw=raw,
        )


def _hms(text: str) -> float:
    parts = [float(p) for p in text.replace(".", ":").split(":")[:3]]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
}


@dataclass(frozen=True)
class TraceMessage:
    """One SIP message a peer sent or received, as logged (header names are matched case-insensitively)."""

    direction: str  # "sent" or "received"
    transport: str
    wall: str
    start_line: str
    header_list: tuple[tuple[str, str], ...]
    body: str

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        """The request method, or the CSeq method of a response."""
        if self.is_request:
            return self.start_line.split(" ", 1)[0]
        return self.cseq[1]

    @property
    def status(self) -> int | None:
        return None if self.is_request else int(self.start_line.split(" ")[1])

    @property
    def request_uri(self) -> str:
        return self.start_line.split(" ")[1] if self.is_request else ""

    def headers(self, name: str) -> list[str]:
        """All values of a header (comma-joined values are not split)."""
        key = _COMPACT.get(name.lower(), name.lower())
        return [v for n, v in self.header_list if _COMPACT.get(n.lower(), n.lower()) == key]

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None

    @property
    def cseq(self) -> tuple[int, str]:
        num, method = (self.header("CSeq") or "0 ?").split()
        return int(num), method

    @property
    def call_id(self) -> str:
        return self.header("Call-ID") or ""

    @property
    def branch(self) -> str:
        via = self.header("Via") or ""
        m = re.search(r";\s*branch=([^;,\s]+)", via)
        return m.group(1) if m else ""

    @property
    def to_tag(self) -> str:
        m = re.search(r";\s*tag=([^;,\s>]+)", self.header("To") or "")
        return m.group(1) if m else ""

    @property
    def from_tag(self) -> str:
        m = re.search(r";\s*tag=([^;,\s>]+)", self.header("From") or "")
        return m.group(1) if m else ""

    def __str__(self) -> str:
        return self.start_line


def parse_sip(text: str, direction: str = "", transport: str = "", wall: str = "") -> TraceMessage:
    """Split one SIP message into start line, headers (folded lines joined) and body."""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    lines = head.strip("\n").split("\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
        elif ":" in line:
            name, value = line.split(":", 1)
            headers.append((name.strip(), value.strip()))
    return TraceMessage(direction, transport, wall, lines[0].strip(), tuple(headers), body)


_TRACE_SEP = re.compile(r"^-{20,} (\S+ \S+)", re.M)
_TRACE_DIR = re.compile(r"^(\w+) message (sent|received)")


def parse_trace(text: str) -> list[TraceMessage]:
    """SIPp's ``-trace_msg`` log -> the messages it sent and received, in order."""
    out: list[TraceMessage] = []
    marks = list(_TRACE_SEP.finditer(text))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        block = text[mark.end() : end].lstrip("\n")
        first, _, rest = block.partition("\n")
        m = _TRACE_DIR.match(first)
        if not m:
            continue  # "Ignoring provisional ..." notes and the like
        rest = rest.lstrip("\n").rstrip("\n") + "\n"
        if not rest.strip():
            continue
        out.append(parse_sip(rest, direction=m.group(2), transport=m.group(1), wall=mark.group(1)))
    return out


@dataclass
class SippRun:
    """A SIPp process and the files it writes."""

    peer: Peer
    port: int
    media_port: int
    scenario: str
    stat_path: Path
    msg_path: Path
    err_path: Path

    def wait(self, timeout: float = 15.0) -> int:
        return self.peer.wait(timeout)

    def stats(self) -> SippStats:
        return SippStats.parse(self.stat_path)

    def messages(self, *, received: bool | None = None) -> list[TraceMessage]:
        text = self.msg_path.read_text(errors="replace") if self.msg_path.exists() else ""
        msgs = parse_trace(text)
        if received is None:
            return msgs
        want = "received" if received else "sent"
        return [m for m in msgs if m.direction == want]

    def errors(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def response_times_ms(self) -> list[float]:
        """Per-call response times from ``-trace_rtt`` (only if the run asked for it)."""
        values: list[float] = []
        for path in sorted(self.peer.workdir.glob("*_rtt.csv")):
            with path.open(newline="") as f:
                for row in csv.reader(f, delimiter=";"):
                    if len(row) >= 2 and row[1].replace(".", "", 1).isdigit():
                        values.append(float(row[1]))
        return values

    def report(self) -> str:
        """Everything useful for an assertion message."""
        trace = "\n".join(f"  {m.direction:8} {m.start_line}" for m in self.messages())
        return f"{self.peer.output()}\n--- messages\n{trace}\n--- errors\n{self.errors()[-3000:]}"


def scenario_args(path: Path) -> list[str]:
    """Flags declared in a scenario's ``<!-- sipp-args: ... -->`` comment."""
    m = re.search(r"<!--\s*sipp-args:(.*?)-->", path.read_text())
    return shlex.split(m.group(1)) if m else []


# The group a test owns ---------------------------------------------------------------------------------------------


class PeerGroup:
    """Every peer a test started; :meth:`close` stops them all (the ``peers`` fixture calls it)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.peers: list[Peer] = []
        self._closers: list[Callable[[], None]] = []
        self._n = 0

    def __iter__(self) -> Iterator[Peer]:
        return iter(self.peers)

    def _dir(self, name: str) -> Path:
        self._n += 1
        d = self.workdir / f"{self._n:02d}-{name}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def start(
        self, name: str, argv: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> Peer:
        """Start ``argv`` in its own session with output captured; it is stopped by :meth:`close`."""
        workdir = cwd or self._dir(name)
        out, err = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
        with out.open("wb") as fo, err.open("wb") as fe:
            try:
                proc = subprocess.Popen(
                    list(argv),
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=fo,
                    stderr=fe,
                    start_new_session=True,
                    env=env,
                )
            except FileNotFoundError as exc:
                raise PeerError(f"cannot start {name}: {exc}") from exc
        peer = Peer(name, list(argv), workdir, proc, out, err)
        self.peers.append(peer)
        return peer

    def close(self) -> None:
        for closer in self._closers:
            closer()
        for peer in reversed(self.peers):
            peer.stop()

    # SIPp --------------------------------------------------------------------------------------------------------

    def sipp(
        self,
        scenario: str,
        remote: tuple[str, int] | None = None,
        *,
        local_port: int | None = None,
        calls: int = 1,
        rate: float | None = None,
        limit: int | None = None,
        timeout: float = 10.0,
        keys: dict[str, str] | None = None,
        extra: Sequence[str] = (),
        service: str | None = None,
        trace_msg: bool = True,
        trace_rtt: bool = False,
        transport: str = "u1",
        wait_ready: bool = True,
    ) -> SippRun:
        """Run SIPp with a scenario (a file in ``scenarios/``, a path, or ``"uac"``/``"uas"`` for the built-ins).

        Without ``remote`` it is a server: this returns once its SIP port is bound, so a client may start at once.
        """
        port = local_port or free_port()
        media = free_port_block(4)
        builtin = scenario in ("uac", "uas")
        name = scenario if builtin else Path(scenario).stem
        d = self._dir(f"sipp-{name}")
        argv = ["sipp"]
        if builtin:
            argv += ["-sn", scenario]
        else:
            path = Path(scenario) if "/" in scenario else SCENARIOS / scenario
            if path.suffix != ".xml":
                path = path.with_name(path.name + ".xml")
            defaults = scenario_args(path)
            # "-key name value" defaults from the scenario give way to the caller's keys (SIPp keeps the first).
            while "-key" in defaults:
                i = defaults.index("-key")
                name, value = defaults[i + 1], defaults[i + 2]
                del defaults[i : i + 3]
                keys = {name: value, **(keys or {})}
            argv += ["-sf", str(path)] + defaults
        if remote is not None:
            argv.append(f"{remote[0]}:{remote[1]}")
        stat, msgs, errs = d / "stats.csv", d / "messages.log", d / "errors.log"
        argv += ["-i", LOOPBACK, "-p", str(port), "-t", transport]
        argv += ["-mi", LOOPBACK, "-mp", str(media), "-cp", str(free_port())]
        argv += ["-m", str(calls), "-nostdin", "-timeout", f"{timeout}s", "-timeout_error"]
        argv += ["-trace_stat", "-stf", str(stat), "-fd", "1"]
        argv += ["-trace_err", "-error_file", str(errs), "-screen_file", str(d / "screen.log"), "-trace_screen"]
        if trace_msg:
            argv += ["-trace_msg", "-message_file", str(msgs)]
        if trace_rtt:
            argv += ["-trace_rtt", "-rtt_freq", "1"]
        if rate is not None:
            argv += ["-r", f"{rate:g}"]
        if limit is not None:
            argv += ["-l", str(limit)]
        if service is not None:
            argv += ["-s", service]
        for k, v in (keys or {}).items():
            argv += ["-key", k, v]
        argv += list(extra)
        peer = self.start(f"sipp-{name}", argv, cwd=d)
        run = SippRun(peer, port, media, name, stat, msgs, errs)
        if wait_ready and remote is None:
            wait_udp_bound(port, peer=peer, proto="udp" if transport.startswith("u") else "tcp")
        return run

    # kamailio ----------------------------------------------------------------------------------------------------

    def kamailio(
        self,
        *,
        app: tuple[str, int] | None = None,
        sipp: tuple[str, int] | None = None,
        password: str = "secret",
        port: int | None = None,
    ) -> KamailioRun:
        """A kamailio Record-Route proxy and registrar (``kamailio.cfg.tmpl``) on a free UDP port.

        R-URI users ``app*`` go to ``app`` (callplane), ``sipp*`` to ``sipp``, others to registered contacts. The
        config is checked with ``kamailio -c`` first; the proxy runs in the foreground (``-DD -E``) and this returns
        once it answers an OPTIONS ping.
        """
        port = port or free_port()
        d = self._dir("kamailio")
        lines = [f"1 sip:{app[0]}:{app[1]}"] if app else []
        lines += [f"2 sip:{sipp[0]}:{sipp[1]}"] if sipp else []
        (d / "dispatcher.list").write_text("".join(line + "\n" for line in lines))
        cfg = (HERE / "kamailio.cfg.tmpl").read_text()
        for key, value in {
            "PORT": str(port),
            "MPATH": kamailio_modules(),
            "RUNDIR": str(d),
            "PASSWORD": password,
        }.items():
            cfg = cfg.replace(f"@@{key}@@", value)
        cfg_path = d / "kamailio.cfg"
        cfg_path.write_text(cfg)
        check = subprocess.run(["kamailio", "-c", "-f", str(cfg_path)], capture_output=True, text=True, timeout=20)
        if check.returncode != 0:
            raise PeerError(f"kamailio -c rejected {cfg_path}:\n{check.stdout}\n{check.stderr}")
        argv = ["kamailio", "-f", str(cfg_path), "-DD", "-E", "-P", str(d / "kamailio.pid"), "-Y", str(d), "-w", str(d)]
        peer = self.start("kamailio", argv, cwd=d)
        deadline = time.monotonic() + 10
        while sip_ping(LOOPBACK, port, timeout=0.3) != 200:
            if peer.poll() is not None or time.monotonic() > deadline:
                peer.stop()
                raise PeerError(f"kamailio did not come up on {port}:\n{peer.output()}")
        return KamailioRun(peer, port)

    # baresip -----------------------------------------------------------------------------------------------------

    def baresip(
        self,
        account: str,
        *,
        audio_seconds: float = 5.0,
        commands: Sequence[str] = (),
        sip_trace: bool = True,
    ) -> BaresipRun:
        """A headless baresip (appendix B config) with one account line, e.g.
        ``<sip:alice@127.0.0.1:5080>;auth_pass=secret;regint=600;answermode=auto;audio_codecs=PCMU``.

        Its audio source is a 440 Hz tone of ``audio_seconds``; baresip hangs up a call when the file ends, which
        makes call length deterministic. ``commands`` are run at start (``-e``, e.g. ``/dial sip:app@...``); more
        can be sent later through :attr:`BaresipRun.control` (ctrl_tcp). Returns once the control port listens.
        """
        d = self._dir("baresip")
        sip_port, ctrl_port, rtp = baresip_ports()
        tone = d / "tone.wav"
        write_tone(tone, audio_seconds)
        (d / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen {LOOPBACK}:{sip_port}",
                    "audio_player aubridge,nil",
                    f"audio_source aufile,{tone}",
                    "audio_alert aubridge,nil",
                    f"rtp_ports {rtp}-{rtp + 19}",
                    "module_path /usr/lib/baresip/modules",
                    "module g711.so",
                    "module aufile.so",
                    "module aubridge.so",
                    "module_app account.so",
                    "module_app menu.so",
                    "module_app ctrl_tcp.so",
                    f"ctrl_tcp_listen {LOOPBACK}:{ctrl_port}",
                    "",
                ]
            )
        )
        (d / "accounts").write_text(account + "\n")
        (d / "contacts").write_text("")
        argv = ["baresip", "-f", str(d)] + (["-s"] if sip_trace else [])
        for cmd in commands:
            argv += ["-e", cmd]
        peer = self.start("baresip", argv, cwd=d)
        wait_udp_bound(ctrl_port, proto="tcp", peer=peer, timeout=10)
        run = BaresipRun(peer, sip_port, ctrl_port)
        self._closers.append(run.close)
        return run


def kamailio_modules() -> str:
    for path in (
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/kamailio/modules",
        "/usr/lib64/kamailio/modules",
    ):
        if Path(path, "tm.so").exists():
            return path
    raise PeerError("kamailio modules not found")


def write_tone(path: Path, seconds: float, hz: float = 440.0, rate: int = 8000) -> None:
    """A mono 16-bit WAV sine tone (baresip's audio source)."""
    n = int(seconds * rate)
    frames = bytearray()
    for i in range(n):
        frames += int(8000 * math.sin(2 * math.pi * hz * i / rate)).to_bytes(2, "little", signed=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))


@dataclass
class KamailioRun:
    """A running kamailio; :meth:`relays` lists what its script logged as relayed."""

    peer: Peer
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    def relays(self) -> list[tuple[str, str, str]]:
        """``(kind, method, ruri)`` for each relay, kind being ``initial``, ``in-dialog``, ``hop-ack`` or ``cancel``."""
        out = []
        for m in re.finditer(r"RELAY (\S+) (\S+) (\S+)", self.peer.stderr()):
            out.append((m.group(1), m.group(2), m.group(3)))
        return out


class BaresipControl:
    """baresip's ctrl_tcp: netstring-framed JSON commands, responses and events."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self._sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self._buf = b""
        self.events: list[dict[str, object]] = []
        self._n = 0

    def close(self) -> None:
        self._sock.close()

    def _read(self, timeout: float) -> dict[str, object] | None:
        self._sock.settimeout(timeout)
        while True:
            head, sep, rest = self._buf.partition(b":")
            if sep and head.isdigit() and len(rest) > int(head):
                n = int(head)
                body, self._buf = rest[:n], rest[n + 1 :]
                value = json.loads(body)
                return value if isinstance(value, dict) else None
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                return None
            self._buf += chunk

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, object]:
        """Send one command and return its response (events seen meanwhile are kept in :attr:`events`)."""
        self._n += 1
        token = f"t{self._n}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(str(len(body)).encode() + b":" + body + b",")
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self._read(left)
            if msg is None:
                break
            if msg.get("response") and msg.get("token") == token:
                return msg
            if msg.get("event"):
                self.events.append(msg)
        raise PeerError(f"baresip did not answer {command!r} within {timeout} s")

    def wait_event(self, kind: str, timeout: float = 10.0) -> dict[str, object]:
        """Wait for an event of ``type`` ``kind`` (e.g. ``CALL_ESTABLISHED``, ``CALL_CLOSED``, ``REGISTER_OK``)."""
        for ev in self.events:
            if ev.get("type") == kind:
                self.events.remove(ev)
                return ev
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self._read(left)
            if msg is None:
                continue
            if msg.get("event"):
                if msg.get("type") == kind:
                    return msg
                self.events.append(msg)
        raise PeerError(f"no baresip {kind} event within {timeout} s; saw {[e.get('type') for e in self.events]}")


@dataclass
class BaresipRun:
    """A running baresip; ``-s`` makes it print every SIP message, which :meth:`messages` parses."""

    peer: Peer
    sip_port: int
    ctrl_port: int
    _control: BaresipControl | None = None

    @property
    def control(self) -> BaresipControl:
        if self._control is None:
            self._control = BaresipControl(self.ctrl_port)
        return self._control

    def wait_registered(self, timeout: float = 10.0) -> str:
        """Wait for baresip's "200 OK ... [N binding]" line for its account; returns the line."""
        return self.peer.wait_output(r"^.*\} 200 OK .*binding.*$", timeout).group(0)

    def messages(self) -> list[TraceMessage]:
        """SIP messages from the ``-s`` trace: a ``UDP a -> b`` line, the message, then a line ending in ``#`` (the
        next block's colour-coded marker, which may follow a ``[0:00:01] audio=...`` status text on the same line)."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.peer.stdout())
        # The status line ("[0:00:01] audio=...") is redrawn with a bare carriage return, so a message's first line
        # may follow it on the same line: treat a bare CR as a line break, and allow text before the block start.
        text = re.sub(r"\r(?!\n)", "\n", text)
        starts = list(re.finditer(r"^(?:.*\s)?(UDP|TCP) (\S+) -> (\S+)$", text, re.M))
        local = f"{LOOPBACK}:{self.sip_port}"
        out = []
        for i, m in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
            block = text[m.end() + 1 : end]
            marker = re.search(r"^(?:.*\s)?#[ \t]*$", block, re.M)
            if marker is not None:
                block = block[: marker.start()]
            direction = "sent" if m.group(2) == local else "received"
            msg = parse_sip(block, direction=direction, transport=m.group(1))
            # baresip's own log lines can follow a message before the next marker: a body ends at a blank line.
            length = int(msg.header("Content-Length") or 0)
            body = msg.body.split("\n\n", 1)[0].rstrip("\n") + "\n" if length else ""
            out.append(dataclasses.replace(msg, body=body))
        return out

    def close(self) -> None:
        """Close the control connection and stop baresip; it would spend up to 32 s un-registering, so after
        one second it is killed."""
        if self._control is not None:
            self._control.close()
            self._control = None
        self.peer.stop(grace=1.0)


# Digest (RFC 2617 / RFC 7616), to check what a peer received -----------------------------------------------------


def parse_digest(value: str) -> dict[str, str]:
    """``Digest a="b", c=d`` -> ``{"a": "b", "c": "d"}`` (keys lowercased)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"not a Digest credential: {value!r}")
    pairs = re.findall(r'([\w-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', rest)
    return {name.lower(): quoted or token for name, quoted, token in pairs}


def digest_response(params: dict[str, str], method: str, password: str, body: str = "") -> str:
    """The ``response`` a client with ``password`` should have computed for these credential parameters."""
    algorithm = params.get("algorithm", "MD5").upper()
    name = {"MD5": "md5", "MD5-SESS": "md5", "SHA-256": "sha256", "SHA-256-SESS": "sha256"}[algorithm]

    def h(text: str) -> str:
        return hashlib.new(name, text.encode()).hexdigest()

    ha1 = h(f"{params['username']}:{params['realm']}:{password}")
    if algorithm.endswith("-SESS"):
        ha1 = h(f"{ha1}:{params['nonce']}:{params['cnonce']}")
    qop = params.get("qop", "")
    ha2 = h(f"{method}:{params['uri']}:{h(body)}") if qop == "auth-int" else h(f"{method}:{params['uri']}")
    if qop:
        return h(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{qop}:{ha2}")
    return h(f"{ha1}:{params['nonce']}:{ha2}")
