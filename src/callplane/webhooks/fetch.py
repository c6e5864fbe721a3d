"""One HTTP exchange with a developer's web server: RCML fetches and status callbacks share it.

Theory of operation
-------------------
:class:`WebClient` performs :meth:`WebClient.request`: a GET or a POST carrying Restcomm's parameters (an ordered
list of pairs: ``SipHeader_Diversion`` may repeat), under hard limits:

* the connect phase has its own timeout (5 s) and the whole exchange, redirects included, a total one (10 s);
* the body is streamed and abandoned past ``max_body`` (1 MiB), so a hostile server cannot fill memory;
* redirects are followed by hand, at most ``max_redirects`` (5), **keeping the method and the parameters**
  (httpx would turn a POST into a GET on 302/303, and Restcomm kept the method);
* credentials embedded in the URL (``https://AC…:token@host/…``, as the Restcomm docs show) are sent as HTTP Basic
  and are stripped from every URL we log or report; they are not forwarded to another host by a redirect;
* a GET appends the parameters to the URL's own query string (Restcomm replaced it; keeping the developer's query
  is deliberate, see docs/compatibility.md); a POST sends them form-encoded.

On our own keep-alive transport (:class:`~callplane.webhooks.transport.PooledTransport`, unless proxies are
configured in the environment) the request bytes are written here: the head httpx would build for a URL is made
once by httpx and cached, and each request adds its target, Content-Length, Authorization and body to it, byte for
byte what httpx sent (``tests/webhooks/test_fetch.py`` pins them). httpx's client, request and response objects
cost about four times the CPU of the exchange itself (``bench/webhook_client.py``: 190-290 µs against 45-60 µs per
request), and a call makes four exchanges or more. A compressed answer is still decoded by httpx. With another
transport (proxies), every request goes through one :class:`httpx.AsyncClient`.

Every failure is a :class:`FetchError` carrying the error code a Notification reports (Twilio/Restcomm numbering):

======  =========================================================
11100   the URL is not an absolute http(s) URL
11200   the server answered with a status outside 2xx
21402   the server answered 404 (Restcomm's "URL Not Found")
11205   connection failure, or a timeout
11206   the response broke HTTP
11215   too many redirects
11750   the response body is larger than the limit
======  =========================================================

:meth:`WebClient.request` never raises anything else, so one webhook cannot take a call or the node down.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit
from urllib.request import getproxies

import httpx

from callplane.core.errors import WebhookError
from callplane.webhooks.transport import DEFAULT_PORTS, Origin, PooledTransport, ResponseHead

__all__ = [
    "FetchError",
    "Limits",
    "Params",
    "Reply",
    "WebClient",
    "form_encode",
    "is_web_url",
    "redact",
    "with_query",
]

log = logging.getLogger(__name__)

Params = Sequence[tuple[str, str]]

INVALID_URL = 11100
HTTP_STATUS = 11200
CONNECTION = 11205
PROTOCOL = 11206
TOO_MANY_REDIRECTS = 11215
TOO_LARGE = 11750
NOT_FOUND = 21402

_REDIRECTS = {301, 302, 303, 307, 308}
_FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"  # what quote_plus keeps
# quote_plus as one str.translate over the UTF-8 bytes (seen as latin-1): a byte is kept, "+" (space) or %XX
_QUOTE_PLUS = {b: chr(b) if b in _UNRESERVED else "+" if b == 0x20 else f"%{b:02X}" for b in range(256)}
_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class _Head:
    """A request head as httpx builds it for one (method, URL), made once: the direct path sends the same bytes."""

    origin: Origin
    path: bytes  # the request target without its query
    query: bytes  # the URL's own query ("" when none)
    before: bytes  # the header lines before Content-Length, in httpx's order (all of them for a GET)
    after: bytes  # those after it

    def target(self, params: Params) -> bytes:
        """The request target of a GET carrying ``params`` (appended to the URL's own query, as ``with_query``)."""
        if not params:
            return self.path + (b"?" + self.query if self.query else b"")
        extra = form_encode(params).encode("ascii")
        return self.path + b"?" + (self.query + b"&" + extra if self.query else extra)


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of one exchange (issue 8: connect 5 s, total 10 s, body 1 MiB, 5 redirects)."""

    connect_timeout: float = 5.0
    total_timeout: float = 10.0
    max_body: int = 1 << 20
    max_redirects: int = 5


@dataclass(frozen=True, slots=True)
class Reply:
    """A 2xx answer. ``url`` is where it finally came from (after redirects, credentials stripped): relative URLs in
    an RCML document resolve against it."""

    url: str
    status: int
    content_type: str
    body: bytes


class FetchError(WebhookError):
    """An exchange failed. ``code`` is the Notification error code; ``status`` the HTTP status, if one came back."""

    def __init__(self, message: str, *, code: int, url: str, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(message)
        self.code = code
        self.url = url
        self.status = status
        self.body = body

    @property
    def retryable(self) -> bool:
        """Whether a status callback should be tried again: timeouts, connection errors, 5xx and 429 (issue 8)."""
        if self.code == CONNECTION:
            return True
        return self.status is not None and (self.status >= 500 or self.status == 429)


def is_web_url(url: str) -> bool:
    """An absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    try:
        parts.port  # noqa: B018 - raises ValueError when out of range or not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def redact(url: str) -> str:
    """The URL without its userinfo (what logs, Notifications and relative-URL resolution see)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def form_encode(params: Params) -> str:
    """``urlencode(params)``, byte for byte, at a fraction of its cost (a call sends ~20 parameters per webhook)."""
    return "&".join([f"{_quote(name)}={_quote(value)}" for name, value in params])


# names and many values (AccountSid, From, To, the CallSid within a call) repeat from one webhook to the next
_quoted: dict[str, str] = {}


def _quote(text: str) -> str:
    quoted = _quoted.get(text)
    if quoted is None:
        if len(_quoted) >= _CACHE_SIZE:
            _quoted.clear()
        ascii_text = text if text.isascii() else text.encode().decode("latin-1")
        quoted = _quoted[text] = ascii_text.translate(_QUOTE_PLUS)
    return quoted


def with_query(url: str, params: Params) -> str:
    """``url`` with ``params`` appended to its query string (order and repeats kept)."""
    if not params:
        return url
    parts = urlsplit(url)
    extra = form_encode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _credentials(url: str) -> tuple[str, str] | None:
    parts = urlsplit(url)
    if parts.username is None:
        return None
    return unquote(parts.username), unquote(parts.password or "")


@contextlib.contextmanager
def _transport_errors(method: str, url: str) -> Iterator[None]:
    """httpx's transport errors (ours raises them too) as FetchError: connection failures and timeouts (retryable),
    or a broken answer."""
    try:
        yield
    except FetchError:
        raise
    except (httpx.TimeoutException, httpx.NetworkError, httpx.ProxyError) as e:
        raise FetchError(f"{method} {url}: {type(e).__name__}: {e}", code=CONNECTION, url=url) from None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as e:
        raise FetchError(f"{method} {url}: {type(e).__name__}: {e}", code=PROTOCOL, url=url) from None


def _env_proxies() -> bool:
    """Whether HTTP(S)_PROXY/ALL_PROXY are set: httpx's own transports honour them (ours does not speak proxy)."""
    return any(scheme in ("http", "https", "all") for scheme in getproxies())


class WebClient:
    """The node's one HTTP client for developer web servers (connection pooling across calls)."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = "callplane",
    ) -> None:
        self.limits = limits or Limits()
        if transport is None and not _env_proxies():
            transport = PooledTransport(max_connections=200, max_idle=50)
        # Our own transport is driven directly (:meth:`_direct`): httpx's client, request and response objects cost
        # more CPU than the exchange itself. Any other transport (a proxy from the environment, a test's) goes
        # through httpx.
        self._pool = transport if isinstance(transport, PooledTransport) else None
        self._heads: dict[tuple[str, str, bool], _Head] = {}
        timeout = httpx.Timeout(self.limits.total_timeout, connect=self.limits.connect_timeout)
        self._timeouts = dict(timeout.as_dict())
        # No cookies: one client serves every account's webhooks, and a jar would hand one account's session cookie
        # to another account's server on the same domain (and costs a jar lookup per request).
        no_cookies = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
        self._client = httpx.AsyncClient(
            cookies=no_cookies,
            timeout=timeout,
            follow_redirects=False,
            transport=transport,
            headers={"User-Agent": user_agent},
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),  # httpx's transport (proxies)
        )
        self._urls: dict[str, httpx.URL] = {}  # parsed once: status callbacks go to the same few URLs all day

    @property
    def http(self) -> httpx.AsyncClient:
        """The pooled httpx client underneath, for other fetches of the node (``<Play>`` audio) to share."""
        return self._client

    async def close(self) -> None:
        await self._client.aclose()

    def _url(self, url: str) -> httpx.URL:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= _CACHE_SIZE:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        return parsed

    async def request(self, url: str, method: str = "POST", params: Params = ()) -> Reply:
        """Fetch ``url`` with ``params``; a :class:`Reply` for a 2xx, :class:`FetchError` for anything else."""
        shown = redact(url)
        method = method.upper()
        if method not in ("GET", "POST") or not is_web_url(url):
            raise FetchError(f"not an absolute http(s) URL or method: {method} {shown}", code=INVALID_URL, url=shown)
        try:
            async with asyncio.timeout(self.limits.total_timeout):
                return await self._follow(url, method, params)
        except TimeoutError:
            raise FetchError(
                f"{method} {shown}: no complete answer within {self.limits.total_timeout:g} s",
                code=CONNECTION,
                url=shown,
            ) from None

    async def _follow(self, url: str, method: str, params: Params) -> Reply:
        auth = _credentials(url)
        origin = urlsplit(url).netloc.rpartition("@")[2]
        for _ in range(self.limits.max_redirects + 1):
            shown = redact(url)
            status, headers, body = await self._exchange(shown, method, params, auth)
            if status in _REDIRECTS and "location" in headers:
                target = urljoin(shown, headers["location"])
                if not is_web_url(target):
                    raise FetchError(f"{method} {shown}: redirect to {target!r}", code=PROTOCOL, url=shown)
                if urlsplit(target).netloc.rpartition("@")[2] != origin:
                    auth = _credentials(target)  # never forward one host's credentials to another
                url = target
                continue
            if status == 404:
                raise FetchError(f"URL Not Found : {shown} (HTTP 404)", code=NOT_FOUND, url=shown, status=404)
            if not 200 <= status < 300:
                raise FetchError(
                    f"{method} {shown}: HTTP {status}", code=HTTP_STATUS, url=shown, status=status, body=body
                )
            content_type = headers.get("content-type", "")
            return Reply(url=shown, status=status, content_type=content_type, body=body)
        raise FetchError(
            f"{method} {redact(url)}: more than {self.limits.max_redirects} redirects",
            code=TOO_MANY_REDIRECTS,
            url=redact(url),
        )

    def _head(self, method: str, url: str, empty: bool) -> _Head:
        """The head httpx would send for ``method`` on ``url`` (with an ``empty`` body or not: httpx places
        Content-Length differently), cached; raises httpx.InvalidURL as httpx would."""
        key = (method, url, empty)
        head = self._heads.get(key)
        if head is None:
            if method == "POST":
                request = self._client.build_request(method, url, content=b"" if empty else b"-", headers=_FORM)
            else:
                request = self._client.build_request(method, url)
            raw = request.headers.raw
            if any(b"\r" in name + value or b"\n" in name + value for name, value in raw):
                raise httpx.InvalidURL(f"illegal character in a request header for {url!r}")
            lines = [b"%s: %s\r\n" % (name, value) for name, value in raw]
            at = next((i for i, (name, _) in enumerate(raw) if name.lower() == b"content-length"), len(raw))
            target = request.url
            scheme = target.scheme
            port = target.port or DEFAULT_PORTS.get(scheme, 0)
            path, _, query = target.raw_path.partition(b"?")
            origin = (scheme, target.raw_host.decode("ascii"), port)
            head = _Head(origin, path, query, b"".join(lines[:at]), b"".join(lines[at + 1 :]))
            if len(self._heads) >= _CACHE_SIZE:
                self._heads.clear()
            self._heads[key] = head
        return head

    async def _direct(
        self, pool: PooledTransport, url: str, method: str, params: Params, auth: tuple[str, str] | None
    ) -> tuple[int, dict[str, str], bytes]:
        """One exchange on our own transport, with the bytes httpx would send and the answer it would give."""
        try:
            body = form_encode(params).encode() if method == "POST" else b""
            head = self._head(method, url, not body)
        except httpx.InvalidURL as e:
            raise FetchError(f"{method} {url}: {e}", code=INVALID_URL, url=url) from None
        if head.origin[0] not in DEFAULT_PORTS:
            raise FetchError(f"{method} {url}: unsupported scheme", code=PROTOCOL, url=url)
        authorization = b""
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode())
            authorization = b"Authorization: Basic %s\r\n" % token
        if method == "GET":
            data = b"GET %s HTTP/1.1\r\n%s%s\r\n" % (head.target(params), head.before, authorization)
        else:
            data = b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n%s%s\r\n%s" % (
                head.target(()),
                head.before,
                len(body),
                head.after,
                authorization,
                body,
            )
        with _transport_errors(method, url):
            response = await pool.exchange(head.origin, data, self._timeouts)
            return await self._read(response, method, url)

    async def _read(self, response: ResponseHead, method: str, url: str) -> tuple[int, dict[str, str], bytes]:
        """The status, the headers (lower-case names; repeated ones joined by ", ", as httpx's ``items()``) and the
        body (decoded by httpx when it has a Content-Encoding), within the body limit."""
        try:
            raw = response.headers
            try:
                headers: dict[str, str] = {}
                for name, value in raw:
                    key, text = name.decode("ascii").lower(), value.decode("ascii")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
            except UnicodeDecodeError:
                headers = {k.lower(): v for k, v in httpx.Headers(raw).items()}
            if "content-encoding" in headers:
                decoded = httpx.Response(response.status, headers=raw, stream=response.body)
                stream: AsyncIterator[bytes] = decoded.aiter_bytes()
            else:
                stream = response.body.__aiter__()
            body = await self._body(stream, headers.get("content-length"), response.status, method, url)
        finally:
            await response.body.aclose()
        return response.status, headers, body

    async def _body(
        self, stream: AsyncIterator[bytes], declared: str | None, status: int, method: str, url: str
    ) -> bytes:
        """The whole body, or FetchError (TOO_LARGE) as soon as its declared or read length is over the limit."""
        if declared is not None and declared.isdigit() and int(declared) > self.limits.max_body:
            raise FetchError(
                f"{method} {url}: body of {declared} bytes is over {self.limits.max_body}",
                code=TOO_LARGE,
                url=url,
                status=status,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in stream:
            size += len(chunk)
            if size > self.limits.max_body:
                raise FetchError(
                    f"{method} {url}: body over {self.limits.max_body} bytes", code=TOO_LARGE, url=url, status=status
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _exchange(
        self, url: str, method: str, params: Params, auth: tuple[str, str] | None
    ) -> tuple[int, dict[str, str], bytes]:
        if self._pool is not None:
            return await self._direct(self._pool, url, method, params, auth)
        try:
            if method == "GET":
                # the query carries the call's own values (its CallSid): not worth caching
                target = httpx.URL(with_query(url, params)) if params else self._url(url)
                request = self._client.build_request("GET", target)
            else:
                body = form_encode(params).encode()
                request = self._client.build_request("POST", self._url(url), content=body, headers=_FORM)
        except httpx.InvalidURL as e:  # what urlsplit lets through and httpx does not (control characters...)
            raise FetchError(f"{method} {url}: {e}", code=INVALID_URL, url=url) from None
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            request.headers["Authorization"] = f"Basic {token}"
        with _transport_errors(method, url):
            response = await self._client.send(request, stream=True)
            try:
                declared = response.headers.get("content-length")
                body = await self._body(response.aiter_bytes(), declared, response.status_code, method, url)
            finally:
                await response.aclose()
        headers = {k.lower(): v for k, v in response.headers.items()}
        return response.status_code, headers, body
