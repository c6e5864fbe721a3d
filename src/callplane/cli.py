"""The composition root: wires settings, store, engine and API. ``callplane --help`` lists everything."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print("callplane: not yet wired", args)
    return 0
