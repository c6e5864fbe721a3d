"""The node as a user runs it: `callplane serve` in a subprocess, over real HTTP, on both databases."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from callplane.core.errors import ConfigError
from callplane.core.settings import Settings
from callplane.store.db import Database


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _udp_port(avoid: int = 0) -> int:
    """A port free for UDP and TCP both, as `--sip` needs (a port free for UDP alone may carry a TCP connection),
    and not ``avoid`` (the HTTP port just chosen, released but about to be bound)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            if port == avoid:
                continue
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no port free for both UDP and TCP")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callplane", *args], capture_output=True, text=True, timeout=120, env=env
    )


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CALLPLANE_")} | (extra or {})


@contextlib.contextmanager
def serving(
    data: Path, url: str, env: dict[str, str] | None = None, *, port: int = 0, sip_port: int = 0
) -> Iterator[tuple[str, list[str]]]:
    port = port or _port()
    cmd = [sys.executable, "-m", "callplane", "serve", "--data", str(data), "--database-url", url]
    cmd += ["--http", f"127.0.0.1:{port}", "--sip", f"127.0.0.1:{sip_port or _udp_port(avoid=port)}"]
    full_env = _clean_env(env)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env)
    lines: list[str] = []
    base = f"http://127.0.0.1:{port}"
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError("serve exited early:\n" + "".join(lines))
            lines.append(line)
            if "HTTP API on" in line:
                break
        for _ in range(100):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(base + "/openapi.json", timeout=1)
                break
            time.sleep(0.1)
        yield base, lines
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


def test_help_documents_every_setting() -> None:
    out = _cli("serve", "--help").stdout
    for flag, env in [("--data", "DATA"), ("--database-url", "DATABASE_URL"), ("--http", "HTTP"), ("--sip", "SIP")]:
        assert flag in out and f"CALLPLANE_{env}" in out
    assert "CALLPLANE_ADMIN_ACCOUNT_SID" in out and "CALLPLANE_ADMIN_AUTH_TOKEN" in out
    assert "--trusted-peers" in out and "CALLPLANE_TRUSTED_PEERS" in out
    assert "--allow-anonymous-inbound" in out and "CALLPLANE_ALLOW_ANONYMOUS_INBOUND" in out
    top = _cli("--help").stdout
    assert "serve" in top and "migrate" in top and "calls" in top
    assert "--database-url" in _cli("calls", "generate", "--help").stdout


async def test_first_start_creates_admin_once_and_reuses_it(tmp_path: Path, db: Database) -> None:
    with serving(tmp_path, db.url) as (base, lines):
        text = "".join(lines)
        sid = re.search(r"AccountSid: (AC[0-9a-f]{32})", text)
        token = re.search(r"AuthToken:  (\S+)", text)
        assert sid and token, text
        creds = (sid.group(1), token.group(1))
        r = httpx.get(f"{base}/2012-04-24/Accounts/{creds[0]}/Calls.json", auth=creds)
        assert r.status_code == 200 and r.json()["total"] == 0
    generated = _cli(
        "calls", "generate", "--account", creds[0], "--count", "1200", "--data", str(tmp_path), "--database-url", db.url
    )
    assert generated.returncode == 0, generated.stderr
    assert "generated 1200 call records" in generated.stdout
    with serving(tmp_path, db.url) as (base, lines):
        assert "AuthToken" not in "".join(lines)  # shown once only
        r = httpx.get(f"{base}/restcomm/2012-04-24/Accounts/{creds[0]}/Calls.json?PageSize=7", auth=creds)
        assert r.status_code == 200
        assert r.json()["total"] == 1200 and len(r.json()["calls"]) == 7
        # The synthetic records carry their own InstanceId: this node's start-up left their live calls alone.
        assert "closed" not in "".join(lines)
        r = httpx.get(f"{base}/2012-04-24/Accounts/{creds[0]}/Calls.json?Status=in-progress", auth=creds)
        assert r.json()["total"] > 0
        assert {c["InstanceId"] for c in r.json()["calls"]}.isdisjoint({(tmp_path / "instance_id").read_text().strip()})
        assert httpx.get(f"{base}/2012-04-24/Accounts/{creds[0]}/Calls.json", auth=(creds[0], "x")).status_code == 401


async def test_configured_admin_credentials(tmp_path: Path, db: Database) -> None:
    env = {"CALLPLANE_ADMIN_ACCOUNT_SID": "AC" + "5" * 32, "CALLPLANE_ADMIN_AUTH_TOKEN": "configured-token-123"}
    with serving(tmp_path, db.url, env) as (base, lines):
        assert "AuthToken" not in "".join(lines)
        r = httpx.get(
            f"{base}/2012-04-24/Accounts/{'AC' + '5' * 32}.json", auth=("AC" + "5" * 32, "configured-token-123")
        )
        assert r.status_code == 200 and r.json()["role"] == "Administrator"


def test_bad_settings_fail_clearly(tmp_path: Path) -> None:
    env = _clean_env({"CALLPLANE_ADMIN_ACCOUNT_SID": "nope"})
    http_port = _port()
    addrs = ["--http", f"127.0.0.1:{http_port}", "--sip", f"127.0.0.1:{_udp_port(avoid=http_port)}"]
    done = _cli("serve", "--data", str(tmp_path), *addrs, env=env)
    assert done.returncode == 2
    assert "CALLPLANE_ADMIN_ACCOUNT_SID must be AC followed by 32" in done.stderr
    done = _cli("serve", "--data", str(tmp_path), *addrs, "--trusted-peers", "10.0.0.0/24,trunk", env=_clean_env({}))
    assert done.returncode == 2
    assert "CALLPLANE_TRUSTED_PEERS lists CIDRs like 10.0.0.0/24, got 'trunk'" in done.stderr
    done = _cli("calls", "generate", "--account", "AC" + "0" * 32, "--count", "1", "--data", str(tmp_path), env=env)
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_a_second_node_on_a_busy_port_says_which_port_in_one_line(tmp_path: Path) -> None:
    http_port = _port()
    sip_port = _udp_port(avoid=http_port)
    url = f"sqlite+aiosqlite:///{tmp_path / 'callplane.db'}"
    # the first node also runs without espeak-ng on its PATH: one start-up line says what <Say> will do
    with serving(tmp_path, url, {"PATH": "/nonexistent"}, port=http_port, sip_port=sip_port) as (base, lines):
        tts_lines = [line for line in lines if "text-to-speech" in line]
        assert len(tts_lines) == 1 and "espeak-ng is not installed" in tts_lines[0], lines
        assert "<Say> fails with notification 12400" in tts_lines[0]
        for busy, flag, what in [
            (["--http", f"127.0.0.1:{http_port}", "--sip", f"127.0.0.1:{_udp_port()}"], "--http", "HTTP"),
            (["--http", f"127.0.0.1:{_port()}", "--sip", f"127.0.0.1:{sip_port}"], "--sip", "SIP (UDP and TCP)"),
            # with workers the supervisor checks the port before it starts any (they would share it otherwise)
            (
                ["--http", f"127.0.0.1:{http_port}", "--sip", f"127.0.0.1:{_udp_port()}", "--workers", "2"],
                "--http",
                "HTTP",
            ),
        ]:
            done = _cli("serve", "--data", str(tmp_path / "second"), "--database-url", url, *busy, env=_clean_env())
            port = http_port if flag == "--http" else sip_port
            assert done.returncode == 2
            assert "SIP on" not in done.stdout and "HTTP API on" not in done.stdout
            assert done.stderr.splitlines() == [
                f"callplane: error: cannot listen for {what} on 127.0.0.1:{port}: Address already in use "
                f"(another callplane node?); choose another address with {flag} or CALLPLANE_{flag[2:].upper()}"
            ]
        assert httpx.get(base + "/openapi.json").status_code == 200  # the first node is unharmed


def test_data_help_names_what_the_directory_holds(tmp_path: Path) -> None:
    help_text = " ".join(_cli("serve", "--help").stdout.split())
    assert "directory for this node's files: callplane.db* (the SQLite database" in help_text
    assert "instance_id (this node's InstanceId), recordings/ (the WAV files of <Record>) and cache/" in help_text
    done = _cli("migrate", "--data", str(tmp_path), env=_clean_env())
    assert done.returncode == 0, done.stderr
    names = {p.name for p in tmp_path.iterdir()}
    assert "callplane.db" in names and all(n.startswith("callplane.db") for n in names), names
    with serving(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'callplane.db'}"):
        pass
    names = {p.name for p in tmp_path.iterdir()}
    node_files = {"instance_id", "recordings", "cache"}
    assert node_files <= names and all(n.startswith("callplane.db") for n in names - node_files), names


def test_inbound_settings() -> None:
    settings = Settings.from_env({"CALLPLANE_TRUSTED_PEERS": " 10.0.0.7/24, 2001:db8::/32 ,192.0.2.1"})
    assert [str(n) for n in settings.trusted_networks] == ["10.0.0.0/24", "2001:db8::/32", "192.0.2.1/32"]
    assert Settings().trusted_networks == () and Settings().anonymous_inbound is False
    assert Settings.from_env({"CALLPLANE_ALLOW_ANONYMOUS_INBOUND": "ON"}).anonymous_inbound is True
    with pytest.raises(ConfigError, match="is on or off, got 'maybe'"):
        _ = Settings(allow_anonymous_inbound="maybe").anonymous_inbound
