"""Synthetic call records for demos and benchmarks (``callplane calls generate``).

Spread over a window of days, with varied From/To (E.164-style numbers, ``client:`` and ``sip:`` identifiers),
every status and direction, realistic durations, and child legs (outbound-dial) pointing at a parent inbound call.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from callplane.store.calls import CallRecord

_STATUS_WEIGHTS = {
    "completed": 62,
    "no-answer": 8,
    "busy": 7,
    "failed": 5,
    "canceled": 5,
    "in-progress": 5,
    "ringing": 4,
    "queued": 4,
}
_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar")
_DOMAINS = ("example.com", "voip.example.net", "pbx.example.org")
_CALLER_NAMES = ("Jane", "HARY B.", "Tommy Cameron", "Unknown", "ACME Corp", "Front Desk")


class _Identities:
    def __init__(self, rng: random.Random, numbers: int) -> None:
        self.rng = rng
        self.numbers = [f"1{rng.randrange(200, 999)}{rng.randrange(0, 10_000_000):07d}" for _ in range(numbers)]

    def pick(self) -> str:
        roll = self.rng.random()
        if roll < 0.80:
            return self.rng.choice(self.numbers)
        if roll < 0.93:
            return "client:" + self.rng.choice(_NAMES)
        return f"sip:{self.rng.choice(_NAMES)}@{self.rng.choice(_DOMAINS)}"


def generate(
    account_sid: str,
    instance_id: str,
    count: int,
    *,
    now: datetime,
    days: int = 90,
    seed: int = 1,
    batch: int = 10_000,
) -> Iterator[list[CallRecord]]:
    """Yield ``count`` records in batches, oldest first."""
    rng = random.Random(seed)
    who = _Identities(rng, numbers=max(100, min(20_000, count // 50)))
    statuses = list(_STATUS_WEIGHTS)
    weights = list(_STATUS_WEIGHTS.values())
    window = days * 86_400.0
    step = window / max(count, 1)
    start = now - timedelta(days=days)
    recent_inbound: list[str] = []
    out: list[CallRecord] = []
    for i in range(count):
        created = start + timedelta(seconds=i * step + rng.random() * step)
        sid = f"{instance_id}-CA{rng.getrandbits(128):032x}"
        status = rng.choices(statuses, weights)[0]
        parent = None
        if recent_inbound and rng.random() < 0.2:
            direction, parent = "outbound-dial", rng.choice(recent_inbound)
        else:
            direction = "inbound" if rng.random() < 0.55 else "outbound-api"
        ring = rng.randint(0, 25)
        begun = created + timedelta(seconds=ring) if status not in ("queued", "ringing") else None
        ended = None
        duration = None
        if status == "completed" and begun is not None:
            length = min(7200.0, math.exp(rng.gauss(4.0, 1.2)))
            ended = begun + timedelta(seconds=length)
            duration = math.ceil(length)
        elif status in ("no-answer", "busy", "failed", "canceled"):
            begun = None
            ended = created + timedelta(seconds=ring)
            duration = 0
        record = CallRecord(
            sid=sid,
            instance_id=instance_id,
            account_sid=account_sid,
            date_created=created,
            date_updated=ended or begun or created,
            to=who.pick(),
            from_=who.pick(),
            status=status,
            direction=direction,
            parent_call_sid=parent,
            start_time=begun,
            end_time=ended,
            duration=duration,
            ring_duration=ring if status != "queued" else None,
            caller_name=rng.choice(_CALLER_NAMES) if direction == "inbound" else None,
        )
        out.append(record)
        if direction == "inbound":
            recent_inbound.append(sid)
            if len(recent_inbound) > 64:
                recent_inbound.pop(0)
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out
