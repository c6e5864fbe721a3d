"""Settings: every option is an environment variable ``CALLPLANE_*`` and a command-line flag.

Precedence: command-line flag > environment variable > embedded default.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from callplane.core.errors import ConfigError


def parse_hostport(value: str, *, default_port: int) -> tuple[str, int]:
    """``host:port``, ``host``, ``:port`` or ``[v6]:port`` -> (host, port)."""
    value = value.strip()
    if not value:
        raise ConfigError("empty address")
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    else:
        host, port_text = value, ""
    host = host or "127.0.0.1"
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"invalid port in address {value!r}")
    return host, int(port_text)


def _opt(default: Any, env: str, help: str) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True, slots=True)
class Settings:
    """Node configuration. ``env`` names the variable, ``help`` documents the flag."""

    data: Path = _opt(
        Path("var"),
        "DATA",
        "directory for this node's files: callplane.db* (the SQLite database and its lock and journal files, "
        "unless --database-url is set), instance_id (this node's InstanceId), recordings/ (the WAV files of "
        "<Record>) and cache/ (synthesised and fetched audio)",
    )
    database_url: str = _opt(
        "",
        "DATABASE_URL",
        "SQLAlchemy URL (default sqlite+aiosqlite:///DATA/callplane.db; "
        "production: postgresql+asyncpg://user:pw@host/db)",
    )
    http: str = _opt("127.0.0.1:8080", "HTTP", "HTTP API listen address")
    sip: str = _opt("127.0.0.1:5080", "SIP", "SIP listen address (UDP and TCP)")
    sip_realm: str = _opt("callplane", "SIP_REALM", "digest realm (and domain) of the registrar for Clients")
    sip_digest: str = _opt(
        "MD5",
        "SIP_DIGEST",
        "digest algorithms the registrar offers, in order (MD5, SHA-256); "
        "several challenges break common phones, so MD5 alone is the default",
    )
    sip_clients: str = _opt(
        "",
        "SIP_CLIENTS",
        "development seed: login:password[,login:password...]; each login that has no Client yet becomes a "
        "Client of the administrator at start-up (no strength check; later changes go through the Clients API)",
    )
    trusted_peers: str = _opt(
        "",
        "TRUSTED_PEERS",
        "addresses of SIP trunks and proxies whose INVITEs are not challenged, as CIDRs "
        "(10.0.0.0/24,192.0.2.7/32); loopback is not trusted unless listed",
    )
    allow_anonymous_inbound: str = _opt(
        "off",
        "ALLOW_ANONYMOUS_INBOUND",
        "on: INVITEs from untrusted addresses that are not from a Client may call provisioned numbers (off: 403)",
    )
    rtp_ports: str = _opt("20000-29999", "RTP_PORTS", "RTP port range LOW-HIGH")
    workers: str = _opt(
        "1",
        "WORKERS",
        "worker processes sharing the HTTP port, 1-32 or auto (one per CPU); each runs its own calls, worker i on "
        "the --sip port + i (inbound calls too: a SIP dispatcher in front spreads them), each with a slice of "
        "--rtp-ports",
    )
    outbound_proxy: str = _opt(
        "",
        "OUTBOUND_PROXY",
        "SIP URIs of the trunks/proxies that numbers are called through, in order of preference, separated by "
        "commas, each sip:host[:port][;transport=tcp], e.g. sip:10.0.0.5:5060,sip:10.0.0.6:5060;transport=tcp; "
        "a call that one answers with 503 or lets time out goes to the next",
    )
    outbound_proxy_failures: str = _opt(
        "3",
        "OUTBOUND_PROXY_FAILURES",
        "failures in a row (503, timeout, unreachable) after which an outbound proxy is skipped for new calls",
    )
    outbound_proxy_retry: str = _opt(
        "30",
        "OUTBOUND_PROXY_RETRY",
        "seconds a failing outbound proxy is skipped before it is tried again",
    )
    outbound_username: str = _opt("", "OUTBOUND_USERNAME", "digest username for the outbound proxy")
    outbound_password: str = _opt("", "OUTBOUND_PASSWORD", "digest password for the outbound proxy")
    public_url: str = _opt(
        "", "PUBLIC_URL", "base URL the node is reached at, for RecordingUrl (default: http://HTTP listen address)"
    )
    admin_account_sid: str = _opt(
        "", "ADMIN_ACCOUNT_SID", "administrator AccountSid (default: generated on first start and stored in DATA)"
    )
    admin_auth_token: str = _opt(
        "", "ADMIN_AUTH_TOKEN", "administrator auth token (default: generated on first start and stored in DATA)"
    )
    instance_id: str = _opt(
        "", "INSTANCE_ID", "this node's InstanceId, ID + 32 hex (default: generated once, kept in DATA)"
    )
    log_level: str = _opt("INFO", "LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            key = "CALLPLANE_" + str(f.metadata["env"])
            if key in env and env[key] != "":
                values[f.name] = Path(env[key]) if f.name == "data" else env[key]
        return cls(**values)  # type: ignore[arg-type]

    def override(self, **changes: object) -> Settings:
        """Apply command-line values that were given (``None`` means not given)."""
        given = {k: (Path(str(v)) if k == "data" else v) for k, v in changes.items() if v is not None}
        return replace(self, **given)  # type: ignore[arg-type]

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data / 'callplane.db').as_posix()}"

    @property
    def http_address(self) -> tuple[str, int]:
        return parse_hostport(self.http, default_port=8080)

    @property
    def sip_address(self) -> tuple[str, int]:
        return parse_hostport(self.sip, default_port=5080)

    @property
    def sip_client_passwords(self) -> dict[str, str]:
        clients: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in self.sip_clients.split(","))):
            login, sep, password = item.partition(":")
            if not sep or not login or not password:
                raise ConfigError(f"CALLPLANE_SIP_CLIENTS entries are login:password, got {item!r}")
            clients[login] = password
        return clients

    @property
    def sip_digest_algorithms(self) -> tuple[str, ...]:
        names = tuple(n.strip().upper() for n in self.sip_digest.split(",") if n.strip())
        if not names or any(n not in ("MD5", "SHA-256") for n in names):
            raise ConfigError(f"CALLPLANE_SIP_DIGEST lists MD5 and/or SHA-256, got {self.sip_digest!r}")
        return names

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        networks = []
        for item in filter(None, (part.strip() for part in self.trusted_peers.split(","))):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(f"CALLPLANE_TRUSTED_PEERS lists CIDRs like 10.0.0.0/24, got {item!r}") from None
        return tuple(networks)

    @property
    def anonymous_inbound(self) -> bool:
        value = self.allow_anonymous_inbound.strip().lower()
        if value in ("on", "true", "yes", "1"):
            return True
        if value in ("off", "false", "no", "0", ""):
            return False
        raise ConfigError(f"CALLPLANE_ALLOW_ANONYMOUS_INBOUND is on or off, got {self.allow_anonymous_inbound!r}")

    @property
    def worker_count(self) -> int:
        value = self.workers.strip().lower()
        if value == "auto":
            return max(1, min(32, os.cpu_count() or 1))
        if not value.isdigit() or not 1 <= int(value) <= 32:
            raise ConfigError(f"CALLPLANE_WORKERS is a number from 1 to 32 or auto, got {self.workers!r}")
        return int(value)

    @property
    def outbound_proxy_failure_limit(self) -> int:
        value = self.outbound_proxy_failures.strip()
        if not value.isdigit() or not 1 <= int(value) <= 1000:
            raise ConfigError(
                f"CALLPLANE_OUTBOUND_PROXY_FAILURES is a number from 1 to 1000, got {self.outbound_proxy_failures!r}"
            )
        return int(value)

    @property
    def outbound_proxy_retry_seconds(self) -> float:
        try:
            value = float(self.outbound_proxy_retry)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 86400:
            raise ConfigError(
                "CALLPLANE_OUTBOUND_PROXY_RETRY is a number of seconds from 0 to 86400, "
                f"got {self.outbound_proxy_retry!r}"
            )
        return value

    @property
    def rtp_port_range(self) -> tuple[int, int]:
        low, sep, high = self.rtp_ports.partition("-")
        if not sep or not low.isdigit() or not high.isdigit() or not 1024 <= int(low) < int(high) <= 65535:
            raise ConfigError(f"invalid RTP port range {self.rtp_ports!r}; expected LOW-HIGH")
        return int(low), int(high)
