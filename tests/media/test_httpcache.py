"""Fetching <Play> URLs from a real HTTP server on 127.0.0.1 (port 0) that counts requests and answers 304."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from callplane.core.clock import FakeClock
from callplane.media.httpcache import (
    CacheControl,
    FetchTimeoutError,
    HttpAudioCache,
    HttpStatusError,
    InvalidUrlError,
    PlayFetchError,
    ResponseTooLargeError,
    UnsupportedContentTypeError,
    parse_cache_control,
)
from callplane.media.player import UnsupportedFormatError
from callplane.media.workers import MediaWorkers
from tests.media.loopio import loop_io
from tests.media.test_player import make_mp3, make_wav, peak_hz, tone

WAV_1K = make_wav([tone(1000, 0.5, 8000)], 8000)
WAV_2K = make_wav([tone(2000, 0.5, 8000)], 8000)
LAST_MODIFIED = "Wed, 21 Oct 2026 07:28:00 GMT"


@dataclass
class Resource:
    body: bytes = WAV_1K
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "audio/wav"})
    delay: bool = False  # hold the response until the test releases it


class AudioServer:
    """A tiny HTTP server with conditional GET (ETag first, then Last-Modified), run in a thread."""

    def __init__(self) -> None:
        self.resources: dict[str, Resource] = {}
        self.log: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.log.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                res = outer.resources.get(self.path)
                if res is None:
                    self.send_error(404)
                    return
                if res.delay:
                    outer.release.wait(10)
                etag = res.headers.get("ETag")
                lm = res.headers.get("Last-Modified")
                inm = self.headers.get("If-None-Match")
                ims = self.headers.get("If-Modified-Since")
                if res.status == 200 and ((etag and inm == etag) or (not inm and lm and ims == lm)):
                    self.send_response(304)
                    for k, v in res.headers.items():
                        if k != "Content-Type":
                            self.send_header(k, v)
                    self.end_headers()
                    return
                self.send_response(res.status)
                for k, v in res.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(res.body)))
                self.end_headers()
                self.wfile.write(res.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> int:
        return sum(1 for p, _ in self.log if p == path)

    def last_headers(self, path: str) -> dict[str, str]:
        return [h for p, h in self.log if p == path][-1]


@pytest.fixture
def server() -> Iterator[AudioServer]:
    srv = AudioServer()
    srv.thread.start()
    yield srv
    srv.release.set()
    srv.httpd.shutdown()
    srv.httpd.server_close()
    srv.thread.join(5)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def cache(tmp_path: Path, workers: MediaWorkers, clock: FakeClock) -> AsyncIterator[HttpAudioCache]:
    c = HttpAudioCache(workers, tmp_path / "http", clock=clock, timeout=2.0)
    yield c
    await c.aclose()


async def test_a_wav_url_is_fetched_and_decoded(server: AudioServer, cache: HttpAudioCache) -> None:
    server.resources["/a.wav"] = Resource()
    pcm = await cache.get(server.url("/a.wav"))
    assert len(pcm) == 8000 and abs(peak_hz(pcm) - 1000) < 2
    assert server.hits("/a.wav") == 1


async def test_an_mp3_url(server: AudioServer, cache: HttpAudioCache) -> None:
    server.resources["/m.mp3"] = Resource(make_mp3(1000.0, 1.0), headers={"Content-Type": "audio/mpeg"})
    assert abs(peak_hz(await cache.get(server.url("/m.mp3"))) - 1000) < 2


async def test_max_age_serves_without_a_request_then_revalidates_with_the_etag(
    server: AudioServer, cache: HttpAudioCache, workers: MediaWorkers, clock: FakeClock
) -> None:
    headers = {"Content-Type": "audio/wav", "ETag": '"v1"', "Cache-Control": "public, max-age=60"}
    server.resources["/a.wav"] = Resource(headers=headers)
    url = server.url("/a.wav")
    first = await cache.get(url)
    clock.advance(59)
    assert await cache.get(url) == first
    assert server.hits("/a.wav") == 1 and cache.fresh_hits == 1
    clock.advance(2)  # stale: conditional GET
    assert await cache.get(url) == first
    assert server.hits("/a.wav") == 2 and server.last_headers("/a.wav")["if-none-match"] == '"v1"'
    assert cache.not_modified == 1 and workers.stats.jobs == 1  # the 304 reused the cached decode
    clock.advance(59)  # the 304 refreshed the lifetime
    await cache.get(url)
    assert server.hits("/a.wav") == 2


async def test_last_modified_without_lifetime_revalidates_every_time(
    server: AudioServer, cache: HttpAudioCache, workers: MediaWorkers
) -> None:
    server.resources["/a.wav"] = Resource(headers={"Content-Type": "audio/x-wav", "Last-Modified": LAST_MODIFIED})
    url = server.url("/a.wav")
    first = await cache.get(url)
    assert "if-modified-since" not in server.last_headers("/a.wav")
    assert await cache.get(url) == first
    assert server.last_headers("/a.wav")["if-modified-since"] == LAST_MODIFIED
    assert server.hits("/a.wav") == 2 and cache.not_modified == 1 and workers.stats.jobs == 1


async def test_the_cache_records_are_read_and_written_off_the_loop(
    tmp_path: Path, server: AudioServer, cache: HttpAudioCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.resources["/a.wav"] = Resource(headers={"Content-Type": "audio/wav", "ETag": '"v1"'})
    server.resources["/n.wav"] = Resource(headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"})
    with loop_io(tmp_path, monkeypatch) as io:
        for _ in range(2):  # write the record, then read it, revalidate and write it again
            await cache.get(server.url("/a.wav"))
        await cache.get(server.url("/n.wav"))  # no-store: the record is removed
    assert cache.not_modified == 1 and io.calls == []


async def test_no_cache_revalidates_even_with_max_age(server: AudioServer, cache: HttpAudioCache) -> None:
    cc = "no-cache, max-age=3600"
    server.resources["/a.wav"] = Resource(headers={"Content-Type": "audio/wav", "ETag": '"x"', "Cache-Control": cc})
    for _ in range(3):
        await cache.get(server.url("/a.wav"))
    assert server.hits("/a.wav") == 3 and cache.not_modified == 2


async def test_no_store_keeps_nothing(
    tmp_path: Path, server: AudioServer, cache: HttpAudioCache, workers: MediaWorkers
) -> None:
    headers = {"Content-Type": "audio/wav", "ETag": '"x"', "Cache-Control": "no-store"}
    server.resources["/a.wav"] = Resource(headers=headers)
    for _ in range(2):
        await cache.get(server.url("/a.wav"))
    assert server.hits("/a.wav") == 2 and "if-none-match" not in server.last_headers("/a.wav")
    assert workers.stats.jobs == 2
    assert list((tmp_path / "http").iterdir()) == [] and list((tmp_path / "pcm").iterdir()) == []


async def test_a_changed_resource_is_decoded_again(server: AudioServer, cache: HttpAudioCache) -> None:
    server.resources["/a.wav"] = Resource(headers={"Content-Type": "audio/wav", "ETag": '"v1"'})
    url = server.url("/a.wav")
    assert abs(peak_hz(await cache.get(url)) - 1000) < 2
    server.resources["/a.wav"] = Resource(WAV_2K, headers={"Content-Type": "audio/wav", "ETag": '"v2"'})
    assert abs(peak_hz(await cache.get(url)) - 2000) < 2
    assert server.last_headers("/a.wav")["if-none-match"] == '"v1"'


async def test_expires_and_age_set_the_lifetime(server: AudioServer, cache: HttpAudioCache, clock: FakeClock) -> None:
    expires = formatdate(time.time() + 30, usegmt=True)  # the server adds its own Date
    server.resources["/e.wav"] = Resource(headers={"Content-Type": "audio/wav", "ETag": '"e"', "Expires": expires})
    server.resources["/g.wav"] = Resource(
        headers={"Content-Type": "audio/wav", "ETag": '"g"', "Cache-Control": "max-age=60", "Age": "50"}
    )
    for path in ("/e.wav", "/g.wav"):
        await cache.get(server.url(path))
    clock.advance(9)
    for path in ("/e.wav", "/g.wav"):
        await cache.get(server.url(path))
    assert (server.hits("/e.wav"), server.hits("/g.wav")) == (1, 1)
    clock.advance(2)  # 11 s: /g.wav (60 - 50 = 10 s) is stale, /e.wav (30 s) is not
    for path in ("/e.wav", "/g.wav"):
        await cache.get(server.url(path))
    assert (server.hits("/e.wav"), server.hits("/g.wav")) == (1, 2)


async def test_the_cache_survives_a_restart_and_an_evicted_decode_is_refetched(
    tmp_path: Path, server: AudioServer, pool: ProcessPoolExecutor, clock: FakeClock
) -> None:
    server.resources["/a.wav"] = Resource(
        headers={"Content-Type": "audio/wav", "ETag": '"v1"', "Cache-Control": "max-age=600"}
    )
    url = server.url("/a.wav")
    for _ in range(2):  # two node lifetimes over the same data dir
        workers = MediaWorkers(tmp_path / "pcm", executor=pool)
        cache = HttpAudioCache(workers, tmp_path / "http", clock=clock)
        pcm = await cache.get(url)
        await cache.aclose()
    assert server.hits("/a.wav") == 1 and abs(peak_hz(pcm) - 1000) < 2

    for f in (tmp_path / "pcm").iterdir():
        f.unlink()  # the decode was evicted; the record alone cannot answer
    workers = MediaWorkers(tmp_path / "pcm", executor=pool)
    cache = HttpAudioCache(workers, tmp_path / "http", clock=clock)
    assert await cache.get(url) == pcm
    await cache.aclose()
    assert server.hits("/a.wav") == 2 and "if-none-match" not in server.last_headers("/a.wav")


async def test_concurrent_plays_of_one_url_make_one_request(server: AudioServer, cache: HttpAudioCache) -> None:
    server.resources["/a.wav"] = Resource(delay=True)
    url = server.url("/a.wav")
    tasks = [asyncio.ensure_future(cache.get(url)) for _ in range(5)]
    await asyncio.sleep(0.2)
    server.release.set()
    results = await asyncio.gather(*tasks)
    assert len(set(results)) == 1 and server.hits("/a.wav") == 1


async def test_redirects_are_followed_up_to_the_limit(server: AudioServer, cache: HttpAudioCache) -> None:
    server.resources["/old.wav"] = Resource(b"", status=301, headers={"Location": "/a.wav"})
    server.resources["/a.wav"] = Resource()
    assert len(await cache.get(server.url("/old.wav"))) == 8000
    for k in range(7):  # /r0 -> /r1 -> ... -> /r7 -> /a.wav: seven redirects
        server.resources[f"/r{k}"] = Resource(b"", status=302, headers={"Location": f"/r{k + 1}"})
    server.resources["/r7"] = Resource(b"", status=307, headers={"Location": "/a.wav"})
    server.resources["/r3x"] = Resource(b"", status=308, headers={"Location": "/r4"})  # 4 redirects to /a.wav
    assert len(await cache.get(server.url("/r3x"))) == 8000
    before = cache.requests
    with pytest.raises(HttpStatusError, match="more than 5 redirects"):
        await cache.get(server.url("/r0"))
    assert cache.requests - before == 6


@pytest.mark.parametrize(
    "location",
    ["file:///etc/passwd", "ftp://127.0.0.1/a.wav", "gopher://127.0.0.1:70/x", "data:audio/wav;base64,UklGRg=="],
)
async def test_a_redirect_to_anything_but_http_is_refused(
    server: AudioServer, cache: HttpAudioCache, location: str
) -> None:
    server.resources["/x.wav"] = Resource(b"", status=302, headers={"Location": location})
    with pytest.raises(InvalidUrlError) as info:
        await cache.get(server.url("/x.wav"))
    assert info.value.code == 11100 and cache.requests == 1


def wav_or_redirect(routes: dict[str, str]) -> httpx.MockTransport:
    """An outside world of https hosts: each URL in ``routes`` redirects (302) to its value; others serve a WAV."""

    def handler(request: httpx.Request) -> httpx.Response:
        target = routes.get(str(request.url))
        if target is not None:
            return httpx.Response(302, headers={"Location": target})
        return httpx.Response(200, headers={"Content-Type": "audio/wav"}, content=WAV_1K)

    return httpx.MockTransport(handler)


async def test_https_is_never_downgraded_and_another_host_is_allowed(workers: MediaWorkers, tmp_path: Path) -> None:
    routes = {
        "https://rcml.example/hold.wav": "https://cdn.example/signed/hold.wav?sig=1",
        "https://rcml.example/down.wav": "http://rcml.example/down.wav",
    }
    async with httpx.AsyncClient(transport=wav_or_redirect(routes)) as client:
        cache = HttpAudioCache(workers, tmp_path / "http", client=client)
        assert len(await cache.get("https://rcml.example/hold.wav")) == 8000
        with pytest.raises(InvalidUrlError, match="https down to http"):
            await cache.get("https://rcml.example/down.wav")
        assert cache.requests == 3


async def test_records_are_bounded_least_recently_used_first(
    tmp_path: Path, server: AudioServer, workers: MediaWorkers
) -> None:
    for name in "abcde":
        server.resources[f"/{name}.wav"] = Resource(headers={"Content-Type": "audio/wav", "ETag": f'"{name}"'})
    cache = HttpAudioCache(workers, tmp_path / "http", max_records=3)
    for name in "abcad":  # a is used again before d arrives: b is the least recently used
        await cache.get(server.url(f"/{name}.wav"))
    assert len(cache.records) == 3 and cache.records.evicted == 1
    assert len(list((tmp_path / "http").glob("*.json"))) == 3
    await cache.get(server.url("/b.wav"))  # its record was evicted: a plain GET, no validator
    assert "if-none-match" not in server.last_headers("/b.wav")
    await cache.get(server.url("/a.wav"))  # still held: revalidated
    assert server.last_headers("/a.wav")["if-none-match"] == '"a"'
    await cache.aclose()
    # Another node lifetime with a byte budget that holds one record: the directory is trimmed at first use.
    small = HttpAudioCache(workers, tmp_path / "http", max_record_bytes=400)
    await small.get(server.url("/e.wav"))
    assert len(small.records) == 1 and len(list((tmp_path / "http").glob("*.json"))) == 1
    await small.get(server.url("/e.wav"))
    assert server.last_headers("/e.wav")["if-none-match"] == '"e"'
    await small.aclose()


@pytest.mark.parametrize("status", [404, 500, 403])
async def test_bad_status(server: AudioServer, cache: HttpAudioCache, status: int) -> None:
    server.resources["/x.wav"] = Resource(b"nope", status=status, headers={"Content-Type": "text/plain"})
    with pytest.raises(HttpStatusError) as info:
        await cache.get(server.url("/x.wav"))
    assert info.value.status == status and info.value.code == 11206 and f"HTTP {status}" in str(info.value)


async def test_html_is_not_audio(server: AudioServer, cache: HttpAudioCache) -> None:
    server.resources["/page"] = Resource(b"<html></html>", headers={"Content-Type": "text/html; charset=utf-8"})
    with pytest.raises(UnsupportedContentTypeError) as info:
        await cache.get(server.url("/page"))
    assert info.value.code == 12300 and info.value.content_type == "text/html"


async def test_audio_content_type_with_bytes_that_are_not_audio(server: AudioServer, cache: HttpAudioCache) -> None:
    server.resources["/fake.wav"] = Resource(b"#EXTM3U\nhttp://10.0.0.1/x\n", headers={"Content-Type": "audio/wav"})
    with pytest.raises(UnsupportedFormatError):
        await cache.get(server.url("/fake.wav"))


async def test_body_size_limit(server: AudioServer, workers: MediaWorkers, tmp_path: Path) -> None:
    server.resources["/a.wav"] = Resource()
    cache = HttpAudioCache(workers, tmp_path / "http", max_bytes=1000)
    with pytest.raises(ResponseTooLargeError):
        await cache.get(server.url("/a.wav"))
    await cache.aclose()


async def test_timeout(server: AudioServer, workers: MediaWorkers, tmp_path: Path) -> None:
    server.resources["/slow.wav"] = Resource(delay=True)
    cache = HttpAudioCache(workers, tmp_path / "http", timeout=0.2)
    with pytest.raises(FetchTimeoutError) as info:
        await cache.get(server.url("/slow.wav"))
    assert info.value.code == 11205
    await cache.aclose()


async def test_connection_refused(cache: HttpAudioCache) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PlayFetchError) as info:
        await cache.get(f"http://127.0.0.1:{port}/a.wav")
    assert type(info.value) is PlayFetchError and info.value.code == 11205


@pytest.mark.parametrize("url", ["ftp://example.com/a.wav", "file:///etc/passwd", "not a url", "http://"])
async def test_invalid_urls(cache: HttpAudioCache, url: str) -> None:
    with pytest.raises(InvalidUrlError) as info:
        await cache.get(url)
    assert info.value.code == 11100 and cache.requests == 0


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (None, CacheControl()),
        ("max-age=60", CacheControl(max_age=60)),
        ('public, MAX-AGE="120", must-revalidate', CacheControl(max_age=120)),
        ("max-age=abc", CacheControl(max_age=0)),
        ("no-cache", CacheControl(no_cache=True)),
        ("no-store, no-cache", CacheControl(no_cache=True, no_store=True)),
        ("private, s-maxage=99", CacheControl()),
    ],
)
def test_parse_cache_control(value: str | None, parsed: CacheControl) -> None:
    assert parse_cache_control(value) == parsed
