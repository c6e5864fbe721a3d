"""Clients' stored HA1s as the registrar sees them."""

from __future__ import annotations

from dataclasses import replace

from callplane.core.secrets import digest_ha1
from callplane.engine.clients import StoreClientSecrets, secret_of
from callplane.store import accounts, clients
from callplane.store.clients import ClientRecord
from tests.api.conftest import ADMIN_SID, T0, Api


def test_ha1_is_rfc_2617s_example() -> None:
    md5, sha256 = digest_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    assert md5 == "939e7578ed9e3c518a452acee763bce9"
    assert len(sha256) == 64 and sha256 != digest_ha1("Mufasa", "other", "Circle Of Life")[1]


def _alice(realm: str = "callplane") -> ClientRecord:
    md5, sha = digest_ha1("alice", realm, "wonderland-42")
    return ClientRecord("CL" + "1" * 32, ADMIN_SID, T0, T0, "Alice", "alice", realm, md5, sha)


def test_disabled_or_other_realm_cannot_authenticate() -> None:
    alice = _alice()
    secret = secret_of(alice, "callplane")
    assert (
        secret is not None and secret.ha1_for("md5") == alice.ha1_md5 and secret.ha1_for("SHA-256") == alice.ha1_sha256
    )
    assert secret_of(replace(alice, status=0), "callplane") is None
    assert secret_of(alice, "example.com") is None


async def test_store_backed_secrets(api: Api) -> None:
    await clients.add(api.db, _alice())
    secrets = StoreClientSecrets(api.db, "callplane")
    found, account = await secrets.lookup("alice")
    assert found is not None and found.ha1_for("MD5") == _alice().ha1_md5
    assert account == ADMIN_SID
    assert await secrets.lookup("bob") == (None, "")


async def test_a_suspended_or_closed_accounts_clients_cannot_register(api: Api) -> None:
    child = "AC" + "c" * 32
    await api.add_account(child, "child-token-0000000", parent=ADMIN_SID, status="suspended")
    await clients.add(api.db, replace(_alice(), account_sid=child))
    secrets = StoreClientSecrets(api.db, "callplane")
    assert await secrets.lookup("alice") == (None, child)
    await accounts.update(api.db, child, {"status": "active"})
    found, _ = await secrets.lookup("alice")
    assert found is not None
