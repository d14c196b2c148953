"""Release archives in S3-compatible storage, against a real S3-protocol server process on
127.0.0.1 (moto), without building a model: whole-or-nothing writes, verified copies for other
hosts, and garbage collection of objects no release row names."""

from __future__ import annotations

import hashlib
import json

import pytest

pytest.importorskip("s3fs")

from _s3 import new_bucket, s3_endpoint, storage_options  # noqa: E402,F401

from quantgrid.hub.server.db import Database  # noqa: E402
from quantgrid.hub.server.gc import collect  # noqa: E402
from quantgrid.hub.server.models import Release  # noqa: E402
from quantgrid.hub.server.storage import StorageUnavailable, open_blob_store, open_release_archives  # noqa: E402
from quantgrid.hub.settings import HubSettings  # noqa: E402


@pytest.fixture
def hosts(tmp_path, s3_endpoint):  # noqa: F811 (fixture imported above)
    bucket = new_bucket(s3_endpoint)
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"

    def host(name):
        return HubSettings.load(storage_dir=tmp_path / name, worker_enabled=False, db_url=db_url,
                                storage_url=f"s3://{bucket}/hub", storage_options=storage_options(s3_endpoint))

    return host("builder"), host("worker")


def _release_dir(root, version="2026.47"):
    d = root / version
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(b"weights of " + version.encode())
    (d / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (d / "release.json").write_text(json.dumps({"version": version}))
    (d / ".hidden").write_text("never published")
    return d


def test_archive_roundtrip_to_another_host_and_tamper_detection(hosts, tmp_path):
    builder, worker = hosts
    archives = open_release_archives(builder)
    assert archives is not None and open_release_archives(HubSettings.load(storage_dir=tmp_path / "local")) is None
    ref = archives.put("2026.47", _release_dir(tmp_path / "built"))
    key, version, sha = archives.parse(ref)
    assert ref.startswith("s3://") and version == "2026.47" and key.endswith(f"/releases/2026.47/{sha}.zip")
    assert [k for k, _ in archives.iter_objects()] == [key]  # the temp key is gone
    with archives.open(ref) as f:
        assert hashlib.sha256(f.read()).hexdigest() == sha

    theirs = open_release_archives(worker)
    d = theirs.local_dir(ref)
    assert d.is_relative_to(worker.storage_dir)
    assert sorted(p.name for p in d.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "release.json"]
    assert (d / "adapter_model.safetensors").read_bytes() == b"weights of 2026.47"

    # Bytes at the key that are not the ones named: refused, never unpacked.
    archives.fs.pipe_file(key, b"PK other bytes")
    fresh = open_release_archives(HubSettings.load(storage_dir=tmp_path / "third", db_url=worker.database_url,
                                                   storage_url=worker.storage_url,
                                                   storage_options=worker.storage_options))
    with pytest.raises(StorageUnavailable, match="does not match"):
        fresh.local_dir(ref)
    assert not (fresh.cache_dir / sha).exists()
    with pytest.raises(Exception, match="not in this hub's storage"):
        archives.parse("s3://elsewhere/hub/releases/2026.47/" + sha + ".zip")


def test_gc_removes_release_objects_no_row_names(hosts, tmp_path):
    builder, _ = hosts
    archives = open_release_archives(builder)
    blobs = open_blob_store(builder)
    db = Database(builder.database_url)
    try:
        published = archives.put("2026.47", _release_dir(tmp_path / "a"))
        crashed = archives.put("2026.48", _release_dir(tmp_path / "b", "2026.48"))  # uploaded, never committed
        with db.write() as s:
            s.add(Release(version="2026.47", status="published", path=published, manifest={}, is_current=True))
        assert collect(builder, db, blobs).release_objects == []  # within the grace
        dry = collect(builder, db, blobs, grace_s=0, dry_run=True)
        assert dry.release_objects == [archives.parse(crashed)[0]] and archives.exists(crashed)
        report = collect(builder, db, blobs, grace_s=0)
        assert report.release_objects == [archives.parse(crashed)[0]]
        assert not archives.exists(crashed) and archives.exists(published)
        assert "1 unreferenced release object(s)" in report.summary()
    finally:
        db.dispose()
