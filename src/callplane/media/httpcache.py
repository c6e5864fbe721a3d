"""Fetch ``<Play>`` URLs over HTTP into decoded PCM, with a private HTTP cache on disk (RFC 9111).

For each URL a small JSON record (``<sha256(url)>.json``) keeps the validators (``ETag``, ``Last-Modified``),
the freshness lifetime and the key of the decoded PCM in :class:`~callplane.media.workers.MediaWorkers`' cache.

* Fresh (``max-age``, else ``Expires`` - ``Date``; minus ``Age``): served from the cache, no request.
* Stale or ``no-cache``, with a validator: a conditional GET (``If-None-Match`` / ``If-Modified-Since``);
  ``304 Not Modified`` reuses the cached decode and refreshes the record (RFC 9111 §4.3.4).
* ``no-store``: nothing is written, and any earlier record for the URL is dropped.
* No validator and no lifetime: fetched every time (the decode is still shared by content hash).

Records are bounded (``max_records`` files, ``max_record_bytes`` bytes; the least recently used go first), as is
the decoded PCM they point to (``MediaWorkers``' own LRU). Record files are read and written in threads.

Redirects (301, 302, 303, 307, 308) are followed by hand, at most ``max_redirects`` (5) of them. Each target must
be http or https, and an https URL is never redirected to plain http. Another host is allowed, since audio is often
served from a CDN or a signed storage URL: the request carries no credentials, and the RCML author could name that
host directly anyway. The record is kept under the URL the RCML named.

Concurrent requests for one URL make one HTTP request. Errors are :class:`PlayFetchError` subclasses carrying
a Restcomm notification code hint (11100 bad URI, 11205 I/O, 11206 protocol, 12300 content type)::

    PlaybackError
    └── PlayFetchError                 11205
        ├── InvalidUrlError            11100
        ├── FetchTimeoutError          11205
        ├── HttpStatusError            11206 (``status``)
        ├── UnsupportedContentTypeError 12300 (``content_type``)
        └── ResponseTooLargeError      11206
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from callplane.core.clock import Clock, SystemClock
from callplane.media.player import PlaybackError
from callplane.media.workers import MediaWorkers, SingleFlight, cache_files, content_key

__all__ = [
    "AUDIO_CONTENT_TYPES",
    "CacheControl",
    "FetchTimeoutError",
    "HttpAudioCache",
    "HttpStatusError",
    "InvalidUrlError",
    "PlayFetchError",
    "ResponseTooLargeError",
    "UnsupportedContentTypeError",
    "parse_cache_control",
]

log = logging.getLogger(__name__)

#: Media types accepted for ``<Play>``; the bytes are then sniffed (WAV or MP3) before decoding.
AUDIO_CONTENT_TYPES = frozenset(
    {
        "audio/wav",
        "audio/wave",
        "audio/x-wav",
        "audio/vnd.wave",
        "audio/x-pn-wav",
        "audio/mpeg",
        "audio/mp3",
        "audio/mpeg3",
        "audio/x-mpeg",
        "audio/x-mpeg-3",
        "audio/x-mp3",
        "application/octet-stream",
        "binary/octet-stream",
    }
)
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_RECORDS = 10_000
DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class PlayFetchError(PlaybackError):
    """The audio at a URL could not be fetched."""

    default_code = 11205


class InvalidUrlError(PlayFetchError):
    default_code = 11100


class FetchTimeoutError(PlayFetchError):
    pass


class HttpStatusError(PlayFetchError):
    default_code = 11206

    def __init__(self, message: str, code: int | None = None, status: int = 0) -> None:
        super().__init__(message, code)
        self.status = status


class UnsupportedContentTypeError(PlayFetchError):
    default_code = 12300

    def __init__(self, message: str, code: int | None = None, content_type: str = "") -> None:
        super().__init__(message, code)
        self.content_type = content_type


class ResponseTooLargeError(PlayFetchError):
    default_code = 11206


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The ``Cache-Control`` directives a private cache acts on (RFC 9111 §5.2.2)."""

    max_age: int | None = None
    no_cache: bool = False
    no_store: bool = False


def parse_cache_control(value: str | None) -> CacheControl:
    """``"public, max-age=60"`` -> ``CacheControl(max_age=60)``. Unknown directives are ignored; a bad
    ``max-age`` value counts as stale (RFC 9111 §4.2.1)."""
    max_age: int | None = None
    no_cache = no_store = False
    for raw in (value or "").split(","):
        name, _, arg = raw.strip().partition("=")
        name = name.strip().lower()
        arg = arg.strip().strip('"')
        if name == "max-age":
            max_age = int(arg) if arg.isdigit() else 0
        elif name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
    return CacheControl(max_age, no_cache, no_store)


@dataclass(slots=True)
class _Record:
    url: str
    pcm_key: str
    stored_at: float  # wall-clock seconds when the response (or its 304) was received
    lifetime: float  # freshness lifetime minus the Age the response already had; 0 = always revalidate
    etag: str | None = None
    last_modified: str | None = None

    def is_fresh(self, now: float) -> bool:
        return now - self.stored_at < self.lifetime


class _Records:
    """The per-URL records, ``<sha256(url)>.json``, bounded to ``max_count`` files and ``max_bytes`` bytes; the
    least recently used (read or written) go first. Blocking file I/O: called from threads, hence the lock."""

    def __init__(self, directory: Path, max_count: int, max_bytes: int) -> None:
        self.directory = directory
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.evicted = 0
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] | None = None  # file name -> size, least recently used first
        self._bytes = 0
        self._seq = 0

    def path(self, url: str) -> Path:
        return self.directory / f"{content_key('url', url)}.json"

    def load(self, url: str) -> _Record | None:
        path = self.path(url)
        try:
            raw = json.loads(path.read_text("utf-8"))
            record = _Record(**raw)
        except (OSError, ValueError, TypeError):
            return None
        if record.url != url:
            return None
        with self._lock:
            index = self._scan()
            if path.name in index:
                index.move_to_end(path.name)
                try:
                    os.utime(path)  # the order survives a restart
                except OSError:
                    pass
        return record

    def save(self, record: _Record) -> None:
        data = json.dumps(asdict(record)).encode("utf-8")
        path = self.path(record.url)
        with self._lock:
            self._seq += 1
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{self._seq}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            index = self._scan()
            self._bytes += len(data) - index.pop(path.name, 0)
            index[path.name] = len(data)
            self._evict()

    def forget(self, url: str) -> None:
        path = self.path(url)
        with self._lock:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            self._bytes -= self._scan().pop(path.name, 0)

    def __len__(self) -> int:
        with self._lock:
            return len(self._scan())

    def _scan(self) -> OrderedDict[str, int]:
        """The index, read from the directory once (oldest modification first); the lock is held."""
        if self._index is None:
            entries = sorted(cache_files(self.directory, ".json"))
            self._index = OrderedDict((path.name, size) for _, size, path in entries)
            self._bytes = sum(size for _, size, _ in entries)
            self._evict()  # the limits may be lower than in the last run
        return self._index

    def _evict(self) -> None:
        index = self._index
        assert index is not None
        while index and (len(index) > self.max_count or self._bytes > self.max_bytes):
            name, size = index.popitem(last=False)
            self._bytes -= size
            self.evicted += 1
            try:
                (self.directory / name).unlink()
            except FileNotFoundError:
                pass


def _first(headers: httpx.Headers, name: str) -> str | None:
    values = headers.get_list(name)
    return values[0] if values else None


def _lifetime(headers: httpx.Headers, cc: CacheControl, now: float) -> float:
    """Freshness lifetime left at receipt (RFC 9111 §4.2.1, §4.2.3); 0 means revalidate before every use."""
    if cc.no_cache:
        return 0.0
    if cc.max_age is not None:
        lifetime = float(cc.max_age)
    elif (expires_value := _first(headers, "expires")) is not None:
        try:
            expires = parsedate_to_datetime(expires_value).timestamp()
            date_value = _first(headers, "date")
            date = parsedate_to_datetime(date_value).timestamp() if date_value else now
        except (TypeError, ValueError):
            return 0.0  # an invalid Expires means "already expired" (RFC 9111 §5.3)
        lifetime = expires - date
    else:
        return 0.0
    age = (_first(headers, "age") or "").strip()
    return max(0.0, lifetime - (int(age) if age.isdigit() else 0))


class HttpAudioCache:
    """``await cache.get(url)`` -> 8 kHz s16le PCM for a WAV/MP3 URL, via the HTTP cache and the decode cache."""

    def __init__(
        self,
        workers: MediaWorkers,
        directory: Path,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        timeout: float = 10.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self._workers = workers
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.records = _Records(self.directory, max_records, max_record_bytes)
        self.max_redirects = max_redirects
        self._client = client or httpx.AsyncClient()
        self._owns_client = client is None
        self._clock = clock or SystemClock()
        self._timeout = httpx.Timeout(timeout)
        self.max_bytes = max_bytes
        self._flight: SingleFlight[bytes] = SingleFlight()
        self.requests = 0
        self.not_modified = 0
        self.fresh_hits = 0

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def get(self, url: str) -> bytes:
        """Decoded PCM for ``url``; raises a :class:`PlayFetchError` or a decode error."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise InvalidUrlError(f"invalid URL {url!r}: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidUrlError(f"not an http(s) URL: {url!r}")
        return await self._flight.run(url, lambda: self._get(url))

    # -- internals -------------------------------------------------------------------------------------
    async def _get(self, url: str) -> bytes:
        now = self._now()
        record = await self._workers.blocking(self.records.load, url)  # record files: read and written in threads
        cached: bytes | None = None
        if record is not None:
            cached = await self._workers.lookup(record.pcm_key)
            if cached is None:
                record = None  # the decode was evicted: fetch the whole body again
            elif record.is_fresh(now):
                self.fresh_hits += 1
                return cached
        headers: dict[str, str] = {}
        if record is not None:
            if record.etag:
                headers["If-None-Match"] = record.etag
            if record.last_modified:
                headers["If-Modified-Since"] = record.last_modified
        status, resp_headers, body = await self._fetch(url, headers)
        cc = parse_cache_control(resp_headers.get("cache-control"))
        now = self._now()
        if status == 304 and record is not None and cached is not None:
            self.not_modified += 1
            if cc.no_store:
                await self._workers.blocking(self.records.forget, url)
            else:
                record.stored_at = now
                record.lifetime = _lifetime(resp_headers, cc, now)
                record.etag = resp_headers.get("etag", record.etag)
                record.last_modified = resp_headers.get("last-modified", record.last_modified)
                await self._workers.blocking(self.records.save, record)
            return cached
        if status != 200:
            raise HttpStatusError(f"GET {url} returned HTTP {status}", status=status)
        self._check_content_type(url, resp_headers.get("content-type", ""))
        pcm_key = await self._workers.decode_key_async(body)
        pcm = await self._workers.decode(body, store=not cc.no_store, key=pcm_key)
        if cc.no_store:
            await self._workers.blocking(self.records.forget, url)
            return pcm
        etag = resp_headers.get("etag")
        last_modified = resp_headers.get("last-modified")
        lifetime = _lifetime(resp_headers, cc, now)
        if etag or last_modified or lifetime > 0:
            await self._workers.blocking(self.records.save, _Record(url, pcm_key, now, lifetime, etag, last_modified))
        else:
            await self._workers.blocking(self.records.forget, url)
        return pcm

    async def _fetch(self, url: str, headers: dict[str, str]) -> tuple[int, httpx.Headers, bytes]:
        target = httpx.URL(url)
        for _ in range(self.max_redirects + 1):
            status, resp_headers, body = await self._fetch_one(target, headers)
            location = resp_headers.get("location") if status in _REDIRECTS else None
            if location is None:
                return status, resp_headers, body
            target = self._redirect_target(url, target, location)
        raise HttpStatusError(f"GET {url}: more than {self.max_redirects} redirects")

    @staticmethod
    def _redirect_target(url: str, current: httpx.URL, location: str) -> httpx.URL:
        try:
            nxt = current.join(location)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise HttpStatusError(f"GET {url}: bad redirect Location {location!r}: {exc}") from None
        if nxt.scheme not in ("http", "https") or not nxt.host:
            raise InvalidUrlError(f"GET {url}: redirect to a non-http(s) URL {location!r}")
        if current.scheme == "https" and nxt.scheme == "http":
            raise InvalidUrlError(f"GET {url}: redirect from https down to http ({location!r})")
        return nxt

    async def _fetch_one(self, url: httpx.URL, headers: dict[str, str]) -> tuple[int, httpx.Headers, bytes]:
        self.requests += 1
        try:
            async with self._client.stream(
                "GET", url, headers=headers, timeout=self._timeout, follow_redirects=False
            ) as resp:
                if resp.status_code != 200:
                    return resp.status_code, resp.headers, b""
                length = resp.headers.get("content-length", "")
                if length.isdigit() and int(length) > self.max_bytes:
                    raise ResponseTooLargeError(f"GET {url}: {length} bytes, over the {self.max_bytes} byte limit")
                chunks: list[bytes] = []
                total = 0
                async for chunk in resp.aiter_bytes():
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise ResponseTooLargeError(f"GET {url}: body over the {self.max_bytes} byte limit")
                    chunks.append(chunk)
                return resp.status_code, resp.headers, b"".join(chunks)
        except httpx.TimeoutException as exc:
            raise FetchTimeoutError(f"GET {url} timed out ({type(exc).__name__})") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise InvalidUrlError(f"GET {url}: {exc}") from None
        except httpx.HTTPError as exc:
            raise PlayFetchError(f"GET {url} failed: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def _check_content_type(url: str, value: str) -> None:
        media_type = value.split(";", 1)[0].strip().lower()
        if media_type and media_type not in AUDIO_CONTENT_TYPES:
            raise UnsupportedContentTypeError(
                f"GET {url}: unsupported Content-Type {media_type!r} for <Play>", content_type=media_type
            )

    def _now(self) -> float:
        return self._clock.wall().timestamp()
