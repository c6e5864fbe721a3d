"""The composition root: wires settings, store, engine and API.

``callplane --help`` lists the subcommands; every setting is a flag on each subcommand and an environment
variable ``CALLPLANE_<NAME>`` (flag > environment > embedded default).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import uvloop

from callplane import __version__
from callplane.core.clock import Clock, SystemClock
from callplane.core.errors import CallplaneError, ConfigError
from callplane.core.ids import IdSource
from callplane.core.nodes import MAX_WORKERS, control_address, worker_instance_id
from callplane.core.runtime import tune_gc
from callplane.core.settings import Settings
from callplane.store import calls as store_calls
from callplane.store import clients as store_clients
from callplane.store.bootstrap import AdminCredentials, ensure_admin, ensure_instance_id
from callplane.store.db import Database
from callplane.store.synthetic import generate_rows

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("callplane")
T = TypeVar("T")

_STORE_SETTINGS = ("data", "database_url", "log_level")


def _add_settings(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    group = parser.add_argument_group("settings (each also read from CALLPLANE_<NAME>)")
    for f in fields(Settings):
        if names is not None and f.name not in names:
            continue
        flag = "--" + f.name.replace("_", "-")
        env = "CALLPLANE_" + str(f.metadata["env"])
        default = f.default if f.default != "" else "unset"
        group.add_argument(flag, dest=f.name, default=None, help=f"{f.metadata['help']} [{env}; default {default}]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callplane",
        description="callplane: programmable voice (Restcomm 2012-04-24 API, RCML, SIP, RTP).",
    )
    parser.add_argument("--version", action="version", version=f"callplane {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="apply migrations and run the node (HTTP API and SIP)")
    _add_settings(serve)
    serve.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # set by the supervisor
    serve.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)

    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    _add_settings(migrate, _STORE_SETTINGS)

    calls = sub.add_parser("calls", help="call-record utilities")
    calls_sub = calls.add_subparsers(dest="calls_command", required=True, metavar="ACTION")
    gen = calls_sub.add_parser("generate", help="load N synthetic call records (demos, benchmarks)")
    gen.add_argument("--account", required=True, help="AccountSid that owns the records")
    gen.add_argument("--count", type=int, required=True, help="number of records")
    gen.add_argument("--days", type=int, default=90, help="spread over this many days before now (default 90)")
    gen.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    gen.add_argument(
        "--instance-id",
        dest="gen_instance_id",
        default=None,
        help="InstanceId stamped on the records (default: a new one, never a node's own, so no node's start-up "
        "takes the synthetic live calls for its own unfinished calls)",
    )
    _add_settings(gen, _STORE_SETTINGS)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    given = {f.name: getattr(args, f.name, None) for f in fields(Settings)}
    return Settings.from_env().override(**given)


async def _open_store(settings: Settings) -> Database:
    db = Database(settings.effective_database_url)
    await db.migrate()
    return db


def _port_taken(what: str, host: str, port: int, flag: str, exc: OSError) -> ConfigError:
    errno = exc.errno or getattr(exc.__cause__, "errno", None)  # uvloop's UDP bind error wraps the real one
    reason = os.strerror(errno) if errno else str(exc)
    return ConfigError(
        f"cannot listen for {what} on {host}:{port}: {reason} (another callplane node?); "
        f"choose another address with --{flag} or CALLPLANE_{flag.upper()}"
    )


def _bind_http(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """The HTTP listening socket, bound here so a busy port is one clear error instead of uvicorn's exit.

    ``shared``: one of the workers' sockets on the same port (SO_REUSEPORT: the kernel spreads the connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart does not wait for TIME_WAIT
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _port_taken("HTTP", host, port, "http", exc) from None
    return sock


def _bind_control(instance_id: str) -> socket.socket:
    """This process's control socket (``core.nodes``): where other workers forward requests for its calls."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(control_address(instance_id))
    except OSError:
        sock.close()
        raise ConfigError(f"InstanceId {instance_id} is already running on this host (same --data?)") from None
    return sock


def _rtp_slice(low: int, high: int, index: int, count: int) -> tuple[int, int]:
    """Worker ``index``'s share of the RTP range (even-aligned, so RTP/RTCP pairs never straddle two workers)."""
    pairs = (high - low + 1) // 2
    if pairs < count:
        raise ConfigError(f"RTP port range {low}-{high} is too small for {count} workers")
    first, last = pairs * index // count, pairs * (index + 1) // count - 1
    return low + 2 * first, low + 2 * last + 1


def _check_trunks(settings: Settings) -> None:
    """The outbound proxy settings, checked before anything starts (a bad one is one clear error)."""
    from callplane.engine.trunks import parse_proxies

    parse_proxies(settings.outbound_proxy)
    _ = settings.outbound_proxy_failure_limit, settings.outbound_proxy_retry_seconds  # each raises if it is bad


def _report_tts() -> None:
    from callplane.media.tts import espeak_missing

    missing = espeak_missing()
    if missing is not None:
        log.warning("%s; <Say> fails with notification 12400 until then", missing)


@dataclass(frozen=True, slots=True)
class _Role:
    """Which process this is: the only one (``count`` 1), or worker ``index`` of ``count`` under a supervisor."""

    index: int = 0
    count: int = 1
    ready_fd: int | None = None  # the supervisor's pipe: one line when serving

    @property
    def alone(self) -> bool:
        return self.count == 1 and self.ready_fd is None


async def _serve(settings: Settings, role: _Role) -> None:
    import uvicorn

    from callplane.api.app import create_app
    from callplane.api.forward import Forwarder
    from callplane.engine.clients import StoreClientSecrets
    from callplane.engine.dispatch import SipEventDispatcher
    from callplane.engine.engine import EngineConfig
    from callplane.engine.inbound import InboundPolicy
    from callplane.engine.sip_service import SipService
    from callplane.engine.stack import EngineStack, StackOptions
    from callplane.store.outbox import adopt_callbacks

    ids, clock = IdSource(), SystemClock()
    host, port = settings.http_address
    inbound = InboundPolicy(settings.trusted_networks, settings.anonymous_inbound)  # bad values stop here
    # First: a second node on the same address stops before touching anything.
    http_sock = _bind_http(host, port, shared=not role.alone)
    db = await _open_store(settings)
    node_id = ensure_instance_id(settings.data, ids, settings.instance_id)
    instance_id = worker_instance_id(node_id, role.index)
    control_sock = _bind_control(instance_id)
    admin = await ensure_admin(db, ids, clock, settings.admin_account_sid, settings.admin_auth_token)
    if role.alone:
        _print_admin(admin)
    await _seed_clients(db, ids, clock, settings, admin.account.sid)
    sip_host, sip_port = settings.sip_address
    dispatcher = SipEventDispatcher()  # the SIP endpoint's one event handler; the engine's parts subscribe
    sip = SipService(
        db,
        ids,
        clock,
        host=sip_host,
        # Worker i listens on the --sip port + i (a SIP dispatcher in front spreads inbound calls over them); with
        # --sip port 0 every worker takes a free port.
        port=sip_port + role.index if sip_port else 0,
        instance_id=instance_id,
        realm=settings.sip_realm,
        clients=StoreClientSecrets(db, settings.sip_realm),
        digest_algorithms=settings.sip_digest_algorithms,
        dispatcher=dispatcher,
    )
    try:
        await sip.start()
    except OSError as exc:
        http_sock.close()
        control_sock.close()
        await db.close()
        raise _port_taken("SIP (UDP and TCP)", sip_host, sip_port, "sip", exc) from None
    # Only a process that holds its ports may close "its" unfinished calls: a second node with the same InstanceId
    # (same DATA) stops above, before it can end the running node's live calls.
    closed = await store_calls.complete_stale(db, instance_id, clock.wall())
    if role.index == 0:
        # Workers of an earlier run with more workers than now: worker 0 ends their calls and delivers their callbacks.
        orphans = [worker_instance_id(node_id, i) for i in range(role.count, MAX_WORKERS)]
        for orphan in orphans:
            closed += await store_calls.complete_stale(db, orphan, clock.wall())
        await adopt_callbacks(db, orphans, instance_id)
    if closed:
        log.info("closed %d call records left unfinished by this node's previous run", closed)
    sip_port = sip.local["UDP"][1]
    if role.alone:
        print(f"callplane: SIP on {sip_host}:{sip_port} (UDP and TCP)", flush=True)
        _report_tts()
    engine_config = EngineConfig(
        instance_id=instance_id,
        domain=f"{sip_host}:{sip_port}",
        outbound_proxy=settings.outbound_proxy or None,
        outbound_proxy_failures=settings.outbound_proxy_failure_limit,
        outbound_proxy_retry=settings.outbound_proxy_retry_seconds,
        outbound_username=settings.outbound_username or None,
        outbound_password=settings.outbound_password or None,
        public_url=settings.public_url or f"http://{host}:{port}",
        recordings_dir=settings.data / "recordings",
        registrar_instance=None if role.alone else node_id,
    )
    rtp_ports = _rtp_slice(*settings.rtp_port_range, role.index, role.count)
    options = StackOptions(media_host=sip_host, rtp_ports=rtp_ports, data=settings.data, inbound=inbound)
    stack = EngineStack(db, ids, clock, sip.endpoint, sip.ua, dispatcher, engine_config, options, digest=sip.digest)
    await stack.start()  # also queues the completed callbacks of the calls the previous run was cut off from
    forwarder = Forwarder(instance_id)
    app = create_app(
        db,
        ids=ids,
        clock=clock,
        control=stack.engine,
        recordings_dir=engine_config.recordings_dir,
        forwarder=forwarder,
        sip_realm=settings.sip_realm,
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    tune_gc()  # everything built so far lives as long as the process
    serving = asyncio.create_task(server.serve(sockets=[http_sock, control_sock]))
    watch: asyncio.Task[None] | None = None
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if role.ready_fd is not None:
            os.write(role.ready_fd, f"{role.index} {sip_port}\n".encode())
            watch = asyncio.create_task(_orphaned(server))
        elif not serving.done():
            print(f"callplane: HTTP API on http://{host}:{port}/2012-04-24 (InstanceId {instance_id})", flush=True)
        await serving
    finally:
        if watch is not None:
            watch.cancel()
        await stack.close()
        await forwarder.close()
        http_sock.close()
        control_sock.close()
        await sip.close()
        await db.close()


async def _seed_clients(db: Database, ids: IdSource, clock: Clock, settings: Settings, admin: str) -> None:
    """Development seed: each ``CALLPLANE_SIP_CLIENTS`` login without a Client becomes one of the administrator.
    Every worker runs it; a login another worker created meanwhile is skipped."""
    seeded = await store_clients.seed(
        db, settings.sip_client_passwords, account_sid=admin, realm=settings.sip_realm, ids=ids, now=clock.wall()
    )
    if seeded:
        log.info("created Clients %s of the administrator from CALLPLANE_SIP_CLIENTS", ", ".join(seeded))


async def _orphaned(server: uvicorn.Server, every: float = 0.5) -> None:
    """A worker whose supervisor is gone (killed) stops as on SIGTERM, ending its calls, instead of holding the
    node's ports so that the next start cannot have them."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(every)
    log.warning("the supervisor is gone; stopping")
    server.should_exit = True


def _print_admin(admin: AdminCredentials) -> None:
    if admin.new_token is not None:
        print(
            "callplane: created the administrator account. These credentials are shown only once:\n"
            f"  AccountSid: {admin.account.sid}\n  AuthToken:  {admin.new_token}",
            flush=True,
        )
    else:
        print(f"callplane: administrator AccountSid {admin.account.sid}", flush=True)


async def _prepare(settings: Settings) -> str:
    """The supervisor's part of a start: migrations, the InstanceId and the administrator, once for all workers."""
    ids, clock = IdSource(), SystemClock()
    db = await _open_store(settings)
    try:
        node_id = ensure_instance_id(settings.data, ids, settings.instance_id)
        _print_admin(await ensure_admin(db, ids, clock, settings.admin_account_sid, settings.admin_auth_token))
    finally:
        await db.close()
    return node_id


async def _migrate(settings: Settings) -> None:
    db = await _open_store(settings)
    await db.close()
    print(f"callplane: database at {settings.effective_database_url} is up to date")


async def _generate(settings: Settings, args: argparse.Namespace) -> None:
    from callplane.store import accounts

    ids = IdSource()
    db = await _open_store(settings)
    try:
        if await accounts.get(db, args.account) is None:
            raise ConfigError(f"account {args.account} does not exist")
        instance_id = args.gen_instance_id or ids.instance_id()
        started = time.perf_counter()
        rows = generate_rows(
            args.account, instance_id, args.count, now=datetime.now(UTC), days=args.days, seed=args.seed
        )
        done = await store_calls.bulk_load_rows(db, rows)
        elapsed = time.perf_counter() - started
        print(
            f"callplane: generated {done} call records in {elapsed:.1f} s ({done / max(elapsed, 1e-9):,.0f}/s), "
            f"InstanceId {instance_id}"
        )
    finally:
        await db.close()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(coro)


def _supervise(settings: Settings, argv: list[str]) -> int:
    from callplane.supervisor import Ready, supervise

    host, port = settings.http_address
    _bind_http(host, port).close()  # a busy port is one clear error, before anything starts
    node_id = _run(_prepare(settings))
    count = settings.worker_count

    def announce(ready: list[Ready]) -> None:
        sip_host = settings.sip_address[0]
        print(f"callplane: SIP on {sip_host}:{ready[0].sip_port} (UDP and TCP)", flush=True)
        others = ", ".join(str(r.sip_port) for r in ready[1:])
        print(f"callplane: workers 1-{count - 1} also take SIP calls on {sip_host} ports {others}", flush=True)
        _report_tts()
        print(
            f"callplane: HTTP API on http://{host}:{port}/2012-04-24 (InstanceId {node_id}, {count} workers)",
            flush=True,
        )

    return supervise(argv, count, announce)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if settings.log_level.upper() != "DEBUG":
            logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step on every start
            logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per webhook; failures are logged by us
        if args.command == "serve":
            _check_trunks(settings)
            if args.worker is None and settings.worker_count > 1:
                return _supervise(settings, argv)
            role = _Role(args.worker or 0, settings.worker_count, args.ready_fd)
            _run(_serve(settings, role))
        elif args.command == "migrate":
            _run(_migrate(settings))
        elif args.command == "calls":
            _run(_generate(settings, args))
    except CallplaneError as e:
        print(f"callplane: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
