from __future__ import annotations

import hashlib

import numpy as np
import pytest

from callplane.media import g711
from callplane.media.g711 import PCMA, PCMU, UnsupportedCodec, decode, encode

EVERY_SAMPLE = np.arange(65536, dtype=np.uint32).astype(np.uint16).tobytes()  # 0, 1, ... 32767, -32768, ... -1
EVERY_CODE = bytes(range(256))


def pcm(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def test_known_code_points() -> None:
    # ITU-T G.711 tables: silence is 0xFF in mu-law and 0xD5 in A-law; full scale is 0x80/0x00 and 0xAA/0x2A.
    assert encode(pcm(0, 32767, -32768), PCMU) == b"\xff\x80\x00"
    assert encode(pcm(0, 32767, -32768), PCMA) == b"\xd5\xaa\x2a"
    assert decode(b"\x00\x80\xff\x7f", PCMU) == pcm(-32124, 32124, 0, 0)
    assert decode(b"\x2a\xaa\xd5\x55", PCMA) == pcm(-32256, 32256, 8, -8)
    # segment edges: mu-law's first step is 8 (at 16 bits), A-law's first segment steps by 16
    assert decode(b"\xfe\xef\xdf", PCMU) == pcm(8, 132, 396)
    assert decode(b"\xd4\xc5\xf5", PCMA) == pcm(24, 264, 528)


def test_tables_match_the_reference_encoder_bit_for_bit() -> None:
    # Digests of the full tables as produced by the classic reference implementation (stdlib audioop on 3.11:
    # lin2ulaw/lin2alaw over every 16-bit sample, ulaw2lin/alaw2lin over every code).
    digests = {
        (PCMU, "enc"): "617fa4850d68d3906597e949f7625fb2fc46db479e29707f33159b3d131721cb",
        (PCMU, "dec"): "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827",
        (PCMA, "enc"): "f77c76aa923ee25617453f87514828a12896227f82ff383bf3bb53d6ac7c2a0f",
        (PCMA, "dec"): "e04788d110e58ff8c70c93b8480190d973e3b67876b6119abbaec766cc75c174",
    }
    for pt in (PCMU, PCMA):
        assert hashlib.sha256(encode(EVERY_SAMPLE, pt)).hexdigest() == digests[(pt, "enc")]
        assert hashlib.sha256(decode(EVERY_CODE, pt)).hexdigest() == digests[(pt, "dec")]


@pytest.mark.parametrize("pt", [PCMU, PCMA])
def test_every_code_survives_a_round_trip(pt: int) -> None:
    levels = decode(EVERY_CODE, pt)
    back = encode(levels, pt)
    if pt == PCMU:  # mu-law has two zeros (0x7F is "negative zero"); it encodes back as 0xFF
        assert [c for c, b in zip(EVERY_CODE, back, strict=True) if c != b] == [0x7F]
        assert back[0x7F] == 0xFF
    else:
        assert back == EVERY_CODE
    assert decode(back, pt) == levels


@pytest.mark.parametrize("pt", [PCMU, PCMA])
def test_encoding_is_monotonic(pt: int) -> None:
    ordered = np.arange(-32768, 32768, dtype="<i2").tobytes()
    level = np.frombuffer(decode(encode(ordered, pt), pt), dtype="<i2").astype(int)
    assert (np.diff(level) >= 0).all()


@pytest.mark.parametrize("pt", [PCMU, PCMA])
def test_round_trip_error_is_small(pt: int) -> None:
    x = (np.sin(np.arange(160) * 2 * np.pi * 440 / 8000) * 12000).astype("<i2")
    y = np.frombuffer(decode(encode(x.tobytes(), pt), pt), dtype="<i2")
    assert len(encode(x.tobytes(), pt)) == 160
    assert np.max(np.abs(y.astype(int) - x.astype(int))) <= 12000 // 16 + 16


def test_encoder_is_the_same_function_as_encode() -> None:
    frame = np.arange(-80, 80, dtype="<i2").tobytes() * 2
    assert g711.encoder(PCMA)(frame) == encode(frame, PCMA)
    assert g711.encoder(PCMU)(b"") == b""
    with pytest.raises(ValueError):
        g711.encoder(PCMU)(b"\x00")  # half a sample


def test_shared_encoder_gives_the_same_bytes_as_encode_and_remembers_each_frame() -> None:
    frames = [np.full(160, v, dtype="<i2").tobytes() for v in range(-3000, 3000, 7)]
    for pt in (PCMU, PCMA):
        enc = g711.shared_encoder(pt)
        assert enc is g711.shared_encoder(pt)  # one memo per payload type for the whole process
        first = [enc(f) for f in frames]
        again = [enc(bytes(bytearray(f))) for f in frames]  # equal frames, other objects (a slice per call)
        assert first == again == [encode(f, pt) for f in frames]
        assert all(a is b for a, b in zip(first, again, strict=True))  # the second pass encoded nothing
    live = bytearray(frames[0])
    assert g711.shared_encoder(PCMU)(live) == encode(frames[0], PCMU)  # type: ignore[arg-type]  # not remembered
    with pytest.raises(UnsupportedCodec):
        g711.shared_encoder(9)


def test_shared_encoder_memo_is_bounded_and_stays_correct_when_it_refills() -> None:
    calls: list[bytes] = []

    def plain(pcm: bytes) -> bytes:
        calls.append(pcm)
        return encode(pcm, PCMU)

    enc = g711._memoised(plain, 3)
    frames = [pcm(v) for v in range(5)]
    assert [enc(f) for f in frames] == [encode(f, PCMU) for f in frames]
    assert len(calls) == 5
    assert enc(frames[4]) == encode(frames[4], PCMU) and len(calls) == 5  # still held after the memo was emptied
    assert enc(frames[0]) == encode(frames[0], PCMU) and len(calls) == 6  # dropped when it was emptied


def test_other_payload_types_refused() -> None:
    with pytest.raises(UnsupportedCodec):
        encode(b"\x00\x00", 18)
    with pytest.raises(UnsupportedCodec):
        decode(b"\x00", 18)
    with pytest.raises(UnsupportedCodec):
        g711.encoder(9)
    assert g711.ENCODING_NAMES == {0: "PCMU", 8: "PCMA"}
