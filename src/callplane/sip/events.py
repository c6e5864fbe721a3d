"""Events the SIP endpoint hands to the engine: frozen, slotted values, never live objects (style habit 7).

Every call event carries ``call``, the endpoint's handle for the call: an opaque string unique among the endpoint's
live calls. It is the Call-ID of the call's INVITE, except for a call received while another live call already uses
that Call-ID (our own INVITE spiralling back through a proxy), whose handle is ``<Call-ID>;tag=<our To tag>``.
Messages are matched to calls by dialog ID (Call-ID and both tags), never by Call-ID alone. Remote media is
a :class:`~callplane.sip.sdp.MediaDescription`; the raw SDP text rides along for logging and re-offers.
"""

from __future__ import annotations

from dataclasses import dataclass

from callplane.sip.headers import quick_init
from callplane.sip.message import Request
from callplane.sip.sdp import MediaDescription
from callplane.sip.transaction_events import Peer, TransactionKey

__all__ = [
    "CallAnswered",
    "CallCancelled",
    "CallConfirmed",
    "CallEnded",
    "CallFailed",
    "CallProgress",
    "DtmfReceived",
    "Event",
    "IncomingCall",
    "MediaUpdated",
    "RegisterReceived",
    "RegistrationFailed",
    "Registered",
    "ReinviteCancelled",
    "ReinviteFailed",
    "ReinviteReceived",
]


@quick_init
@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A new INVITE arrived and was answered 100 Trying (RFC 3261 §13.3.1). Reply with ring/answer/reject.

    ``headers`` holds the headers the engine may need beyond the typed fields, in order: Diversion, History-Info,
    P-Asserted-Identity, Remote-Party-ID, Referred-By, User-Agent and every ``X-`` header (``(name, value)`` pairs).
    ``media`` is None for an INVITE without an offer (we then offer in the 200 and get the answer in the ACK).
    """

    call: str
    request_uri: str
    from_uri: str
    from_display: str | None
    to_uri: str
    media: MediaDescription | None
    sdp: str | None
    headers: tuple[tuple[str, str], ...]
    source: tuple[str, int, str]


@quick_init
@dataclass(frozen=True, slots=True)
class CallProgress:
    """UAC: a provisional response (180/183...), with early media when it carried SDP."""

    call: str
    status: int
    reason: str
    media: MediaDescription | None


@quick_init
@dataclass(frozen=True, slots=True)
class CallAnswered:
    """UAC: the 2xx arrived and was ACKed; ``media`` is the peer's answer.

    ``needs_answer``: the INVITE had no offer (late offer), so ``media``/``sdp`` are the peer's *offer* and the ACK
    is not sent yet: the engine answers with ``UserAgent.ack(call, answer)`` (RFC 3261 §13.2.2.4, RFC 3264)."""

    call: str
    media: MediaDescription | None
    sdp: str | None
    headers: tuple[tuple[str, str], ...]
    needs_answer: bool = False


@quick_init
@dataclass(frozen=True, slots=True)
class CallConfirmed:
    """UAS: the ACK for our 2xx arrived; ``media`` is set when the ACK carried the answer to a late offer."""

    call: str
    media: MediaDescription | None


@quick_init
@dataclass(frozen=True, slots=True)
class CallFailed:
    """UAC: the INVITE ended without a dialog. ``status`` is the final response (408 for Timer B, 503 for a transport
    error, 487 after our CANCEL, 488 for an answer we could not use). ``no_answer`` is True when the ring timeout of
    ``UserAgent.invite`` expired (status 487, reason ``Ring Timeout``): Restcomm's ``no-answer``. ``headers`` are the
    response's Contact, Reason, Retry-After and ``X-`` headers, in order."""

    call: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    no_answer: bool = False


@quick_init
@dataclass(frozen=True, slots=True)
class CallCancelled:
    """UAS: the caller hung up before we answered. ``method`` is what it sent: ``"CANCEL"`` (we answered 200 to it
    and 487 to the INVITE, RFC 3261 §9.2) or ``"BYE"`` on the early dialog our 1xx made (200 to it and 487 to the
    INVITE, §15.1.2)."""

    call: str
    method: str = "CANCEL"


@quick_init
@dataclass(frozen=True, slots=True)
class CallEnded:
    """A confirmed call ended. ``by`` is ``"remote"`` (BYE received), ``"local"`` (our BYE) or ``"timeout"`` (no ACK
    for our 2xx within 64*T1, or no answer to an in-dialog request)."""

    call: str
    by: str
    status: int = 200
    reason: str = "OK"


@quick_init
@dataclass(frozen=True, slots=True)
class MediaUpdated:
    """The peer's media changed in a re-INVITE (either side's): hold (``media.held``), resume, new address."""

    call: str
    media: MediaDescription
    sdp: str


@quick_init
@dataclass(frozen=True, slots=True)
class ReinviteFailed:
    """Our re-INVITE got a non-2xx final (491, 488...); the call keeps its previous media."""

    call: str
    status: int
    reason: str


@quick_init
@dataclass(frozen=True, slots=True)
class ReinviteReceived:
    """The peer's re-INVITE, handed to the engine instead of being answered (a call with re-INVITE relay on, e.g. one
    leg of a bridge, RFC 3261 §14.2). ``sdp`` is the peer's offer (``media`` our reading of it, None if no codec of
    ours fits); both are None for an offerless re-INVITE, which needs our offer and brings the answer in the ACK
    (:class:`MediaUpdated`). Answer with ``UserAgent.answer_reinvite`` or ``reject_reinvite`` (488, 491...); until
    then the peer has only our 100 Trying. ``headers`` as in :class:`IncomingCall`."""

    call: str
    media: MediaDescription | None
    sdp: str | None
    headers: tuple[tuple[str, str], ...]


@quick_init
@dataclass(frozen=True, slots=True)
class ReinviteCancelled:
    """The peer CANCELed a re-INVITE we had not answered yet (we sent 200 to the CANCEL and 487 to the re-INVITE);
    the call goes on with its previous media."""

    call: str


@quick_init
@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """A digit in an in-dialog INFO (``application/dtmf-relay`` or ``application/dtmf``); duration in ms if given."""

    call: str
    digit: str
    duration: int | None


@quick_init
@dataclass(frozen=True, slots=True)
class RegisterReceived:
    """A REGISTER for our registrar (when the endpoint serves one). The engine runs
    :class:`~callplane.sip.registrar.Registrar` with its store lookups and answers with ``UserAgent.respond``.
    ``request`` is read-only."""

    transaction: TransactionKey
    request: Request
    source: Peer


@quick_init
@dataclass(frozen=True, slots=True)
class Registered:
    """REGISTER client: the registrar accepted us; ``expires`` is what it granted (0 after an unregister)."""

    registration: str
    expires: int


@quick_init
@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    """REGISTER client: a final failure (after at most one authentication round)."""

    registration: str
    status: int
    reason: str


Event = (
    IncomingCall
    | CallProgress
    | CallAnswered
    | CallConfirmed
    | CallFailed
    | CallCancelled
    | CallEnded
    | MediaUpdated
    | ReinviteFailed
    | ReinviteReceived
    | ReinviteCancelled
    | DtmfReceived
    | RegisterReceived
    | Registered
    | RegistrationFailed
)
