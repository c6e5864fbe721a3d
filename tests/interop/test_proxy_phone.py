"""callplane behind kamailio (Record-Route proxy) and with baresip (a real softphone), issue 3 "Checked by".

kamailio relays initial requests by Request-URI user (``app*`` to callplane, ``sipp*`` to a SIPp UAS) and adds
Record-Route; its script logs every relay, so a test can assert that ACK and BYE crossed the proxy rather than
going straight to the peer. baresip registers to callplane's registrar with digest auth, is called through that
registration, and calls in.
"""

from __future__ import annotations

import asyncio

import pytest

from callplane.sip.events import CallAnswered, CallConfirmed, CallEnded, IncomingCall
from tests.interop.conftest import need
from tests.interop.peers import LOOPBACK, KamailioRun, PeerGroup, SippRun
from tests.interop.uadriver import RegistrarApp, UaDriver, answer_sdp, offer_sdp

pytestmark = pytest.mark.interop

CROSSED = [("initial", "INVITE"), ("in-dialog", "ACK"), ("in-dialog", "BYE")]


async def finished(run: SippRun, timeout: float = 15.0) -> None:
    rc = await asyncio.to_thread(run.wait, timeout)
    assert rc == 0, run.report()
    stats = run.stats()
    assert (stats.successful, stats.failed) == (1, 0), run.report()


def crossed(proxy: KamailioRun) -> list[tuple[str, str]]:
    return [(kind, method) for kind, method, _ in proxy.relays()]


# kamailio: SIPp -> kamailio -> callplane UAS ----------------------------------------------------------------------


@pytest.mark.parametrize("hangup", ["caller", "callee"])
async def test_uas_behind_record_route_proxy(peers: PeerGroup, hangup: str) -> None:
    need("sipp", "kamailio")
    async with UaDriver() as drv:
        proxy = peers.kamailio(app=(LOOPBACK, drv.port))
        scenario = "uac_basic" if hangup == "caller" else "uac_wait_bye"
        run = peers.sipp(scenario, proxy.address, service="app")
        incoming = await drv.expect(IncomingCall)
        drv.act(drv.ua.answer, incoming.call, answer_sdp(drv, incoming))
        await drv.expect(CallConfirmed)
        if hangup == "callee":
            drv.act(drv.ua.bye, incoming.call)
        ended = await drv.expect(CallEnded)
        assert ended.by == ("remote" if hangup == "caller" else "local")
        await finished(run)
    assert crossed(proxy) == CROSSED
    # The UAS copied the Record-Route into its 2xx (§12.1.1), which is how the caller learnt the route set.
    ok = next(m for m in run.messages(received=True) if m.status == 200 and m.method == "INVITE")
    assert ok.header("Record-Route") == f"<sip:{LOOPBACK}:{proxy.port};lr;ftag={run.messages()[0].from_tag}>"
    if hangup == "callee":
        bye = run.messages(received=True)[-1]
        assert bye.method == "BYE" and len(bye.headers("Via")) == 2  # it came through the proxy


# kamailio: callplane UAC -> kamailio -> SIPp ----------------------------------------------------------------------


@pytest.mark.parametrize("hangup", ["caller", "callee"])
async def test_uac_through_record_route_proxy(peers: PeerGroup, hangup: str) -> None:
    need("sipp", "kamailio")
    uas = peers.sipp("uas_answer" if hangup == "caller" else "uas_answer_bye")
    proxy = peers.kamailio(sipp=(LOOPBACK, uas.port))
    async with UaDriver() as drv:
        target = f"sip:sipp@{LOOPBACK}:{proxy.port}"
        handle = drv.act(drv.ua.invite, target, f"sip:alice@{LOOPBACK}", offer_sdp(drv))
        await drv.wait_for(CallAnswered)
        if hangup == "caller":
            drv.act(drv.ua.bye, handle)
        ended = await drv.wait_for(CallEnded)
        assert ended.by == ("local" if hangup == "caller" else "remote")
    await finished(uas)
    assert crossed(proxy) == CROSSED
    received = uas.messages(received=True)
    ack = next(m for m in received if m.method == "ACK")
    # Loose routing (§12.2.1.1): the Request-URI is the callee's Contact and the proxy sits in Route; the proxy
    # consumed its own Route entry, so the ACK arrives with its Via stacked on ours.
    assert ack.request_uri == f"sip:{LOOPBACK}:{uas.port};transport=UDP"
    assert len(ack.headers("Via")) == 2
    if hangup == "caller":
        bye = received[-1]
        assert bye.method == "BYE" and len(bye.headers("Via")) == 2


async def test_call_spiralling_through_kamailio_back_to_the_same_node(peers: PeerGroup) -> None:
    """Our INVITE to sip:app@proxy is routed by kamailio back to us (issue 7, SIP item 4): one Call-ID, two calls
    told apart by their tags; ACK and BYE cross the proxy and reach the right one."""
    need("kamailio")
    async with UaDriver() as drv:
        proxy = peers.kamailio(app=(LOOPBACK, drv.port))
        out = drv.act(drv.ua.invite, f"sip:app@{LOOPBACK}:{proxy.port}", f"sip:alice@{LOOPBACK}", offer_sdp(drv))
        incoming = await drv.wait_for(IncomingCall)
        assert incoming.call != out and incoming.call.startswith(out + ";tag=")
        drv.act(drv.ua.answer, incoming.call, answer_sdp(drv, incoming))
        answered = await drv.wait_for(CallAnswered)
        confirmed = await drv.wait_for(CallConfirmed)
        assert (answered.call, confirmed.call) == (out, incoming.call)
        drv.act(drv.ua.bye, out)
        async with asyncio.timeout(5):
            while len([e for e in drv.events if isinstance(e, CallEnded)]) < 2:
                await asyncio.sleep(0.02)
        ended = {e.call: e.by for e in drv.events if isinstance(e, CallEnded)}
        assert ended == {out: "local", incoming.call: "remote"}
    assert crossed(proxy) == CROSSED


async def test_uac_calls_a_phone_registered_at_kamailio(peers: PeerGroup) -> None:
    """callplane -> kamailio (location lookup) -> baresip: the proxy retargets the Request-URI to the binding."""
    need("kamailio", "baresip")
    proxy = peers.kamailio()
    phone = peers.baresip(
        f"<sip:bob@{LOOPBACK}:{proxy.port}>;auth_pass=secret;regint=600;answermode=auto;audio_codecs=PCMU"
    )
    await asyncio.to_thread(phone.wait_registered)
    async with UaDriver() as drv:
        handle = drv.act(drv.ua.invite, f"sip:bob@{LOOPBACK}:{proxy.port}", f"sip:app@{LOOPBACK}", offer_sdp(drv))
        await drv.wait_for(CallAnswered)
        drv.act(drv.ua.bye, handle)
        assert (await drv.wait_for(CallEnded)).by == "local"
    assert crossed(proxy) == CROSSED
    # kamailio forwards with several worker processes, so the ACK and the BYE we sent back to back may reach
    # baresip in either order, and the later one may still be on its way when our side has finished.
    async with asyncio.timeout(5):
        while len(requests := [m for m in phone.messages() if m.direction == "received" and m.is_request]) < 3:
            await asyncio.sleep(0.05)
    assert requests[0].method == "INVITE" and sorted(m.method for m in requests[1:]) == ["ACK", "BYE"]
    assert requests[0].request_uri.startswith("sip:bob-")  # retargeted to baresip's registered Contact


# registrar ----------------------------------------------------------------------------------------------------------


async def test_sipp_registers_and_unregisters(peers: PeerGroup) -> None:
    need("sipp")
    async with UaDriver(accept_register=True) as drv:
        app = RegistrarApp(drv, {"alice": "secret"}, algorithms=("MD5",))
        run = peers.sipp("uac_register", (LOOPBACK, drv.port))
        assert await asyncio.to_thread(run.wait) == 0, run.report()
        assert [o.response.status for o in app.outcomes] == [401, 200, 200]
        bound = app.outcomes[1].bindings
        assert [b.contact for b in bound] == [f"sip:alice@{LOOPBACK}:{run.port}"]
        assert app.contacts(f"sip:alice@{LOOPBACK}") == []  # Expires: 0 removed it
    challenge = run.messages(received=True)[0]
    assert (challenge.header("WWW-Authenticate") or "").startswith('Digest realm="callplane.test"')


async def test_sipp_cannot_answer_a_sha256_first_challenge(peers: PeerGroup) -> None:
    """Why the node challenges with MD5 alone by default (CALLPLANE_SIP_DIGEST): SIPp 3.6.1 computes only MD5 and
    gives up when the first challenge is SHA-256 (RFC 8760 order); baresip 1.0 fails on any SHA-256 challenge."""
    need("sipp")
    async with UaDriver(accept_register=True) as drv:
        app = RegistrarApp(drv, {"alice": "secret"}, algorithms=("SHA-256", "MD5"))
        run = peers.sipp("uac_register", (LOOPBACK, drv.port), timeout=3.0)
        assert await asyncio.to_thread(run.wait) != 0
        assert [o.response.status for o in app.outcomes] == [401]  # no second REGISTER ever came
    challenges = run.messages(received=True)[0].headers("WWW-Authenticate")
    assert [c.split("algorithm=")[1].split(",")[0].strip('"') for c in challenges] == ["SHA-256", "MD5"]


# baresip ------------------------------------------------------------------------------------------------------------


def account(drv: UaDriver, user: str = "alice", **params: str) -> str:
    extra = "".join(f";{k}={v}" for k, v in params.items())
    return f"<sip:{user}@{LOOPBACK}:{drv.port}>;audio_codecs=PCMU;answermode=auto{extra}"


async def test_baresip_registers_with_digest_and_is_called(peers: PeerGroup) -> None:
    need("baresip")
    async with UaDriver(accept_register=True) as drv:
        # baresip 1.0 aborts on any challenge it cannot compute, so this registrar offers MD5 only.
        app = RegistrarApp(drv, {"alice": "secret"}, algorithms=("MD5",))
        phone = peers.baresip(account(drv, auth_pass="secret", regint="600"), audio_seconds=5.0)
        await asyncio.to_thread(phone.wait_registered)
        assert [o.response.status for o in app.outcomes] == [401, 200]
        (contact,) = app.contacts(f"sip:alice@{LOOPBACK}")
        assert contact.endswith(f"@{LOOPBACK}:{phone.sip_port}")

        handle = drv.act(drv.ua.invite, contact, f"sip:app@{LOOPBACK}", offer_sdp(drv), to_uri=f"sip:alice@{LOOPBACK}")
        answered = await drv.wait_for(CallAnswered)
        assert answered.media is not None and answered.media.codec == "PCMU"
        await asyncio.sleep(0.5)
        drv.act(drv.ua.bye, handle)
        ended = await drv.wait_for(CallEnded)
        assert (ended.by, ended.status) == ("local", 200)
        await asyncio.to_thread(phone.peer.wait_output, r"session closed|terminated", 5.0)
    requests = [m for m in phone.messages() if m.direction == "received" and m.is_request]
    assert [m.method for m in requests] == ["INVITE", "ACK", "BYE"]
    assert requests[0].request_uri == contact


async def test_baresip_with_wrong_password_is_refused(peers: PeerGroup) -> None:
    need("baresip")
    async with UaDriver(accept_register=True) as drv:
        app = RegistrarApp(drv, {"alice": "secret"}, algorithms=("MD5",))
        phone = peers.baresip(account(drv, auth_pass="guess", regint="600"))
        await asyncio.to_thread(phone.peer.wait_output, r"reg: sip:alice@\S+: 40[13] ", 10.0)
        assert app.outcomes and app.outcomes[-1].response.status in (401, 403)
        assert app.contacts(f"sip:alice@{LOOPBACK}") == []


async def test_baresip_calls_in(peers: PeerGroup) -> None:
    need("baresip")
    async with UaDriver() as drv:
        phone = peers.baresip(account(drv, user="bob", regint="0"), audio_seconds=2.0)
        phone.control.command("dial", f"sip:app@{LOOPBACK}:{drv.port}")
        incoming = await drv.expect(IncomingCall)
        assert incoming.from_uri == f"sip:bob@{LOOPBACK}:{drv.port}"
        assert incoming.media is not None and incoming.media.codec == "PCMU"
        drv.act(drv.ua.ring, incoming.call)
        drv.act(drv.ua.answer, incoming.call, answer_sdp(drv, incoming))
        await drv.expect(CallConfirmed)
        # The 2 s tone ends and baresip hangs up.
        ended = await drv.expect(CallEnded, timeout=10)
        assert ended.by == "remote"
    sent = [m for m in phone.messages() if m.direction == "sent" and m.is_request]
    assert [m.method for m in sent] == ["INVITE", "ACK", "BYE"]
    responses = [m.status for m in phone.messages() if m.direction == "received" and not m.is_request]
    assert 180 in responses and responses[-1] == 200
