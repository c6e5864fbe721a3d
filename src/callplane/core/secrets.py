"""Hashing of auth tokens. Tokens are stored as salted PBKDF2-SHA256, never in clear and never as MD5."""

from __future__ import annotations

import hashlib
import hmac
import secrets

_ITERATIONS = 120_000


def hash_token(token: str, *, iterations: int = _ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", token.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_token(token: str, stored: str) -> bool:
    """Constant-time check of ``token`` against a value made by :func:`hash_token`. CPU-heavy: call off the loop."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", token.encode(), bytes.fromhex(salt), int(iterations))
    return hmac.compare_digest(candidate.hex(), digest)


def unusable_hash() -> str:
    """A value in :func:`hash_token`'s form that no token matches, costing a full check: for unknown users, so a
    refusal takes as long whether or not the account exists."""
    return f"pbkdf2_sha256${_ITERATIONS}${secrets.token_hex(16)}${'0' * 64}"


def digest_ha1(login: str, realm: str, password: str) -> tuple[str, str]:
    """The RFC 7616 §3.4.2 HA1 of a SIP Client's password, ``H(login:realm:password)``, as (MD5, SHA-256) hex.

    This is what a registrar needs to check a digest response; a Client's password is stored as nothing else."""
    a1 = f"{login}:{realm}:{password}".encode()
    return hashlib.md5(a1, usedforsecurity=False).hexdigest(), hashlib.sha256(a1).hexdigest()
