"""`quantgrid hub human-eval generate|results` against a real hub over HTTP (uvicorn in a
thread), and the human-evaluation totals in the release API."""

from __future__ import annotations

import json
import threading
import time

import pytest
from typer.testing import CliRunner

from quantgrid.cli import app as cli
from quantgrid.hub.server import human_eval as he
from quantgrid.hub.server.auth import authenticate
from quantgrid.hub.server.models import Job, Release, utcnow

from .test_web import _accept, _push


@pytest.fixture
def served(app, monkeypatch, tmp_path):
    """The hub app on a real port; yields its URL."""
    import socket

    import uvicorn

    monkeypatch.setenv("QUANTGRID_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("QUANTGRID_HUB", raising=False)
    monkeypatch.delenv("QUANTGRID_TOKEN", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _run(url: str, auth: dict | None, *args: str):
    env = {"COLUMNS": "200", "QUANTGRID_TOKEN": auth["Authorization"].removeprefix("Bearer ") if auth else ""}
    return CliRunner().invoke(cli, ["hub", "human-eval", *args, "--hub", url], env=env)


def _publish(app, version: str) -> None:
    with app.state.db.write() as s:
        s.add(Release(version=version, status="published", manifest={"adapters": []}, notes="merged 0 adapters",
                      is_current=version == "2026.49", published_at=utcnow()))


def _graded_release(app, users, version: str, candidate: dict, base: dict) -> None:
    db = app.state.db
    he.add_pairs(db, "release", version, "alpha-bench",
                 [he.PairIn(question_id="alpha-001", question="A reversal alpha?", base_answer="rank(close)",
                            candidate_answer="rank(-1 * delta(close, 5))")], rng=lambda: True)
    with db.read() as s:
        item = s.query(he.HumanEvalItem).filter_by(target_kind="release", target=version).one()
        item_id, candidate_first = item.id, item.candidate_first
    assert candidate_first  # rng=True: the candidate is answer A
    root = authenticate(db, users["root"]["Authorization"].removeprefix("Bearer "))
    he.record_grade(db, root, item_id, he.Grade(**candidate), he.Grade(**base))


GOOD = {"clarity": 5, "correctness": 5, "number_accuracy": 4, "strategy_quality": 4, "risk_flag": True}
POOR = {"clarity": 2, "correctness": 1, "number_accuracy": 3, "strategy_quality": 1, "risk_flag": False}


def test_generate_queues_the_job_for_maintainers_only(served, app, client, users):
    sub = _push(client, users["alice"], b"PK\x03\x04alice-cli")
    _accept(app, sub)
    _publish(app, "2026.49")

    denied = _run(served, users["bob"], "generate", "--adapter", str(sub))
    assert denied.exit_code == 1 and "Traceback" not in denied.output
    assert "admin" in denied.output.lower() or "maintainer" in denied.output.lower(), denied.output

    ok = _run(served, users["root"], "generate", "--adapter", str(sub), "--benchmark", "alpha-bench", "--n", "3",
              "--json")
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.stdout)
    assert out["kind"] == "adapter" and out["target"] == str(sub)
    rel = _run(served, users["root"], "generate", "--release", "2026.49")
    assert rel.exit_code == 0 and "release 2026.49 on finance-dev" in rel.output, rel.output
    with app.state.db.read() as s:
        jobs = {j.id: (j.kind, j.payload) for j in s.query(Job).filter_by(kind=he.JOB_KIND)}
    kind, payload = jobs[out["job_id"]]
    assert {k: payload[k] for k in ("kind", "target", "benchmark", "n")} == {
        "kind": "adapter", "target": str(sub), "benchmark": "alpha-bench", "n": 3}
    assert {p["target"] for _, p in jobs.values()} == {str(sub), "2026.49"}

    missing = _run(served, users["root"], "generate", "--release", "2026.01")
    assert missing.exit_code == 1 and "no published release '2026.01'" in missing.output, missing.output
    both = _run(served, users["root"], "generate", "--adapter", str(sub), "--release", "2026.49")
    assert both.exit_code == 2 and "exactly one of --adapter ID and --release VERSION" in both.output
    hidden = _run(served, users["root"], "generate", "--adapter", str(sub), "--benchmark", "hidden")
    assert hidden.exit_code == 2 and "--benchmark" in hidden.output
    too_many = _run(served, users["root"], "generate", "--adapter", str(sub), "--n", "201")
    assert too_many.exit_code == 2 and "--n" in too_many.output
    with app.state.db.read() as s:
        assert s.query(Job).filter_by(kind=he.JOB_KIND).count() == 2  # the refused ones queued nothing


def test_results_and_the_release_api_carry_the_totals(served, app, client, users):
    empty = _run(served, None, "results")
    assert empty.exit_code == 0 and "nothing has been graded" in empty.output
    _publish(app, "2026.49")
    _publish(app, "2026.50")
    _graded_release(app, users, "2026.49", GOOD, POOR)

    got = json.loads(_run(served, None, "results", "--json").stdout)
    totals = got["release"]["2026.49"]
    assert totals["grades"] == 1 and totals["pairs"] == 1 and totals["win_rate"] == 1.0
    assert totals["dimensions"]["overall"] == {"candidate": 18.0, "base": 7.0, "win_rate": 1.0}
    assert "2026.50" not in got["release"]
    table = _run(served, None, "results")
    assert table.exit_code == 0 and "release 2026.49" in table.output and "100%" in table.output
    assert "18.00 / 7.00" in table.output

    # the release notes over the API: the same totals, null for an ungraded release
    one = client.get("/v1/releases/2026.49").json()
    assert one["human_eval"] == totals
    # grades arrive after publishing: the notes gain a section with them where they are read
    assert one["notes"].startswith("merged 0 adapters\n\n## Human evaluation\n")
    assert "1 blind grade(s) of 1 answer pair(s)" in one["notes"]
    assert "| Overall (sum of the four) | 18.00 | 7.00 | 100% |" in one["notes"]
    ungraded = client.get("/v1/releases/2026.50").json()
    assert ungraded["human_eval"] is None and ungraded["notes"] == "merged 0 adapters"
    listing = client.get("/v1/releases").json()
    assert {r["version"]: r["human_eval"] for r in listing["items"]} == {"2026.49": totals, "2026.50": None}
    assert listing["current"] == "2026.49"
    assert client.get("/v1/releases/latest").json()["human_eval"] == totals
    assert client.get("/v1/releases/2026.01").status_code == 404
    assert client.get("/v1/releases/not-a-version").status_code == 422
    # the typed client reads the field too
    from quantgrid.hub.client import HubClient

    with HubClient(served) as c:
        assert c.releases().items[0].human_eval is None and c.latest_release().human_eval == totals
