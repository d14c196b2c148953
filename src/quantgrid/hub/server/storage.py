"""Content-addressed blob store: ``<root>/sha256/ab/cd/<sha256>``, on local disk or any fsspec
filesystem (S3 and S3-compatible servers through ``s3fs``).

    blobs = open_blob_store(settings)      # settings.storage_url: None (local) or s3://bucket/prefix
    with blobs.writer(max_bytes=n) as w:   # streams into a local temp file while hashing
        for chunk in body: w.write(chunk)
        sha = w.commit(expected_sha256)    # verified, then placed in the store

Placing is atomic on both backends: locally fsync -> rename -> fsync the directory; on S3 an
object appears only once its upload completed. A crash leaves the complete blob or only a
local temp file (``clean_tmp`` removes those of dead processes). A blob is placed by every
upload that verified its bytes, even when one with its name exists, so a blob that a crashed
upload left behind is never trusted: it is overwritten, or removed by ``quantgrid hub gc``
once no database row refers to it.

An ``OSError`` from the storage (a read-only or full volume, an unreachable bucket) becomes
503 (``StorageUnavailable``) or 507 (``InsufficientStorage``) with a hint for the admin.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from quantgrid import lora_files
from quantgrid.errors import HubError, NotFound, PayloadTooLarge, Unprocessable
from quantgrid.hub.server.hostproc import pid_alive
from quantgrid.utils import fsync_dir

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
TMP_GLOB = "upload-*.tmp"


class StorageUnavailable(HubError, code="storage_unavailable", http_status=503):
    """The hub cannot read or write its storage (read-only volume, permissions, unreachable bucket)."""


class InsufficientStorage(HubError, code="insufficient_storage", http_status=507):
    """The hub's storage is full."""


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def storage_error(exc: OSError, what: str) -> HubError:
    """The HTTP-typed error for a storage failure while doing ``what``."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in _FULL:
        return InsufficientStorage(
            f"the hub's storage is full ({what}: {reason})",
            hint="push again later; hub admin: free space or grow the volume, and run `quantgrid hub gc`")
    return StorageUnavailable(
        f"the hub cannot use its storage right now ({what}: {reason})",
        hint="push again later; hub admin: check that the storage is mounted read-write, writable by the hub, "
             "and (for S3) reachable with valid credentials")


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (HubError, FileNotFoundError):
        raise
    except OSError as e:
        raise storage_error(e, what) from e


class BlobWriter:
    """Streams bytes into a local temp file with a size cap; ``commit()`` places it in the store."""

    def __init__(self, store: BlobStore, max_bytes: int | None):
        self.store = store
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        # The writer's pid is in the name so a restart can tell abandoned temp files from live ones.
        with _storage_errors("creating an upload file"):
            fd, tmp = tempfile.mkstemp(prefix=f"upload-{os.getpid()}-", suffix=".tmp", dir=store.tmp_dir)
        self._tmp = Path(tmp)
        self._f: BinaryIO | None = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise PayloadTooLarge(f"upload is larger than the hub's limit of {self.max_bytes} bytes",
                                  hint="a submission zip holds only the LoRA adapter; remove other files and package again")
        self._hash.update(chunk)
        with _storage_errors("writing an upload"):
            self._f.write(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def commit(self, expected_sha256: str | None = None) -> str:
        sha = self.sha256
        if expected_sha256 is not None and expected_sha256.lower() != sha:
            raise Unprocessable(f"upload sha256 mismatch: header says {expected_sha256}, bytes hash to {sha}",
                                hint="the file changed or was corrupted in transit; push it again")
        with _storage_errors("saving an upload"):
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            self.store._place(self._tmp, sha)
        return sha

    def abort(self) -> None:
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.close()
            self._f = None
        with contextlib.suppress(OSError):
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is not None or self._f is not None or self._tmp.exists():
            self.abort()


class BlobStore:
    """Blobs in a local directory. ``tmp_dir`` (upload temp files) is always local."""

    url_scheme = "file"

    def __init__(self, root: str | Path, tmp_dir: str | Path | None = None):
        self.root = Path(root)
        self.tmp_dir = Path(tmp_dir) if tmp_dir is not None else self.root / "tmp"
        with _storage_errors("creating the blob store"):
            self.tmp_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _rel(sha256: str) -> str:
        if not SHA_RE.match(sha256 or ""):
            raise NotFound(f"not a blob id: {sha256!r}")
        return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def describe(self) -> str:
        return str(self.root)

    def path(self, sha256: str) -> Path:
        return self.root / self._rel(sha256)

    # ---- backend operations (overridden by FsspecBlobStore) ----
    def _place(self, tmp: Path, sha256: str) -> None:
        dest = self.path(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)

    def exists(self, sha256: str) -> bool:
        with _storage_errors("reading the blob store"):
            return self.path(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        p = self.path(sha256)
        if not p.is_file():
            raise NotFound(f"blob {sha256} is missing from the store")
        with _storage_errors("reading a blob"):
            return open(p, "rb")

    def delete(self, sha256: str) -> bool:
        with _storage_errors("deleting a blob"):
            try:
                self.path(sha256).unlink()
            except FileNotFoundError:
                return False
        return True

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        """(sha256, modification time) of every blob in the store."""
        base = self.root / "sha256"
        if not base.is_dir():
            return
        for p in base.glob("*/*/*"):
            if SHA_RE.match(p.name):
                with contextlib.suppress(FileNotFoundError):
                    yield p.name, p.stat().st_mtime

    # ---- shared ----
    def writer(self, max_bytes: int | None = None) -> BlobWriter:
        return BlobWriter(self, max_bytes)

    def put_bytes(self, data: bytes) -> str:
        with self.writer() as w:
            w.write(data)
            return w.commit()

    def read_bytes(self, sha256: str) -> bytes:
        with self.open(sha256) as f, _storage_errors("reading a blob"):
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
        for p in self.tmp_dir.glob(TMP_GLOB):
            with contextlib.suppress(OSError):
                if not pid_alive(p.name.split("-")[1]) or p.stat().st_mtime <= cutoff:
                    p.unlink()
                    n += 1
        return n


class FsspecBlobStore(BlobStore):
    """Blobs under an fsspec URL (``s3://bucket/prefix``, ``memory://``, ...); temp files stay local."""

    def __init__(self, url: str, tmp_dir: str | Path, options: dict | None = None):
        import fsspec

        try:
            self.fs, root = fsspec.core.url_to_fs(url, **(options or {}))
        except (ImportError, ValueError) as e:
            from quantgrid.errors import ConfigError

            raise ConfigError(f"cannot open blob storage {url!r}: {e}",
                              hint="for s3:// install s3fs (`pip install 'quantgrid[hub]'`) and check storage_options"
                              ) from None
        self.url = url
        self.url_scheme = url.split("://", 1)[0]
        self.prefix = root.rstrip("/")
        self.root = Path(tmp_dir).parent  # only tmp_dir is local; blobs are addressed by key
        self.tmp_dir = Path(tmp_dir)
        with _storage_errors("creating the upload directory"):
            self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return self.url

    def key(self, sha256: str) -> str:
        return f"{self.prefix}/{self._rel(sha256)}"

    def path(self, sha256: str) -> Path:
        raise TypeError("blobs in object storage have no local path; use open() or read_bytes()")

    def _place(self, tmp: Path, sha256: str) -> None:
        self.fs.put_file(str(tmp), self.key(sha256))
        tmp.unlink(missing_ok=True)

    def exists(self, sha256: str) -> bool:
        with _storage_errors("reading the blob store"):
            self.fs.invalidate_cache()  # another hub process may have written or deleted it
            return self.fs.exists(self.key(sha256))

    def open(self, sha256: str) -> BinaryIO:
        with _storage_errors("reading a blob"):
            try:
                return self.fs.open(self.key(sha256), "rb")
            except FileNotFoundError:
                raise NotFound(f"blob {sha256} is missing from the store") from None

    def delete(self, sha256: str) -> bool:
        with _storage_errors("deleting a blob"):
            if not self.fs.exists(self.key(sha256)):  # S3 deletes of a missing key succeed silently
                return False
            self.fs.rm_file(self.key(sha256))
            self.fs.invalidate_cache()
        return True

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        for key, info in _listing(self.fs, f"{self.prefix}/sha256", "listing the blob store").items():
            name = key.rsplit("/", 1)[-1]
            if SHA_RE.match(name):
                yield name, _mtime(info)


def _listing(fs, path: str, what: str) -> dict[str, dict]:
    """Every object under ``path`` (key -> info), read fresh: s3fs caches listings, and gc must
    not act on a stale one. Empty when nothing was ever written there."""
    with _storage_errors(what):
        fs.invalidate_cache()
        try:
            return fs.find(path, detail=True)
        except FileNotFoundError:
            return {}


def _mtime(info: dict) -> float:
    for field in ("LastModified", "mtime", "created"):
        v = info.get(field)
        if v is None:
            continue
        return v.timestamp() if hasattr(v, "timestamp") else float(v)
    return 0.0


def open_blob_store(settings) -> BlobStore:
    """The blob store a hub's settings name: ``storage_url`` if set, else ``<storage_dir>/blobs``."""
    url = settings.storage_url
    tmp_dir = settings.blob_dir / "tmp"
    if not url:
        return BlobStore(settings.blob_dir)
    if "://" not in url or url.startswith("file://"):
        local = Path(url.removeprefix("file://")).expanduser()
        return BlobStore(local, tmp_dir=local / "tmp")
    return FsspecBlobStore(url, tmp_dir, settings.storage_options)


# ------------------------------------------------------------------ release archives


RELEASE_PREFIX = "releases"
RELEASE_TMP = f"{RELEASE_PREFIX}/.tmp"
_RELEASE_KEY_RE = re.compile(r"^(\d{4}\.\d{2}(?:\.\d+)?)/([0-9a-f]{64})\.zip$")
_RELEASE_FILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def release_zip(src: Path, out: Path) -> str:
    """Zip a release directory's files (top level, no dot files) into ``out``; returns its sha256.

    The same archive is what ``GET /v1/releases/{version}/download`` serves.
    """
    import zipfile

    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                zf.write(p, p.name)
    h = hashlib.sha256()
    with open(out, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class ReleaseArchives:
    """Published releases in object storage, beside the blobs: one zip per release at
    ``<prefix>/releases/<version>/<sha256>.zip``.

    A release is written whole or not at all: the zip goes to a temp key
    (``releases/.tmp/<version>-<pid>-<random>.zip``) and is then copied to its final key, so
    a final key only ever holds a complete archive. The database row names the exact object
    (``Release.path`` is its URL, the sha256 in the name): an object uploaded by a release that
    crashed before its database commit is named by no row, is never served or used, and goes
    with ``quantgrid hub gc`` once past the grace. Readers verify the bytes against the name.

    Hosts that need the files (a worker's trial merge, the next release's comparison) unpack
    a verified copy into ``cache_dir/<sha256>/`` once.
    """

    def __init__(self, fs, prefix: str, scheme: str, cache_dir: str | Path, tmp_dir: str | Path):
        self.fs, self.prefix, self.scheme = fs, prefix.rstrip("/"), scheme
        self.cache_dir, self.tmp_dir = Path(cache_dir), Path(tmp_dir)

    # ---- names
    def key(self, version: str, sha256: str) -> str:
        return f"{self.prefix}/{RELEASE_PREFIX}/{version}/{sha256}.zip"

    def url(self, key: str) -> str:
        return f"{self.scheme}://{key}"

    def parse(self, ref: str) -> tuple[str, str, str]:
        """(key, version, sha256) of a ``Release.path`` this store wrote."""
        key = ref.split("://", 1)[-1]
        base = f"{self.prefix}/{RELEASE_PREFIX}/"
        m = _RELEASE_KEY_RE.match(key[len(base):]) if key.startswith(base) else None
        if m is None:
            raise NotFound(f"release object {ref!r} is not in this hub's storage ({self.url(self.prefix)})",
                           hint="hub admin: storage_url changed since this release was published; set it back "
                                "or copy the release objects")
        return key, m.group(1), m.group(2)

    @staticmethod
    def is_ref(path: str | None) -> bool:
        return bool(path) and "://" in path

    # ---- writing
    def put(self, version: str, src: Path) -> str:
        """Upload release directory ``src`` as one archive; returns the URL to record."""
        import uuid

        with _storage_errors("creating a release archive"):
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, local = tempfile.mkstemp(prefix=f"release-{os.getpid()}-", suffix=".zip", dir=self.tmp_dir)
            os.close(fd)
        local_path = Path(local)
        try:
            with _storage_errors("creating a release archive"):
                sha = release_zip(src, local_path)
            tmp_key = f"{self.prefix}/{RELEASE_TMP}/{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}.zip"
            final = self.key(version, sha)
            with _storage_errors("uploading a release"):
                self.fs.put_file(str(local_path), tmp_key)
                try:
                    self.fs.copy(tmp_key, final)  # server-side: the final key appears complete
                finally:
                    with contextlib.suppress(OSError):
                        self.fs.rm_file(tmp_key)
                self.fs.invalidate_cache()
        finally:
            local_path.unlink(missing_ok=True)
        return self.url(final)

    # ---- reading
    def exists(self, ref: str) -> bool:
        key, _, _ = self.parse(ref)
        with _storage_errors("reading the release store"):
            self.fs.invalidate_cache()
            return self.fs.exists(key)

    def open(self, ref: str) -> BinaryIO:
        key, version, _ = self.parse(ref)
        with _storage_errors("reading a release"):
            try:
                return self.fs.open(key, "rb")
            except FileNotFoundError:
                raise NotFound(f"release {version}'s archive is missing from the storage",
                               hint="tell the hub admin") from None

    def local_dir(self, ref: str) -> Path:
        """A local, verified copy of the release's files (unpacked once per host)."""
        import zipfile

        from quantgrid.utils import atomic_dir

        key, version, sha = self.parse(ref)
        out = self.cache_dir / sha
        if (out / lora_files.WEIGHTS).is_file():
            return out
        with _storage_errors("fetching a release"):
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, local = tempfile.mkstemp(prefix=f"release-{os.getpid()}-", suffix=".zip", dir=self.tmp_dir)
            os.close(fd)
        local_path = Path(local)
        try:
            h = hashlib.sha256()
            with self.open(ref) as src, open(local_path, "wb") as dst, _storage_errors("fetching a release"):
                while block := src.read(1 << 20):
                    h.update(block)
                    dst.write(block)
            if h.hexdigest() != sha:
                raise StorageUnavailable(f"release {version}'s archive does not match its name (sha256 "
                                         f"{h.hexdigest()})", hint="hub admin: the object was altered; republish it")
            try:
                with atomic_dir(out) as tmp, zipfile.ZipFile(local_path) as zf:
                    for info in zf.infolist():
                        if not _RELEASE_FILE_RE.match(info.filename) or info.is_dir():
                            raise StorageUnavailable(f"release {version}'s archive holds an unexpected entry "
                                                     f"{info.filename[:80]!r}")
                        (tmp / info.filename).write_bytes(zf.read(info))
            except FileExistsError:  # another process of this host unpacked the same bytes first
                pass
        finally:
            local_path.unlink(missing_ok=True)
        return out

    # ---- garbage collection
    def iter_objects(self) -> Iterator[tuple[str, float]]:
        """(key, modification time) of every release archive and upload temp object."""
        for key, info in _listing(self.fs, f"{self.prefix}/{RELEASE_PREFIX}", "listing the release store").items():
            yield key, _mtime(info)

    def delete_key(self, key: str) -> None:
        if not key.startswith(f"{self.prefix}/{RELEASE_PREFIX}/"):
            raise ValueError(f"not a release object: {key}")
        with _storage_errors("deleting a release"):
            self.fs.rm_file(key)
            self.fs.invalidate_cache()


def open_release_archives(settings, blobs: BlobStore | None = None) -> ReleaseArchives | None:
    """Where published releases are kept when the hub's storage is object storage; None when
    the storage is a local directory (releases then live in ``<storage_dir>/releases``)."""
    blobs = blobs if blobs is not None else open_blob_store(settings)
    if not isinstance(blobs, FsspecBlobStore):
        return None
    return ReleaseArchives(blobs.fs, blobs.prefix, blobs.url_scheme, settings.storage_dir / "release-cache",
                           blobs.tmp_dir)
