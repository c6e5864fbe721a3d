"""Per-call state of the UA cores (RFC 3261 §13-15): one table for UAC and UAS calls.

Theory of operation
-------------------
A :class:`Call` is the UA's record of one INVITE session, keyed by the engine-facing handle (a string unique among
live calls: the Call-ID, see :meth:`~callplane.sip.uacore.UaCore.new_handle`); messages find it by dialog ID. Its
``state`` moves only through :meth:`Call.apply`, which looks the ``(state, event)`` pair up in :data:`TRANSITIONS`
and raises :class:`CallStateError` if the table has no entry: an API call that makes no sense in the current state
(``answer`` after ``reject``, ``bye`` on a ringing UAC call...) is a caller bug, never a silent no-op.

UAC::

    calling --provisional--> proceeding --success--> confirmed --bye_sent--> ending --bye_done--> ended
       |  cancel (remembered until the first 1xx, §9.1)    |         \\--bye_received--> ended
       |                     proceeding --cancel--> cancelling --failure (487)--> ended
       \\--failure (3xx-6xx, Timer B)--> ended              cancelling --success (2xx raced the CANCEL)--> ending

UAS::

    received --ring--> ringing --answer--> answered --ack--> confirmed
        \\--------answer--------------------/   \\--ack_timeout (64*T1, BYE sent)--> ending
    received|ringing --reject | cancelled--> ended

The record also carries what the cores need between messages: the INVITE and its transaction, the dialog, local and
remote SDP, the ACK we built for the 2xx (re-sent for every 2xx retransmission), a pending re-INVITE, and the realms
we already answered (so a second identical challenge fails the request instead of looping).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from callplane.core.errors import SipError
from callplane.sip.dialog import Dialog
from callplane.sip.digest import Credentials
from callplane.sip.message import Request
from callplane.sip.sdp import Direction, SessionDescription
from callplane.sip.transaction_events import Peer, TransactionKey

__all__ = ["Call", "CallStateError", "PendingReinvite", "TRANSITIONS"]

logger = logging.getLogger(__name__)


class CallStateError(SipError):
    """The requested action or event is not possible in the call's current state."""


TRANSITIONS: dict[tuple[str, str], str] = {
    # UAC
    ("calling", "provisional"): "proceeding",
    ("calling", "success"): "confirmed",
    ("calling", "failure"): "ended",
    ("calling", "cancel"): "calling",  # remembered: CANCEL goes out with the first 1xx (§9.1)
    ("proceeding", "provisional"): "proceeding",
    ("proceeding", "success"): "confirmed",
    ("proceeding", "failure"): "ended",
    ("proceeding", "cancel"): "cancelling",
    ("proceeding", "bye_sent"): "ending",  # a 2xx whose answer we cannot use: ACK, then BYE
    ("cancelling", "provisional"): "cancelling",
    ("cancelling", "cancel"): "cancelling",
    ("cancelling", "failure"): "ended",
    ("cancelling", "success"): "ending",  # the 2xx crossed our CANCEL: ACK it, then BYE (§9.1)
    ("calling", "challenged"): "calling",  # 401/407 answered with a new INVITE
    ("proceeding", "challenged"): "calling",  # the new INVITE has had no provisional yet
    # UAS
    ("received", "ring"): "ringing",
    ("received", "answer"): "answered",
    ("received", "reject"): "ended",
    ("received", "cancelled"): "ended",
    ("ringing", "ring"): "ringing",
    ("ringing", "answer"): "answered",
    ("ringing", "reject"): "ended",
    ("ringing", "cancelled"): "ended",
    ("answered", "ack"): "confirmed",
    ("answered", "ack_timeout"): "ending",
    ("answered", "bye_received"): "ended",
    # both
    ("calling", "bye_sent"): "ending",  # a 2xx to an INVITE we wanted to cancel: ACK, then BYE
    ("confirmed", "success"): "confirmed",  # 2xx retransmission: ACK again
    ("confirmed", "ack"): "confirmed",  # ACK retransmission or ACK of a re-INVITE's 2xx
    ("confirmed", "bye_sent"): "ending",
    ("confirmed", "bye_received"): "ended",
    ("confirmed", "ack_timeout"): "ending",
    ("ending", "success"): "ending",
    ("ending", "ack"): "ending",
    ("ending", "bye_received"): "ending",  # BYEs crossed: answer theirs, wait for ours
    ("ending", "bye_done"): "ended",
}


@dataclass(slots=True)
class PendingReinvite:
    """A re-INVITE in flight. ``outgoing``: ours (key of the client transaction); else the peer's (server key)."""

    outgoing: bool
    key: TransactionKey
    request: Request
    offer: SessionDescription | None  # what was offered (ours if outgoing; theirs if incoming, None if offerless)
    answered: bool = False  # incoming: our 2xx went out, waiting for its ACK


@dataclass(slots=True)
class Call:
    """One INVITE session as the UA core sees it; see the module docstring."""

    handle: str
    role: str  # "uac" or "uas"
    state: str
    invite: Request
    invite_key: TransactionKey
    peer: Peer  # where requests outside the dialog go (UAC) / where the INVITE came from (UAS)
    dialog: Dialog | None = None
    early_tags: set[str] = field(default_factory=set)  # UAC: the To tag of every early dialog of the INVITE (forks)
    local_tag: str | None = None
    local_sdp: SessionDescription | None = None
    remote_sdp: SessionDescription | None = None
    direction: Direction = "sendrecv"  # what we want for our side: "sendonly" while we hold the peer
    ack: Request | None = None  # the ACK for the 2xx, re-sent on each retransmission (§13.2.2.4)
    ack_peer: Peer | None = None
    cancel_pending: bool = False
    bye_pending: bool = False  # UAS: hang up as soon as the 2xx is ACKed (§15)
    answer_due: bool = False  # UAC, late offer: the 2xx offered; its ACK waits for the engine's answer (§13.2.2.4)
    reinvite: PendingReinvite | None = None
    relay_reinvites: bool | None = None  # the peer's re-INVITEs go to the engine (None: the UA-wide setting)
    answered_realms: set[str] = field(default_factory=set)
    glare_offer: SessionDescription | None = None  # our re-INVITE offer that got 491, sent again by a timer (§14.1)
    glare_retries: int = 0
    auth_headers: tuple[tuple[str, str], ...] = ()  # credentials of the INVITE, repeated in its ACK (§13.2.2.4)
    credentials: Credentials | None = None  # per-call credentials for outbound authentication
    keys: list[TransactionKey] = field(default_factory=list)  # our client transactions, forgotten with the call
    ended_emitted: bool = False  # the engine already got the call's last event

    def apply(self, event: str) -> str:
        """Move along :data:`TRANSITIONS`; raise :class:`CallStateError` when the pair is not in the table."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise CallStateError(f"call {self.handle}: {event} not allowed in state {self.state}")
        if new != self.state and logger.isEnabledFor(logging.DEBUG):
            logger.debug("[%s] %s -> %s (%s)", self.handle, self.state, new, event)
        self.state = new
        return new

    def can(self, event: str) -> bool:
        return (self.state, event) in TRANSITIONS
