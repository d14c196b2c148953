"""The /v1 API in-process: auth, per-object authorization, idempotent pushes, limits, votes, errors."""

from __future__ import annotations

import hashlib

from quantgrid.hub.server import submissions as subs
from quantgrid.hub.server.auth import revoke_user
from quantgrid.hub.server.models import Job, Submission

from .conftest import upload_headers

ZIP = b"PK\x03\x04" + b"adapter" * 200


def _push(client, auth, data=ZIP, key=None):
    return client.post("/v1/submissions", content=data, headers=upload_headers(auth, data, key))


def _error(resp, status, code):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "hint"}
    assert body["error"]["code"] == code
    return body["error"]


def test_public_endpoints_publish_recipe_and_limits(client, settings):
    r = client.get("/v1/recipe").json()
    assert r["hash"] == settings.recipe.hash() and r["recipe"]["lora"]["r"] == 16
    h = client.get("/v1/health").json()
    assert h["max_upload_bytes"] == settings.max_upload_bytes and h["recipe_hash"] == r["hash"]
    schema = client.get("/openapi.json").json()
    assert {"/v1/submissions", "/v1/submissions/{submission_id}", "/v1/leaderboard", "/v1/recipe",
            "/v1/adapters/{adapter_id}/upvote", "/v1/me"} <= set(schema["paths"])


def test_missing_bad_and_revoked_tokens_get_401(client, users, app):
    _error(client.get("/v1/me"), 401, "unauthorized")
    _error(client.get("/v1/me", headers={"Authorization": "Bearer qg_nope"}), 401, "unauthorized")
    _error(client.get("/v1/me", headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    assert client.get("/v1/me", headers=users["alice"]).json() == {"name": "alice", "is_admin": False}
    revoke_user(app.state.db, "alice")
    err = _error(client.get("/v1/me", headers=users["alice"]), 401, "unauthorized")
    assert "revoked" in err["message"]
    _error(_push(client, users["alice"]), 401, "unauthorized")


def test_tokens_are_stored_hashed(app, users):
    from sqlalchemy import select

    from quantgrid.hub.server.models import Token

    token = users["bob"]["Authorization"].split()[1]
    with app.state.db.read() as s:
        hashes = s.scalars(select(Token.token_hash)).all()
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert token not in hashes


def test_push_then_status_owner_admin_and_others(client, users, app):
    r = _push(client, users["alice"], key="k1")
    assert r.status_code == 201
    sub = r.json()
    assert sub["status"] == "queued" and sub["sha256"] == hashlib.sha256(ZIP).hexdigest()
    assert app.state.blobs.read_bytes(sub["sha256"]) == ZIP
    with app.state.db.read() as s:  # a validation job was queued with the submission
        job = s.query(Job).filter(Job.kind == "validate").one()
        assert job.kind == "validate" and job.payload == {"submission_id": sub["id"]}
    assert client.get(f"/v1/submissions/{sub['id']}", headers=users["alice"]).json()["id"] == sub["id"]
    assert client.get(f"/v1/submissions/{sub['id']}", headers=users["root"]).status_code == 200
    _error(client.get(f"/v1/submissions/{sub['id']}", headers=users["bob"]), 404, "not_found")
    _error(client.get("/v1/submissions/999", headers=users["bob"]), 404, "not_found")
    assert client.get("/v1/submissions", headers=users["bob"]).json()["items"] == []
    assert len(client.get("/v1/submissions?all=true", headers=users["root"]).json()["items"]) == 1
    assert client.get("/v1/submissions?all=true", headers=users["bob"]).json()["items"] == []


def test_idempotency_rules(client, users, app):
    first = _push(client, users["alice"], key="same").json()
    again = _push(client, users["alice"], key="same")
    assert again.status_code == 200 and again.json()["id"] == first["id"] and again.json()["duplicate"]
    _error(_push(client, users["alice"], ZIP + b"!", key="same"), 422, "unprocessable")
    twice = _push(client, users["alice"], key="other-key")  # same zip, new key: still one submission
    assert twice.status_code == 200 and twice.json()["id"] == first["id"]
    assert _push(client, users["alice"]).json()["id"] == first["id"]  # no key at all
    bobs = _push(client, users["bob"], key="same")  # keys are per user
    assert bobs.status_code == 201 and bobs.json()["id"] != first["id"]
    with app.state.db.read() as s:
        assert s.query(Submission).count() == 2 and s.query(Job).filter(Job.kind == "validate").count() == 2


def test_sha_mismatch_and_bad_headers_are_422(client, users, app):
    h = upload_headers(users["alice"], b"something else")
    _error(client.post("/v1/submissions", content=ZIP, headers=h), 422, "unprocessable")
    h = {**users["alice"], "X-Content-SHA256": "not-a-hash"}
    _error(client.post("/v1/submissions", content=ZIP, headers=h), 422, "unprocessable")
    h = {**users["alice"]}
    _error(client.post("/v1/submissions", content=ZIP, headers=h), 422, "unprocessable")
    assert list((app.state.settings.blob_dir / "tmp").iterdir()) == []


def test_too_large_upload_is_413(client, users, settings, app):
    big = b"x" * (settings.max_upload_bytes + 1)
    err = _error(client.post("/v1/submissions", content=big, headers=upload_headers(users["alice"], big)),
                 413, "payload_too_large")
    assert str(settings.max_upload_bytes) in err["message"]
    assert not (settings.blob_dir / "sha256").exists()


def test_rate_limit_gives_429_with_retry_after(settings, users, app, client):
    from quantgrid.hub.server.ratelimit import RateLimiter

    app.state.limiter = RateLimiter(app.state.db, per_minute=60, burst=3)
    codes = [client.get("/v1/me", headers=users["alice"]).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = client.get("/v1/me", headers=users["alice"])
    _error(r, 429, "rate_limited")
    assert int(r.headers["Retry-After"]) >= 1
    assert client.get("/v1/me", headers=users["bob"]).status_code == 200  # per user


def test_daily_submission_limit(app, users, client):
    app.state.settings = app.state.settings.model_copy(update={"daily_submission_limit": 2})
    assert _push(client, users["alice"], b"PK one").status_code == 201
    assert _push(client, users["alice"], b"PK two").status_code == 201
    r = _push(client, users["alice"], b"PK three")
    _error(r, 429, "rate_limited")
    assert int(r.headers["Retry-After"]) > 3600
    assert _push(client, users["alice"], b"PK two").status_code == 200  # a repeat is not a new submission


def _accept(app, name_to_sub: dict[str, int]) -> None:
    for sub_id in name_to_sub.values():
        subs.start_validation(app.state.db, sub_id)
        subs.record_verdict(app.state.db, app.state.settings, sub_id, accepted=True, score=0.123456,
                            report={"stage": "proof_of_loss", "check": "passed", "numbers": {"delta": 0.123456}})


def test_verdict_report_is_private_and_score_rounded(client, users, app):
    sid = _push(client, users["alice"]).json()["id"]
    _accept(app, {"a": sid})
    own = client.get(f"/v1/submissions/{sid}", headers=users["alice"]).json()
    assert own["status"] == "accepted" and own["score"] == 0.123 and own["report"]["numbers"]["delta"] == 0.123456
    adapters = client.get("/v1/adapters").json()["items"]
    assert adapters == [{**adapters[0], "id": sid, "owner": "alice", "score": 0.123, "upvotes": 0}]
    assert "report" not in adapters[0]


def test_upvotes_no_self_no_double_only_accepted(client, users, app):
    sid = _push(client, users["alice"]).json()["id"]
    _error(client.post(f"/v1/adapters/{sid}/upvote", headers=users["bob"]), 404, "not_found")  # not accepted yet
    _accept(app, {"a": sid})
    _error(client.post(f"/v1/adapters/{sid}/upvote", headers=users["alice"]), 403, "forbidden")
    assert client.post(f"/v1/adapters/{sid}/upvote", headers=users["bob"]).json() == {"adapter_id": sid, "upvotes": 1}
    _error(client.post(f"/v1/adapters/{sid}/upvote", headers=users["bob"]), 409, "conflict")
    assert client.post(f"/v1/adapters/{sid}/upvote", headers=users["root"]).json()["upvotes"] == 2
    _error(client.post(f"/v1/adapters/{sid}/upvote"), 401, "unauthorized")


def test_leaderboard_ranks_accepted_then_impact_then_upvotes(client, users, app):
    from quantgrid.hub.server.auth import add_user
    from quantgrid.hub.server.models import Adapter

    db, st = app.state.db, app.state.settings
    more = {n: {"Authorization": f"Bearer {add_user(db, n)}"} for n in ("dave", "erin", "fred")}
    auth = {**users, **more}
    ids = {}
    # alice: 2 accepted; bob: 1 accepted, impact 0.5; dave: 1 accepted, impact 0.2, 2 upvotes;
    # erin: 1 accepted, impact 0.2, 1 upvote; fred: 1 queued only.
    plan = {"alice": 2, "bob": 1, "dave": 1, "erin": 1, "fred": 1}
    for name, n in plan.items():
        for i in range(n):
            ids[(name, i)] = _push(client, auth[name], f"PK {name} {i}".encode()).json()["id"]
    _accept(app, {k: v for k, v in ids.items() if k[0] != "fred"})
    with db.write() as s:
        for (name, _), sid in ids.items():
            if name in ("bob", "dave", "erin"):
                s.get(Adapter, sid).impact = {"bob": 0.5, "dave": 0.2, "erin": 0.2}[name]
    for voter in ("alice", "bob"):
        client.post(f"/v1/adapters/{ids[('dave', 0)]}/upvote", headers=auth[voter])
    client.post(f"/v1/adapters/{ids[('erin', 0)]}/upvote", headers=auth["alice"])
    board = client.get("/v1/leaderboard").json()
    got = [(e["contributor"], e["accepted"], e["impact"], e["upvotes"]) for e in board["entries"]]
    assert got == [("alice", 2, 0.0, 0), ("bob", 1, 0.5, 0), ("dave", 1, 0.2, 2), ("erin", 1, 0.2, 1),
                   ("fred", 0, 0.0, 0)]
    assert [e["rank"] for e in board["entries"]] == [1, 2, 3, 4, 5]
    assert "impact" in board["formula"] and st.score_decimals == 3


def test_unknown_routes_methods_and_bad_params_use_the_error_shape(client, users):
    _error(client.get("/v1/nothing"), 404, "not_found")
    r = client.delete("/v1/leaderboard")
    assert r.status_code == 405 and set(r.json()["error"]) == {"code", "message", "hint"}
    _error(client.get("/v1/leaderboard?limit=0"), 422, "unprocessable")
    _error(client.get("/v1/submissions/abc", headers=users["alice"]), 422, "unprocessable")


def test_unexpected_exception_is_500_in_the_error_shape(app, users, monkeypatch):
    from fastapi.testclient import TestClient

    def broken(*a, **k):
        raise RuntimeError("db exploded")

    monkeypatch.setattr(subs, "list_for", broken)
    with TestClient(app, raise_server_exceptions=False) as c:
        _error(c.get("/v1/submissions", headers=users["alice"]), 500, "server_error")



def test_push_idempotency_property(app, users):
    """For any bytes and keys: a repeat (same key or same bytes) never makes a second row, and a
    key reused for other bytes is always 422."""
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    app.state.settings = app.state.settings.model_copy(update={"daily_submission_limit": 10_000})
    seen: dict[str, int] = {}  # sha -> submission id
    keys: dict[str, str] = {}  # key -> sha

    with TestClient(app) as c:
        @given(data=st.binary(min_size=1, max_size=3000),
               key=st.one_of(st.none(), st.text(alphabet="abcdef0123456789-", min_size=1, max_size=12)))
        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def push(data, key):
            sha = hashlib.sha256(data).hexdigest()
            r = _push(c, users["alice"], data, key)
            if key is not None and keys.get(key, sha) != sha:
                _error(r, 422, "unprocessable")
                return
            assert r.status_code == (200 if sha in seen else 201), r.text
            assert seen.setdefault(sha, r.json()["id"]) == r.json()["id"]
            if key is not None:
                keys[key] = sha

        push()
    with app.state.db.read() as s:
        assert s.query(Submission).count() == len(seen)


def test_401_names_the_bearer_scheme(client, users):
    r = client.get("/v1/me")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="quantgrid"'
    r = client.get("/v1/me", headers={"Authorization": "Bearer qg_wrong"})
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="quantgrid", error="invalid_token"'


def test_revoking_a_user_withdraws_their_upvotes(client, users, app):
    sid = _push(client, users["alice"]).json()["id"]
    _accept(app, {"a": sid})
    assert client.post(f"/v1/adapters/{sid}/upvote", headers=users["bob"]).json()["upvotes"] == 1
    assert client.post(f"/v1/adapters/{sid}/upvote", headers=users["root"]).json()["upvotes"] == 2
    revoke_user(app.state.db, "bob")
    assert client.get("/v1/adapters").json()["items"][0]["upvotes"] == 1
    board = {e["contributor"]: e for e in client.get("/v1/leaderboard").json()["entries"]}
    assert board["alice"]["upvotes"] == 1


def test_rate_and_daily_limits_hold_across_hub_processes(settings, users, app):
    """Two app instances on one database stand for two API processes behind a load balancer:
    they share one bucket per user and one daily count, so two processes do not double the limit."""
    from fastapi.testclient import TestClient

    from quantgrid.hub.server import create_app

    tight = settings.model_copy(update={"rate_limit_burst": 4, "rate_limit_per_minute": 1,
                                        "daily_submission_limit": 3})
    a, b = create_app(tight), create_app(tight)
    try:
        with TestClient(a) as ca, TestClient(b) as cb:
            codes = [(ca if i % 2 else cb).get("/v1/me", headers=users["alice"]).status_code for i in range(6)]
            assert codes == [200, 200, 200, 200, 429, 429]
            assert cb.get("/v1/me", headers=users["bob"]).status_code == 200
        for s in (a, b):  # fresh buckets, the same tight daily limit
            s.state.limiter.burst = 100.0
        with TestClient(a) as ca, TestClient(b) as cb:
            got = [_push(ca if i % 2 else cb, users["bob"], f"PK bob {i}".encode()).status_code for i in range(5)]
            assert got == [201, 201, 201, 429, 429]
    finally:
        a.state.db.dispose()
        b.state.db.dispose()
