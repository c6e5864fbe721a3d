"""A UAC/UAS pair joined by hand in virtual time, shared by the UA tests (datagrams are passed or "lost")."""

from __future__ import annotations

from collections.abc import Callable

from callplane.core.ids import IdSource
from callplane.sip.events import Event, IncomingCall
from callplane.sip.message import Request, Response, parse_message
from callplane.sip.sdp import SessionDescription, answer_offer, build_offer
from callplane.sip.transaction_events import Peer
from callplane.sip.ua import UserAgent

__all__ = [
    "ALICE",
    "A",
    "B",
    "BOB",
    "Link",
    "answer_for",
    "connected",
    "first_line",
    "lines",
    "offer",
    "ok_for",
    "parse",
    "start_call",
]

A = Peer("UDP", "127.0.0.1", 5061)
B = Peer("UDP", "127.0.0.1", 5062)
BOB = "sip:bob@127.0.0.1:5062"
ALICE = "sip:alice@127.0.0.1"


def parse(data: bytes) -> Request | Response:
    return parse_message(data)


class Link:
    """Two endpoints and the wire between them."""

    def __init__(self, pa: Peer = A, pb: Peer = B, **kw_b: object) -> None:
        self.pa, self.pb = pa, pb
        self.a = UserAgent(IdSource(1), {"UDP": (pa.host, pa.port)})
        self.b = UserAgent(IdSource(2), {"UDP": (pb.host, pb.port)}, **kw_b)  # type: ignore[arg-type]
        self.now = 0.0
        self.bob = f"sip:bob@{pb.host}:{pb.port}"
        self.strict = True  # every datagram must go to the other side
        self.log: list[tuple[str, bytes]] = []

    def ua(self, name: str) -> UserAgent:
        return self.a if name == "a" else self.b

    def pass_(self, src: str, keep: Callable[[bytes], bool] = lambda _: True) -> list[bytes]:
        """Deliver what ``src`` has queued to the other side; datagrams failing ``keep`` are lost."""
        sender = self.ua(src)
        receiver = self.b if src == "a" else self.a
        delivered = []
        to, source = (self.pb, self.pa) if src == "a" else (self.pa, self.pb)
        for data, peer in sender.datagrams_to_send():
            if (peer.host, peer.port) != (to.host, to.port):
                assert not self.strict, f"{src} sent to {peer}"
                continue  # fuzzing: a mangled Via or Contact sends it elsewhere, which is no wire of ours
            self.log.append((src, data))
            if keep(data):
                receiver.receive_datagram(data, source, self.now)
                delivered.append(data)
        return delivered

    def pump(self) -> None:
        """Pass datagrams both ways until the wire is quiet."""
        while True:
            moved = self.pass_("a") + self.pass_("b")
            if not moved:
                return

    def advance(self, to: float) -> None:
        """Move virtual time, firing every timer of both sides on the way (without delivering anything)."""
        while True:
            deadlines = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None and t <= to]
            if not deadlines:
                break
            self.now = min(deadlines)
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
        self.now = to

    @staticmethod
    def events(ua: UserAgent) -> list[Event]:
        out = []
        while (ev := ua.next_event()) is not None:
            out.append(ev)
        return out


def offer(port: int = 20000) -> SessionDescription:
    return build_offer("127.0.0.1", port, session_id="111")


def answer_for(incoming: IncomingCall, port: int = 30000) -> SessionDescription:
    assert incoming.sdp is not None
    return answer_offer(SessionDescription.parse(incoming.sdp), "127.0.0.1", port, session_id="222")


def ok_for(invite: Request, tag: str, contact: str = "<sip:bob@127.0.0.1:5062>") -> Response:
    """A hand-built 200 to ``invite`` with a Contact and the answer to its offer."""
    ok = invite.create_response(200, to_tag=tag)
    ok.headers.add("Contact", contact)
    ok.headers.add("Content-Type", "application/sdp")
    ok.body = bytes(answer_offer(SessionDescription.parse(invite.body), "127.0.0.1", 30000, session_id="222"))
    return ok


def first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode()


def lines(log: list[tuple[str, bytes]]) -> list[str]:
    return [f"{src}: {first_line(data)}" for src, data in log]


def start_call(link: Link) -> tuple[str, IncomingCall]:
    handle = link.a.invite(link.bob, ALICE, offer(), link.now)
    link.pump()
    (incoming,) = [e for e in link.events(link.b) if isinstance(e, IncomingCall)]
    return handle, incoming


def connected(link: Link) -> tuple[str, IncomingCall]:
    handle, incoming = start_call(link)
    link.b.answer(incoming.call, answer_for(incoming), link.now)
    link.pump()
    link.events(link.a)
    link.events(link.b)
    link.log.clear()
    return handle, incoming
