"""Phone numbers in E.164 (ITU-T E.164: ``+`` then at most 15 digits), as IncomingPhoneNumbers store them and as
inbound routing compares them.

Normalisation is deliberately plain: visual separators (spaces, ``-``, ``.``, ``(``, ``)``) are dropped, an
international ``00`` prefix becomes ``+``, and a bare run of digits is taken to include its country code. No
national dialling plan is guessed (Restcomm's libphonenumber normalisation assumed a US default region).
"""

from __future__ import annotations

import re

__all__ = ["E164", "compact", "to_e164"]

E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_SEPARATORS = str.maketrans("", "", " -.()\t")


def compact(value: str) -> str:
    """``value`` without surrounding white space and visual separators; nothing else is checked or changed."""
    return value.strip().translate(_SEPARATORS)


def to_e164(value: str) -> str | None:
    """``value`` in E.164, or None when it is not a phone number (a SIP user name, too long, empty)."""
    digits = compact(value)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    elif not digits.startswith("+"):
        digits = "+" + digits
    return digits if E164.fullmatch(digits) else None
