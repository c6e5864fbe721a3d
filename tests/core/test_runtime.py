"""``tune_gc`` (run in a child process: it changes the interpreter's collector for good)."""

from __future__ import annotations

import json
import subprocess
import sys

from callplane.core.runtime import GC_THRESHOLDS

SCRIPT = """
import gc, json
from callplane.core.runtime import tune_gc
before = gc.get_freeze_count()
tune_gc()
a = []; a.append(a); del a   # a cycle made afterwards is still collectable
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "thresholds": gc.get_threshold(),
                  "collected": gc.collect()}))
"""


def test_tune_gc_freezes_what_exists_raises_the_thresholds_and_still_collects_cycles() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    got = json.loads(out)
    assert got["before"] == 0 and got["frozen"] > 1000
    assert tuple(got["thresholds"]) == GC_THRESHOLDS
    assert got["collected"] >= 1
