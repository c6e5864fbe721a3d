"""Outbound trunks: which proxy a number is called through, and fail-over between proxies.

Theory of operation
-------------------
``CALLPLANE_OUTBOUND_PROXY`` lists one or more proxies in order of preference (:func:`parse_proxies`). A number
``N`` is called as ``sip:N@<proxy host[:port]>[;params]`` on the first proxy the :class:`ProxyPool` finds usable.

A proxy *fails* an INVITE when it answers 503, when the INVITE transaction times out (Timer B, or a 408 from the
proxy) or when it cannot be reached (a transport error, reported by the UA as 503). Any other outcome (an answer,
486, 404, 487 after our CANCEL...) shows that the proxy works, and resets its count. After ``failures`` failures
in a row a proxy is *skipped* for ``retry`` seconds; then it is tried again, and one more failure skips it again
(a success clears it). When every proxy is skipped, the one that failed least recently is used rather than
refusing the call.

Per call (:meth:`Trunks.next_target`): an INVITE a proxy failed goes to the next usable proxy after it in the
order of preference, never back to an earlier one, so a call tries each proxy at most once.

Nothing here does I/O or reads a clock: time enters as ``now`` (monotonic seconds).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from callplane.core.errors import ConfigError
from callplane.sip.headers import URI, SipParseError

__all__ = ["FAILOVER", "Proxy", "ProxyPool", "Trunks", "parse_proxies"]

log = logging.getLogger("callplane.engine.trunks")

#: Final statuses of an INVITE that count against the proxy and send the call to the next one: 503 (from the
#: proxy, or a transport error) and 408 (Timer B, or the proxy's own timeout).
FAILOVER = frozenset({408, 503})


@dataclass(frozen=True, slots=True)
class Proxy:
    """One outbound proxy: ``sip:host[:port][;transport=udp|tcp]``."""

    uri: URI

    def __str__(self) -> str:
        return str(self.uri)

    def target(self, number: str) -> tuple[str, str]:
        """(Request-URI, To URI) of a call to ``number`` through this proxy."""
        u = self.uri
        port = f":{u.port}" if u.port else ""
        params = "".join(f";{k}={v}" if v is not None else f";{k}" for k, v in u.params)
        return f"sip:{number}@{u.host}{port}{params}", f"sip:{number}@{u.host}{port}"

    def serves(self, uri: URI) -> bool:
        """Whether a Request-URI goes to this proxy (same host, port and transport)."""
        return (
            uri.scheme == "sip"
            and uri.host.lower() == self.uri.host.lower()
            and uri.port == self.uri.port
            and _transport(uri) == _transport(self.uri)
        )


def _transport(uri: URI) -> str:
    return (uri.param("transport") or "udp").lower()


def parse_proxies(text: str | None) -> tuple[Proxy, ...]:
    """``CALLPLANE_OUTBOUND_PROXY``: comma-separated SIP URIs, in order of preference. Raises :class:`ConfigError`
    naming the first bad entry."""
    if not text or not text.strip():
        return ()
    proxies: list[Proxy] = []
    for entry in text.split(","):
        entry = entry.strip()
        proxy = _parse_proxy(entry)
        if any(p.serves(proxy.uri) for p in proxies):
            raise ConfigError(f"CALLPLANE_OUTBOUND_PROXY lists {entry!r} twice")
        proxies.append(proxy)
    return tuple(proxies)


def _parse_proxy(entry: str) -> Proxy:
    if not entry:
        raise ConfigError("CALLPLANE_OUTBOUND_PROXY has an empty entry (it lists SIP URIs separated by commas)")
    bad = f"CALLPLANE_OUTBOUND_PROXY entry {entry!r} is not "
    try:
        uri = URI.parse(entry)
    except SipParseError as e:
        raise ConfigError(bad + f"a SIP URI ({e}); expected sip:host[:port][;transport=tcp]") from None
    if uri.scheme != "sip" or not uri.host:
        raise ConfigError(bad + "a sip: URI; expected sip:host[:port][;transport=udp|tcp]")
    if uri.user is not None or uri.headers is not None:
        raise ConfigError(bad + "sip:host[:port][;params]: the number is the user part, so it has none")
    if _transport(uri) not in ("udp", "tcp"):
        raise ConfigError(bad + "usable: transport must be udp or tcp")
    return Proxy(uri)


@dataclass(slots=True)
class _Health:
    failures: int = 0  # in a row
    skipped_until: float | None = None
    last_failure: float | None = None


class ProxyPool:
    """The proxies' health: ``failures`` failures in a row skip a proxy for ``retry`` seconds."""

    def __init__(self, proxies: Sequence[Proxy], *, failures: int = 3, retry: float = 30.0) -> None:
        if failures < 1 or retry < 0:
            raise ValueError("failures must be at least 1 and retry not negative")
        self.proxies = tuple(proxies)
        self.limit = failures
        self.retry = retry
        self._health = {p: _Health() for p in self.proxies}

    def __bool__(self) -> bool:
        return bool(self.proxies)

    def usable(self, proxy: Proxy, now: float) -> bool:
        h = self._health[proxy]
        return h.skipped_until is None or now >= h.skipped_until

    def choose(self, now: float) -> Proxy | None:
        """The proxy for a new call: the first usable one, else the least recently failed; None without proxies."""
        for proxy in self.proxies:
            if self.usable(proxy, now):
                return proxy
        if not self.proxies:
            return None
        return min(self.proxies, key=lambda p: self._health[p].last_failure or 0.0)

    def after(self, proxy: Proxy, now: float) -> Proxy | None:
        """The next usable proxy after ``proxy`` in the order of preference, if any."""
        later = self.proxies[self.proxies.index(proxy) + 1 :]
        return next((p for p in later if self.usable(p, now)), None)

    def failed(self, proxy: Proxy, now: float) -> None:
        h = self._health[proxy]
        h.failures += 1
        h.last_failure = now
        if h.failures >= self.limit:
            if h.skipped_until is None or now >= h.skipped_until:
                log.warning(
                    "outbound proxy %s failed %d times in a row: skipped for %g s", proxy, h.failures, self.retry
                )
            h.skipped_until = now + self.retry

    def succeeded(self, proxy: Proxy) -> None:
        h = self._health[proxy]
        if h.skipped_until is not None:
            log.info("outbound proxy %s works again", proxy)
        h.failures, h.skipped_until = 0, None

    def find(self, uri: URI) -> Proxy | None:
        """The proxy a Request-URI goes to, if it is one of ours."""
        return next((p for p in self.proxies if p.serves(uri)), None)


class Trunks:
    """What the engine asks about calls to numbers: where to send one, how its INVITE did, where to retry it."""

    def __init__(self, pool: ProxyPool) -> None:
        self.pool = pool

    def __bool__(self) -> bool:
        return bool(self.pool)

    def target(self, number: str, now: float) -> tuple[str, str] | None:
        """(Request-URI, To URI) of a new call to ``number``, or None when no proxy is configured."""
        proxy = self.pool.choose(now)
        return proxy.target(number) if proxy is not None else None

    def proxy_of(self, target: str) -> Proxy | None:
        """The proxy a call's Request-URI goes to, or None when it is not a trunk call."""
        try:
            return self.pool.find(URI.parse(target))
        except SipParseError:
            return None

    def ended(self, target: str, status: int, now: float) -> bool:
        """Record how an INVITE to ``target`` ended (``status`` 200 for an answer). True when it failed the proxy."""
        proxy = self.proxy_of(target)
        if proxy is None:
            return False
        if status in FAILOVER:
            self.pool.failed(proxy, now)
            return True
        self.pool.succeeded(proxy)
        return False

    def next_target(self, target: str, now: float) -> tuple[str, str] | None:
        """Where to re-send a call whose INVITE to ``target`` failed its proxy: the same number on the next usable
        proxy, or None when there is none."""
        proxy = self.proxy_of(target)
        if proxy is None:
            return None
        following = self.pool.after(proxy, now)
        user = URI.parse(target).user
        return following.target(user) if following is not None and user else None
