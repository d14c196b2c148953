"""Content-addressed blob store on local disk: ``<root>/sha256/ab/cd/<sha256>``.

A write streams into ``<root>/tmp/`` while hashing, then fsync -> rename into place ->
fsync the directory. A crash leaves either the complete blob or only a temp file, which
``clean_tmp`` removes at startup. The same bytes always land at the same path, so writing a
blob twice is harmless. (Past one machine: put an fsspec/S3 store behind the same methods.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from quantgrid.errors import NotFound, PayloadTooLarge, Unprocessable
from quantgrid.utils import fsync_dir

SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class BlobWriter:
    """Streams bytes into a temp file with a size cap; ``commit()`` moves it into the store."""

    def __init__(self, store: BlobStore, max_bytes: int | None):
        self.store = store
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        # The writer's pid is in the name so a restart can tell abandoned temp files from live ones.
        fd, tmp = tempfile.mkstemp(prefix=f"upload-{os.getpid()}-", suffix=".tmp", dir=store.tmp_dir)
        self._tmp = Path(tmp)
        self._f: BinaryIO | None = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise PayloadTooLarge(f"upload is larger than the hub's limit of {self.max_bytes} bytes",
                                  hint="a submission zip holds only the LoRA adapter; remove other files and package again")
        self._hash.update(chunk)
        self._f.write(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def commit(self, expected_sha256: str | None = None) -> str:
        sha = self.sha256
        if expected_sha256 is not None and expected_sha256.lower() != sha:
            raise Unprocessable(f"upload sha256 mismatch: header says {expected_sha256}, bytes hash to {sha}",
                                hint="the file changed or was corrupted in transit; push it again")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        dest = self.store.path(sha)
        if dest.exists():
            self._tmp.unlink(missing_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, dest)
            fsync_dir(dest.parent)
        return sha

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is not None or self._f is not None:
            self.abort()


class BlobStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not SHA_RE.match(sha256 or ""):
            raise NotFound(f"not a blob id: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def writer(self, max_bytes: int | None = None) -> BlobWriter:
        return BlobWriter(self, max_bytes)

    def put_bytes(self, data: bytes) -> str:
        with self.writer() as w:
            w.write(data)
            return w.commit()

    def open(self, sha256: str) -> BinaryIO:
        p = self.path(sha256)
        if not p.is_file():
            raise NotFound(f"blob {sha256} is missing from the store")
        return open(p, "rb")

    def read_bytes(self, sha256: str) -> bytes:
        with self.open(sha256) as f:
            return f.read()

    def verify(self, sha256: str) -> bool:
        """True if the blob exists and its bytes still hash to its name."""
        h = hashlib.sha256()
        try:
            with self.open(sha256) as f:
                while block := f.read(1 << 20):
                    h.update(block)
        except NotFound:
            return False
        return h.hexdigest() == sha256

    def clean_tmp(self, older_than_s: float = 24 * 3600) -> int:
        """Delete temp files of crashed uploads: their writer process is gone, or they are stale.

        Returns how many were removed.
        """
        n = 0
        cutoff = time.time() - older_than_s
        for p in self.tmp_dir.glob("upload-*.tmp"):
            with contextlib.suppress(OSError):
                if not _pid_alive(p.name.split("-")[1]) or p.stat().st_mtime <= cutoff:
                    p.unlink()
                    n += 1
        return n


def _pid_alive(pid_text: str) -> bool:
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
