"""The OpenAPI document tells the truth: schemathesis drives a live ``callplane serve`` (real SQLite, real
credentials, real HTTP on 127.0.0.1) from ``/openapi.json`` and checks every answer against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from callplane.api.app import create_app
from callplane.api.openapi import OPERATIONS, build_document
from callplane.store.db import Database
from tests.test_cli import _clean_env, _cli, serving

EXAMPLES = 15  # per operation and mode: 360 requests at most, about 20 s on 2 busy cores
ADMIN = ("AC" + "7" * 32, "schemathesis-admin-token")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A node with an administrator, a sub-account and 30 call records on it; yields (base URL, sub-account sid)."""
    data = tmp_path_factory.mktemp("openapi")
    url = f"sqlite+aiosqlite:///{data / 'callplane.db'}"
    env = {"CALLPLANE_ADMIN_ACCOUNT_SID": ADMIN[0], "CALLPLANE_ADMIN_AUTH_TOKEN": ADMIN[1]}
    with serving(data, url, env) as (base, _):
        made = httpx.post(f"{base}/2012-04-24/Accounts.json", data={"FriendlyName": "sub"}, auth=ADMIN)
        assert made.status_code == 200, made.text
        sub = made.json()["sid"]
        done = _cli(
            "calls",
            "generate",
            "--account",
            sub,
            "--count",
            "30",
            "--data",
            str(data),
            "--database-url",
            url,
            env=_clean_env(),
        )
        assert done.returncode == 0, done.stderr
        yield base, sub


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_matches_the_document(node: tuple[str, str], mode: GenerationMode) -> None:
    base, sub = node
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    everything = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    # Only operations with a full entry in OPERATIONS are fuzzed, and never one that acts on the outside world:
    # placing a call with a generated To would send SIP to arbitrary addresses.
    fuzzed = set(OPERATIONS) - {"place_call", "modify_call"}
    operations = [op for op in everything if op.definition.raw["operationId"].removeprefix("restcomm_") in fuzzed]
    assert len(operations) == 2 * len(fuzzed) == 56  # each operation under both prefixes
    calls = 0

    for operation in operations:
        # A real account in the path (its calls, its updates); everything else is generated.
        fixed = {"AccountSid": sub} if "{AccountSid}" in operation.path else None
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)

        @given(strategy)
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(case: Any) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(auth=ADMIN, checks=CHECKS)

        check()
    assert calls >= len(operations)


def test_the_document_states_bodies_answers_and_errors(node: tuple[str, str]) -> None:
    doc = httpx.get(node[0] + "/openapi.json").json()
    assert doc["info"]["description"].startswith("The callplane REST API")
    assert set(doc["components"]["schemas"]) == {
        "RestException",
        "Account",
        "AccountList",
        "FormFields",
        "AccountCreate",
        "AccountUpdate",
        "Call",
        "CallList",
        "CallCreate",
        "CallUpdate",
        "Recording",
        "RecordingList",
        "Notification",
        "NotificationList",
        "Client",
        "ClientList",
        "ClientCreate",
        "ClientUpdate",
        "IncomingPhoneNumber",
        "IncomingPhoneNumberList",
        "IncomingPhoneNumberCreate",
        "IncomingPhoneNumberUpdate",
    }
    operations = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    assert len(operations) >= 12
    for path, method, op in operations:
        assert "422" not in op["responses"], (path, method)
        success = "204" if method == "delete" else "200"
        assert {success, "401", "403"} <= set(op["responses"]), (path, method)
        if success == "200":
            assert "application/json" in op["responses"]["200"]["content"]
            assert "application/xml" in op["responses"]["200"]["content"]
        if method in ("post", "put"):
            form = op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["$ref"]
            assert form.startswith("#/components/schemas/")
        else:
            assert "requestBody" not in op
    documented = {"AccountCreate", "AccountUpdate", "CallCreate", "CallUpdate"}
    for path in ("/2012-04-24/Accounts", "/restcomm/2012-04-24/Accounts/{AccountSid}"):
        form = doc["paths"][path]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
        assert form["$ref"].rsplit("/", 1)[1] in documented
    create = doc["paths"]["/2012-04-24/Accounts"]["post"]
    assert {"400", "409"} <= set(create["responses"])
    assert doc["components"]["schemas"]["AccountCreate"]["required"] == ["FriendlyName"]
    place = doc["paths"]["/2012-04-24/Accounts/{AccountSid}/Calls"]["post"]
    assert place["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["$ref"].endswith("CallCreate")
    assert doc["components"]["schemas"]["CallCreate"]["required"] == ["From", "To", "Url"]
    params = {
        p["name"]: p["schema"] for p in doc["paths"]["/2012-04-24/Accounts/{AccountSid}/Calls"]["get"]["parameters"]
    }
    assert params["PageSize"] == {"type": "integer", "minimum": 1, "maximum": 1000}


def test_an_unsupported_method_is_405_with_allow(node: tuple[str, str]) -> None:
    base, sub = node
    for path, allowed in [
        ("/2012-04-24/Accounts.json", "GET, POST"),
        (f"/2012-04-24/Accounts/{sub}.json", "GET, POST"),
        (f"/restcomm/2012-04-24/Accounts/{sub}/Calls.json", "GET, POST"),
        (f"/2012-04-24/Accounts/{sub}/Calls/CA1.json", "GET, POST"),
        (f"/2012-04-24/Accounts/{sub}/Clients.json", "GET, POST"),
    ]:
        for method in ("DELETE", "PUT", "PATCH"):
            r = httpx.request(method, base + path, auth=ADMIN)
            assert r.status_code == 405, (method, path)
            assert r.headers["allow"] == allowed, (method, path)
            assert r.json() == {
                "code": 20004,
                "message": "Method Not Allowed",
                "more_info": "https://www.twilio.com/docs/errors/20004",
                "status": 405,
            }


def test_docs_and_the_index_work_offline(node: tuple[str, str]) -> None:
    base = node[0]
    page = httpx.get(base + "/docs")
    assert page.status_code == 200
    assert "/docs/static/swagger-ui-bundle.js" in page.text and "/docs/static/swagger-ui.css" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text  # nothing fetched from elsewhere
    for asset, kind in [("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "text/css")]:
        got = httpx.get(f"{base}/docs/static/{asset}")
        assert got.status_code == 200 and kind in got.headers["content-type"] and len(got.content) > 10_000
    index = httpx.get(base + "/")
    assert index.json() == {
        "name": "callplane",
        "version": index.json()["version"],
        "api_version": "2012-04-24",
        "docs": "/docs",
        "openapi": "/openapi.json",
        "api": "/2012-04-24/Accounts.json",
    }
    html = httpx.get(base + "/", headers={"Accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html")
    assert '<a href="/docs">' in html.text and '<a href="/openapi.json">' in html.text
    assert httpx.get(base + index.json()["api"], auth=ADMIN).status_code == 200


def test_a_route_without_an_entry_is_documented_safely(tmp_path: Path) -> None:
    """A router merged before its OPERATIONS entry still gets the shared errors, a form body for POST, and no 422."""
    app = create_app(Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"))

    async def place(AccountSid: str) -> dict[str, str]:  # noqa: N803
        return {}

    app.add_api_route("/2012-04-24/Accounts/{AccountSid}/Widgets", place, methods=["POST"], name="place_widget")
    op = build_document(app)["paths"]["/2012-04-24/Accounts/{AccountSid}/Widgets"]["post"]
    assert set(op["responses"]) == {"200", "400", "401", "403", "404"}
    assert op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"] == {
        "$ref": "#/components/schemas/FormFields"
    }
