"""Attribute and element-text readers for RCML verbs: each reader returns a valid value or the default plus a Notice.

An empty attribute counts as absent (its default applies, with no Notice). Integers are 1 to 9 ASCII digits, so no
value can make ``int()`` slow. URLs are resolved against the document URL and must come out absolute http(s).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import Element

from callplane.rcml.errors import BAD_URL
from callplane.rcml.verbs import Method, Notice

__all__ = ["NOUN_NAMES", "UNSUPPORTED", "AttributeReader", "element_text", "resolve_url", "shorten"]

# Known to Restcomm's parser (§5) but not run by callplane: skipped with a warning.
UNSUPPORTED = frozenset(
    {"Enqueue", "Leave", "Fax", "Sms", "Email", "Language", "UssdMessage", "UssdCollect", "Queue", "Uri", "Video"}
)
NOUN_NAMES = frozenset({"Number", "Client", "Sip", "Conference"})

_INTEGER = re.compile(r"\s*(\d{1,9})\s*")
_T = TypeVar("_T", bound=str)


def shorten(value: str, limit: int = 60) -> str:
    """``value`` for a message: at most ``limit`` characters, control characters escaped."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return text.encode("unicode_escape").decode("ascii")


def element_text(element: Element) -> str:
    """The element's text content (nested markup flattened), stripped."""
    return "".join(element.itertext()).strip()


def resolve_url(base: str, ref: str) -> str | None:
    """``ref`` resolved against ``base`` (RFC 3986 §5 via urljoin), or None unless the result is absolute http(s)."""
    try:
        url = urljoin(base, ref.strip())
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        return None
    return url


class AttributeReader:
    """Reads one element's attributes for ``verb``, appending a Notice to ``notices`` for each invalid value."""

    def __init__(self, verb: str, attrs: Mapping[str, str], base_url: str, notices: list[Notice]) -> None:
        self.verb = verb
        self.attrs = attrs
        self.base_url = base_url
        self.notices = notices

    def raw(self, name: str) -> str | None:
        """The attribute stripped of surrounding blanks, or None when absent or empty."""
        value = self.attrs.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def invalid(self, name: str, value: str, code: int, default: object) -> None:
        """Report ``name="value"`` as invalid; ``default`` is what applies instead."""
        shown = "none" if default is None else f'"{default}"' if isinstance(default, str) else str(default).lower()
        self.notices.append(
            Notice(code, f'<{self.verb}> {name}="{shorten(value)}" is invalid; using {shown}', "warning")
        )

    def integer(self, name: str, default: int, code: int, minimum: int = 0) -> int:
        """A decimal integer >= ``minimum``."""
        value = self.raw(name)
        if value is None:
            return default
        match = _INTEGER.fullmatch(value)
        if match is None or int(match.group(1)) < minimum:
            self.invalid(name, value, code, default)
            return default
        return int(match.group(1))

    def optional_integer(self, name: str, code: int, minimum: int = 1) -> int | None:
        """Like :meth:`integer`, with None as the default."""
        value = self.raw(name)
        if value is None:
            return None
        match = _INTEGER.fullmatch(value)
        if match is None or int(match.group(1)) < minimum:
            self.invalid(name, value, code, None)
            return None
        return int(match.group(1))

    def boolean(self, name: str, default: bool, code: int) -> bool:
        """``true`` or ``false``, in any case."""
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered not in ("true", "false"):
            self.invalid(name, value, code, default)
            return default
        return lowered == "true"

    def choice(self, name: str, choices: tuple[_T, ...], default: _T, code: int) -> _T:
        """One of ``choices``, compared case-insensitively (all choices are lower case)."""
        value = self.raw(name)
        if value is None:
            return default
        for choice in choices:
            if value.lower() == choice:
                return choice
        self.invalid(name, value, code, default)
        return default

    def method(self, name: str, code: int) -> Method:
        """``GET`` or ``POST`` (any case); the default is POST."""
        value = self.raw(name)
        if value is None:
            return "POST"
        upper = value.upper()
        if upper == "GET":
            return "GET"
        if upper != "POST":
            self.invalid(name, value, code, "POST")
        return "POST"

    def pattern(self, name: str, regex: re.Pattern[str], default: str, code: int) -> str:
        """A value matching ``regex`` whole."""
        value = self.raw(name)
        if value is None:
            return default
        if regex.fullmatch(value) is None:
            self.invalid(name, value, code, default)
            return default
        return value

    def url(self, name: str) -> str | None:
        """An absolute http(s) URL after resolution against the document, else None (11100)."""
        value = self.raw(name)
        if value is None:
            return None
        return self.resolve(name, value)

    def resolve(self, what: str, value: str) -> str | None:
        """``value`` resolved as a URL; ``what`` names it in the Notice when it is not usable."""
        url = resolve_url(self.base_url, value)
        if url is None:
            self.notices.append(
                Notice(BAD_URL, f'<{self.verb}> {what} "{shorten(value)}" is not an absolute http(s) URL', "warning")
            )
        return url
