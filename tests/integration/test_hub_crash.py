"""`kill -9` of a real hub during an upload and during commits; after a restart the database is
intact and every submission is either fully there (row + blob + job + key) or absent."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")

from _hub_process import HubProcess  # noqa: E402
from sqlalchemy import select  # noqa: E402

from quantgrid.errors import HubError  # noqa: E402
from quantgrid.hub.client import HubClient  # noqa: E402
from quantgrid.hub.server.db import Database  # noqa: E402
from quantgrid.hub.server.models import Blob, IdempotencyKey, Job, Submission  # noqa: E402
from quantgrid.hub.server.storage import BlobStore  # noqa: E402


def _check_consistent(hub: HubProcess) -> dict[str, int]:
    """Integrity ok; each submission has its blob (bytes intact), its job and its blob row. sha -> id."""
    db = Database(f"sqlite:///{hub.storage / 'hub.db'}")
    try:
        assert db.integrity_check() == "ok"
        blobs = BlobStore(hub.storage / "blobs")
        with db.read() as s:
            subs = s.scalars(select(Submission)).all()
            jobs = {j.payload["submission_id"] for j in s.scalars(select(Job).where(Job.kind == "validate")).all()}
            blob_rows = set(s.scalars(select(Blob.sha256)).all())
            keys = {k.submission_id for k in s.scalars(select(IdempotencyKey)).all()}
        for sub in subs:
            assert blobs.verify(sub.blob_sha256), f"submission {sub.id} lost its bytes"
            assert sub.id in jobs and sub.blob_sha256 in blob_rows and sub.id in keys
            assert sub.status == "queued"
        return {sub.blob_sha256: sub.id for sub in subs}
    finally:
        db.dispose()


def test_kill9_during_upload_leaves_nothing_half_written(tmp_path):
    hub = HubProcess(tmp_path / "storage", args=("--no-worker",))
    hub.start()
    token = hub.add_user("alice")
    data = b"PK\x03\x04" + bytes(range(256)) * 400
    sha = hashlib.sha256(data).hexdigest()
    tmp_dir = hub.storage / "blobs" / "tmp"
    try:
        with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
            s.sendall((f"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                       f"X-Content-SHA256: {sha}\r\nIdempotency-Key: k1\r\nContent-Type: application/zip\r\n"
                       f"Content-Length: {len(data)}\r\n\r\n").encode())
            s.sendall(data[: len(data) // 2])
            deadline = time.monotonic() + 30
            while not any(tmp_dir.glob("upload-*.tmp")):  # the server is streaming our body to disk
                assert time.monotonic() < deadline, "upload never started"
                time.sleep(0.02)
            hub.kill9()
        assert any(tmp_dir.glob("upload-*.tmp"))  # the crash left a temp file behind...
        hub.start()
        assert not any(tmp_dir.glob("upload-*.tmp"))  # ...which the restart removed
        assert _check_consistent(hub) == {}
        assert not (hub.storage / "blobs" / "sha256").exists()
        path = tmp_path / "a.zip"
        path.write_bytes(data)
        sub = HubClient(hub.url, token).push(path, idempotency_key="k1")  # the retry works
        assert sub.sha256 == sha and _check_consistent(hub) == {sha: sub.id}
    finally:
        hub.stop()


def test_kill9_during_commits_then_retries_make_exactly_one_row_each(tmp_path):
    hub = HubProcess(tmp_path / "storage", args=("--no-worker",), env={"QUANTGRID_HUB_RATE_LIMIT_BURST": "500"})
    hub.start()
    token = hub.add_user("alice")
    zips = []
    for i in range(16):
        p = tmp_path / f"{i}.zip"
        p.write_bytes(b"PK\x03\x04" + f"adapter {i} ".encode() * 3000)
        zips.append(p)
    first_done = threading.Event()

    def push(i: int):
        try:
            with HubClient(hub.url, token, retries=0) as c:
                sub = c.push(zips[i], idempotency_key=f"key-{i}")
            first_done.set()
            return sub.id
        except HubError:  # the server died under us
            return None

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            futures = [pool.submit(push, i) for i in range(16)]
            assert first_done.wait(60), "no push completed"
            hub.kill9()  # others are mid-upload or mid-commit
            answered = [f.result() for f in futures]
        hub.start()
        survivors = _check_consistent(hub)
        acknowledged = {hashlib.sha256(zips[i].read_bytes()).hexdigest(): sid
                        for i, sid in enumerate(answered) if sid is not None}
        for sha, sid in acknowledged.items():  # what the client was told is durable
            assert survivors.get(sha) == sid
        # The contributor retries every push with the same key: one row per zip, no doubles.
        with HubClient(hub.url, token) as c:
            final = [c.push(z, idempotency_key=f"key-{i}").id for i, z in enumerate(zips)]
        for sid in survivors.values():
            assert sid in final
        after = _check_consistent(hub)
        assert len(after) == 16 and sorted(after.values()) == sorted(final)
    finally:
        hub.stop()
