"""20 parallel pushes plus leaderboard reads against a real hub process: no 5xx, no lost or doubled rows."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")

from _hub_process import HubProcess  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from quantgrid.errors import HubError  # noqa: E402
from quantgrid.hub.client import HubClient  # noqa: E402
from quantgrid.hub.server.db import Database  # noqa: E402
from quantgrid.hub.server.models import IdempotencyKey, Job, Submission, User  # noqa: E402
from quantgrid.hub.server.storage import BlobStore  # noqa: E402


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = HubProcess(tmp_path_factory.mktemp("conc") / "storage", args=("--no-worker",),
                   env={"QUANTGRID_HUB_RATE_LIMIT_BURST": "500",
                        # every user pushes 8 at once here; the default cap (2) would refuse 6 at the headers
                        "QUANTGRID_HUB_MAX_CONCURRENT_UPLOADS_PER_USER": "16"})
    h.start()
    yield h
    h.stop()


def test_parallel_pushes_and_reads(hub, tmp_path):
    tokens = {f"user{i}": hub.add_user(f"user{i}") for i in range(5)}
    zips = {}
    for name in tokens:
        for j in range(4):  # 5 users x 4 distinct zips = 20 submissions
            p = tmp_path / f"{name}-{j}.zip"
            p.write_bytes(b"PK\x03\x04" + f"{name}/{j}".encode() * (2000 + 97 * j))
            zips[(name, j)] = p
    # Each zip is pushed twice at the same time with the same key (a retrying client),
    # and user0's first zip once more under another key: still one row each.
    jobs_ = [(name, j, f"key-{name}-{j}") for (name, j) in zips] * 2 + [("user0", 0, "another-key")]
    statuses: list[int] = []
    errors: list[Exception] = []
    lock = threading.Lock()
    stop = threading.Event()

    def push(name: str, j: int, key: str):
        with HubClient(hub.url, tokens[name], retries=0) as c:
            try:
                sub = c.push(zips[(name, j)], idempotency_key=key)
            except HubError as e:
                with lock:
                    errors.append(e)
                return None
            return (name, j, sub.id)

    def read_leaderboard():
        with HubClient(hub.url, retries=0) as c:
            while not stop.is_set():
                try:
                    c.leaderboard()
                    with lock:
                        statuses.append(200)
                except HubError as e:
                    with lock:
                        errors.append(e)

    readers = [threading.Thread(target=read_leaderboard) for _ in range(2)]
    for t in readers:
        t.start()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda a: push(*a), jobs_))
    stop.set()
    for t in readers:
        t.join()

    assert errors == [], errors  # no 5xx, no 409, no 429: every request succeeded
    assert statuses, "the leaderboard readers never got an answer"
    ids = {}
    for name, j, sid in results:
        ids.setdefault((name, j), set()).add(sid)
    assert all(len(v) == 1 for v in ids.values()), ids  # duplicates of a push got the same id
    assert len({next(iter(v)) for v in ids.values()}) == 20

    db = Database(f"sqlite:///{hub.storage / 'hub.db'}")
    blobs = BlobStore(hub.storage / "blobs")
    with db.read() as s:
        ours = select(User.id).where(User.name.in_(tokens)).scalar_subquery()
        rows = s.execute(select(User.name, Submission.id, Submission.blob_sha256)
                         .join(User, User.id == Submission.user_id).where(User.id.in_(ours))).all()
        sub_ids = [r.id for r in rows]
        jobs_ = s.scalars(select(Job.payload)).all()
        assert sorted(j["submission_id"] for j in jobs_ if j.get("submission_id") in sub_ids) == sorted(sub_ids)
        assert s.scalar(select(func.count()).select_from(IdempotencyKey)
                        .where(IdempotencyKey.user_id.in_(ours))) == 21
    assert len(rows) == 20
    by_user = {(n, sha) for n, _, sha in rows}
    for (name, _j), p in zips.items():
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        assert (name, sha) in by_user
        assert blobs.verify(sha)
    assert db.integrity_check() == "ok"
    board = HubClient(hub.url).leaderboard()
    assert sorted((e.contributor, e.submissions) for e in board.entries
                  if e.contributor in tokens) == [(n, 4) for n in sorted(tokens)]


def test_big_upload_refused_early_still_gets_the_real_answer(hub, tmp_path):
    """A 20 MB push answered before its body is read (repeat, bad token, key reuse) gets the hub's
    answer, not a broken pipe: the hub reads and drops the rest of the body first."""
    from quantgrid.errors import AuthError, Unprocessable

    token = hub.add_user("big")
    path = tmp_path / "big.zip"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * (80 * 1024))
    with HubClient(hub.url, token, retries=0) as c:
        first = c.push(path, idempotency_key="k")
        again = c.push(path, idempotency_key="k2")
        assert again.id == first.id and again.duplicate
        other = tmp_path / "other.zip"
        other.write_bytes(path.read_bytes() + b"!")
        with pytest.raises(Unprocessable, match="Idempotency-Key"):
            c.push(other, idempotency_key="k")
    with HubClient(hub.url, "qg_wrong", retries=0) as c, pytest.raises(AuthError, match="invalid API token"):
        c.push(path)
