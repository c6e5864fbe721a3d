"""Clients as the registrar and the inbound-call authentication see them: the stored HA1s of ``store.clients``.

A Client whose HA1s were computed for another realm (the node's realm changed since its password was set) cannot be
checked, so it is treated as unknown (and a warning says why); so is a disabled Client, and a Client of a suspended
or closed account.
"""

from __future__ import annotations

import logging

from callplane.sip.registrar import Secret
from callplane.store import clients as store_clients
from callplane.store.clients import ClientRecord
from callplane.store.db import Database

__all__ = ["StoreClientSecrets", "secret_of"]

log = logging.getLogger("callplane.engine")


def secret_of(client: ClientRecord, realm: str) -> Secret | None:
    """What digest verification needs for ``client`` in ``realm``; None when it cannot authenticate there."""
    if not client.enabled:
        return None
    if client.realm != realm:
        log.warning(
            "client %r has a password for realm %r, not %r: set its password again", client.login, client.realm, realm
        )
        return None
    return Secret(ha1=(("MD5", client.ha1_md5), ("SHA-256", client.ha1_sha256)))


class StoreClientSecrets:
    """The registrar's :class:`~callplane.engine.sip_service.ClientSecrets`, backed by the Clients table."""

    def __init__(self, db: Database, realm: str) -> None:
        self.db = db
        self.realm = realm

    async def lookup(self, login: str) -> tuple[Secret | None, str]:
        found = await store_clients.with_account_status(self.db, login)
        if found is None:
            return None, ""
        client, account_status = found
        if account_status != "active":
            return None, client.account_sid  # a suspended or closed account's phones do not register
        return secret_of(client, self.realm), client.account_sid
