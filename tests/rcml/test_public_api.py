from __future__ import annotations

import importlib

import pytest

MODULES = ["attrs", "build", "commands", "dial", "errors", "events", "interpreter", "parser", "verbs"]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    mod = importlib.import_module(f"callplane.rcml.{name}")
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert missing == []
