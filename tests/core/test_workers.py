"""Worker settings and identities (``serve --workers``): the parts that are pure functions."""

from __future__ import annotations

import pytest

from callplane.cli import _rtp_slice
from callplane.core.errors import ConfigError
from callplane.core.nodes import control_address, worker_instance_id
from callplane.core.settings import Settings

BASE = "ID" + "a" * 32


def test_worker_count_accepts_a_number_or_auto_and_refuses_the_rest() -> None:
    assert Settings().worker_count == 1
    assert Settings(workers="4").worker_count == 4
    assert 1 <= Settings(workers="auto").worker_count <= 32
    for bad in ("0", "33", "two", "-1", ""):
        with pytest.raises(ConfigError, match="CALLPLANE_WORKERS"):
            _ = Settings(workers=bad).worker_count


def test_worker_instance_ids_are_stable_distinct_and_well_formed() -> None:
    assert worker_instance_id(BASE, 0) == BASE  # worker 0 keeps the node's InstanceId
    ids = [worker_instance_id(BASE, i) for i in range(32)]
    assert len(set(ids)) == 32
    assert ids == [worker_instance_id(BASE, i) for i in range(32)]  # a restarted worker finds its calls
    assert all(len(i) == 34 and i.startswith("ID") and int(i[2:], 16) >= 0 for i in ids)
    assert worker_instance_id("ID" + "b" * 32, 1) != ids[1]
    assert control_address(BASE) == "\0callplane-" + BASE


def test_rtp_range_is_split_into_even_aligned_disjoint_slices() -> None:
    slices = [_rtp_slice(20000, 29999, i, 3) for i in range(3)]
    assert slices[0][0] == 20000 and slices[-1][1] == 29999
    for (low, high), (next_low, _) in zip(slices, slices[1:], strict=False):
        assert low % 2 == 0 and high % 2 == 1 and next_low == high + 1
    assert _rtp_slice(20000, 29999, 0, 1) == (20000, 29999)
    with pytest.raises(ConfigError, match="too small for 4 workers"):
        _rtp_slice(20000, 20005, 0, 4)
