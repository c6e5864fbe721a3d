"""Synthetic call records for demos and benchmarks (``callplane calls generate``).

Spread over a window of days, with varied From/To (E.164-style numbers, ``client:`` and ``sip:`` identifiers),
every status and direction, realistic durations, and child legs (outbound-dial) pointing at a parent inbound call.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from callplane.store.calls import CallRecord, record_from_row
from callplane.store.db import to_us

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


def generate_rows(
    account_sid: str,
    instance_id: str,
    count: int,
    *,
    now: datetime,
    days: int = 90,
    seed: int = 1,
    batch: int = 10_000,
) -> Iterator[list[dict[str, Any]]]:
    """Yield ``count`` rows in storage form (the ``calls`` table's columns), in batches, oldest first."""
    rng = random.Random(seed)
    random_ = rng.random
    who = _Identities(rng, numbers=max(100, min(20_000, count // 50)))
    statuses = list(_STATUS_WEIGHTS)
    cumulative = list(itertools.accumulate(_STATUS_WEIGHTS.values()))
    total_weight = cumulative[-1]
    second = 1_000_000
    step = days * 86_400 * second // max(count, 1)
    start = to_us(now) - days * 86_400 * second
    recent_inbound: list[str] = []
    out: list[dict[str, Any]] = []
    for i in range(count):
        created = start + i * step + int(random_() * step)
        sid = f"{instance_id}-CA{rng.getrandbits(128):032x}"
        status = statuses[bisect.bisect_right(cumulative, random_() * total_weight)]
        parent = None
        if recent_inbound and random_() < 0.2:
            direction, parent = "outbound-dial", rng.choice(recent_inbound)
        else:
            direction = "inbound" if random_() < 0.55 else "outbound-api"
        ring = rng.randint(0, 25)
        begun: int | None = created + ring * second if status not in ("queued", "ringing") else None
        ended: int | None = None
        duration = 0
        if status == "completed" and begun is not None:
            length = min(7200.0, math.exp(rng.gauss(4.0, 1.2)))
            ended = begun + int(length * second)
            duration = -(-(ended - begun) // second)  # ceiling, as the spec defines Duration
        elif status in ("no-answer", "busy", "failed", "canceled"):
            begun = None
            ended = created + ring * second
        to, from_ = who.pick(), who.pick()
        out.append(
            {
                "sid": sid,
                "instance_id": instance_id,
                "parent_call_sid": parent,
                "account_sid": account_sid,
                "date_created": created,
                "date_updated": ended or begun or created,
                "recipient": to,
                "sender": from_,
                "recipient_rev": to[::-1],
                "sender_rev": from_[::-1],
                "phone_number_sid": None,
                "status": status,
                "start_time": begun,
                "end_time": ended,
                "duration": duration,
                "ring_duration": ring if status != "queued" else None,
                "direction": direction,
                "answered_by": None,
                "api_version": "2012-04-24",
                "forwarded_from": None,
                "caller_name": rng.choice(_CALLER_NAMES) if direction == "inbound" else None,
                "conference_sid": None,
            }
        )
        if direction == "inbound":
            recent_inbound.append(sid)
            if len(recent_inbound) > 64:
                recent_inbound.pop(0)
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


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
    """The same records as :func:`generate_rows`, as :class:`CallRecord` values."""
    for rows in generate_rows(account_sid, instance_id, count, now=now, days=days, seed=seed, batch=batch):
        yield [record_from_row(r) for r in rows]
