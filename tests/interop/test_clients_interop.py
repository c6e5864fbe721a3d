"""Clients made through the HTTP API of a real ``callplane serve`` register with real phones (issue 9).

The registrar checks the digest against the HA1s the API stored: SIPp and baresip register with the password given
to the API, a wrong password is challenged again, a disabled Client is refused, and deleting the Client drops the
phone's registration at once (``client:`` calls answer 404).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from callplane.store import registrations
from callplane.store.db import Database
from tests.interop import test_serve_calls
from tests.interop.conftest import need
from tests.interop.peers import LOOPBACK, PeerGroup
from tests.interop.test_serve_calls import ACCOUNT, TOKEN, Node

pytestmark = pytest.mark.interop
node = test_serve_calls.node  # a fresh `callplane serve` per test, with the administrator ACCOUNT/TOKEN

PASSWORD = "Strong-Pass-42"


@pytest.fixture
async def api(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    base = f"http://{LOOPBACK}:{node.http}/2012-04-24/Accounts/{ACCOUNT}"
    async with httpx.AsyncClient(base_url=base, auth=(ACCOUNT, TOKEN)) as client:
        yield client


@pytest.fixture
async def store(tmp_path: Path, node: Node) -> AsyncIterator[Database]:
    """The node's own database, read beside it (SQLite in WAL mode) to see its registrations."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'callplane.db'}")
    yield db
    await db.close()


def _sipp_register(peers: PeerGroup, node: Node, login: str, password: str) -> list[int | None]:
    """SIPp's REGISTER, digest, un-REGISTER as ``login``; the final status of each REGISTER it sent, in order (it
    stops at an unexpected one). A retransmission's repeated answer counts once."""
    run = peers.sipp(
        "uac_register", (LOOPBACK, node.sip), timeout=10.0, keys={"user": login}, extra=["-au", login, "-ap", password]
    )
    run.wait()
    answers = [(m.cseq, m.status) for m in run.messages(received=True) if m.status != 100]
    return [status for _, status in dict.fromkeys(answers)]


async def test_a_client_made_by_the_api_registers_and_deleting_it_drops_the_registration(
    node: Node, peers: PeerGroup, api: httpx.AsyncClient, store: Database
) -> None:
    need("sipp")
    need("baresip")
    made = await api.post("/Clients.json", data={"Login": "dave", "Password": PASSWORD})
    assert made.status_code == 200, made.text
    dave = made.json()

    # Digest with the API's password: challenged, then 200 (and 200 to the un-REGISTER).
    assert _sipp_register(peers, node, "dave", PASSWORD) == [401, 200, 200]
    # A wrong password is challenged again, and nothing is bound.
    assert _sipp_register(peers, node, "dave", "Wrong-Pass-42") == [401, 401]
    # A disabled Client is refused once it has shown credentials.
    erin = (await api.post("/Clients.json", data={"Login": "erin", "Password": PASSWORD, "Status": "0"})).json()
    assert _sipp_register(peers, node, "erin", PASSWORD) == [401, 403]
    enabled = await api.post(f"/Clients/{erin['sid']}.json", data={"Status": "1"})
    assert enabled.json()["status"] == 1
    assert _sipp_register(peers, node, "erin", PASSWORD) == [401, 200, 200]

    # A phone stays registered...
    phone = peers.baresip(f"<sip:dave@{LOOPBACK}:{node.sip}>;auth_pass={PASSWORD};regint=600;audio_codecs=PCMU")
    assert "[1 binding]" in phone.wait_registered(timeout=10.0)
    bound = await registrations.lookup_login(store, "dave", 0.0, account_sid=ACCOUNT)
    assert [b.contact for b in bound] and all(f":{phone.sip_port}" in b.contact for b in bound)

    # ...until its Client is deleted: the binding is gone at once, and client:dave is not registered.
    assert (await api.delete(f"/Clients/{dave['sid']}.json")).status_code == 204
    assert await registrations.lookup_login(store, "dave", 0.0, account_sid=ACCOUNT) == []
    call = await api.post(
        "/Calls.json", data={"From": "+15550001111", "To": "client:dave", "Url": "http://127.0.0.1:9/rcml"}
    )
    assert call.status_code == 404
    assert call.json()["message"] == "The client 'dave' is not registered"
