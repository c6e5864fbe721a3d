from __future__ import annotations

import pytest

from callplane.core.ids import IdSource
from callplane.sip.digest import Challenge, Credentials, DigestClient, DigestServer, compute_ha1
from callplane.sip.message import Request, Response, parse_message
from callplane.sip.registrar import Binding, InMemoryBindingStore, RegisterOutcome, Registrar, Secret, aor_of

T0 = 1_760_000_000.0  # wall-clock epoch seconds
DOMAIN = "callplane.test"


def register(
    *,
    contacts: tuple[str, ...] = ("<sip:alice@127.0.0.1:5075>",),
    expires: str | None = None,
    call_id: str = "reg-1@127.0.0.1",
    cseq: int = 1,
    user: str = "alice",
    extra: tuple[str, ...] = (),
) -> Request:
    lines = [
        f"REGISTER sip:{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5075;branch=z9hG4bK-reg;rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{DOMAIN}>;tag=fromtag",
        f"To: <sip:{user}@{DOMAIN}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: baresip v1.0.0",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += list(extra)
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def with_auth(request: Request, challenge_response: Response, password: str = "secret") -> Request:
    client = DigestClient(IdSource(5))
    challenge = Challenge.parse(challenge_response.headers.get_all("www-authenticate")[0])
    value = client.authorization(
        challenge, Credentials(request.to.uri.user or "", password), "REGISTER", str(request.uri)
    )
    request.headers.add("Authorization", value)
    return request


class Harness:
    def __init__(self, *, auth: bool = False, **kw: int) -> None:
        digest = DigestServer(DOMAIN, b"s" * 32, IdSource(1)) if auth else None
        self.registrar = Registrar(digest, IdSource(2), domains=frozenset({DOMAIN}), **kw)
        self.store = InMemoryBindingStore()
        self.secrets = {"alice": Secret(password="secret"), "bob": Secret(password="hunter2")}

    def run(self, request: Request, now: float = T0) -> RegisterOutcome:
        user = self.registrar.username(request)
        secret = self.secrets.get(user) if user is not None else None
        aor = self.registrar.aor(request)
        outcome = self.registrar.handle(
            request,
            secret=secret,
            bindings=self.store.bindings(aor, now),
            now=now,
            source=("127.0.0.1", 5075, "UDP"),
        )
        if outcome.aor is not None:
            self.store.apply(outcome.aor, outcome.upserts, outcome.removals)
        return outcome


def contacts_of(response: Response) -> list[str]:
    return response.headers.get_all("contact")


def test_register_creates_binding_and_lists_it() -> None:
    h = Harness()
    outcome = h.run(register(expires="600"))
    assert outcome.response.status == 200
    assert contacts_of(outcome.response) == ["<sip:alice@127.0.0.1:5075>;expires=600"]
    assert outcome.response.to.tag is not None
    assert h.store.bindings("sip:alice@callplane.test", T0) == [
        Binding(
            aor="sip:alice@callplane.test",
            contact="sip:alice@127.0.0.1:5075",
            expires_at=T0 + 600,
            call_id="reg-1@127.0.0.1",
            cseq=1,
            source_host="127.0.0.1",
            source_port=5075,
            transport="UDP",
            user_agent="baresip v1.0.0",
        )
    ]


def test_exact_bytes_of_the_200() -> None:
    outcome = Harness().run(register(expires="600"))
    text = bytes(outcome.response).decode()
    assert text.startswith("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5075;branch=z9hG4bK-reg;rport\r\n")
    assert f"To: <sip:alice@{DOMAIN}>;tag=" in text
    assert text.endswith("Contact: <sip:alice@127.0.0.1:5075>;expires=600\r\nContent-Length: 0\r\n\r\n")


def test_several_contacts_and_expires_param_wins_over_header() -> None:
    h = Harness()
    req = register(contacts=("<sip:alice@10.0.0.1>;expires=120", "<sip:alice@10.0.0.2>"), expires="300")
    outcome = h.run(req)
    assert contacts_of(outcome.response) == ["<sip:alice@10.0.0.1>;expires=120", "<sip:alice@10.0.0.2>;expires=300"]
    # A later REGISTER from another device adds to the set; the response lists all of them.
    outcome = h.run(register(contacts=("<sip:alice@10.0.0.3>",), call_id="other", expires="60"), now=T0 + 10)
    assert contacts_of(outcome.response) == [
        "<sip:alice@10.0.0.1>;expires=110",
        "<sip:alice@10.0.0.2>;expires=290",
        "<sip:alice@10.0.0.3>;expires=60",
    ]


def test_default_expiry_and_max_clamp() -> None:
    h = Harness(max_expires=1800, default_expires=900)
    assert contacts_of(h.run(register()).response) == ["<sip:alice@127.0.0.1:5075>;expires=900"]
    assert contacts_of(h.run(register(expires="7200", cseq=2)).response) == ["<sip:alice@127.0.0.1:5075>;expires=1800"]


def test_interval_too_brief() -> None:
    h = Harness(min_expires=60)
    outcome = h.run(register(expires="30"))
    assert outcome.response.status == 423
    assert outcome.response.reason == "Interval Too Brief"
    assert outcome.response.headers.get("min-expires") == "60"
    assert outcome.aor is None and h.store.bindings("sip:alice@callplane.test", T0) == []


def test_query_without_contact_lists_bindings_and_changes_nothing() -> None:
    h = Harness()
    h.run(register(expires="600"))
    outcome = h.run(register(contacts=(), cseq=2), now=T0 + 100)
    assert outcome.response.status == 200
    assert contacts_of(outcome.response) == ["<sip:alice@127.0.0.1:5075>;expires=500"]
    assert outcome.upserts == () and outcome.removals == ()


def test_refresh_then_unregister_one_contact() -> None:
    h = Harness()
    h.run(register(contacts=("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>"), expires="600"))
    outcome = h.run(register(contacts=("<sip:alice@10.0.0.1>;expires=0",), cseq=2), now=T0 + 5)
    assert contacts_of(outcome.response) == ["<sip:alice@10.0.0.2>;expires=595"]
    assert outcome.removals == ("sip:alice@10.0.0.1",)
    assert [b.contact for b in h.store.bindings("sip:alice@callplane.test", T0 + 5)] == ["sip:alice@10.0.0.2"]


def test_wildcard_unregister() -> None:
    h = Harness()
    h.run(register(contacts=("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>"), expires="600"))
    outcome = h.run(register(contacts=("*",), expires="0", cseq=2))
    assert outcome.response.status == 200
    assert contacts_of(outcome.response) == []
    assert h.store.bindings("sip:alice@callplane.test", T0) == []


@pytest.mark.parametrize(
    ("contacts", "expires"), [(("*",), "60"), (("*",), None), (("*", "<sip:alice@10.0.0.1>"), "0")]
)
def test_bad_wildcard_is_400(contacts: tuple[str, ...], expires: str | None) -> None:
    outcome = Harness().run(register(contacts=contacts, expires=expires))
    assert outcome.response.status == 400


def test_call_id_cseq_ordering_rule() -> None:
    h = Harness()
    h.run(register(expires="600", cseq=5))
    # Same Call-ID, CSeq not higher: the update fails (§10.3 step 7).
    late = h.run(register(expires="0", cseq=5))
    assert late.response.status == 500
    assert len(h.store.bindings("sip:alice@callplane.test", T0)) == 1
    # Same Call-ID, higher CSeq: accepted.
    assert h.run(register(expires="0", cseq=6)).response.status == 200
    assert h.store.bindings("sip:alice@callplane.test", T0) == []
    # A different Call-ID (rebooted device) may replace a binding whatever its CSeq.
    h.run(register(expires="600", cseq=50))
    outcome = h.run(register(expires="300", cseq=1, call_id="after-reboot"))
    assert outcome.response.status == 200
    assert contacts_of(outcome.response) == ["<sip:alice@127.0.0.1:5075>;expires=300"]


def test_expired_bindings_are_not_listed_and_purge() -> None:
    h = Harness()
    h.run(register(contacts=("<sip:alice@10.0.0.1>;expires=60", "<sip:alice@10.0.0.2>;expires=600")))
    outcome = h.run(register(contacts=(), cseq=2), now=T0 + 61)
    assert contacts_of(outcome.response) == ["<sip:alice@10.0.0.2>;expires=539"]
    assert h.store.purge(T0 + 61) == 1
    assert h.store.purge(T0 + 601) == 1
    assert h.store.purge(T0 + 601) == 0


def test_foreign_domain_and_require() -> None:
    h = Harness()
    req = register()
    req.uri = req.uri.__class__("sip", "example.org")
    assert h.run(req).response.status == 404
    outcome = h.run(register(extra=("Require: gruu",)))
    assert outcome.response.status == 420
    assert outcome.response.headers.get("unsupported") == "gruu"


def test_digest_challenge_then_success() -> None:
    h = Harness(auth=True)
    first = h.run(register(expires="600"))
    assert first.response.status == 401
    assert [Challenge.parse(v).algorithm for v in first.response.headers.get_all("www-authenticate")] == [
        "SHA-256",
        "MD5",
    ]
    assert first.aor is None
    second = h.run(with_auth(register(expires="600", cseq=2), first.response), now=T0 + 1)
    assert second.response.status == 200
    assert contacts_of(second.response) == ["<sip:alice@127.0.0.1:5075>;expires=600"]


def test_digest_with_stored_ha1() -> None:
    h = Harness(auth=True)
    h.secrets["alice"] = Secret(ha1=(("SHA-256", compute_ha1("alice", DOMAIN, "secret", "SHA-256")),))
    first = h.run(register())
    assert h.run(with_auth(register(cseq=2), first.response)).response.status == 200


def test_digest_wrong_password_is_challenged_again() -> None:
    h = Harness(auth=True)
    first = h.run(register())
    outcome = h.run(with_auth(register(cseq=2), first.response, password="nope"))
    assert outcome.response.status == 401
    assert h.store.bindings("sip:alice@callplane.test", T0) == []


def test_digest_stale_nonce() -> None:
    h = Harness(auth=True)
    first = h.run(register())
    outcome = h.run(with_auth(register(cseq=2), first.response), now=T0 + 3600)
    assert outcome.response.status == 401
    assert Challenge.parse(outcome.response.headers.get_all("www-authenticate")[0]).stale


def test_digest_unknown_user_and_other_users_aor_are_403() -> None:
    h = Harness(auth=True)
    first = h.run(register(user="mallory"))
    assert h.run(with_auth(register(user="mallory", cseq=2), first.response)).response.status == 403
    # bob authenticates correctly but tries to bind alice's AOR.
    req = register(cseq=2)
    challenge = Challenge.parse(first.response.headers.get_all("www-authenticate")[0])
    value = DigestClient(IdSource(5)).authorization(challenge, Credentials("bob", "hunter2"), "REGISTER", str(req.uri))
    req.headers.add("Authorization", value)
    assert h.run(req).response.status == 403


def test_aor_of_normalises_host_case() -> None:
    msg = register()
    assert aor_of(msg.to.uri) == "sip:alice@callplane.test"
    assert aor_of(msg.uri) == "sip:callplane.test"


def _tampered(request: Request, old: str, new: str) -> Request:
    value = request.headers.get("authorization")
    assert value is not None and old in value
    request.headers.set("Authorization", value.replace(old, new))
    return request


@pytest.mark.parametrize("field", ["response", "nonce"])
def test_digest_with_non_ascii_response_or_nonce_is_challenged_not_a_crash(field: str) -> None:
    h = Harness(auth=True)
    first = h.run(register())
    req = with_auth(register(cseq=2), first.response)
    auth = req.headers.get("authorization") or ""
    current = auth.split(f'{field}="', 1)[1].split('"', 1)[0]
    outcome = h.run(_tampered(req, current, current[:-1] + "é"))
    assert outcome.response.status == 401 and outcome.aor is None


def test_digest_replayed_nonce_count_is_refused_by_default() -> None:
    h = Harness(auth=True)
    first = h.run(register())
    req = with_auth(register(cseq=2), first.response)
    assert h.run(req).response.status == 200
    replay = register(cseq=3)
    replay.headers.add("Authorization", req.headers.get("authorization"))
    assert h.run(replay).response.status == 401


@pytest.mark.parametrize(
    ("digest_uri", "status"),
    [
        ("sip:elsewhere.example.com", 400),
        ("sip:CALLPLANE.TEST", 200),  # host case does not matter (§19.1.4)
        ("not a uri", 400),
    ],
)
def test_digest_uri_must_name_the_request_uri(digest_uri: str, status: int) -> None:
    h = Harness(auth=True)
    first = h.run(register())
    req = register(cseq=2)
    challenge = Challenge.parse(first.response.headers.get_all("www-authenticate")[0])
    value = DigestClient(IdSource(5)).authorization(challenge, Credentials("alice", "secret"), "REGISTER", digest_uri)
    req.headers.add("Authorization", value)
    outcome = h.run(req)
    assert outcome.response.status == status
    if status == 400:
        assert outcome.response.reason == "Digest URI Mismatch" and outcome.aor is None


def test_contact_with_headers_outside_angle_brackets_is_400() -> None:
    """RFC 4475 §3.1.2.13: a Contact URI with headers must be in name-addr form."""
    outcome = Harness().run(register(contacts=("sip:alice@127.0.0.1:5075?Route=%3Csip:proxy.example.com%3E",)))
    assert outcome.response.status == 400 and outcome.aor is None
