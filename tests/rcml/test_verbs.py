"""Every verb's attributes: defaults, valid values, and invalid values (default + a Notice with §5's code)."""

from __future__ import annotations

import pytest

from callplane.rcml.errors import SchemaError
from callplane.rcml.parser import parse_document
from callplane.rcml.verbs import (
    Client,
    Conference,
    Dial,
    Gather,
    Halt,
    Hangup,
    Notice,
    Number,
    Pause,
    Play,
    Record,
    Redirect,
    Reject,
    Say,
    Sip,
    StatusCallback,
    Verb,
)

BASE = "https://app.example.com/ivr/menu.xml"
CB = "https://app.example.com/ivr/"

# (RCML inside <Response>, the verbs it gives, the notice codes it reports)
CASES: list[tuple[str, tuple[Verb, ...], list[int]]] = [
    # Say
    ("<Say>Hello</Say>", (Say("Hello", "man", "en", 1),), []),
    ('<Say voice="woman" language="fr-CA" loop="0">Bonjour</Say>', (Say("Bonjour", "woman", "fr-CA", 0),), []),
    ('<Say voice="WOMAN" loop=" 3 ">Hi</Say>', (Say("Hi", "woman", "en", 3),), []),
    ('<Say voice="alice">Hi</Say>', (Say("Hi"),), [13511]),
    ('<Say language="english please">Hi</Say>', (Say("Hi"),), [13511]),
    ('<Say loop="-1">Hi</Say>', (Say("Hi"),), [13510]),
    ('<Say loop="2.5">Hi</Say>', (Say("Hi"),), [13510]),
    ('<Say loop="9999999999">Hi</Say>', (Say("Hi"),), [13510]),
    ('<Say loop="">Hi</Say>', (Say("Hi"),), []),
    ("<Say>  </Say>", (), [13520]),
    ("<Say>Hello <break/>world</Say>", (Say("Hello world"),), []),
    # Play
    ("<Play>beep.wav</Play>", (Play(CB + "beep.wav", 1),), []),
    ('<Play loop="0">/audio/hold.mp3</Play>', (Play("https://app.example.com/audio/hold.mp3", 0),), []),
    ("<Play>http://media.example.net/a.wav</Play>", (Play("http://media.example.net/a.wav"),), []),
    ('<Play loop="x">a.wav</Play>', (Play(CB + "a.wav"),), [13410]),
    ("<Play>ftp://media.example.net/a.wav</Play>", (), [11100]),
    ("<Play>file:///etc/passwd</Play>", (), [11100]),
    ("<Play>http://</Play>", (), [11100]),
    ("<Play>http://host:99999/a.wav</Play>", (), [11100]),
    ("<Play></Play>", (), [11100]),
    # Pause
    ("<Pause/>", (Pause(1),), []),
    ('<Pause length="7"/>', (Pause(7),), []),
    ('<Pause length="0"/>', (Pause(1),), [13910]),
    ('<Pause length="soon"/>', (Pause(1),), [13910]),
    # Gather
    ("<Gather/>", (Gather(None, "POST", 5, "#", None, ()),), []),
    (
        '<Gather action="/next" method="get" timeout="10" finishOnKey="*" numDigits="4">'
        '<Say>Enter</Say><Play>t.wav</Play><Pause length="2"/></Gather>',
        (Gather("https://app.example.com/next", "GET", 10, "*", 4, (Say("Enter"), Play(CB + "t.wav"), Pause(2))),),
        [],
    ),
    ('<Gather finishOnKey="0123456789*#"/>', (Gather(finish_on_key="0123456789*#"),), []),
    ('<Gather finishOnKey="A"/>', (Gather(),), [13310]),
    ('<Gather finishOnKey="1234567890*#1"/>', (Gather(),), [13310]),
    ('<Gather method="PUT"/>', (Gather(),), [13312]),
    ('<Gather timeout="0"/>', (Gather(),), [13313]),
    ('<Gather numDigits="0"/>', (Gather(),), [13314]),
    ('<Gather numDigits="many"/>', (Gather(),), [13314]),
    ('<Gather action="mailto:x@y"/>', (Gather(),), [11100]),
    ('<Gather input="speech"/>', (Gather(),), [11001]),
    ("<Gather><Record/><Say>x</Say><Dial>1</Dial></Gather>", (Gather(prompts=(Say("x"),)),), [13321, 13321]),
    ("<Gather><Say/></Gather>", (Gather(),), [13520]),
    # Record
    ("<Record/>", (Record(None, "POST", 5, "1234567890*#", 3600, True),), []),
    (
        '<Record action="done" method="GET" timeout="0" finishOnKey="#*" maxLength="30" playBeep="false"/>',
        (Record(CB + "done", "GET", 0, "#*", 30, False),),
        [],
    ),
    ('<Record finishOnKey="-1"/>', (Record(finish_on_key=""),), []),
    ('<Record finishOnKey="x"/>', (Record(finish_on_key="#"),), [13613]),
    ('<Record method="DELETE"/>', (Record(),), [13610]),
    ('<Record timeout="-5"/>', (Record(),), [13611]),
    ('<Record maxLength="0"/>', (Record(),), [13612]),
    ('<Record playBeep="yes"/>', (Record(),), [12200]),
    ('<Record transcribe="true"/>', (Record(),), [12200]),
    # Redirect
    ("<Redirect>step2.xml</Redirect>", (Redirect(CB + "step2.xml", "POST"),), []),
    ('<Redirect method="GET">?page=2</Redirect>', (Redirect(BASE + "?page=2", "GET"),), []),
    ("<Redirect/>", (Redirect(None),), []),
    ('<Redirect method="PATCH">x</Redirect>', (Redirect(CB + "x"),), [13710]),
    ("<Redirect>javascript:alert(1)</Redirect>", (), [11100]),
    # Hangup, Reject
    ("<Hangup/>", (Hangup(),), []),
    ("<Reject/>", (Reject("rejected"),), []),
    ('<Reject reason="Busy"/>', (Reject("busy"),), []),
    ('<Reject reason="later"/>', (Reject("rejected"),), [12200]),
    # Unsupported Restcomm verbs and misplaced nouns are skipped
    ("<Sms>hi</Sms><Hangup/>", (Hangup(),), [12200]),
    ("<Number>123</Number>", (), [12200]),
]


@pytest.mark.parametrize(("rcml", "verbs", "codes"), CASES, ids=[c[0][:60] for c in CASES])
def test_verb_attributes(rcml: str, verbs: tuple[Verb, ...], codes: list[int]) -> None:
    doc = parse_document(f"<Response>{rcml}</Response>", BASE)
    assert doc.verbs == verbs
    assert [n.code for n in doc.notices] == codes
    assert all(n.level == "warning" for n in doc.notices)


def test_notice_names_the_verb_the_attribute_and_the_default() -> None:
    doc = parse_document('<Response><Gather timeout="ten"/><Say voice="x">a</Say></Response>', BASE)
    assert doc.notices == (
        Notice(13313, '<Gather> timeout="ten" is invalid; using 5'),
        Notice(13511, '<Say> voice="x" is invalid; using "man"'),
    )


def test_a_long_invalid_value_is_shortened_in_the_notice() -> None:
    doc = parse_document(f'<Response><Pause length="{"9" * 5000}"/></Response>', BASE)
    assert doc.verbs == (Pause(1),)
    assert len(doc.notices[0].message) < 120


DIAL_CASES: list[tuple[str, tuple[Verb, ...], list[int]]] = [
    ("<Dial>+15551234</Dial>", (Dial((Number("+15551234"),), None, "POST", 30, 14400, None, False, False),), []),
    (
        '<Dial action="after" method="GET" timeout="20" timeLimit="60" callerId="+15550000" record="true" '
        'hangupOnStar="TRUE"><Number>1</Number></Dial>',
        (Dial((Number("1"),), CB + "after", "GET", 20, 60, "+15550000", True, True),),
        [],
    ),
    ('<Dial method="x" timeout="0" timeLimit="-1">1</Dial>', (Dial((Number("1"),)),), [13210, 13212, 13216]),
    ('<Dial record="maybe" hangupOnStar="2">1</Dial>', (Dial((Number("1"),)),), [12200, 12200]),
    ('<Dial callerId="bad id">1</Dial>', (Halt(13214, '<Dial> callerId="bad id" is invalid'),), []),
    (
        '<Dial><Number url="screen" method="GET" statusCallback="/cb" statusCallbackEvent="ringing, answered"'
        ' sendDigits="ww12#">+1 555?X-a=1</Number></Dial>',
        (
            Dial(
                (
                    Number(
                        "+1 555?X-a=1",
                        CB + "screen",
                        "GET",
                        StatusCallback("https://app.example.com/cb", "POST", ("ringing", "answered")),
                        "ww12#",
                    ),
                )
            ),
        ),
        [],
    ),
    (
        '<Dial><Number statusCallback="cb" statusCallbackEvent="ringing party">1</Number></Dial>',
        (Dial((Number("1", status_callback=StatusCallback(CB + "cb", "POST", ("ringing",))),)),),
        [12200],
    ),
    (
        '<Dial><Client statusCallback="cb">alice</Client><Client name="bob"/></Dial>',
        (Dial((Client("alice", status_callback=StatusCallback(CB + "cb")), Client("bob"))),),
        [],
    ),
    (
        '<Dial><Sip username="u" password="p">sip:bob@example.com;transport=tcp</Sip><Sip>bob</Sip></Dial>',
        (Dial((Sip("sip:bob@example.com;transport=tcp", "u", "p"),)),),
        [12200],
    ),
    ("<Dial><Conference>room</Conference></Dial>", (Dial((Conference("room"),)),), []),
    (
        '<Dial><Conference statusCallback="cb" statusCallbackMethod="get" statusCallbackEvent="completed initiated">'
        'r</Conference><Number statusCallbackEvent="ringing">2</Number></Dial>',
        (
            Dial(
                (
                    Conference("r", status_callback=StatusCallback(CB + "cb", "GET", ("completed", "initiated"))),
                    Number("2"),
                )
            ),
        ),
        [],
    ),
    (
        '<Dial><Conference muted="true" beep="false" startConferenceOnEnter="false" endConferenceOnExit="true"'
        ' waitUrl="music.xml" waitMethod="GET" maxParticipants="5">room</Conference></Dial>',
        (Dial((Conference("room", True, False, False, True, CB + "music.xml", "GET", 5),)),),
        [],
    ),
    (
        '<Dial><Conference maxParticipants="0" beep="loud">r</Conference></Dial>',
        (Dial((Conference("r"),)),),
        [12200] * 2,
    ),
    ("<Dial><Number/><Queue>q</Queue><Say>x</Say></Dial>", (), [12200, 12200, 12200, 12200]),
    ("<Dial/>", (), [12200]),
    ("<Dial>" + "<Number>1</Number>" * 12 + "</Dial>", (Dial((Number("1"),) * 10),), [12200]),
]


@pytest.mark.parametrize(("rcml", "verbs", "codes"), DIAL_CASES, ids=[c[0][:60] for c in DIAL_CASES])
def test_dial_attributes_and_nouns(rcml: str, verbs: tuple[Verb, ...], codes: list[int]) -> None:
    doc = parse_document(f"<Response>{rcml}</Response>", BASE)
    assert doc.verbs == verbs
    assert [n.code for n in doc.notices] == codes


def test_an_unknown_noun_refuses_the_document() -> None:
    with pytest.raises(SchemaError, match="<Phone> is not an RCML noun"):
        parse_document("<Response><Dial><Phone>1</Phone></Dial></Response>", BASE)


def test_unknown_attributes_are_ignored() -> None:
    doc = parse_document('<Response><Say rate="fast" foo="bar">Hi</Say></Response>', BASE)
    assert doc.verbs == (Say("Hi"),) and doc.notices == ()
