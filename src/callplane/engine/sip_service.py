"""The node's SIP endpoint: the UA over UDP+TCP, the registrar backed by the store, and call routing.

The endpoint's events go through a :class:`~callplane.engine.dispatch.SipEventDispatcher` (pass the node's own to
share it with MediaCalls and the call engine). The service subscribes for REGISTER, and as the fallback for an
INVITE that no other subscriber claimed, which it answers 404. OPTIONS outside a dialog is answered by the UA itself
(200 with Allow and Accept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from callplane.core.clock import Clock
from callplane.core.ids import IdSource
from callplane.engine.dispatch import FALLBACK, SipEventDispatcher
from callplane.sip.aio import RateLimitedLog, SipEndpoint
from callplane.sip.dialog import uri_destination
from callplane.sip.digest import DigestServer
from callplane.sip.events import IncomingCall, RegisterReceived
from callplane.sip.headers import Address, SipParseError
from callplane.sip.registrar import Binding, Registrar, Secret
from callplane.sip.ua import CallStateError, UserAgent
from callplane.store import node_settings, registrations
from callplane.store.db import Database
from callplane.store.registrations import BindingRow

log = logging.getLogger("callplane.sip")

NONCE_SECRET_KEY = "sip_nonce_secret"
PURGE_INTERVAL = 60.0
MAX_PENDING_REGISTERS = 256
"""REGISTERs being processed at once; beyond this a REGISTER is answered 503 with Retry-After."""


async def node_digest(db: Database, ids: IdSource, realm: str, algorithms: tuple[str, ...] = ("MD5",)) -> DigestServer:
    """The node's digest server: its nonce secret is shared by every node on this database (and by the registrar
    and the inbound-call authentication of one node), so a nonce issued by one verifies on another. Nodes that
    start together keep whichever secret was written first."""
    secret = await node_settings.setdefault_setting(db, NONCE_SECRET_KEY, ids.token(32))
    return DigestServer(realm, bytes.fromhex(secret), ids, algorithms=algorithms)


class KeyedLocks:
    """One asyncio lock per key, held only while someone uses it: the table holds the keys in use, no more."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class ClientSecrets(Protocol):
    """Where the registrar finds a Client's credentials (:class:`~callplane.engine.clients.StoreClientSecrets`: the
    Clients table)."""

    async def lookup(self, login: str) -> tuple[Secret | None, str]:
        """The Client's secret (None: unknown, or cannot authenticate) and the account that owns it (its
        registrations are stored under it; "" when unknown)."""
        ...


class StaticClientSecrets:
    """Clients from a mapping of login to password, all owned by ``account_sid`` (tests and tools)."""

    def __init__(self, passwords: Mapping[str, str], account_sid: str = "") -> None:
        self._passwords = dict(passwords)
        self._account_sid = account_sid

    async def lookup(self, login: str) -> tuple[Secret | None, str]:
        password = self._passwords.get(login)
        if password is None:
            return None, ""
        return Secret(password=password), self._account_sid


def _contact_target(contact: str) -> tuple[str, int] | None:
    """Where a request to a bound Contact would be sent (host, port), or None if the Contact cannot be read."""
    try:
        host, port, _ = uri_destination(Address.parse(contact).uri)
    except SipParseError:
        return None
    return host, port


def to_row(b: Binding, instance_id: str, account_sid: str = "") -> BindingRow:
    return BindingRow(
        aor=b.aor,
        contact=b.contact,
        expires_at=b.expires_at,
        call_id=b.call_id,
        cseq=b.cseq,
        source=f"{b.source_host}:{b.source_port}",
        transport=b.transport,
        user_agent=b.user_agent or "",
        instance_id=instance_id,
        account_sid=account_sid,
    )


def from_row(r: BindingRow) -> Binding:
    host, _, port = r.source.rpartition(":")
    return Binding(
        aor=r.aor,
        contact=r.contact,
        expires_at=r.expires_at,
        call_id=r.call_id,
        cseq=r.cseq,
        source_host=host,
        source_port=int(port) if port.isdigit() else 0,
        transport=r.transport,
        user_agent=r.user_agent or None,
    )


class SipService:
    """Owns the SIP endpoint of a node. ``start()`` binds; ``close()`` releases everything."""

    def __init__(
        self,
        db: Database,
        ids: IdSource,
        clock: Clock,
        *,
        host: str,
        port: int,
        instance_id: str,
        realm: str = "callplane",
        clients: ClientSecrets | None = None,
        digest_algorithms: tuple[str, ...] = ("MD5",),
        dispatcher: SipEventDispatcher | None = None,
    ) -> None:
        self.db = db
        self.ids = ids
        self.clock = clock
        self.instance_id = instance_id
        self.realm = realm
        self.clients = clients or StaticClientSecrets({})
        # One challenge, MD5, by default: SIPp 3.6 answers only MD5 and baresip 1.0 fails when any SHA-256
        # challenge is present, even beside an MD5 one (RFC 8760 order would be SHA-256 first).
        self.digest_algorithms = digest_algorithms
        self.endpoint = SipEndpoint(ids=ids, host=host, port=port)
        self.dispatcher = dispatcher if dispatcher is not None else SipEventDispatcher()
        self._ua: UserAgent | None = None
        self._registrar: Registrar | None = None
        self.digest: DigestServer | None = None  # after start(): the registrar's, shared with inbound calls
        self.aor_locks = KeyedLocks()
        self._failures = RateLimitedLog(10.0, log, "registrar")
        self._registering = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._purger: asyncio.Task[None] | None = None

    @property
    def ua(self) -> UserAgent:
        assert self._ua is not None, "start() first"
        return self._ua

    @property
    def local(self) -> dict[str, tuple[str, int]]:
        return self.endpoint.local

    async def start(self) -> None:
        self.digest = await node_digest(self.db, self.ids, self.realm, self.digest_algorithms)
        self._registrar = Registrar(self.digest, self.ids)
        await self.endpoint.start()
        self._ua = UserAgent(self.ids, self.endpoint.local, tl=self.endpoint.layer, accept_register=True)
        self.dispatcher.attach(self.endpoint, self._ua)
        self.dispatcher.subscribe(self._on_register, types=(RegisterReceived,), name="sip-service REGISTER")
        self.dispatcher.subscribe(
            self._no_route, types=(IncomingCall,), order=FALLBACK, fallback=True, name="sip-service no route"
        )
        self._purger = asyncio.create_task(self._purge_loop())

    async def close(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._purger] if self._purger else []), return_exceptions=True)
        await self.endpoint.close()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_register(self, event: RegisterReceived) -> bool:
        if self._registering >= MAX_PENDING_REGISTERS:
            busy = event.request.create_response(503, to_tag=self.ids.tag())
            busy.headers.add("Retry-After", 5)
            self.ua.respond(busy, self._now())
            return True
        self._registering += 1  # counted from here, so a burst in one loop iteration is bounded too
        self._spawn(self._register(event))
        return True

    def _no_route(self, event: IncomingCall) -> None:
        """An INVITE no subscriber claimed (or whose claimant failed before answering it): 404."""
        try:
            if self.ua.call(event.call).state not in ("received", "ringing"):
                return
        except CallStateError:  # already ended (the caller gave up, or a claimant rejected it and then failed)
            return
        log.info("INVITE %s -> %s: no route, answering 404", event.from_uri, event.request_uri)
        self.ua.reject(event.call, 404, self._now())

    async def _register(self, event: RegisterReceived) -> None:
        """One REGISTER: look up the Client and the AOR's bindings, decide, persist, answer (serialised per AOR)."""
        assert self._registrar is not None
        registrar, request = self._registrar, event.request
        try:
            aor = registrar.aor(request)
            async with self.aor_locks.hold(aor):
                login = registrar.username(request)
                secret, account = await self.clients.lookup(login) if login else (None, "")
                wall = self.clock.wall().timestamp()
                current = [from_row(r) for r in await registrations.lookup(self.db, aor, wall)]
                source = (event.source.host, event.source.port, event.source.transport)
                outcome = registrar.handle(request, secret=secret, bindings=current, now=wall, source=source)
                if outcome.aor is not None and (outcome.upserts or outcome.removals):
                    rows = [to_row(b, self.instance_id, account) for b in outcome.upserts]
                    await registrations.apply(self.db, outcome.aor, rows, list(outcome.removals))
                    self._track_flows(outcome.upserts, outcome.removals)
                response = outcome.response
        except Exception as exc:  # one line, rate-limited: a peer must not be able to flood the log
            peer = f"{event.source.host}:{event.source.port}"
            self._failures.warn("REGISTER failed", self._now(), f"from {peer}: {exc!r}")
            response = request.create_response(500, "Registrar Failure", to_tag=self.ids.tag())
        finally:
            self._registering -= 1
        self.ua.respond(response, self._now())
        self.endpoint.flush()

    def _track_flows(self, upserts: tuple[Binding, ...], removals: tuple[str, ...]) -> None:
        """Requests to a Client registered over TCP go on the connection its REGISTER came on (a phone behind NAT
        accepts no new connection); removed bindings let go of it."""
        for binding in upserts:
            target = _contact_target(binding.contact)
            if target is not None and binding.transport == "TCP":
                self.endpoint.bind_flow(target, (binding.source_host, binding.source_port))
        for contact in removals:
            target = _contact_target(contact)
            if target is not None:
                self.endpoint.unbind_flow(target)

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            with contextlib.suppress(Exception):
                removed = await registrations.purge(self.db, self.clock.wall().timestamp())
                if removed:
                    log.info("purged %d expired registrations", removed)

    async def lookup(self, aor: str) -> list[Binding]:
        """Where a Client can be reached now (any node's registrations)."""
        rows = await registrations.lookup(self.db, aor, self.clock.wall().timestamp())
        return [from_row(r) for r in rows]
