"""WebClient against a real HTTP server on loopback: methods, parameters, credentials, redirects, limits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callplane.webhooks import fetch
from callplane.webhooks.fetch import FetchError, Limits, WebClient, form_encode, redact, with_query
from tests.webapp import Answer, WebApp

RCML = "<Response><Say>Hello.</Say></Response>"
PARAMS = (("CallSid", "CA1"), ("SipHeader_Diversion", "<tel:+1>;a=1"), ("SipHeader_Diversion", "<tel:+2>"))


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with WebApp() as a:
        yield a


@pytest.fixture
async def client() -> AsyncIterator[WebClient]:
    c = WebClient(Limits(connect_timeout=1.0, total_timeout=1.5, max_body=1000, max_redirects=2))
    yield c
    await c.close()


async def test_post_sends_form_parameters_in_order_with_repeats(app: WebApp, client: WebClient) -> None:
    app.route("/rcml", Answer.xml(RCML))
    reply = await client.request(app.url("/rcml"), "POST", PARAMS)
    assert reply.status == 200
    assert reply.content_type == "application/xml"
    assert reply.body == RCML.encode()
    (seen,) = app.requests("/rcml")
    assert seen.method == "POST"
    assert seen.form == list(PARAMS)
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded; charset=UTF-8"


async def test_get_appends_parameters_to_the_existing_query(app: WebApp, client: WebClient) -> None:
    app.route("/rcml", Answer.xml(RCML))
    await client.request(app.url("/rcml") + "?app=7", "get", PARAMS)
    (seen,) = app.requests("/rcml")
    assert seen.method == "GET"
    assert seen.query == [("app", "7"), *PARAMS]
    assert seen.body == b""


async def test_credentials_in_the_url_become_basic_auth_and_are_redacted(app: WebApp, client: WebClient) -> None:
    app.route("/rcml", Answer.xml(RCML))
    url = app.url("/rcml", userinfo="ACabc:s%3Acret")
    reply = await client.request(url, "POST", ())
    (seen,) = app.requests("/rcml")
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(b"ACabc:s:cret").decode()
    assert "ACabc" not in reply.url
    assert redact(url) == app.url("/rcml")


async def test_redirects_keep_method_and_parameters(app: WebApp, client: WebClient) -> None:
    app.route("/old", Answer.redirect("/new", status=302))
    app.route("/new", Answer.xml(RCML))
    reply = await client.request(app.url("/old"), "POST", PARAMS)
    assert reply.url == app.url("/new")
    assert [(s.method, s.path, s.form) for s in app.seen] == [
        ("POST", "/old", list(PARAMS)),
        ("POST", "/new", list(PARAMS)),
    ]


async def test_too_many_redirects(app: WebApp, client: WebClient) -> None:
    app.route("/loop", Answer.redirect("/loop"))
    with pytest.raises(FetchError) as err:
        await client.request(app.url("/loop"), "POST", ())
    assert err.value.code == fetch.TOO_MANY_REDIRECTS
    assert len(app.requests("/loop")) == 3  # the first try and two redirects


async def test_redirect_to_another_host_drops_the_credentials(app: WebApp, client: WebClient) -> None:
    other = f"http://localhost:{app.port}/new"
    app.route("/old", Answer.redirect(other))
    app.route("/new", Answer.xml(RCML))
    await client.request(app.url("/old", userinfo="AC1:tok"), "GET", ())
    first, second = app.seen
    assert "authorization" in first.headers
    assert "authorization" not in second.headers


@pytest.mark.parametrize(
    ("answer", "code", "status", "retryable"),
    [
        (Answer(404), fetch.NOT_FOUND, 404, False),
        (Answer(500), fetch.HTTP_STATUS, 500, True),
        (Answer(503), fetch.HTTP_STATUS, 503, True),
        (Answer(429), fetch.HTTP_STATUS, 429, True),
        (Answer(403), fetch.HTTP_STATUS, 403, False),
        (Answer(200, b"x" * 1001), fetch.TOO_LARGE, 200, False),
    ],
)
async def test_failures_carry_their_notification_code(
    app: WebApp, client: WebClient, answer: Answer, code: int, status: int, retryable: bool
) -> None:
    app.route("/x", answer)
    with pytest.raises(FetchError) as err:
        await client.request(app.url("/x"), "POST", ())
    assert (err.value.code, err.value.status, err.value.retryable) == (code, status, retryable)


async def test_a_hung_server_times_out_within_the_total_limit(app: WebApp, client: WebClient) -> None:
    app.route("/slow", Answer(200, b"late", delay=5.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(FetchError) as err:
        await client.request(app.url("/slow"), "POST", ())
    assert err.value.code == fetch.CONNECTION and err.value.retryable
    assert loop.time() - started < 3.0


async def test_connection_refused(client: WebClient) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(FetchError) as err:
        await client.request(f"http://127.0.0.1:{port}/x", "POST", ())
    assert err.value.code == fetch.CONNECTION


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h/x",
        "/relative",
        "http:///nohost",
        "not a url",
        "file:///etc/passwd",
        "http://h:abc/x",
        "http://u:p@h:99999/x",
        "http://h/\x01x",
    ],
)
async def test_invalid_urls(client: WebClient, url: str) -> None:
    with pytest.raises(FetchError) as err:
        await client.request(url, "POST", ())
    assert err.value.code == fetch.INVALID_URL


async def test_invalid_method(client: WebClient) -> None:
    with pytest.raises(FetchError) as err:
        await client.request("http://127.0.0.1/x", "PUT", ())
    assert err.value.code == fetch.INVALID_URL


def test_with_query() -> None:
    assert with_query("http://h/p", ()) == "http://h/p"
    assert with_query("http://h/p?a=1#frag", (("b", "2 3"),)) == "http://h/p?a=1&b=2+3"


@given(st.lists(st.tuples(st.text(), st.text()), max_size=8))
def test_form_encode_is_urlencode(params: list[tuple[str, str]]) -> None:
    assert form_encode(params) == urlencode(params)


async def test_a_cookie_one_server_sets_is_never_sent_back(app: WebApp, client: WebClient) -> None:
    """One client serves every account's webhooks: a cookie jar would carry one account's session to another."""
    app.route(
        "/rcml", Answer(200, RCML.encode(), "application/xml", headers=(("Set-Cookie", "session=acct-a; Path=/"),))
    )
    await client.request(app.url("/rcml"), "POST", PARAMS)
    await client.request(app.url("/rcml"), "GET", PARAMS)
    first, second = app.requests("/rcml")
    assert "cookie" not in first.headers and "cookie" not in second.headers


@contextlib.asynccontextmanager
async def _raw_server(answer: bytes, seen: list[bytes]) -> AsyncIterator[str]:
    """A server (its ``host:port``) that records every request's bytes as they arrived (head and Content-Length
    body) and answers ``answer`` to each."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                seen.append(head + await reader.readexactly(length))
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def test_the_exact_request_bytes_a_web_server_receives(client: WebClient) -> None:
    """The bytes on the wire, header order included (what httpx sent before WebClient wrote its own heads)."""
    seen: list[bytes] = []
    common = b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nUser-Agent: callplane\r\n"
    async with _raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", seen) as host:
        await client.request(f"http://{host}/r%C3%A9 x?app=7#frag", "GET", (("To", "+1 555"), ("A", "é&=")))
        await client.request(f"http://AC1:s%3Ac@{host}/status", "POST", (("CallStatus", "ringing"),))
        await client.request(f"http://{host}/empty", "POST", ())
    form = b"application/x-www-form-urlencoded; charset=UTF-8"
    assert seen == [
        b"GET /r%%C3%%A9%%20x?app=7&To=%%2B1+555&A=%%C3%%A9%%26%%3D HTTP/1.1\r\nHost: %s\r\n%s\r\n"
        % (host.encode(), common),
        b"POST /status HTTP/1.1\r\nHost: %s\r\n%sContent-Type: %s\r\nContent-Length: 18\r\n"
        b"Authorization: Basic %s\r\n\r\nCallStatus=ringing"
        % (host.encode(), common, form, base64.b64encode(b"AC1:s:c")),
        b"POST /empty HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n%sContent-Type: %s\r\n\r\n"
        % (host.encode(), common, form),
    ]


async def test_a_compressed_answer_is_decoded_and_repeated_headers_are_joined(client: WebClient) -> None:
    body = gzip.compress(RCML.encode())
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Type: charset=utf-8\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    async with _raw_server(answer, []) as host:
        reply = await client.request(f"http://{host}/rcml", "GET")
    assert (reply.body, reply.content_type) == (RCML.encode(), "application/xml, charset=utf-8")
