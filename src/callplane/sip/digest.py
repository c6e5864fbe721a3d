"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760), both sides, string-level and sans-IO.

Client: :meth:`Challenge.parse` reads a ``WWW-Authenticate``/``Proxy-Authenticate`` value; a :class:`DigestClient`
turns it into an ``Authorization``/``Proxy-Authorization`` value, counting ``nc`` per nonce and drawing ``cnonce`` from
the injected :class:`~callplane.core.ids.IdSource`.

Server: a :class:`DigestServer` issues stateless nonces (``<timestamp>.<salt>.<HMAC>``): any node sharing the secret can
check a nonce it did not issue, and the timestamp says when it went stale. :meth:`DigestServer.verify` judges a parsed
:class:`DigestResponse` against the user's password or stored HA1.

Algorithms: MD5, SHA-256 and SHA-512-256, each also in its ``-sess`` form; qop ``auth`` and ``auth-int``, and the
RFC 2069 form without qop that SIP peers such as SIPp still use.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass

from callplane.core.ids import IdSource

__all__ = [
    "ALGORITHMS",
    "Challenge",
    "Credentials",
    "DigestClient",
    "DigestParseError",
    "DigestResponse",
    "DigestServer",
    "Verdict",
    "best_challenge",
    "compute_ha1",
    "compute_response",
    "parse_params",
]

#: Supported algorithm names (RFC 7616 §6.1, RFC 8760 §2) -> hashlib name; strongest first.
ALGORITHMS: dict[str, str] = {"SHA-512-256": "sha512_256", "SHA-256": "sha256", "MD5": "md5"}


class DigestParseError(ValueError):
    """A Digest header value is malformed or lacks a required parameter."""


def _hash(algorithm: str, data: str) -> str:
    base = algorithm.upper().removesuffix("-SESS")
    name = ALGORITHMS.get(base)
    if name is None:
        raise DigestParseError(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(name, data.encode("utf-8")).hexdigest()


def parse_params(text: str) -> dict[str, str]:
    """``name=value`` pairs separated by commas, values token or quoted-string (RFC 7235 §2.1). Names lower-cased."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,\r\n":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] not in "=, \t":
            i += 1
        name = text[start:i].lower()
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "=" or not name:
            raise DigestParseError(f"expected name=value at {text[start : start + 20]!r}")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(text[i])
                i += 1
            if i >= n:
                raise DigestParseError("unterminated quoted string")
            i += 1
            value = "".join(chars)
        else:
            start = i
            while i < n and text[i] not in ", \t":
                i += 1
            value = text[start:i]
        params[name] = value
    return params


def _split_scheme(value: str) -> tuple[str, str]:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestParseError(f"not a Digest value: {scheme!r}")
    return scheme, rest


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password), which a store may keep instead of the password (RFC 7616 §3.4.2)."""
    return _hash(algorithm, f"{username}:{realm}:{password}")


def compute_response(
    *,
    ha1: str,
    algorithm: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1; RFC 2069 form when ``qop`` is None)."""
    if algorithm.upper().endswith("-SESS"):
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        body_hash = hashlib.new(ALGORITHMS[algorithm.upper().removesuffix("-SESS")], body).hexdigest()
        ha2 = _hash(algorithm, f"{method}:{uri}:{body_hash}")
    else:
        ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop is None:
        return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ---------------------------------------------------------------------------------------------------------------------
# Client


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge from ``WWW-Authenticate`` or ``Proxy-Authenticate`` (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, value: str) -> Challenge:
        _, rest = _split_scheme(value)
        params = parse_params(rest)
        if "realm" not in params or "nonce" not in params:
            raise DigestParseError("challenge without realm or nonce")
        qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=params.get("algorithm", "MD5").upper(),
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
        )

    @property
    def supported(self) -> bool:
        return self.algorithm.removesuffix("-SESS") in ALGORITHMS and (
            not self.qop or bool({"auth", "auth-int"} & set(self.qop))
        )

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        return "Digest " + ", ".join(parts)


def best_challenge(values: list[str]) -> Challenge | None:
    """The strongest supported challenge among header values (RFC 8760 §2.4: prefer the strongest algorithm)."""
    found: list[Challenge] = []
    for value in values:
        try:
            challenge = Challenge.parse(value)
        except DigestParseError:
            continue
        if challenge.supported:
            found.append(challenge)
    order = list(ALGORITHMS)
    found.sort(key=lambda c: order.index(c.algorithm.removesuffix("-SESS")))
    return found[0] if found else None


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password; ``realm`` None means "any realm"."""

    username: str
    password: str
    realm: str | None = None


class DigestClient:
    """Answers challenges (RFC 3261 §22.2). Keeps the nonce count per nonce, so re-using a nonce bumps ``nc``."""

    def __init__(self, ids: IdSource, max_nonces: int = 256) -> None:
        self._ids = ids
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._max = max_nonces

    def authorization(
        self, challenge: Challenge, credentials: Credentials, method: str, uri: str, body: bytes = b""
    ) -> str:
        """The ``Authorization``/``Proxy-Authorization`` value answering ``challenge`` for this request."""
        qop: str | None = None
        if challenge.qop:
            qop = "auth" if "auth" in challenge.qop else "auth-int"
        nc = ""
        cnonce = ""
        if qop is not None or challenge.algorithm.endswith("-SESS"):
            count = self._counts.pop(challenge.nonce, 0) + 1
            self._counts[challenge.nonce] = count
            while len(self._counts) > self._max:
                self._counts.popitem(last=False)
            nc = f"{count:08x}"
            cnonce = self._ids.hex(8)
        ha1 = compute_ha1(credentials.username, challenge.realm, credentials.password, challenge.algorithm)
        response = compute_response(
            ha1=ha1,
            algorithm=challenge.algorithm,
            method=method,
            uri=uri,
            nonce=challenge.nonce,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        return str(
            DigestResponse(
                username=credentials.username,
                realm=challenge.realm,
                nonce=challenge.nonce,
                uri=uri,
                response=response,
                algorithm=challenge.algorithm,
                qop=qop,
                nc=nc or None,
                cnonce=cnonce or None,
                opaque=challenge.opaque,
            )
        )


# ---------------------------------------------------------------------------------------------------------------------
# Server


@dataclass(frozen=True, slots=True)
class DigestResponse:
    """A parsed ``Authorization``/``Proxy-Authorization`` Digest value (RFC 7616 §3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    @classmethod
    def parse(cls, value: str) -> DigestResponse:
        _, rest = _split_scheme(value)
        params = parse_params(rest)
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
        if missing:
            raise DigestParseError(f"Authorization without {', '.join(missing)}")
        qop = params.get("qop")
        if qop is not None and ("nc" not in params or "cnonce" not in params):
            raise DigestParseError("qop without nc or cnonce")
        # These are hex digits, tokens or our own nonce (RFC 7616 §3.4): anything beyond ASCII is not a credential.
        if not all(params.get(k, "").isascii() for k in ("nonce", "response", "algorithm", "qop", "nc", "cnonce")):
            raise DigestParseError("non-ASCII Digest parameter")
        return cls(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"].lower(),
            algorithm=params.get("algorithm", "MD5").upper(),
            qop=qop.lower() if qop is not None else None,
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
        )

    def __str__(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        return "Digest " + ", ".join(parts)


def _same(ours: str, theirs: str) -> bool:
    """Constant-time comparison that accepts any text (``hmac.compare_digest`` raises on non-ASCII ``str``)."""
    return hmac.compare_digest(ours.encode("utf-8", "surrogateescape"), theirs.encode("utf-8", "surrogateescape"))


class Verdict(enum.Enum):
    """Outcome of :meth:`DigestServer.verify`. Only ``OK`` admits the request."""

    OK = "ok"
    STALE = "stale"  # a nonce we issued, correctly used, but too old: challenge again with stale=true
    BAD_NONCE = "bad-nonce"  # not a nonce of ours (forged, other realm or secret)
    BAD_RESPONSE = "bad-response"  # wrong password, uri, method or realm
    REPLAY = "replay"  # nc did not grow for this nonce


class DigestServer:
    """Challenges and verifies (RFC 3261 §22.1) without per-client state.

    ``now`` is whatever clock the caller uses; pass wall-clock epoch seconds when nonces must be accepted by other
    nodes or after a restart. Nonce-count replay protection (``track_nc``, on by default) keeps a bounded in-memory
    table of the highest ``nc`` seen per nonce, so it is per node: a credential replayed to another node sharing the
    secret is caught only by the nonce's age.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        ids: IdSource,
        *,
        nonce_ttl: float = 300.0,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        qop: bool = True,
        track_nc: bool = True,
        max_tracked: int = 10000,
    ) -> None:
        for algorithm in algorithms:
            if algorithm.upper().removesuffix("-SESS") not in ALGORITHMS:
                raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        self.realm = realm
        self._secret = secret
        self._ids = ids
        self.nonce_ttl = nonce_ttl
        self.algorithms = algorithms
        self._qop = qop
        self._track_nc = track_nc
        self._seen_nc: OrderedDict[str, int] = OrderedDict()
        self._max_tracked = max_tracked

    # nonce = base64url(8-byte milliseconds) "." 8 hex salt "." 16 hex HMAC
    def _mac(self, stamp: str, salt: str) -> str:
        data = f"{stamp}.{salt}.{self.realm}".encode()
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()[:32]

    def make_nonce(self, now: float) -> str:
        stamp = base64.urlsafe_b64encode(int(now * 1000).to_bytes(8, "big")).decode().rstrip("=")
        salt = self._ids.hex(4)
        return f"{stamp}.{salt}.{self._mac(stamp, salt)}"

    def nonce_age(self, nonce: str, now: float) -> float | None:
        """Seconds since ``nonce`` was issued, or None if it is not a genuine nonce of ours."""
        parts = nonce.split(".")
        if len(parts) != 3:
            return None
        stamp, salt, mac = parts
        if not _same(mac, self._mac(stamp, salt)):
            return None
        try:
            millis = int.from_bytes(base64.urlsafe_b64decode(stamp + "=" * (-len(stamp) % 4)), "big")
        except ValueError:
            return None
        return now - millis / 1000.0

    def challenges(self, now: float, stale: bool = False) -> list[str]:
        """Header values for a 401/407, one per algorithm, strongest first (RFC 8760 §2.4)."""
        nonce = self.make_nonce(now)
        qop = ("auth",) if self._qop else ()
        return [str(Challenge(self.realm, nonce, algorithm.upper(), qop, None, stale)) for algorithm in self.algorithms]

    def verify(
        self,
        auth: DigestResponse,
        method: str,
        now: float,
        *,
        password: str | None = None,
        ha1: str | None = None,
        body: bytes = b"",
        uri: str | None = None,
    ) -> Verdict:
        """Judge ``auth`` for a request with ``method``. Give the user's ``password`` or its stored ``ha1``.

        With ``uri`` (the Request-URI as text) the ``uri`` parameter must name the same resource (RFC 7616 §3.4.6),
        compared case-insensitively; without it only the response hash binds the URI the client chose.
        """
        if auth.realm != self.realm or auth.algorithm.upper() not in {a.upper() for a in self.algorithms}:
            return Verdict.BAD_RESPONSE
        if uri is not None and auth.uri.lower() != uri.lower():
            return Verdict.BAD_RESPONSE
        if self._qop and auth.qop not in ("auth", "auth-int"):
            return Verdict.BAD_RESPONSE
        age = self.nonce_age(auth.nonce, now)
        if age is None or age < -5.0:
            return Verdict.BAD_NONCE
        if ha1 is None:
            if password is None:
                raise ValueError("verify needs a password or an ha1")
            ha1 = compute_ha1(auth.username, auth.realm, password, auth.algorithm)
        expected = compute_response(
            ha1=ha1,
            algorithm=auth.algorithm,
            method=method,
            uri=auth.uri,
            nonce=auth.nonce,
            qop=auth.qop,
            nc=auth.nc or "",
            cnonce=auth.cnonce or "",
            body=body,
        )
        if not _same(expected, auth.response):
            return Verdict.BAD_RESPONSE
        if age > self.nonce_ttl:
            return Verdict.STALE
        if self._track_nc and auth.nc is not None:
            try:
                count = int(auth.nc, 16)
            except ValueError:
                return Verdict.BAD_RESPONSE
            if count <= self._seen_nc.get(auth.nonce, 0):
                return Verdict.REPLAY
            self._seen_nc.pop(auth.nonce, None)
            self._seen_nc[auth.nonce] = count
            while len(self._seen_nc) > self._max_tracked:
                self._seen_nc.popitem(last=False)
        return Verdict.OK
