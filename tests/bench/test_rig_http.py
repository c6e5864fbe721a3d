"""The benchmark rig's lean HTTP/1.1 (bench/rig_http.py) against real peers: httpx (the node's webhook client)
and uvicorn (tests/webapp.py), and raw bytes for what those peers never send (pipelining, chunked bodies, garbage).
The rig's figures are only as honest as this code, so what a peer receives is asserted byte for byte."""

from __future__ import annotations

import asyncio
import base64

import httpx

from bench.rig_http import HttpClient, Request, build_request, response_bytes, start_server
from tests.webapp import Answer, WebApp


async def _exchange(port: int, raw: bytes) -> bytes:
    """Write ``raw`` on a fresh connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    try:
        async with asyncio.timeout(5):
            return await reader.read(-1)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_server_answers_httpx_form_posts_and_gets_on_one_kept_alive_connection() -> None:
    seen: list[Request] = []
    connections: list[None] = []

    def handle(request: Request) -> bytes:
        seen.append(request)
        return response_bytes(204) if request.path == "/status" else response_bytes(200, b"<Response/>", "text/xml")

    server, port = await start_server(handle, "127.0.0.1", on_connect=lambda: connections.append(None))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r1 = await client.post("/status", data={"CallSid": "CA1", "CallStatus": "completed", "Sip": "a=b&c"})
            r2 = await client.get("/rcml", params={"CallSid": "CA2", "CallStatus": "ringing"})
    finally:
        server.close()
        await server.wait_closed()
    assert (r1.status_code, r1.content) == (204, b"")
    assert (r2.status_code, r2.content, r2.headers["content-type"]) == (200, b"<Response/>", "text/xml")
    assert [(s.method, s.path) for s in seen] == [("POST", "/status"), ("GET", "/rcml")]
    assert seen[0].params == [("CallSid", "CA1"), ("CallStatus", "completed"), ("Sip", "a=b&c")]
    assert seen[1].params == [("CallSid", "CA2"), ("CallStatus", "ringing")]
    assert len(connections) == 1


async def test_server_answers_pipelined_requests_in_order_with_a_chunked_body_then_closes() -> None:
    bodies: list[bytes] = []

    def handle(request: Request) -> bytes:
        bodies.append(request.body)
        return response_bytes(200, request.path.encode())

    server, port = await start_server(handle, "127.0.0.1")
    try:
        raw = (
            b"POST /one HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nde\r\n3;ext=1\r\nfgh\r\n0\r\n\r\n"
            b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        )
        got = await _exchange(port, raw)
    finally:
        server.close()
        await server.wait_closed()
    assert got == response_bytes(200, b"/one") + response_bytes(200, b"/two")
    assert bodies == [b"defgh", b"abc"]


async def test_server_answers_garbage_with_400_and_closes() -> None:
    server, port = await start_server(lambda request: response_bytes(204), "127.0.0.1")
    try:
        got = await _exchange(port, b"HELLO\r\n\r\n")
    finally:
        server.close()
        await server.wait_closed()
    assert got == b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nbad request"


async def test_client_posts_a_form_with_basic_auth_to_uvicorn_and_keeps_the_connection() -> None:
    async with WebApp() as app:
        app.route("/calls", Answer.xml("<ok/>"))
        client = HttpClient(app.host, app.port)
        raw = build_request("POST", "/calls", f"{app.host}:{app.port}", auth=("AC1", "tok"), form={"To": "sip:a@b"})
        first, second = await client.send(raw), await client.send(raw)
        client.close()
    assert (first.status, first.body, first.headers["content-type"]) == (200, b"<ok/>", "application/xml")
    assert second.body == b"<ok/>"
    assert client.opened == 1
    seen = app.requests("/calls")
    assert [s.form for s in seen] == [[("To", "sip:a@b")]] * 2
    assert seen[0].headers["authorization"] == "Basic " + base64.b64encode(b"AC1:tok").decode()


async def test_client_reads_a_chunked_response_and_reconnects_after_connection_close() -> None:
    served = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await reader.readuntil(b"\r\n\r\n")
        served += 1
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"4\r\nsid=\r\n3\r\nCA1\r\n0\r\n\r\n"
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpClient("127.0.0.1", port)
    try:
        raw = build_request("GET", "/x", "h")
        first, second = await client.send(raw), await client.send(raw)
    finally:
        client.close()
        server.close()
        await server.wait_closed()
    assert (first.status, first.body, second.body) == (200, b"sid=CA1", b"sid=CA1")
    assert (client.opened, served) == (2, 2)
