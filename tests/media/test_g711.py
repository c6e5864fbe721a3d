from __future__ import annotations

import numpy as np
import pytest

from callplane.media import g711
from callplane.media.g711 import PCMA, PCMU, UnsupportedCodec, decode, encode


def test_known_code_points() -> None:
    # G.711 tables: silence is 0xFF in mu-law and 0xD5 in A-law; full-scale negative is 0x00 / 0x2A.
    assert encode(b"\x00\x00", PCMU) == b"\xff"
    assert encode(b"\x00\x00", PCMA) == b"\xd5"
    assert decode(b"\x00", PCMU) == (-32124).to_bytes(2, "little", signed=True)
    assert decode(b"\x2a", PCMA) == (-32256).to_bytes(2, "little", signed=True)


@pytest.mark.parametrize("pt", [PCMU, PCMA])
def test_round_trip_error_is_small(pt: int) -> None:
    x = (np.sin(np.arange(160) * 2 * np.pi * 440 / 8000) * 12000).astype("<i2")
    y = np.frombuffer(decode(encode(x.tobytes(), pt), pt), dtype="<i2")
    assert len(encode(x.tobytes(), pt)) == 160
    assert np.max(np.abs(y.astype(int) - x.astype(int))) <= 12000 // 16 + 16


def test_other_payload_types_refused() -> None:
    with pytest.raises(UnsupportedCodec):
        encode(b"\x00\x00", 18)
    assert g711.ENCODING_NAMES == {0: "PCMU", 8: "PCMA"}
