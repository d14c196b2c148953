"""Property-based tests generated from the hub's OpenAPI schema: no input gives a 5xx, every
response matches the documented schema, and every error has the one error shape."""

from __future__ import annotations

import hashlib

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from quantgrid.hub.server import create_app  # noqa: E402
from quantgrid.hub.server.auth import add_user  # noqa: E402
from quantgrid.hub.server.submissions import record_verdict  # noqa: E402
from quantgrid.hub.settings import HubSettings  # noqa: E402


def _build_app(tmp_dir):
    st = HubSettings.load(storage_dir=tmp_dir, worker_enabled=False, max_upload_bytes=4096,
                          rate_limit_burst=100_000, rate_limit_per_minute=100_000, daily_submission_limit=100_000)
    app = create_app(st)
    app.state.test_token = add_user(app.state.db, "fuzzer")
    owner_token = add_user(app.state.db, "owner")
    # Give the fuzzer something to find: an accepted adapter of another user (id 1).
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        data = b"PK seed"
        c.post("/v1/submissions", content=data, headers={"Authorization": f"Bearer {owner_token}",
                                                         "X-Content-SHA256": hashlib.sha256(data).hexdigest()})
    record_verdict(app.state.db, st, 1, accepted=True, report={"stage": "test"}, score=0.1)
    return app


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return _build_app(tmp_path_factory.mktemp("schema-hub"))


def test_no_input_gives_a_server_error(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {app.state.test_token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    for op in operations:
        _fuzz(op, headers)


def _fuzz(op, headers: dict) -> None:
    from hypothesis import given

    @given(case=op.as_strategy())
    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        response = case.call(headers={**(case.headers or {}), **headers})
        assert response.status_code < 500, f"{op.label}: {response.status_code} {response.text}"
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and {"code", "message", "hint"} == set(body["error"]), body
        case.validate_response(response, checks=[schemathesis.checks.response_schema_conformance])

    check()


def test_openapi_documents_every_v1_route(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        spec = c.get("/openapi.json").json()
    ops = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    assert {("GET", "/v1/health"), ("GET", "/v1/recipe"), ("GET", "/v1/me"), ("POST", "/v1/submissions"),
            ("GET", "/v1/submissions"), ("GET", "/v1/submissions/{submission_id}"), ("GET", "/v1/adapters"),
            ("POST", "/v1/adapters/{adapter_id}/upvote"), ("GET", "/v1/leaderboard")} <= ops
    push = spec["paths"]["/v1/submissions"]["post"]
    assert "application/zip" in push["requestBody"]["content"]
    assert {"401", "413", "422"} <= set(push["responses"])
    assert "ErrorBody" in spec["components"]["schemas"]
