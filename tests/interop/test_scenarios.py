"""The interop scenarios checked against real peers only (SIPp against SIPp, kamailio, baresip).

These tests prove the oracle before it judges callplane: each scenario under ``scenarios/`` passes against a known
good counterpart, so a failure in the callplane tests points at callplane and not at the scenario.
"""

from __future__ import annotations

import pytest

from tests.interop.conftest import need
from tests.interop.peers import LOOPBACK, PeerGroup, SippRun, digest_response, parse_digest

pytestmark = pytest.mark.interop


def pair(peers: PeerGroup, uas: str, uac: str, uac_extra: tuple[str, ...] = ()) -> tuple[SippRun, SippRun]:
    need("sipp")
    server = peers.sipp(uas)
    client = peers.sipp(uac, (LOOPBACK, server.port), service="svc", extra=uac_extra)
    assert client.wait() == 0, client.report()
    assert server.wait() == 0, server.report()
    for run in (client, server):
        stats = run.stats()
        assert (stats.successful, stats.failed) == (1, 0), run.report()
    return server, client


def received(run: SippRun) -> list[str]:
    return [f"{m.method} {m.status or ''}".strip() for m in run.messages(received=True)]


def test_answer_caller_hangs_up(peers: PeerGroup) -> None:
    server, _ = pair(peers, "uas_answer", "uac_basic")
    assert received(server) == ["INVITE", "ACK", "BYE"]


def test_answer_callee_hangs_up(peers: PeerGroup) -> None:
    server, client = pair(peers, "uas_answer_bye", "uac_wait_bye")
    assert received(server) == ["INVITE", "ACK", "BYE 200"]
    assert received(client)[-1] == "BYE"


def test_busy_needs_ack(peers: PeerGroup) -> None:
    server, client = pair(peers, "uas_busy", "uac_busy")
    assert received(server) == ["INVITE", "ACK"]
    ack = server.messages(received=True)[1]
    assert ack.branch == server.messages(received=True)[0].branch


def test_late_offer_needs_the_answer_in_the_ack(peers: PeerGroup) -> None:
    server, _ = pair(peers, "uas_late_offer", "media_uac_late_offer")
    invite, ack, _bye = server.messages(received=True)
    assert invite.body.strip() == "" and "m=audio" in ack.body


def test_late_offer_scenario_fails_an_early_offer_and_a_bodyless_ack(peers: PeerGroup) -> None:
    """uac_basic offers in the INVITE and ACKs without a body: uas_late_offer must refuse that call."""
    need("sipp")
    server = peers.sipp("uas_late_offer")
    client = peers.sipp("uac_basic", (LOOPBACK, server.port), service="svc")
    client.wait()
    server.wait()
    assert server.stats().failed == 1, server.report()


def test_glare_491_then_the_reinvite_again(peers: PeerGroup) -> None:
    server, client = pair(peers, "uas_glare", "uac_glare")
    assert received(server) == ["INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "BYE"]
    assert received(client) == ["INVITE 200", "INVITE 491", "INVITE 200", "BYE 200"]


def test_challenged_reinvite_and_its_ack_carry_credentials(peers: PeerGroup) -> None:
    server, client = pair(peers, "uas_reinvite_auth", "uac_reinvite_auth")
    assert received(server) == ["INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "BYE"]
    assert received(client) == ["INVITE 200", "INVITE 407", "INVITE 200", "BYE 200"]


def test_cancel_while_ringing(peers: PeerGroup) -> None:
    server, client = pair(peers, "uas_cancel", "uac_cancel")
    assert received(server) == ["INVITE", "CANCEL", "ACK"]
    assert received(client) == ["INVITE 180", "CANCEL 200", "INVITE 487"]


def test_bye_on_the_early_dialog(peers: PeerGroup) -> None:
    server, client = pair(peers, "uas_early_bye", "uac_early_bye")
    assert received(server) == ["INVITE", "BYE", "ACK"]
    assert received(client) == ["INVITE 180", "BYE 200", "INVITE 487"]
    invite, bye, ack = server.messages(received=True)
    assert bye.to_tag is not None and bye.request_uri.startswith("sip:")  # in the early dialog, to its Contact
    assert ack.branch == invite.branch  # the 487 is ACKed in the INVITE transaction


@pytest.mark.parametrize("uas", ["uas_auth401", "uas_auth407"])
def test_digest_challenge(peers: PeerGroup, uas: str) -> None:
    server, _ = pair(peers, uas, "uac_auth")
    invites = [m for m in server.messages(received=True) if m.method == "INVITE"]
    assert len(invites) == 2
    header = "Authorization" if uas == "uas_auth401" else "Proxy-Authorization"
    credentials = invites[1].header(header)
    assert credentials is not None
    params = parse_digest(credentials)
    assert params["response"] == digest_response(params, "INVITE", "secret")
    assert params["response"] != digest_response(params, "INVITE", "wrong")


def test_cancel_waits_for_late_ringing(peers: PeerGroup) -> None:
    server, _ = pair(peers, "uas_cancel_late_ring", "uac_cancel")
    assert received(server)[-2:] == ["CANCEL", "ACK"]


def test_invite_copy_after_200(peers: PeerGroup) -> None:
    server, _ = pair(peers, "uas_copy_after_200", "uac_invite_after_200")
    assert received(server) == ["INVITE", "INVITE", "ACK", "BYE"]


def test_silent_uas_logs_every_retransmission(peers: PeerGroup) -> None:
    need("sipp")
    server = peers.sipp("uas_silent", extra=["-d", "1700"])
    client = peers.sipp("uac_basic", (LOOPBACK, server.port), service="svc", timeout=3.0)
    assert server.wait() == 0, server.report()
    client.wait()
    # SIPp's UAC retransmits at 0.5 s and 1.5 s; the silent UAS logs all three copies.
    assert received(server) == ["INVITE", "INVITE", "INVITE"]


def test_late_answer_needs_three_invites(peers: PeerGroup) -> None:
    server, _ = pair(peers, "uas_late", "uac_basic")
    invites = [m for m in server.messages(received=True) if m.method == "INVITE"]
    assert len(invites) == 3
    assert len({m.branch for m in invites}) == 1


def test_200_retransmissions_each_acked(peers: PeerGroup) -> None:
    server, _ = pair(peers, "uas_200_retrans", "uac_basic", ("-d", "1500"))
    assert received(server) == ["INVITE", "ACK", "ACK", "ACK", "BYE"]


def test_invite_copies_get_one_dialog(peers: PeerGroup) -> None:
    server, client = pair(peers, "uas_answer", "uac_invite_retrans")
    assert received(server)[:3] == ["INVITE", "INVITE", "INVITE"]
    tags = {m.to_tag for m in client.messages(received=True) if m.method == "INVITE"}
    assert len(tags) == 1


def test_hold_resume_info_and_unknown_method(peers: PeerGroup) -> None:
    server, _ = pair(peers, "uas_held", "uac_hold")
    assert received(server) == ["INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "INFO", "FOO", "BYE"]


def test_kamailio_routes_both_ways(peers: PeerGroup) -> None:
    """SIPp UAC -> kamailio -> SIPp UAS, and back for the callee's BYE: in-dialog requests cross the proxy."""
    need("sipp", "kamailio")
    server = peers.sipp("uas_answer")
    proxy = peers.kamailio(app=(LOOPBACK, server.port))
    client = peers.sipp("uac_basic", proxy.address, service="app")
    assert client.wait() == 0, client.report()
    assert server.wait() == 0, server.report()
    invite = server.messages(received=True)[0]
    assert invite.header("Record-Route") is not None
    assert [(k, m) for k, m, _ in proxy.relays()] == [("initial", "INVITE"), ("in-dialog", "ACK"), ("in-dialog", "BYE")]

    server = peers.sipp("uas_answer_bye")
    proxy = peers.kamailio(sipp=(LOOPBACK, server.port))
    client = peers.sipp("uac_wait_bye", proxy.address, service="sipp")
    assert client.wait() == 0, client.report()
    assert server.wait() == 0, server.report()
    assert [(k, m) for k, m, _ in proxy.relays()] == [("initial", "INVITE"), ("in-dialog", "ACK"), ("in-dialog", "BYE")]


def test_register_garbage_and_not_found_against_kamailio(peers: PeerGroup) -> None:
    need("sipp", "kamailio")
    proxy = peers.kamailio()
    lost = peers.sipp("uac_not_found", proxy.address, service="nobody")
    assert lost.wait() == 0, lost.report()
    assert [m.status for m in lost.messages(received=True)] == [404, 404]
    reg = peers.sipp("uac_register", proxy.address)
    assert reg.wait() == 0, reg.report()
    junk = peers.sipp("uac_garbage", proxy.address, service="ping")
    assert junk.wait() == 0, junk.report()
    assert junk.stats().successful == 1


def test_baresip_registers_and_answers_through_kamailio(peers: PeerGroup) -> None:
    need("sipp", "kamailio", "baresip")
    proxy = peers.kamailio()
    phone = peers.baresip(
        f"<sip:bob@{LOOPBACK}:{proxy.port}>;auth_pass=secret;regint=600;answermode=auto;audio_codecs=PCMU"
    )
    phone.wait_registered()
    client = peers.sipp("uac_basic", proxy.address, service="bob", extra=["-d", "1000"])
    assert client.wait() == 0, client.report()
    assert [m.start_line.split()[0] for m in phone.messages() if m.direction == "received" and m.is_request][-3:] == [
        "INVITE",
        "ACK",
        "BYE",
    ]


def test_baresip_dials_out(peers: PeerGroup) -> None:
    need("sipp", "baresip")
    server = peers.sipp("uas_answer")
    phone = peers.baresip(f"<sip:carol@{LOOPBACK}>;regint=0;audio_codecs=PCMU", audio_seconds=2.0)
    phone.control.command("dial", f"sip:svc@{LOOPBACK}:{server.port}")
    phone.control.wait_event("CALL_ESTABLISHED")
    # The 2 s tone ends and baresip hangs up on its own.
    assert server.wait(timeout=15) == 0, server.report()
    assert received(server) == ["INVITE", "ACK", "BYE"]


def test_inbound_caller_sends_its_headers_and_takes_the_callees_bye(peers: PeerGroup) -> None:
    server, client = pair(peers, "uas_answer_bye", "uac_inbound")
    invite = server.messages(received=True)[0]
    assert (invite.header("From") or "").startswith('"Alice Smith" <sip:+15550001111@')
    assert invite.header("X-My-Custom-Header") == "My Custom Value"
    assert len(invite.headers("Diversion")) == 2 and invite.header("History-Info") is not None
    assert received(client)[-1] == "BYE"


@pytest.mark.parametrize(("uas", "status"), [("uas_busy", 486), ("uas_reject", 404)])
def test_inbound_refused_caller_acks_in_the_invite_transaction(peers: PeerGroup, uas: str, status: int) -> None:
    server, client = pair(peers, uas, "uac_inbound_refused")
    assert received(client)[-1] == f"INVITE {status}"
    ack = server.messages(received=True)[-1]
    assert ack.method == "ACK" and ack.branch == server.messages(received=True)[0].branch


def test_inbound_refused_caller_fails_on_a_200(peers: PeerGroup) -> None:
    need("sipp")
    server = peers.sipp("uas_answer")
    client = peers.sipp("uac_inbound_refused", (LOOPBACK, server.port), service="svc")
    assert client.wait() != 0


def test_early_media_then_busy(peers: PeerGroup) -> None:
    server, client = pair(peers, "uas_early_media", "uac_busy")
    assert received(server) == ["INVITE", "ACK"]
    assert received(client) == ["INVITE 183", "INVITE 486"]


def test_star_after_the_answer(peers: PeerGroup) -> None:
    server, _ = pair(peers, "media_uas_star", "uac_basic", ("-d", "4500"))
    assert received(server) == ["INVITE", "ACK", "BYE"]
