from __future__ import annotations

import importlib

import pytest

MODULES = [
    "sources", "rtp", "rtcp", "g711", "jitter", "events", "dtmf", "energy", "recorder",
    "leg", "bridge", "mixer", "core", "ticker", "aio",
]  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    mod = importlib.import_module(f"callplane.media.{name}")
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert missing == []
