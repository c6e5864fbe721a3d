"""Fetch ``<Play>`` URLs over HTTP into decoded PCM, with a private HTTP cache on disk (RFC 9111).

For each URL a small JSON record (``<sha256(url)>.json``) keeps the validators (``ETag``, ``Last-Modified``),
the freshness lifetime and the key of the decoded PCM in :class:`~callplane.media.workers.MediaWorkers`' cache.

* Fresh (``max-age``, else ``Expires`` - ``Date``; minus ``Age``): served from the cache, no request.
* Stale or ``no-cache``, with a validator: a conditional GET (``If-None-Match`` / ``If-Modified-Since``);
  ``304 Not Modified`` reuses the cached decode and refreshes the record (RFC 9111 §4.3.4).
* ``no-store``: nothing is written, and any earlier record for the URL is dropped.
* No validator and no lifetime: fetched every time (the decode is still shared by content hash).

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
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from callplane.core.clock import Clock, SystemClock
from callplane.media.player import PlaybackError
from callplane.media.workers import MediaWorkers, SingleFlight, content_key

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
    ) -> None:
        self._workers = workers
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._client = client or httpx.AsyncClient(follow_redirects=True, max_redirects=5)
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
        record = await self._workers.blocking(self._load, url)  # record files: read and written in threads
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
                await self._workers.blocking(self._forget, url)
            else:
                record.stored_at = now
                record.lifetime = _lifetime(resp_headers, cc, now)
                record.etag = resp_headers.get("etag", record.etag)
                record.last_modified = resp_headers.get("last-modified", record.last_modified)
                await self._workers.blocking(self._save, record)
            return cached
        if status != 200:
            raise HttpStatusError(f"GET {url} returned HTTP {status}", status=status)
        self._check_content_type(url, resp_headers.get("content-type", ""))
        pcm_key = await self._workers.decode_key_async(body)
        pcm = await self._workers.decode(body, store=not cc.no_store, key=pcm_key)
        if cc.no_store:
            await self._workers.blocking(self._forget, url)
            return pcm
        etag = resp_headers.get("etag")
        last_modified = resp_headers.get("last-modified")
        lifetime = _lifetime(resp_headers, cc, now)
        if etag or last_modified or lifetime > 0:
            await self._workers.blocking(self._save, _Record(url, pcm_key, now, lifetime, etag, last_modified))
        else:
            await self._workers.blocking(self._forget, url)
        return pcm

    async def _fetch(self, url: str, headers: dict[str, str]) -> tuple[int, httpx.Headers, bytes]:
        self.requests += 1
        try:
            async with self._client.stream("GET", url, headers=headers, timeout=self._timeout) as resp:
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
        except httpx.TooManyRedirects:
            raise HttpStatusError(f"GET {url}: too many redirects") from None
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

    def _record_path(self, url: str) -> Path:
        return self.directory / f"{content_key('url', url)}.json"

    def _load(self, url: str) -> _Record | None:
        try:
            raw = json.loads(self._record_path(url).read_text("utf-8"))
            record = _Record(**raw)
        except (OSError, ValueError, TypeError):
            return None
        return record if record.url == url else None

    def _save(self, record: _Record) -> None:
        path = self._record_path(record.url)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(record)), "utf-8")
        os.replace(tmp, path)

    def _forget(self, url: str) -> None:
        try:
            self._record_path(url).unlink()
        except FileNotFoundError:
            pass
