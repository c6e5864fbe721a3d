"""Workers and nodes: how one finds another.

``callplane serve --workers N`` runs N worker processes behind one HTTP port. Each worker is a whole node of its
own (SIP endpoint, media, call engine, record writer, callback delivery) with its own InstanceId, so every call
record names the process that runs the call. Worker 0 keeps the node's InstanceId; worker ``i`` derives its own
from it, so a restarted worker finds (and closes) the calls its previous life left unfinished.

Every serving process also listens on a Linux abstract Unix socket named after its InstanceId
(:func:`control_address`). A request that reaches the wrong process (the kernel spreads HTTP connections over the
workers; a live call runs in one of them) is forwarded there.
"""

from __future__ import annotations

import hashlib

__all__ = ["MAX_WORKERS", "control_address", "worker_instance_id"]

MAX_WORKERS = 32


def worker_instance_id(base: str, index: int) -> str:
    """Worker ``index``'s InstanceId: the node's own for worker 0, a stable derivation for the others."""
    if index == 0:
        return base
    return "ID" + hashlib.sha256(f"{base}/worker/{index}".encode()).hexdigest()[:32]


def control_address(instance_id: str) -> str:
    """The abstract Unix socket (leading NUL: no file, gone with the process) a serving process listens on."""
    return f"\0callplane-{instance_id}"
