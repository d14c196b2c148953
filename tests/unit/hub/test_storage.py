"""Content-addressed blob store: naming, atomic writes, size caps, crash leftovers."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from quantgrid.errors import NotFound, PayloadTooLarge, Unprocessable
from quantgrid.hub.server.storage import BlobStore


def test_put_is_content_addressed_and_idempotent(tmp_path):
    store = BlobStore(tmp_path)
    data = b"adapter bytes" * 100
    sha = store.put_bytes(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.path(sha) == tmp_path / "sha256" / sha[:2] / sha[2:4] / sha
    assert store.put_bytes(data) == sha and store.read_bytes(sha) == data
    assert store.verify(sha)
    store.path(sha).write_bytes(b"tampered")
    assert not store.verify(sha)
    assert list(store.tmp_dir.iterdir()) == []


def test_size_cap_and_sha_mismatch_leave_nothing(tmp_path):
    store = BlobStore(tmp_path)
    with pytest.raises(PayloadTooLarge), store.writer(max_bytes=10) as w:
        w.write(b"x" * 6)
        w.write(b"x" * 6)
    with pytest.raises(Unprocessable, match="sha256 mismatch"), store.writer() as w:
        w.write(b"abc")
        w.commit("0" * 64)
    assert list(store.tmp_dir.iterdir()) == []
    assert not (tmp_path / "sha256").exists()


def test_bad_ids_are_not_paths(tmp_path):
    store = BlobStore(tmp_path)
    for bad in ("../../etc/passwd", "ABC", "0" * 63):
        with pytest.raises(NotFound):
            store.path(bad)
    with pytest.raises(NotFound):
        store.open("a" * 64)


def test_clean_tmp_removes_only_dead_writers_files(tmp_path):
    store = BlobStore(tmp_path)
    live = store.writer()
    live.write(b"in flight")
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
    (store.tmp_dir / f"upload-{dead_pid}-abc.tmp").write_bytes(b"half an upload")
    assert store.clean_tmp() == 1
    assert [p.name for p in store.tmp_dir.iterdir()] == [live._tmp.name]
    live.abort()


# ---- a full or read-only volume: 507 / 503 with a hint, never a bare 500 ----


@pytest.fixture
def small_volume(tmp_path):
    """A real 128 KiB tmpfs mounted at ``tmp_path/vol`` (needs root, as CI and these machines run)."""
    vol = tmp_path / "vol"
    vol.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(vol)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); test_storage_errors_map_to_503_and_507 covers the mapping")
    yield vol
    subprocess.run(["umount", "-l", str(vol)], capture_output=True)


def test_full_then_read_only_volume_answers_507_then_503(small_volume, tmp_path, monkeypatch):
    import hashlib as _h

    from fastapi.testclient import TestClient

    from quantgrid.hub.server import create_app
    from quantgrid.hub.server.auth import add_user
    from quantgrid.hub.settings import HubSettings

    for var in ("QUANTGRID_HUB_CONFIG", "QUANTGRID_HUB_CONFIG_FILE", "QUANTGRID_HUB_RECIPE"):
        monkeypatch.delenv(var, raising=False)
    settings = HubSettings.load(storage_dir=tmp_path / "hub", worker_enabled=False, storage_url=str(small_volume),
                                max_upload_bytes=1 << 20)
    app = create_app(settings)
    auth = {"Authorization": f"Bearer {add_user(app.state.db, 'alice')}"}
    big = b"PK\x03\x04" + bytes(range(256)) * 1024  # 256 KiB: more than the volume holds

    def push(data):
        return c.post("/v1/submissions", content=data, headers={**auth, "X-Content-SHA256": _h.sha256(data).hexdigest()})

    with TestClient(app) as c:
        r = push(big)
        assert r.status_code == 507, r.text
        err = r.json()["error"]
        assert err["code"] == "insufficient_storage" and "full" in err["message"] and "hub gc" in err["hint"]
        assert list((small_volume / "tmp").iterdir()) == []  # the partial upload was removed
        assert push(b"PK small").status_code == 201  # room for a small one
        subprocess.run(["mount", "-o", "remount,ro", str(small_volume)], check=True)
        r = push(b"PK another")
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "storage_unavailable" and "read-write" in r.json()["error"]["hint"]
        assert c.get("/v1/health").status_code == 200  # the rest of the hub still works
    app.state.db.dispose()


def test_storage_errors_map_to_503_and_507():
    import errno

    from quantgrid.hub.server.storage import InsufficientStorage, StorageUnavailable, storage_error

    assert isinstance(storage_error(OSError(errno.ENOSPC, "No space left on device"), "x"), InsufficientStorage)
    assert isinstance(storage_error(OSError(errno.EDQUOT, "Disk quota exceeded"), "x"), InsufficientStorage)
    err = storage_error(OSError(errno.EROFS, "Read-only file system"), "writing an upload")
    assert isinstance(err, StorageUnavailable) and err.http_status == 503
    assert "Read-only file system" in err.message and err.hint


# ---- garbage collection ----


def _dead_pid() -> str:
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_gc_and_startup_remove_orphans_and_crash_leftovers_only(tmp_path, monkeypatch):
    import os
    import time

    from fastapi.testclient import TestClient

    from quantgrid.hub.server import create_app
    from quantgrid.hub.server.gc import collect
    from quantgrid.hub.server.models import Blob
    from quantgrid.hub.settings import HubSettings

    monkeypatch.setenv("TMPDIR", str(tmp_path / "systmp"))
    (tmp_path / "systmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    settings = HubSettings.load(storage_dir=tmp_path / "hub", worker_enabled=False)
    app = create_app(settings)
    blobs, db = app.state.blobs, app.state.db
    kept = blobs.put_bytes(b"referenced")
    with db.write() as s:
        s.add(Blob(sha256=kept, size_bytes=10))
    old_orphan, young_orphan = blobs.put_bytes(b"orphan from a refused upload"), blobs.put_bytes(b"just uploaded")
    an_hour_ago = time.time() - 7200
    os.utime(blobs.path(old_orphan), (an_hour_ago, an_hour_ago))
    os.utime(blobs.path(kept), (an_hour_ago, an_hour_ago))
    # What kill -9 during a release leaves: a staging dir beside the releases and the engine's temp dirs.
    staging = settings.storage_dir / "releases" / ".2026.49.k2j3.partial"
    staging.mkdir(parents=True)
    (staging / "adapter_model.safetensors").write_bytes(b"half")
    temp = tmp_path / "systmp" / f"qg-release-{_dead_pid()}-abc123"
    (temp / "2026.49").mkdir(parents=True)
    (blobs.tmp_dir / f"upload-{_dead_pid()}-x.tmp").write_bytes(b"half an upload")

    dry = collect(settings, db, blobs, dry_run=True)
    assert dry.blobs == [old_orphan] and blobs.exists(old_orphan) and staging.exists()
    with TestClient(app):  # startup runs the same collection
        pass
    assert not blobs.exists(old_orphan) and blobs.exists(young_orphan) and blobs.exists(kept)
    assert not staging.exists() and not temp.exists() and list(blobs.tmp_dir.iterdir()) == []
    assert (settings.storage_dir / "releases").exists()
    report = collect(settings, db, blobs, grace_s=0)
    assert report.blobs == [young_orphan] and blobs.exists(kept)
    db.dispose()


def test_gc_keeps_staging_while_a_job_of_this_host_runs(tmp_path):
    from quantgrid.hub.server import jobs
    from quantgrid.hub.server.db import Database
    from quantgrid.hub.server.gc import collect
    from quantgrid.hub.server.storage import BlobStore
    from quantgrid.hub.settings import HubSettings

    settings = HubSettings.load(storage_dir=tmp_path / "hub", worker_enabled=False)
    db = Database(settings.database_url)
    staging = settings.storage_dir / "releases" / ".2026.50.abcd.partial"
    staging.mkdir(parents=True)
    with db.write() as s:
        jobs.enqueue(s, "release", {})
    jobs.claim(db, jobs.default_worker_id(), ["release"], lease_seconds=600)  # a live release, this process
    report = collect(settings, db, BlobStore(settings.blob_dir), grace_s=0, temp_root=tmp_path)
    assert report.kept_busy and staging.exists()
    db.dispose()


def test_gc_removes_engine_temp_dirs_of_dead_processes_only(tmp_path):
    """The system temp dir is shared: another hub's live release must keep its temp dirs."""
    import os
    import time

    from quantgrid.hub.server.db import Database
    from quantgrid.hub.server.gc import collect
    from quantgrid.hub.server.storage import BlobStore
    from quantgrid.hub.settings import HubSettings

    settings = HubSettings.load(storage_dir=tmp_path / "hub", worker_enabled=False)
    db = Database(settings.database_url)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # another hub, mid-release
    try:
        root = tmp_path / "systmp"
        dead = [root / f"{k}{_dead_pid()}-x1" for k in ("qg-release-", "qg-trial-", "qg-loo-")]
        live = [root / f"qg-release-{other.pid}-x2", root / f"qg-loo-{os.getpid()}-x3"]
        legacy_old, legacy_new = root / "qg-release-abcd", root / "qg-trial-efgh"
        unrelated = root / f"qg-releases-{_dead_pid()}-x4"
        for d in (*dead, *live, legacy_old, legacy_new, unrelated):
            d.mkdir(parents=True)
        two_days_ago = time.time() - 2 * 86400
        for d in (*live, legacy_old, unrelated):
            os.utime(d, (two_days_ago, two_days_ago))  # age alone never removes a live process's dir
        report = collect(settings, db, BlobStore(settings.blob_dir), grace_s=0, temp_root=root)
        assert sorted(report.temp_dirs) == sorted(str(d) for d in (*dead, legacy_old))
        assert not any(d.exists() for d in (*dead, legacy_old))
        assert all(d.exists() for d in (*live, legacy_new, unrelated))
    finally:
        other.kill()
        other.wait()
    db.dispose()


def test_hub_gc_command(tmp_path):
    import os

    from quantgrid.hub.server.storage import BlobStore

    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTGRID_")}
    storage = tmp_path / "hub"
    qg = str(__import__("pathlib").Path(sys.executable).with_name("quantgrid"))
    orphan = BlobStore(storage / "blobs").put_bytes(b"nobody's")
    out = subprocess.run([qg, "hub", "gc", "--storage", str(storage), "--grace", "0", "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"would remove blob {orphan}" in out.stdout and BlobStore(storage / "blobs").exists(orphan)
    out = subprocess.run([qg, "hub", "gc", "--storage", str(storage), "--grace", "0"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "removed 1 unreferenced blob(s)" in out.stdout
    assert not BlobStore(storage / "blobs").exists(orphan)
