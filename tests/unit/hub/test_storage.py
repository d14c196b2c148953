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
