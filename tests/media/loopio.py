"""Catch blocking file-system calls made on the event loop's thread.

``LoopIo(root)`` records, while active, every ``open``/rename/remove/scandir (Python audit events) and every
``os.stat``/``os.lstat`` (wrapped) of a path under ``root``, and every ``shutil.which``, made on the thread that
activated it (the loop's). Work that runs in a thread (``asyncio.to_thread``) is not recorded.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

_ACTIVE: list[LoopIo] = []
_AUDITED = frozenset({"open", "os.rename", "os.remove", "os.scandir", "os.listdir", "os.utime"})


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _ACTIVE and event in _AUDITED and args:
        for watcher in _ACTIVE:
            watcher.saw(event, args[0])


sys.addaudithook(_hook)


class LoopIo:
    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.thread = threading.get_ident()
        self.calls: list[tuple[str, str]] = []

    def saw(self, what: str, path: object) -> None:
        if threading.get_ident() != self.thread or not isinstance(path, str | bytes | os.PathLike):
            return
        name = os.fsdecode(path)
        if name.startswith(self.root) or what == "shutil.which":
            self.calls.append((what, name))


@contextmanager
def loop_io(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopIo]:
    watcher = LoopIo(root)

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(path: Any, *args: Any, **kwargs: Any) -> Any:
            watcher.saw(name, path)
            return fn(path, *args, **kwargs)

        return wrapped

    monkeypatch.setattr(os, "stat", wrap("os.stat", os.stat))
    monkeypatch.setattr(os, "lstat", wrap("os.lstat", os.lstat))
    monkeypatch.setattr(shutil, "which", wrap("shutil.which", shutil.which))
    _ACTIVE.append(watcher)
    try:
        yield watcher
    finally:
        _ACTIVE.remove(watcher)
