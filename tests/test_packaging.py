"""The lock files in requirements/ agree with pyproject.toml (regenerate them with `make lock`)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pinned(lock: str) -> set[str]:
    text = (ROOT / "requirements" / lock).read_text()
    return {_name(line) for line in text.splitlines() if re.match(r"[A-Za-z0-9]", line) and "==" in line}


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = {_name(r) for r in PROJECT["dependencies"]}
DEV = {_name(r) for r in PROJECT["optional-dependencies"]["dev"]}


def test_every_dependency_is_locked() -> None:
    assert RUNTIME <= _pinned("runtime.txt")
    assert RUNTIME | DEV <= _pinned("dev.txt")
    assert {"hatchling", "uvloop", "httptools", "defusedxml", "schemathesis"} <= _pinned("dev.txt")


def test_runtime_lock_has_no_dev_toolchain_and_no_unused_server_extras() -> None:
    runtime = _pinned("runtime.txt")
    assert not DEV & runtime
    assert not {"watchfiles", "websockets", "python-dotenv", "pyyaml", "audioop-lts"} & runtime
    assert "audioop-lts" not in _pinned("dev.txt")
    assert runtime <= _pinned("dev.txt")  # the dev lock satisfies `make run` too


def test_locks_pin_with_hashes() -> None:
    for lock in ("runtime.txt", "dev.txt"):
        text = (ROOT / "requirements" / lock).read_text()
        pins = len(re.findall(r"^[A-Za-z0-9][^\n]*==", text, re.M))
        assert pins and text.count("--hash=sha256:") >= pins
