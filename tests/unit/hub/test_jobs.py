"""The DB job queue: exclusive claims across workers, crash retry, attempt limits, no fake handlers."""

from __future__ import annotations

import threading
import time

import pytest

from quantgrid.hub.server import jobs
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.models import Job, Submission
from quantgrid.hub.settings import HubSettings


@pytest.fixture
def hub(tmp_path, db_url):
    settings = HubSettings.load(storage_dir=tmp_path, worker_enabled=False, job_lease_seconds=30,
                                worker_poll_seconds=0.01, db_url=db_url)
    db = Database(settings.database_url)
    yield settings, db
    db.dispose()


def _add(db, n, kind="echo", max_attempts=3):
    with db.write() as s:
        return [jobs.enqueue(s, kind, {"i": i}, max_attempts=max_attempts).id for i in range(n)]


def _job(db, job_id) -> Job:
    with db.read() as s:
        return s.get(Job, job_id)


def test_each_job_is_claimed_by_exactly_one_of_many_workers(hub):
    settings, db = hub
    ids = _add(db, 60)
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()

    start = threading.Barrier(6)

    def worker(name: str) -> None:
        own = Database(settings.database_url)  # its own engine, like a worker on another machine
        start.wait()  # all six race for the same queue
        while (job := jobs.claim(own, name, ["echo"], 30)) is not None:
            with lock:
                claimed.append((name, job.id))
            assert jobs.complete(own, job.id, name, {"by": name})

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j for _, j in claimed) == ids  # none lost, none twice
    for w, j in claimed:
        job = _job(db, j)
        assert job.status == "done" and job.attempts == 1 and job.result == {"by": w}


def test_expired_lease_is_requeued_and_a_stale_worker_cannot_finish(hub):
    settings, db = hub
    (jid,) = _add(db, 1)
    job = jobs.claim(db, "crashed", ["echo"], lease_seconds=0.05)
    assert job.id == jid and _job(db, jid).status == "running"
    assert jobs.claim(db, "other", ["echo"], 30) is None  # leased: nobody else gets it
    time.sleep(0.1)
    assert jobs.requeue_expired(db) == [jid]
    assert _job(db, jid).status == "queued" and "lease expired" in _job(db, jid).error
    retry = jobs.claim(db, "second", ["echo"], 30)
    assert retry.id == jid and retry.attempts == 2
    assert not jobs.complete(db, jid, "crashed", {"late": True})  # the dead worker's result is refused
    assert jobs.complete(db, jid, "second", {"ok": True})
    assert _job(db, jid).result == {"ok": True}


def test_failing_handler_retries_then_gives_up_and_rejects_the_submission(hub, app_user):
    settings, db = hub
    with db.write() as s:
        s.add(Submission(id=7, user_id=app_user, blob_sha256=_blob(s), filename="x.zip", size_bytes=3))
        jid = jobs.enqueue(s, "validate", {"submission_id": 7}, max_attempts=2).id
    calls = []

    def boom(ctx: jobs.JobContext):
        calls.append(ctx.attempt)
        raise RuntimeError("validator crashed")

    for _ in range(2):
        assert jobs.run_one(db, settings, {"validate": boom}, "w")
        with db.write() as s:  # skip the retry back-off
            s.get(Job, jid).run_after = 0
    assert calls == [1, 2]
    job = _job(db, jid)
    assert job.status == "failed" and "validator crashed" in job.error
    with db.read() as s:
        sub = s.get(Submission, 7)
    assert sub.status == "rejected"
    assert sub.report["check"] == "attempts_exhausted" and "validator crashed" in sub.report["diagnoses"][0]


def test_lease_expiry_on_last_attempt_fails_the_job(hub):
    settings, db = hub
    (jid,) = _add(db, 1, max_attempts=1)
    jobs.claim(db, "dies", ["echo"], lease_seconds=0.01)
    time.sleep(0.05)
    jobs.requeue_expired(db)
    job = _job(db, jid)
    assert job.status == "failed" and job.finished_at is not None


def test_jobs_without_a_handler_stay_queued_and_unknown_kinds_are_an_error(hub):
    from quantgrid.errors import ConfigError

    settings, db = hub
    (jid,) = _add(db, 1, kind="validate")
    assert set(jobs.resolve_handlers()) == {"validate", "release", "human_eval"}  # imported by name, none skipped
    with pytest.raises(ConfigError, match="unknown job kind"):
        jobs.resolve_handlers(["valdiate"])
    handlers = jobs.resolve_handlers(["release"])  # a worker for releases only
    stop = threading.Event()
    stop.set()
    assert jobs.run_worker(settings, handlers, stop, db=db) == 0
    assert not jobs.run_one(db, settings, handlers, "w")
    assert _job(db, jid).status == "queued" and _job(db, jid).attempts == 0


def test_worker_loop_runs_handlers_and_heartbeats(hub):
    settings, db = hub
    settings = settings.model_copy(update={"job_lease_seconds": 0.3})
    ids = _add(db, 3)
    seen = []

    def slow(ctx: jobs.JobContext):
        time.sleep(0.5)  # longer than the lease: only the heartbeat keeps the job ours
        seen.append(ctx.payload["i"])
        return {"double": ctx.payload["i"] * 2}

    assert jobs.run_worker(settings, {"echo": slow}, db=db, max_jobs=3) == 3
    assert seen == [0, 1, 2]
    assert [(_job(db, j).status, _job(db, j).attempts, _job(db, j).result) for j in ids] == [
        ("done", 1, {"double": 0}), ("done", 1, {"double": 2}), ("done", 1, {"double": 4})]


def test_enqueue_once_dedupes(hub):
    _, db = hub
    a = jobs.enqueue_once(db, "echo", {}, dedupe_key="k")
    assert jobs.enqueue_once(db, "echo", {}, dedupe_key="k") == a
    assert jobs.queue_counts(db) == {"queued": 1}


# ---- helpers ----


@pytest.fixture
def app_user(hub) -> int:
    from quantgrid.hub.server.models import User

    _, db = hub
    with db.write() as s:
        u = User(name="carol")
        s.add(u)
        s.flush()
        return u.id


def _blob(s) -> str:
    from quantgrid.hub.server.models import Blob

    s.add(Blob(sha256="a" * 64, size_bytes=3))
    s.flush()
    return "a" * 64


def test_app_runs_a_worker_thread_that_validates_pushes(tmp_path, monkeypatch):
    """create_app with worker_enabled (the `hub serve` default) processes a push's validate job."""
    import hashlib

    from fastapi.testclient import TestClient

    from quantgrid.hub.server import create_app
    from quantgrid.hub.server.auth import add_user
    from quantgrid.hub.server.submissions import record_verdict, start_validation

    settings = HubSettings.load(storage_dir=tmp_path, worker_poll_seconds=0.02)
    assert settings.worker_enabled
    done = threading.Event()

    def validate(ctx: jobs.JobContext):
        sub = start_validation(ctx.db, ctx.payload["submission_id"])
        ok = ctx.blobs.read_bytes(sub.blob_sha256).startswith(b"PK")
        record_verdict(ctx.db, ctx.settings, sub.id, accepted=ok, report={"stage": "test", "check": "magic"},
                       score=0.5 if ok else None)
        done.set()
        return {"accepted": ok}

    monkeypatch.setattr(jobs, "resolve_handlers", lambda kinds=None: {"validate": validate})
    app = create_app(settings)
    token = add_user(app.state.db, "dana")
    data = b"PK\x03\x04 real enough"
    with TestClient(app) as c:
        r = c.post("/v1/submissions", content=data, headers={
            "Authorization": f"Bearer {token}", "X-Content-SHA256": hashlib.sha256(data).hexdigest()})
        assert r.status_code == 201
        assert done.wait(30), "the in-process worker never ran the job"
        deadline = time.monotonic() + 10
        while (sub := c.get(f"/v1/submissions/{r.json()['id']}", headers={"Authorization": f"Bearer {token}"})
               .json())["status"] != "accepted":
            assert time.monotonic() < deadline, sub
            time.sleep(0.02)
        assert sub["score"] == 0.5 and sub["report"]["check"] == "magic"
        thread = app.state.worker_thread
    assert not thread.is_alive()  # stopped with the app


def test_claim_on_postgresql_skips_locked_rows_and_rechecks_status():
    """Several workers on several machines share PostgreSQL: the claim must be one statement that
    skips rows another transaction holds and re-checks the status of the row it updates."""
    from sqlalchemy.dialects import postgresql

    sql = str(jobs.claim_statement(["validate"], "w", 0.0, 30.0).compile(dialect=postgresql.dialect()))
    assert sql.startswith("UPDATE jobs SET status=")
    assert "FOR UPDATE SKIP LOCKED" in sql
    assert sql.count("jobs.status =") == 2 and "RETURNING jobs.id" in sql


def test_a_lease_held_by_a_dead_process_of_this_host_is_reclaimed_at_once(hub):
    import socket
    import subprocess
    import sys

    settings, db = hub
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    a, b, c = _add(db, 3)
    assert jobs.claim(db, f"{host}:{dead.pid}:abc123", ["echo"], lease_seconds=900).id == a
    assert jobs.claim(db, jobs.default_worker_id(), ["echo"], lease_seconds=900).id == b  # alive: this process
    assert jobs.claim(db, f"elsewhere:{dead.pid}:abc123", ["echo"], lease_seconds=900).id == c  # another host
    assert jobs.requeue_expired(db) == [a]  # no waiting for the 900 s lease
    job = _job(db, a)
    assert job.status == "queued" and "process is gone" in job.error
    assert _job(db, b).status == "running" and _job(db, c).status == "running"
