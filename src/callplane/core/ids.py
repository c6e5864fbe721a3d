"""Identifier source: sids, SIP tags and branches, SSRCs. Seedable so tests can assert exact bytes."""

from __future__ import annotations

import random
import secrets


class IdSource:
    """Makes every random identifier in callplane.

    With ``seed=None`` it draws from the OS CSPRNG (production); with a seed it is deterministic (tests).
    """

    def __init__(self, seed: int | None = None) -> None:
        self._rng: random.Random | None = random.Random(seed) if seed is not None else None

    def hex(self, nbytes: int) -> str:
        """``2*nbytes`` lowercase hex characters."""
        if self._rng is None:
            return secrets.token_hex(nbytes)
        return self._rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()

    def u32(self) -> int:
        if self._rng is None:
            return secrets.randbits(32)
        return self._rng.getrandbits(32)

    def token(self, nbytes: int = 24) -> str:
        """A URL-safe secret (auth tokens)."""
        if self._rng is None:
            return secrets.token_hex(nbytes)
        return self.hex(nbytes)

    # Restcomm-shaped sids -------------------------------------------------------------------
    def account_sid(self) -> str:
        return "AC" + self.hex(16)

    def instance_id(self) -> str:
        return "ID" + self.hex(16)

    def call_sid(self, instance_id: str) -> str:
        """``ID<instance>-CA<32 hex>``: the owner node is readable from the sid (restcomm-behaviour §1.4)."""
        return f"{instance_id}-CA{self.hex(16)}"

    def notification_sid(self) -> str:
        return "NO" + self.hex(16)

    def recording_sid(self) -> str:
        return "RE" + self.hex(16)

    def client_sid(self) -> str:
        return "CL" + self.hex(16)

    def phone_number_sid(self) -> str:
        return "PN" + self.hex(16)

    # SIP ------------------------------------------------------------------------------------
    def branch(self) -> str:
        """RFC 3261 §8.1.1.7: branch ids start with the magic cookie."""
        return "z9hG4bK" + self.hex(10)

    def tag(self) -> str:
        return self.hex(6)

    def call_id(self, host: str) -> str:
        return f"{self.hex(12)}@{host}"

    def ssrc(self) -> int:
        return self.u32()
