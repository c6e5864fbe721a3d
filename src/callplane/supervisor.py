"""``callplane serve --workers N``: one supervisor process and N worker processes.

Python runs one core per process; a node with N workers uses N. The supervisor does the start-up work that must
happen once (migrations, the InstanceId, the administrator account: see ``cli._prepare``), then starts the workers
as ``callplane serve … --worker i``. Each worker is a whole node (``core.nodes``) and binds the shared HTTP port
with SO_REUSEPORT, so the kernel spreads connections over them. The supervisor prints the banner once every worker
serves, restarts a worker that dies (the new one closes the calls the old one left and delivers their callbacks),
and on SIGTERM or SIGINT stops them all, each finishing its calls' records first.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

__all__ = ["Ready", "supervise"]

START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
RESTART_DELAY = 1.0
MAX_RESTARTS = 5  # within RESTART_WINDOW: then the supervisor gives up (something is wrong, not unlucky)
RESTART_WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class Ready:
    index: int
    sip_port: int


def supervise(argv: list[str], count: int, announce: Callable[[list[Ready]], None]) -> int:
    """Run ``count`` workers of ``callplane <argv>`` until a signal; the exit status."""
    read_fd, write_fd = os.pipe()
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def spawn(index: int) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "callplane", *argv, "--worker", str(index), "--ready-fd", str(write_fd)]
        return subprocess.Popen(cmd, pass_fds=(write_fd,))

    workers = {i: spawn(i) for i in range(count)}
    ready: dict[int, Ready] = {}
    pending = b""
    deadline = time.monotonic() + START_TIMEOUT
    restarts: deque[float] = deque()
    try:
        while not stopping:
            readable, _, _ = select.select([read_fd], [], [], 0.2)
            if readable:
                pending += os.read(read_fd, 4096)
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    index_text, port = line.decode().split()
                    first = len(ready) < count
                    ready[int(index_text)] = Ready(int(index_text), int(port))
                    if first and len(ready) == count:
                        announce(sorted(ready.values(), key=lambda r: r.index))
            started = len(ready) == count
            for index, proc in list(workers.items()):
                code = proc.poll()
                if code is None:
                    continue
                if stopping:  # Ctrl-C reaches the workers too: they may end before this loop sees the signal
                    break
                if not started:  # a worker that cannot start (its error is printed): the node cannot either
                    print(f"callplane: worker {index} stopped while starting (exit {code})", file=sys.stderr)
                    return code or 2
                now = time.monotonic()
                restarts.append(now)
                while restarts and restarts[0] < now - RESTART_WINDOW:
                    restarts.popleft()
                if len(restarts) > MAX_RESTARTS:
                    print(f"callplane: worker {index} keeps stopping (exit {code}); giving up", file=sys.stderr)
                    return 1
                print(f"callplane: worker {index} stopped (exit {code}); starting it again", file=sys.stderr)
                time.sleep(RESTART_DELAY)
                workers[index] = spawn(index)
            if not started and time.monotonic() > deadline:
                print(f"callplane: the workers did not start within {START_TIMEOUT:g} s", file=sys.stderr)
                return 2
        return 0
    finally:
        _stop(list(workers.values()))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(read_fd)
        os.close(write_fd)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
