"""Calls are found by dialog ID, not Call-ID alone (issue 7, SIP item 4): a spiral back to the same node, merged
requests (§8.2.2.2) and the early dialogs of a forked INVITE (§12.1.2, §13.2.2.4)."""

from __future__ import annotations

from callplane.core.ids import IdSource
from callplane.sip.events import (
    CallAnswered,
    CallCancelled,
    CallConfirmed,
    CallEnded,
    CallFailed,
    CallProgress,
    Event,
    IncomingCall,
)
from callplane.sip.message import Request, Response, parse_message
from callplane.sip.sdp import SessionDescription, answer_offer
from callplane.sip.transaction_events import Peer
from callplane.sip.ua import UserAgent
from tests.sip.uapair import ALICE, A, B, Link, first_line, offer, ok_for, parse

PROXY = Peer("UDP", "10.0.0.5", 5060)


class Spiral:
    """One UA whose requests all come back to it through a stateless proxy (which pushes its own Via with a branch
    derived from the request's, and pops it from responses): every call it places, it also receives."""

    def __init__(self) -> None:
        self.ua = UserAgent(IdSource(1), {"UDP": (A.host, A.port)})
        self.log: list[str] = []

    def pump(self) -> None:
        while out := self.ua.datagrams_to_send():
            for data, _ in out:
                msg = parse_message(data)
                self.log.append(first_line(data))
                if isinstance(msg, Request):
                    branch = f"{msg.via.branch}.p"
                    msg.headers.insert_first("Via", f"SIP/2.0/UDP {PROXY.host}:{PROXY.port};branch={branch}")
                    self.ua.receive_datagram(bytes(msg), PROXY, 0.0)
                else:
                    vias = msg.headers.get_all("via")
                    if vias and f"{PROXY.host}:{PROXY.port}" in vias[0]:
                        msg.headers.pop_first("via")
                    self.ua.receive_datagram(bytes(msg), PROXY, 0.0)

    def events(self) -> list[Event]:
        return Link.events(self.ua)

    def call_ourselves(self) -> tuple[str, IncomingCall]:
        """Place a call that the proxy routes back to us: (our outgoing handle, the incoming call), both ringing."""
        out = self.ua.invite(f"sip:bob@{A.host}:{A.port}", ALICE, offer(), 0.0)
        self.pump()
        (incoming,) = self.events()
        assert isinstance(incoming, IncomingCall)
        self.ua.ring(incoming.call, 0.0)
        self.pump()
        assert [type(e) for e in self.events()] == [CallProgress]
        return out, incoming


def test_a_call_spiralling_back_to_us_is_two_calls_with_one_call_id() -> None:
    node = Spiral()
    out, incoming = node.call_ourselves()
    inbound = incoming.call
    assert inbound != out and inbound.startswith(out + ";tag=")  # unique handles, one Call-ID
    assert node.ua.call(inbound).invite.call_id == node.ua.call(out).invite.call_id
    assert incoming.sdp is not None
    node.ua.answer(inbound, answer_offer(SessionDescription.parse(incoming.sdp), A.host, 30000, session_id="2"), 0.0)
    node.pump()
    answered, confirmed = node.events()
    assert isinstance(answered, CallAnswered) and answered.call == out and answered.media is not None
    assert confirmed == CallConfirmed(inbound, None)
    assert (node.ua.call(out).state, node.ua.call(inbound).state) == ("confirmed", "confirmed")
    node.ua.bye(out, 0.0)
    node.pump()
    assert node.events() == [CallEnded(inbound, "remote"), CallEnded(out, "local", 200, "OK")]
    assert node.ua._calls == {} and node.ua._by_call_id == {}


def test_cancelling_a_spiralled_call_cancels_our_own_incoming_leg() -> None:
    node = Spiral()
    out, incoming = node.call_ourselves()
    node.ua.cancel(out, 0.0)
    node.pump()
    assert node.events() == [CallCancelled(incoming.call), CallFailed(out, 487, "Request Terminated")]
    assert node.ua._calls == {}


def test_a_merged_invite_is_482_but_the_first_call_goes_on() -> None:
    link = Link()
    link.a.invite(link.bob, ALICE, offer(), 0.0)
    ((data, _),) = link.a.datagrams_to_send()
    link.b.receive_datagram(data, A, 0.0)
    (incoming,) = link.events(link.b)
    assert isinstance(incoming, IncomingCall)
    copy = parse(data)
    assert isinstance(copy, Request)
    copy.headers.insert_first("Via", "SIP/2.0/UDP 10.0.0.6:5060;branch=z9hG4bKother")  # reached us by a second path
    link.b.receive_datagram(bytes(copy), PROXY, 0.0)
    replies = [parse(d) for d, _ in link.b.datagrams_to_send()]
    assert [r.status for r in replies if isinstance(r, Response)] == [100, 482]  # the copy is refused at once
    assert link.events(link.b) == [] and link.b.call(incoming.call).state == "received"


def test_every_early_dialog_of_a_forked_invite_is_tracked() -> None:
    link = Link()
    handle = link.a.invite(link.bob, ALICE, offer(), 0.0)
    ((data, _),) = link.a.datagrams_to_send()
    invite = parse(data)
    assert isinstance(invite, Request)
    for tag in ("fork1", "fork2"):
        ringing = invite.create_response(180, to_tag=tag)
        ringing.headers.add("Contact", f"<sip:{tag}@{B.host}:{B.port}>")
        link.a.receive(ringing, B, 0.1)
    call = link.a.call(handle)
    assert call.early_tags == {"fork1", "fork2"}
    from_tag = invite.from_.tag
    assert link.a.find_dialog(invite.call_id, from_tag, "fork2") is call
    assert link.a.find_dialog(invite.call_id, from_tag, "fork3") is None
    # fork2 answers: its dialog is the call's; fork1's 2xx, even after the INVITE transaction ended, is ACKed + BYEd.
    link.a.receive(ok_for(invite, "fork2", f"<sip:fork2@{B.host}:{B.port}>"), B, 0.2)
    assert call.dialog is not None and call.dialog.id.remote_tag == "fork2"
    link.a.datagrams_to_send()
    link.advance(40.0)  # Timer M ends the INVITE client transaction
    link.a.datagrams_to_send()
    link.a.receive(ok_for(invite, "fork1", f"<sip:fork1@{B.host}:{B.port}>"), B, 40.0)
    assert [first_line(d) for d, _ in link.a.datagrams_to_send()] == [
        f"ACK sip:fork1@{B.host}:{B.port} SIP/2.0",
        f"BYE sip:fork1@{B.host}:{B.port} SIP/2.0",
    ]
    assert [type(e) for e in link.events(link.a)] == [CallProgress, CallProgress, CallAnswered]
    assert link.a.call(handle).state == "confirmed"


def test_a_request_with_the_right_call_id_but_another_tag_is_481() -> None:
    link = Link()
    handle = link.a.invite(link.bob, ALICE, offer(), 0.0)
    link.pump()
    (incoming,) = link.events(link.b)
    assert isinstance(incoming, IncomingCall) and incoming.sdp is not None
    link.b.answer(handle, answer_offer(SessionDescription.parse(incoming.sdp), B.host, 30000, session_id="2"), 0.0)
    link.pump()
    dialog = link.a.call(handle).dialog
    assert dialog is not None
    bye = dialog.create_request("BYE")
    bye.headers.set("From", str(bye.from_.with_tag("stranger")))
    link.a.tl.send_request(bye, B, link.now)
    link.pass_("a")
    (reply,) = [parse(d) for d, _ in link.b.datagrams_to_send()]
    assert isinstance(reply, Response) and reply.status == 481
    assert link.b.call(handle).state == "confirmed"
