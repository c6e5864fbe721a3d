from __future__ import annotations

import re

from callplane.core.ids import IdSource


def test_seeded_source_is_deterministic() -> None:
    assert IdSource(7).call_sid("ID" + "0" * 32) == IdSource(7).call_sid("ID" + "0" * 32)


def test_shapes() -> None:
    ids = IdSource()
    assert re.fullmatch(r"AC[0-9a-f]{32}", ids.account_sid())
    assert re.fullmatch(r"ID[0-9a-f]{32}-CA[0-9a-f]{32}", ids.call_sid(ids.instance_id()))
    assert ids.branch().startswith("z9hG4bK")
    assert 0 <= ids.ssrc() < 2**32
