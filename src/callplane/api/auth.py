"""HTTP Basic authentication (AccountSid or email : AuthToken) and the account-tree access rule."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time

from fastapi import Request

from callplane.core.errors import ApiError
from callplane.core.secrets import unusable_hash, verify_token
from callplane.store import accounts
from callplane.store.accounts import AccountRecord
from callplane.store.db import Database

from .errors import AUTH_FAILED, forbidden, not_found

_CACHE_SECONDS = 300.0


class Authenticator:
    """Verifies credentials. PBKDF2 runs in a worker thread; a verified (sid, token, stored hash) is remembered briefly
    so a busy client costs one row read per request, not a key derivation."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._verified: dict[tuple[str, str, str], float] = {}
        self._unknown_user_hash = unusable_hash()

    async def authenticate(self, request: Request) -> AccountRecord:
        user, token = _credentials(request)
        account = await (accounts.get_by_email(self._db, user) if "@" in user else accounts.get(self._db, user))
        if account is None:
            # Cost the same as a wrong token: a quick 401 would tell who has an account here.
            await asyncio.to_thread(verify_token, token, self._unknown_user_hash)
        if account is None or not await self._check(account, token):
            raise ApiError(401, "Authentication failed: unknown AccountSid or wrong AuthToken", AUTH_FAILED)
        if account.status != "active":
            raise forbidden(f"Account {account.sid} is {account.status}")
        return account

    async def _check(self, account: AccountRecord, token: str) -> bool:
        key = (account.sid, hashlib.sha256(token.encode()).hexdigest(), account.auth_token_hash)
        now = time.monotonic()
        if self._verified.get(key, 0.0) > now:
            return True
        ok = await asyncio.to_thread(verify_token, token, account.auth_token_hash)
        if ok:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[key] = now + _CACHE_SECONDS
        return ok

    async def authorize(self, request: Request, account_sid: str) -> tuple[AccountRecord, AccountRecord]:
        """Authenticate, then resolve the URL's account: the caller may act on itself and its descendants only."""
        caller = await self.authenticate(request)
        if account_sid == caller.sid:
            return caller, caller
        target = await accounts.get(self._db, account_sid)
        if target is None:
            raise not_found(f"Account {account_sid} does not exist")
        if caller.sid not in await accounts.ancestors(self._db, target.sid):
            raise forbidden(f"Account {caller.sid} may not act on account {account_sid}")
        return caller, target


def _credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise ApiError(401, "Authentication required: HTTP Basic with AccountSid and AuthToken", AUTH_FAILED)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(401, "Malformed Basic credentials", AUTH_FAILED) from None
    user, sep, token = decoded.partition(":")
    if not sep or not user:
        raise ApiError(401, "Malformed Basic credentials", AUTH_FAILED)
    return user, token
