from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callplane.core.ids import IdSource
from callplane.sip.digest import (
    Challenge,
    Credentials,
    DigestClient,
    DigestParseError,
    DigestResponse,
    DigestServer,
    Verdict,
    best_challenge,
    compute_ha1,
    compute_response,
    parse_params,
)

# RFC 7616 §3.9.1 example.
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def test_rfc2617_example_md5_qop_auth() -> None:
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    response = compute_response(
        ha1=ha1,
        algorithm="MD5",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    ha1 = compute_ha1("Mufasa", "http-auth@example.org", "Circle of Life", algorithm)
    response = compute_response(
        ha1=ha1,
        algorithm=algorithm,
        method="GET",
        uri="/dir/index.html",
        nonce=RFC7616_NONCE,
        qop="auth",
        nc="00000001",
        cnonce=RFC7616_CNONCE,
    )
    assert response == expected


def test_parse_rfc7616_challenge() -> None:
    value = (
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    challenge = Challenge.parse(value)
    assert challenge == Challenge(
        realm="http-auth@example.org",
        nonce=RFC7616_NONCE,
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        opaque=RFC7616_OPAQUE,
        stale=False,
    )


def test_parse_sipp_challenge_without_qop() -> None:
    challenge = Challenge.parse('Digest realm="example", nonce="47364c23432d2e131a5fb210812c", algorithm=MD5')
    assert (challenge.realm, challenge.qop, challenge.algorithm) == ("example", (), "MD5")


def test_parse_params_quoting() -> None:
    assert parse_params('a="x\\"y, z", B=tok ,c=""') == {"a": 'x"y, z', "b": "tok", "c": ""}
    with pytest.raises(DigestParseError):
        parse_params('a="open')
    with pytest.raises(DigestParseError):
        parse_params("novalue")


@pytest.mark.parametrize("value", ["Basic realm=x", 'Digest nonce="1"', "Digest", 'Digest realm="r", nonce'])
def test_bad_challenges(value: str) -> None:
    with pytest.raises(DigestParseError):
        Challenge.parse(value)


def test_client_authorization_exact_value_and_nonce_count() -> None:
    client = DigestClient(IdSource(1))
    challenge = Challenge("http-auth@example.org", RFC7616_NONCE, "SHA-256", ("auth",), RFC7616_OPAQUE)
    creds = Credentials("Mufasa", "Circle of Life")
    first = DigestResponse.parse(client.authorization(challenge, creds, "GET", "/dir/index.html"))
    second = DigestResponse.parse(client.authorization(challenge, creds, "GET", "/dir/index.html"))
    assert (first.nc, second.nc) == ("00000001", "00000002")
    assert first.cnonce is not None and first.cnonce != second.cnonce
    expected = compute_response(
        ha1=compute_ha1("Mufasa", "http-auth@example.org", "Circle of Life", "SHA-256"),
        algorithm="SHA-256",
        method="GET",
        uri="/dir/index.html",
        nonce=RFC7616_NONCE,
        qop="auth",
        nc="00000001",
        cnonce=first.cnonce,
    )
    assert first.response == expected
    assert first.opaque == RFC7616_OPAQUE
    cnonce = IdSource(1).hex(8)
    assert client.authorization(challenge, creds, "GET", "/x").startswith('Digest username="Mufasa", realm=')
    assert str(first) == (
        'Digest username="Mufasa", realm="http-auth@example.org", '
        f'nonce="{RFC7616_NONCE}", uri="/dir/index.html", response="{expected}", algorithm=SHA-256, '
        f'cnonce="{cnonce}", opaque="{RFC7616_OPAQUE}", qop=auth, nc=00000001'
    )


def test_client_rfc2069_form_for_sip_peers() -> None:
    client = DigestClient(IdSource(1))
    challenge = Challenge.parse('Digest realm="example", nonce="47364c23432d2e131a5fb210812c", algorithm=MD5')
    value = client.authorization(challenge, Credentials("alice", "secret"), "INVITE", "sip:bob@127.0.0.1:5070")
    parsed = DigestResponse.parse(value)
    assert (parsed.qop, parsed.nc, parsed.cnonce) == (None, None, None)
    ha1 = compute_ha1("alice", "example", "secret")
    assert parsed.response == compute_response(
        ha1=ha1, algorithm="MD5", method="INVITE", uri="sip:bob@127.0.0.1:5070", nonce="47364c23432d2e131a5fb210812c"
    )


def test_best_challenge_prefers_sha256_and_skips_unknown() -> None:
    values = [
        'Digest realm="r", nonce="n1", algorithm=MD5',
        'Digest realm="r", nonce="n2", algorithm=FOO',
        'Digest realm="r", nonce="n3", algorithm=SHA-256, qop="auth"',
        "Basic realm=r",
    ]
    best = best_challenge(values)
    assert best is not None and best.nonce == "n3"
    assert best_challenge(['Digest realm="r", nonce="n", qop="weird"']) is None


def _server(**kw: object) -> DigestServer:
    return DigestServer("callplane", b"k" * 32, IdSource(3), **kw)  # type: ignore[arg-type]


def test_server_round_trip_both_algorithms() -> None:
    server = _server(track_nc=False)  # the same credentials are judged several times below
    values = server.challenges(now=1000.0)
    assert [Challenge.parse(v).algorithm for v in values] == ["SHA-256", "MD5"]
    client = DigestClient(IdSource(4))
    for value in values:
        auth = client.authorization(Challenge.parse(value), Credentials("alice", "pw"), "REGISTER", "sip:callplane")
        parsed = DigestResponse.parse(auth)
        assert server.verify(parsed, "REGISTER", 1001.0, password="pw") is Verdict.OK
        ha1 = compute_ha1("alice", "callplane", "pw", parsed.algorithm)
        assert server.verify(parsed, "REGISTER", 1001.0, ha1=ha1) is Verdict.OK
        assert server.verify(parsed, "REGISTER", 1001.0, password="wrong") is Verdict.BAD_RESPONSE
        assert server.verify(parsed, "INVITE", 1001.0, password="pw") is Verdict.BAD_RESPONSE


def test_server_stale_after_ttl_and_new_challenge_says_so() -> None:
    server = _server(nonce_ttl=60.0)
    challenge = Challenge.parse(server.challenges(now=0.0)[0])
    auth = DigestResponse.parse(
        DigestClient(IdSource(4)).authorization(challenge, Credentials("a", "pw"), "REGISTER", "sip:x")
    )
    assert server.verify(auth, "REGISTER", 59.0, password="pw") is Verdict.OK
    assert server.verify(auth, "REGISTER", 61.0, password="pw") is Verdict.STALE
    assert Challenge.parse(server.challenges(now=61.0, stale=True)[0]).stale


def test_server_rejects_foreign_or_tampered_nonce() -> None:
    server = _server()
    other = DigestServer("callplane", b"x" * 32, IdSource(3))
    for nonce in (other.make_nonce(10.0), "abc", server.make_nonce(10.0)[:-1] + "0", "a.b.c"):
        challenge = Challenge("callplane", nonce, "MD5", ("auth",))
        auth = DigestClient(IdSource(4)).authorization(challenge, Credentials("a", "pw"), "REGISTER", "sip:x")
        assert server.verify(DigestResponse.parse(auth), "REGISTER", 11.0, password="pw") is Verdict.BAD_NONCE


def test_server_nonce_shared_between_nodes_with_same_secret() -> None:
    node_a, node_b = _server(), DigestServer("callplane", b"k" * 32, IdSource(99))
    challenge = Challenge.parse(node_a.challenges(now=5.0)[1])
    auth = DigestClient(IdSource(4)).authorization(challenge, Credentials("a", "pw"), "REGISTER", "sip:x")
    assert node_b.verify(DigestResponse.parse(auth), "REGISTER", 6.0, password="pw") is Verdict.OK


def test_server_nc_replay_protection() -> None:
    server = _server(track_nc=True)
    challenge = Challenge.parse(server.challenges(now=0.0)[0])
    client = DigestClient(IdSource(4))
    first = DigestResponse.parse(client.authorization(challenge, Credentials("a", "pw"), "REGISTER", "sip:x"))
    second = DigestResponse.parse(client.authorization(challenge, Credentials("a", "pw"), "REGISTER", "sip:x"))
    assert server.verify(first, "REGISTER", 1.0, password="pw") is Verdict.OK
    assert server.verify(first, "REGISTER", 1.0, password="pw") is Verdict.REPLAY
    assert server.verify(second, "REGISTER", 1.0, password="pw") is Verdict.OK


def test_server_requires_qop_when_it_offered_it() -> None:
    server = _server()
    nonce = server.make_nonce(0.0)
    auth = DigestClient(IdSource(4)).authorization(Challenge("callplane", nonce), Credentials("a", "pw"), "BYE", "x")
    assert server.verify(DigestResponse.parse(auth), "BYE", 1.0, password="pw") is Verdict.BAD_RESPONSE
    lenient = _server(qop=False, algorithms=("MD5",))
    assert lenient.verify(DigestResponse.parse(auth), "BYE", 1.0, password="pw") is Verdict.OK


def test_auth_int_and_sess() -> None:
    server = _server(algorithms=("SHA-256-sess",))
    challenge = Challenge("callplane", server.make_nonce(0.0), "SHA-256-SESS", ("auth-int",))
    auth = DigestClient(IdSource(4)).authorization(challenge, Credentials("a", "pw"), "INFO", "sip:x", body=b"Signal=5")
    parsed = DigestResponse.parse(auth)
    assert parsed.qop == "auth-int"
    assert server.verify(parsed, "INFO", 1.0, password="pw", body=b"Signal=5") is Verdict.OK
    assert server.verify(parsed, "INFO", 1.0, password="pw", body=b"Signal=6") is Verdict.BAD_RESPONSE


@pytest.mark.parametrize(
    "value",
    ['Digest username="a", realm="r"', 'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth'],
)
def test_bad_authorization(value: str) -> None:
    with pytest.raises(DigestParseError):
        DigestResponse.parse(value)


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_parsers_fuzz_raise_only_parse_errors(text: str) -> None:
    for parser in (Challenge.parse, DigestResponse.parse):
        for prefix in ("", "Digest ", 'Digest realm="r", nonce="n", '):
            try:
                parser(prefix + text)
            except DigestParseError:
                pass


def test_server_checks_uri_when_asked() -> None:
    server = _server()
    challenge = Challenge.parse(server.challenges(now=0.0)[0])
    auth = DigestResponse.parse(
        DigestClient(IdSource(4)).authorization(challenge, Credentials("a", "pw"), "REGISTER", "sip:callplane")
    )
    assert server.verify(auth, "REGISTER", 1.0, password="pw", uri="SIP:CALLPLANE") is Verdict.OK
    assert server.verify(auth, "REGISTER", 1.0, password="pw", uri="sip:elsewhere") is Verdict.BAD_RESPONSE


def test_server_replay_protection_is_on_by_default() -> None:
    server = _server()
    challenge = Challenge.parse(server.challenges(now=0.0)[0])
    auth = DigestResponse.parse(
        DigestClient(IdSource(4)).authorization(challenge, Credentials("a", "pw"), "REGISTER", "sip:x")
    )
    assert server.verify(auth, "REGISTER", 1.0, password="pw") is Verdict.OK
    assert server.verify(auth, "REGISTER", 2.0, password="pw") is Verdict.REPLAY


def test_non_ascii_credentials_are_refused_without_raising() -> None:
    server = _server()
    challenge = Challenge.parse(server.challenges(now=0.0)[0])
    good = DigestResponse.parse(
        DigestClient(IdSource(4)).authorization(challenge, Credentials("a", "pw"), "REGISTER", "sip:x")
    )
    bad_response = replace(good, response=good.response[:-1] + "é")
    bad_nonce = replace(good, nonce=good.nonce[:-1] + "é")
    assert server.verify(bad_response, "REGISTER", 1.0, password="pw") is Verdict.BAD_RESPONSE
    assert server.verify(bad_nonce, "REGISTER", 1.0, password="pw") is Verdict.BAD_NONCE
    with pytest.raises(DigestParseError, match="non-ASCII"):
        DigestResponse.parse(str(bad_response))
