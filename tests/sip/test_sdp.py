from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callplane.sip.sdp import (
    Connection,
    MediaDescription,
    NegotiationError,
    SdpParseError,
    SessionDescription,
    answer_offer,
    build_offer,
    change_direction,
    describe,
    is_hold,
    mirror_direction,
)

# The body SIPp 3.6.1 sends from its built-in `uac` scenario (with -mp 6000).
SIPP_OFFER = (
    "v=0\r\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)

# A baresip-shaped offer: several codecs, PCMA preferred, dynamic telephone-event PT, extra lines.
BARESIP_OFFER = (
    "v=0\r\n"
    "o=- 1443589284 3245436117 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "a=tool:baresip 1.0.0\r\n"
    "m=audio 26004 RTP/AVP 9 8 0 96\r\n"
    "b=AS:64\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:96 telephone-event/8000\r\n"
    "a=fmtp:96 0-15\r\n"
    "a=sendrecv\r\n"
    "a=label:1\r\n"
    "a=ssrc:1290430823 cname:ac5c2a9e\r\n"
    "a=rtcp-rsize\r\n"
    "a=ptime:30\r\n"
)


def test_round_trip_keeps_every_line() -> None:
    for text in (SIPP_OFFER, BARESIP_OFFER):
        assert str(SessionDescription.parse(text)) == text
        assert str(SessionDescription.parse(text.encode())) == text


def test_parse_accepts_bare_lf_and_writes_crlf() -> None:
    sdp = SessionDescription.parse(SIPP_OFFER.replace("\r\n", "\n"))
    assert str(sdp) == SIPP_OFFER


@pytest.mark.parametrize(
    "text",
    ["", "o=x 1 1 IN IP4 1.1.1.1\r\n", "v=1\r\n", "v=0\r\nx\r\n", "v=0\r\ns=-\r\n", "v=0\r\no=a b\r\n"],
)
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(SdpParseError):
        SessionDescription.parse(text)


def test_parse_rejects_bad_media_port() -> None:
    with pytest.raises(SdpParseError):
        SessionDescription.parse(SIPP_OFFER.replace("m=audio 6000", "m=audio 99999"))


def test_build_offer_exact_text() -> None:
    offer = build_offer("192.0.2.10", 20000, session_id="4242", version=7)
    assert str(offer) == (
        "v=0\r\n"
        "o=callplane 4242 7 IN IP4 192.0.2.10\r\n"
        "s=callplane\r\n"
        "c=IN IP4 192.0.2.10\r\n"
        "t=0 0\r\n"
        "m=audio 20000 RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )


def test_build_offer_ipv6_and_direction() -> None:
    offer = build_offer("::1", 4000, session_id="1", direction="sendonly", telephone_event_pt=None)
    text = str(offer)
    assert "c=IN IP6 ::1\r\n" in text
    assert "m=audio 4000 RTP/AVP 0 8\r\n" in text
    assert text.endswith("a=sendonly\r\n")


def test_answer_picks_first_common_codec_in_offerer_order_and_keeps_event_pt() -> None:
    answer = answer_offer(SessionDescription.parse(BARESIP_OFFER), "127.0.0.1", 30000, session_id="9")
    assert str(answer) == (
        "v=0\r\n"
        "o=callplane 9 1 IN IP4 127.0.0.1\r\n"
        "s=callplane\r\n"
        "c=IN IP4 127.0.0.1\r\n"
        "t=0 0\r\n"
        "m=audio 30000 RTP/AVP 8 96\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:96 telephone-event/8000\r\n"
        "a=fmtp:96 0-15\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )


def test_answer_without_telephone_event() -> None:
    answer = answer_offer(SessionDescription.parse(SIPP_OFFER), "127.0.0.1", 30000, session_id="9")
    section = answer.audio()
    assert section is not None
    assert section.formats == ("0",)


def test_answer_with_only_our_preference() -> None:
    offer = SessionDescription.parse(BARESIP_OFFER)
    answer = answer_offer(offer, "127.0.0.1", 30000, session_id="9", supported=("PCMU",))
    section = answer.audio()
    assert section is not None and section.formats == ("0", "96")


@pytest.mark.parametrize(
    ("offered", "answered"),
    [("sendrecv", "sendrecv"), ("sendonly", "recvonly"), ("recvonly", "sendonly"), ("inactive", "inactive")],
)
def test_answer_mirrors_direction(offered: str, answered: str) -> None:
    offer = SessionDescription.parse(BARESIP_OFFER.replace("a=sendrecv", f"a={offered}"))
    section = answer_offer(offer, "127.0.0.1", 1000, session_id="1").audio()
    assert section is not None and section.direction == answered


def test_session_level_direction_applies_to_media() -> None:
    offer = SessionDescription.parse(SIPP_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n"))
    section = answer_offer(offer, "127.0.0.1", 1000, session_id="1").audio()
    assert section is not None and section.direction == "recvonly"
    assert is_hold(offer)


def test_local_direction_narrows_the_answer() -> None:
    offer = SessionDescription.parse(SIPP_OFFER)
    section = answer_offer(offer, "127.0.0.1", 1000, session_id="1", direction="sendonly").audio()
    assert section is not None and section.direction == "sendonly"


def test_answer_refuses_video_and_second_audio_with_port_zero() -> None:
    text = SIPP_OFFER + "m=video 6002 RTP/AVP 31\r\na=rtpmap:31 H261/90000\r\nm=audio 6004 RTP/AVP 8\r\n"
    answer = answer_offer(SessionDescription.parse(text), "127.0.0.1", 1000, session_id="1")
    assert [(m.media, m.port) for m in answer.media] == [("audio", 1000), ("video", 0), ("audio", 0)]
    assert "m=video 0 RTP/AVP 31\r\n" in str(answer)


def test_no_common_codec_is_488() -> None:
    text = SIPP_OFFER.replace("RTP/AVP 0", "RTP/AVP 18").replace("rtpmap:0 PCMU", "rtpmap:18 G729")
    with pytest.raises(NegotiationError) as info:
        answer_offer(SessionDescription.parse(text), "127.0.0.1", 1000, session_id="1")
    assert info.value.status == 488


def test_dynamic_pt_for_pcmu_is_accepted_by_name() -> None:
    text = SIPP_OFFER.replace("RTP/AVP 0", "RTP/AVP 97").replace("rtpmap:0 PCMU", "rtpmap:97 pcmu")
    md = describe(SessionDescription.parse(text))
    assert (md.payload_type, md.codec) == (97, "PCMU")


def test_static_payload_type_with_a_leading_zero_is_still_known() -> None:
    md = describe(
        SessionDescription.parse(SIPP_OFFER.replace("RTP/AVP 0", "RTP/AVP 00").replace("a=rtpmap:0 PCMU/8000\r\n", ""))
    )
    assert (md.payload_type, md.codec) == (0, "PCMU")


def test_the_same_text_is_parsed_once() -> None:
    # The UA parses an INVITE's offer and the engine parses the event's copy of it: the second parse is a lookup.
    first = SessionDescription.parse(BARESIP_OFFER.encode())
    assert SessionDescription.parse(BARESIP_OFFER) is first
    assert SessionDescription.parse(str(first)) is first
    with pytest.raises(SdpParseError):
        SessionDescription.parse(BARESIP_OFFER.replace("m=audio 26004", "m=audio x"))
    with pytest.raises(SdpParseError):  # an error is not remembered as a value
        SessionDescription.parse(BARESIP_OFFER.replace("m=audio 26004", "m=audio x"))


def test_describe_values() -> None:
    md = describe(SessionDescription.parse(BARESIP_OFFER))
    assert md == MediaDescription(
        address="127.0.0.1",
        port=26004,
        payload_type=8,
        codec="PCMA",
        clock_rate=8000,
        telephone_event_pt=96,
        direction="sendrecv",
        ptime=30,
    )
    assert not md.held


def test_media_level_connection_wins() -> None:
    text = BARESIP_OFFER.replace("b=AS:64\r\n", "c=IN IP4 10.0.0.5\r\nb=AS:64\r\n")
    sdp = SessionDescription.parse(text)
    assert str(sdp) == text
    assert describe(sdp).address == "10.0.0.5"


def test_hold_and_resume_detection() -> None:
    assert not is_hold(SessionDescription.parse(SIPP_OFFER))
    assert is_hold(SessionDescription.parse(SIPP_OFFER + "a=sendonly\r\n"))
    assert is_hold(SessionDescription.parse(SIPP_OFFER + "a=inactive\r\n"))
    assert not is_hold(SessionDescription.parse(SIPP_OFFER + "a=recvonly\r\n"))
    legacy = SessionDescription.parse(SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"))
    assert is_hold(legacy)
    assert describe(legacy).direction == "sendrecv"


def test_change_direction_makes_hold_and_resume_offers_with_new_versions() -> None:
    offer = build_offer("127.0.0.1", 20000, session_id="5", version=1)
    hold = change_direction(offer, "sendonly")
    assert hold.origin.version == 2
    assert str(hold).endswith("a=ptime:20\r\na=sendonly\r\n")
    resume = change_direction(hold, "sendrecv")
    assert resume.origin.version == 3
    assert str(resume) == str(offer).replace(" 5 1 IN", " 5 3 IN")


def test_mirror_direction() -> None:
    assert mirror_direction("sendonly") == "recvonly"
    assert mirror_direction("recvonly") == "sendonly"
    assert mirror_direction("inactive") == "inactive"
    assert mirror_direction("sendrecv") == "sendrecv"


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None)
def test_parse_fuzz_raises_only_sdp_parse_error(text: str) -> None:
    try:
        sdp = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\n" + text)
    except SdpParseError:
        return
    try:
        describe(sdp)
    except NegotiationError:
        pass
    assert SessionDescription.parse(str(sdp)) == sdp


@given(
    st.lists(
        st.sampled_from(
            [
                "m=audio 4 RTP/AVP 0 8 96",
                "a=rtpmap:96 telephone-event/8000",
                "a=rtpmap:0 PCMU/²",
                "c=IN IP4 1.2.3.4",
                "a=sendonly",
                "m=audio ² RTP/AVP 0",
                "a=ptime:x",
                "b=AS:1",
                "a=rtpmap:8",
            ]
        ),
        max_size=12,
    )
)
def test_parse_fuzz_structured(parts: list[str]) -> None:
    text = "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\n" + "\r\n".join(parts)
    try:
        sdp = SessionDescription.parse(text)
    except SdpParseError:
        return
    try:
        answer_offer(sdp, "127.0.0.1", 1000, session_id="1")
        describe(sdp)
    except NegotiationError:
        pass


def test_text_and_codec_choice_are_made_once_per_value_and_do_not_change_equality() -> None:
    """A remembered offer (SIPp sends the same text in every call) is written out and negotiated once: ``str()``
    returns the same string object and the codec choice is kept on the section. Neither memo takes part in equality."""
    text = SIPP_OFFER.replace("RTP/AVP 0\r\n", "RTP/AVP 0 8 101\r\n") + "a=rtpmap:101 telephone-event/8000\r\n"
    offer = SessionDescription.parse(text)
    assert offer is SessionDescription.parse(text)
    written = str(offer)
    assert str(offer) is written
    assert written == text
    first = answer_offer(offer, "127.0.0.1", 4000, session_id="1")
    assert offer.media[0]._choices == {("PCMU", "PCMA"): ("0", "PCMU", 8000, "101")}
    assert answer_offer(offer, "127.0.0.1", 4000, session_id="1") == first
    assert describe(offer, ("PCMA",)).codec == "PCMA"  # another codec list is chosen for separately
    assert describe(offer).codec == "PCMU"
    for _ in range(2):  # a remembered refusal is still a refusal
        with pytest.raises(NegotiationError):
            describe(offer, ("G729",))
    fresh = SessionDescription._parse(text)  # the same value, without the memos
    assert fresh is not offer and fresh._text is None and fresh.media[0]._choices is None
    assert fresh == offer and hash(fresh) == hash(offer) and hash(fresh.media[0]) == hash(offer.media[0])


def test_describe_and_answers_remembered_per_value_follow_every_value() -> None:
    """The UA and the engine describe the same offer, and every answer to it has the same attribute lines: both are
    remembered, and a description that shares the offer's media section but not its address or direction is its
    own."""
    offer = SessionDescription.parse(SIPP_OFFER)  # no media-level direction
    assert describe(offer) is describe(offer)
    moved = replace(offer, connection=Connection.for_address("10.0.0.9"), attributes=(("sendonly", None),))
    assert moved.media is offer.media
    assert (describe(moved).address, describe(moved).direction) == ("10.0.0.9", "sendonly")
    assert (describe(offer).address, describe(offer).direction) == ("127.0.0.1", "sendrecv")
    first = answer_offer(offer, "127.0.0.1", 40000, session_id="1")
    held = answer_offer(moved, "127.0.0.1", 40002, session_id="1")
    assert "a=sendrecv\r\n" in str(first) and "a=recvonly\r\n" in str(held) and "m=audio 40002 " in str(held)
    assert str(answer_offer(offer, "127.0.0.1", 40000, session_id="1")) == str(first)
