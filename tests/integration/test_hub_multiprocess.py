"""Several hub processes on one PostgreSQL: two API processes and two `hub worker` processes,
real HTTP on 127.0.0.1. Every push is validated exactly once, re-pushes through the other API
process return the same submission, limits hold across processes, and a worker killed with
-9 mid-job has its job finished by the other."""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("psycopg")

from _hub_process import HubProcess, WorkerProcess  # noqa: E402
from _postgres import fresh_database  # noqa: E402
from sqlalchemy import select  # noqa: E402

from quantgrid.hub.server.db import Database  # noqa: E402
from quantgrid.hub.server.models import Job, Submission  # noqa: E402

API_ENV = {"QUANTGRID_HUB_MAX_CONCURRENT_UPLOADS_PER_USER": "8", "QUANTGRID_HUB_WORKER_POLL_SECONDS": "0.1"}


@pytest.fixture
def cluster(tmp_path, tiny_base):
    """(db_url, [api A, api B], [worker 1, worker 2]) sharing one PostgreSQL database and storage."""
    storage = tmp_path / "storage"
    with fresh_database() as url:
        Database(url).dispose()  # migrate once, before four processes start together
        apis = [HubProcess(storage, args=("--no-worker", "--base-model", tiny_base), env=API_ENV, db_url=url)
                for _ in range(2)]
        workers = [WorkerProcess(storage, url, "--kind", "validate", "--base-model", tiny_base,
                                 env={"QUANTGRID_HUB_WORKER_POLL_SECONDS": "0.1", "QUANTGRID_HUB_JOB_LEASE_SECONDS": "20"},
                                 name=f"worker{i}") for i in range(2)]
        try:
            for p in (*apis, *workers):
                p.start()
            yield url, apis, workers
        finally:
            for p in (*apis, *workers):
                p.stop()


def _push(api: HubProcess, token: str, data: bytes, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "X-Content-SHA256": hashlib.sha256(data).hexdigest()}
    if key:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{api.url}/v1/submissions", content=data, headers=headers, timeout=60)


def _wait_decided(url: str, n: int, timeout: float = 180.0) -> list[Submission]:
    db = Database(url, migrate=False)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with db.read() as s:
                subs = s.scalars(select(Submission)).all()
            if len(subs) >= n and all(x.status in ("accepted", "rejected") for x in subs):
                return subs
            assert time.monotonic() < deadline, [(x.id, x.status) for x in subs]
            time.sleep(0.2)
    finally:
        db.dispose()


@pytest.mark.slow
def test_two_apis_two_workers_validate_every_push_exactly_once(cluster):
    """Run with: pytest -m slow tests/integration/test_hub_multiprocess.py (about 2 min on 2 cores)"""
    url, (a, b), workers = cluster
    tokens = {f"u{i}": a.add_user(f"u{i}") for i in range(10)}
    zips = {(name, j): b"PK\x03\x04" + os.urandom(2000) for name in tokens for j in range(4)}  # 40 pushes

    def push(item):
        (name, j), data = item
        first = _push(a if j % 2 else b, tokens[name], data, key=f"{name}-{j}")
        again = _push(b if j % 2 else a, tokens[name], data, key=f"{name}-{j}")  # a retry, via the other API
        return first.status_code, again.status_code, first.json().get("id"), again.json().get("id")

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(push, zips.items()))
    assert all((s1, s2) == (201, 200) and i1 == i2 for s1, s2, i1, i2 in results), results
    subs = _wait_decided(url, 40)
    assert len(subs) == 40 and all(s.status == "rejected" and s.report["stage"] == "static" for s in subs)
    db = Database(url, migrate=False)
    with db.read() as s:
        jobs = s.scalars(select(Job).where(Job.kind == "validate")).all()
    db.dispose()
    assert len(jobs) == 40 and all(j.status == "done" and j.attempts == 1 for j in jobs)
    started = [w.jobs_started() for w in workers]
    assert sorted(started[0] + started[1]) == sorted(j.id for j in jobs)  # each job ran once, in one worker
    assert all(started), "both workers took jobs"

    # The daily limit counts across both API processes (default 20 a day).
    extra = a.add_user("prolific")
    codes = [_push((a, b)[i % 2], extra, b"PK\x03\x04" + os.urandom(500)).status_code for i in range(21)]
    assert codes == [201] * 20 + [429]


@pytest.mark.slow
def test_kill9_of_a_worker_mid_job_is_finished_by_the_other(cluster, tiny_base):
    """Run with: pytest -m slow tests/integration/test_hub_multiprocess.py"""  # noqa: D401
    import numpy as np
    from malicious import generator as g

    from quantgrid.adapter import BaseShape, expected_lora_shapes
    from quantgrid.recipe import Recipe

    url, (a, _b), (w1, w2) = cluster
    w2.stop()  # one worker takes the job, then dies; the other is started after
    token = a.add_user("alice")
    recipe = Recipe.from_dict({"base_model": tiny_base}, source="test")
    base = BaseShape.from_dir(tiny_base)
    rng = np.random.default_rng(0)
    tensors = {k: (rng.standard_normal(s) * 0.01).astype(np.float32) for k, s in expected_lora_shapes(recipe, base).items()}
    r = _push(a, token, g.submission_for(tensors, recipe, base))
    assert r.status_code == 201, r.text
    sub_id = r.json()["id"]
    db = Database(url, migrate=False)
    deadline = time.monotonic() + 120
    while True:  # w1 is validating it
        with db.read() as s:
            job = s.scalar(select(Job).where(Job.kind == "validate"))
        if job is not None and job.status == "running" and f":{w1.pid}:" in (job.lease_owner or ""):
            break
        assert time.monotonic() < deadline, job and (job.status, job.lease_owner)
        time.sleep(0.05)
    w1.kill9()
    w2.start()
    subs = _wait_decided(url, 1)
    with db.read() as s:
        job = s.scalar(select(Job).where(Job.kind == "validate"))
    db.dispose()
    assert subs[0].id == sub_id and subs[0].status in ("accepted", "rejected") and subs[0].report["stage"]
    assert job.status == "done" and job.attempts == 2 and job.id in w2.jobs_started()
