"""Forwarding a request to the worker (or node on this host) that owns what it acts on.

With ``--workers N`` the kernel hands each HTTP connection to any worker, but a live call runs in exactly one
(``CallElsewhere`` names it). The request is replayed, once, over that process's control socket
(``core.nodes.control_address``): same method, path, query, form fields and credentials, so the owner
authenticates and answers it as if it had arrived there. Its answer is returned as is.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import httpx
from fastapi import Request
from fastapi.responses import Response

from callplane.core.nodes import control_address

__all__ = ["FORWARDED", "Forwarder"]

log = logging.getLogger("callplane.api")

FORWARDED = "x-callplane-forwarded"  # set on a replayed request: it is never forwarded again
_PASS = ("authorization", "accept")
_TIMEOUT = httpx.Timeout(15.0, connect=2.0)


class Forwarder:
    def __init__(self, own_instance: str | None = None) -> None:
        self.own_instance = own_instance
        self._clients: dict[str, httpx.AsyncClient] = {}

    def may_forward(self, request: Request, instance_id: str) -> bool:
        return bool(instance_id) and instance_id != self.own_instance and FORWARDED not in request.headers

    async def forward(self, request: Request, instance_id: str, fields: dict[str, str]) -> Response | None:
        """The owner's answer, or None when it cannot be reached (not running, or not on this host)."""
        client = self._clients.get(instance_id)
        if client is None:
            if len(self._clients) >= 64:
                await self.close()
            transport = httpx.AsyncHTTPTransport(uds=control_address(instance_id))
            client = self._clients[instance_id] = httpx.AsyncClient(transport=transport, timeout=_TIMEOUT)
        headers = {k: v for k in _PASS if (v := request.headers.get(k)) is not None}
        if request.scope.get("callplane.json"):  # a .json path arrives here stripped: say it the other way
            headers["accept"] = "application/json"
        headers[FORWARDED] = self.own_instance or "1"
        headers["content-type"] = "application/x-www-form-urlencoded"
        url = httpx.URL(path=request.url.path, query=request.url.query.encode())
        try:
            answer = await client.post(
                url.copy_with(scheme="http", host="callplane"), content=urlencode(fields), headers=headers
            )
        except httpx.HTTPError as e:
            log.info("could not forward %s to %s: %r", request.url.path, instance_id, e)
            return None
        kept = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "allow")}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()
