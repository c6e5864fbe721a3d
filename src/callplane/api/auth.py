"""HTTP Basic authentication (AccountSid or email : AuthToken) and the account-tree access rule."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time

from fastapi import Request

from callplane.core.clock import Clock, SystemClock
from callplane.core.errors import ApiError
from callplane.core.secrets import unusable_hash, verify_token
from callplane.store import accounts
from callplane.store.accounts import AccountRecord
from callplane.store.db import Database

from .errors import AUTH_FAILED, forbidden, not_found

_CACHE_SECONDS = 300.0
ACCOUNT_SECONDS = 1.0  # how long an account row read for authentication is reused (docs/api.md)
_MAX_ENTRIES = 10_000


class Authenticator:
    """Verifies credentials. PBKDF2 runs in a worker thread; a verified (sid, token, stored hash) is remembered briefly
    so a busy client costs no key derivation per request.

    The account row behind a sid or email is reused for :data:`ACCOUNT_SECONDS` (a busy client costs one row read a
    second, not one per request). So a change made elsewhere (another node or process, the CLI) takes effect here
    within that bound; one made through this API (:meth:`forget`) at once. A token that fails against a reused row is
    checked again against a fresh one, so a token rotated elsewhere works at once."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._db = db
        self._clock = clock or SystemClock()
        self._verified: dict[tuple[str, str, str], float] = {}
        self._accounts: dict[str, tuple[float, AccountRecord]] = {}
        self._unknown_user_hash = unusable_hash()

    def forget(self) -> None:
        """Accounts changed: read them afresh."""
        self._accounts.clear()

    async def _account(self, user: str) -> tuple[AccountRecord | None, bool]:
        """The account named by ``user`` (sid or email), and whether the row was reused."""
        now = self._clock.monotonic()
        kept = self._accounts.get(user)
        if kept is not None and kept[0] > now:
            return kept[1], True
        account = await (accounts.get_by_email(self._db, user) if "@" in user else accounts.get(self._db, user))
        if account is None:
            self._accounts.pop(user, None)
        else:
            if len(self._accounts) >= _MAX_ENTRIES:
                self._accounts.clear()
            self._accounts[user] = (now + ACCOUNT_SECONDS, account)
        return account, False

    async def authenticate(self, request: Request) -> AccountRecord:
        user, token = _credentials(request)
        account, reused = await self._account(user)
        if account is None:
            # Cost the same as a wrong token: a quick 401 would tell who has an account here.
            await asyncio.to_thread(verify_token, token, self._unknown_user_hash)
        ok = account is not None and await self._check(account, token)
        if account is not None and not ok and reused:
            self._accounts.pop(user, None)
            fresh, _ = await self._account(user)
            if fresh is not None and fresh.auth_token_hash != account.auth_token_hash:
                account, ok = fresh, await self._check(fresh, token)
        if account is None or not ok:
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
