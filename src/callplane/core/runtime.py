"""Process-wide tuning that every serving process applies once it has started.

CPython's cyclic garbage collector runs a young collection every 700 net allocations of container objects, and a
busy node allocates a few hundred per SIP call (messages, headers, transactions) while holding tens of thousands of
long-lived ones (code, the 32 s transaction timers of RFC 3261, live calls). :func:`tune_gc` moves everything that
exists at start-up out of the collector's reach (``gc.freeze``: code and settings are never garbage) and lets the
young generation grow larger before it is scanned, so that most of a call's objects are freed by reference counting
before any collection looks at them. Cycles are still collected, only less often.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "tune_gc"]

GC_THRESHOLDS = (20_000, 20, 10)


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
