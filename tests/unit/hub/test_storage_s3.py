"""Blobs in S3-compatible object storage (``storage_url: s3://bucket/prefix``), against a real
S3-protocol server process on 127.0.0.1 (moto): push, read, crash leftovers, garbage collection."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

pytest.importorskip("s3fs")

from _s3 import new_bucket, s3_endpoint, storage_options  # noqa: E402,F401
from fastapi.testclient import TestClient  # noqa: E402

from quantgrid.hub.server import create_app  # noqa: E402
from quantgrid.hub.server.auth import add_user  # noqa: E402
from quantgrid.hub.server.gc import collect  # noqa: E402
from quantgrid.hub.server.storage import FsspecBlobStore, open_blob_store  # noqa: E402
from quantgrid.hub.settings import HubSettings  # noqa: E402


@pytest.fixture
def s3_settings(tmp_path, s3_endpoint, db_url):  # noqa: F811 (fixtures imported above)
    bucket = new_bucket(s3_endpoint)
    return HubSettings.load(storage_dir=tmp_path / "hub", worker_enabled=False, db_url=db_url,
                            storage_url=f"s3://{bucket}/blobs", storage_options=storage_options(s3_endpoint))


def _s3_keys(store: FsspecBlobStore) -> list[str]:
    store.fs.invalidate_cache()
    try:
        return sorted(store.fs.find(f"{store.prefix}/sha256"))
    except FileNotFoundError:
        return []


def test_s3_store_roundtrip(s3_settings):
    store = open_blob_store(s3_settings)
    assert isinstance(store, FsspecBlobStore) and store.describe().startswith("s3://")
    data = os.urandom(300_000)
    sha = store.put_bytes(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.exists(sha) and store.read_bytes(sha) == data and store.verify(sha)
    assert [s for s, _ in store.iter_blobs()] == [sha]
    assert not any(store.tmp_dir.iterdir())  # the local temp file went once the object was stored
    assert store.delete(sha) and not store.exists(sha) and not store.delete(sha)


def test_push_lands_in_s3_and_a_crash_leftover_is_never_trusted(s3_settings):
    """A crash between the upload and the database commit leaves an object no row names. The hub
    neither serves it nor reuses it: the next push of those bytes stores its own verified copy,
    and `hub gc` removes objects no row names."""
    app = create_app(s3_settings)
    store = app.state.blobs
    try:
        token = {"Authorization": f"Bearer {add_user(app.state.db, 'alice')}"}
        data = b"PK\x03\x04" + os.urandom(5000)
        sha = hashlib.sha256(data).hexdigest()
        # What a crash after the upload and before the commit leaves; here even a torn object.
        store.fs.pipe_file(store.key(sha), b"torn")
        orphan = b"PK\x03\x04 pushed, then the hub died"
        orphan_sha = store.put_bytes(orphan)
        with TestClient(app) as c:
            r = c.post("/v1/submissions", content=data,
                       headers={**token, "X-Content-SHA256": sha, "Content-Type": "application/zip"})
            assert r.status_code == 201, r.text
        assert store.read_bytes(sha) == data  # the push replaced the torn leftover with its own bytes
        assert not (s3_settings.blob_dir / "sha256").exists()  # nothing went to local disk
        kept = collect(s3_settings, app.state.db, store)  # within the grace: an upload may be committing
        assert kept.blobs == [] and store.exists(orphan_sha)
        report = collect(s3_settings, app.state.db, store, grace_s=0)
        assert report.blobs == [orphan_sha]
        assert _s3_keys(store) == [store.key(sha)]
    finally:
        app.state.db.dispose()


def test_gc_keeps_young_blobs_by_their_s3_timestamp(s3_settings):
    app = create_app(s3_settings)
    store = app.state.blobs
    try:
        sha = store.put_bytes(b"young orphan")
        (listed_sha, mtime), = list(store.iter_blobs())
        assert listed_sha == sha and abs(mtime - time.time()) < 120
        assert collect(s3_settings, app.state.db, store, grace_s=600).blobs == []
        assert collect(s3_settings, app.state.db, store, grace_s=0).blobs == [sha]
    finally:
        app.state.db.dispose()
