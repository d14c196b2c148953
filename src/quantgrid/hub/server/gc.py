"""Garbage collection: what crashes and refused uploads leave behind, removed safely.

``quantgrid hub gc`` runs :func:`collect`; every hub start runs it too, so a crash never
leaves litter for longer than one restart. It removes:

* **unreferenced blobs**: in the store (local or S3) but named by no ``blobs`` row, and
  older than ``gc_grace_seconds`` (a younger one may belong to an upload about to commit;
  blobs are listed before the database is read, so a commit racing the scan keeps its blob);
* **unreferenced release archives** (object storage only): objects under ``releases/`` that no
  ``releases`` row names (a release that crashed between its upload and its database commit,
  or an upload's temp key), older than the grace; listed before the database is read, as blobs;
* **upload temp files** whose writing process is gone (or older than a day);
* **release staging directories** (``releases/.<version>.*.partial``), only while no job of
  this host is running;
* the release engine's **temp directories** in the system temp dir (``qg-release-<pid>-*``,
  ``qg-trial-<pid>-*``, ``qg-loo-<pid>-*``), only once the process that made one is gone: the temp
  dir may be shared by several hubs and other users, so a live process's dir is never touched
  (a name without a pid, from an older version, goes once older than a day);
* expired upload slots and idle rate-limit buckets.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select

from quantgrid.hub.server.db import Database
from quantgrid.hub.server.hostproc import pid_alive
from quantgrid.hub.server.models import Blob, Job, RateBucket, Release, UploadSlot
from quantgrid.hub.server.storage import BlobStore, ReleaseArchives, open_release_archives
from quantgrid.hub.settings import HubSettings

log = logging.getLogger(__name__)

TEMP_DIR_PREFIXES = ("qg-release-", "qg-trial-", "qg-loo-")
LEGACY_TEMP_AGE_S = 24 * 3600


def abandoned_temp_dir(p: Path, now: float | None = None) -> bool:
    """True if engine temp dir ``p`` (``<prefix><pid>-<random>``) belongs to a dead process."""
    rest = next((p.name[len(x):] for x in TEMP_DIR_PREFIXES if p.name.startswith(x)), None)
    if rest is None:
        return False
    pid = rest.split("-", 1)[0]
    if "-" in rest and pid.isdigit():
        return not pid_alive(pid)
    try:
        return (now or time.time()) - p.stat().st_mtime >= LEGACY_TEMP_AGE_S
    except OSError:
        return False


@dataclass
class GcReport:
    blobs: list[str] = field(default_factory=list)
    blob_bytes: int = 0
    upload_tmp: int = 0
    release_objects: list[str] = field(default_factory=list)
    staging: list[str] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)
    slots: int = 0
    buckets: int = 0
    kept_busy: bool = False  # staging dirs kept because a job of this host is running

    def summary(self) -> str:
        parts = [f"{len(self.blobs)} unreferenced blob(s)",
                 f"{len(self.release_objects)} unreferenced release object(s)", f"{self.upload_tmp} upload temp file(s)",
                 f"{len(self.staging)} release staging dir(s)", f"{len(self.temp_dirs)} release temp dir(s)",
                 f"{self.slots} expired upload slot(s)", f"{self.buckets} idle rate bucket(s)"]
        note = " (staging kept: a job of this host is running)" if self.kept_busy else ""
        return "removed " + ", ".join(parts) + note


def _local_job_running(db: Database) -> bool:
    """True while a job is leased to a live process of this host."""
    host = socket.gethostname()
    with db.read() as s:
        owners = s.scalars(select(Job.lease_owner).where(Job.status == "running",
                                                         Job.lease_owner.like(f"{host}:%"))).all()
    return any(pid_alive(o.split(":")[1]) for o in owners if o)


def _release_objects(archives: ReleaseArchives, db: Database, grace: float, now: float, dry_run: bool) -> list[str]:
    """Release archives no row names, past the grace; returns their keys (removed unless dry_run)."""
    listed = list(archives.iter_objects())  # before the DB read: a release committing now keeps its object
    with db.read() as s:
        paths = s.scalars(select(Release.path)).all()
    referenced = set()
    for p in paths:
        if ReleaseArchives.is_ref(p):
            with contextlib.suppress(Exception):  # a row of another storage: not ours to judge
                referenced.add(archives.parse(p)[0])
    gone = [key for key, mtime in listed if key not in referenced and now - mtime >= grace]
    if not dry_run:
        for key in gone:
            archives.delete_key(key)
    return gone


def collect(settings: HubSettings, db: Database, blobs: BlobStore, *, grace_s: float | None = None,
            dry_run: bool = False, temp_root: str | Path | None = None) -> GcReport:
    """Remove what no one refers to any more (see the module docstring); returns what went."""
    grace = settings.gc_grace_seconds if grace_s is None else grace_s
    report = GcReport()
    now = time.time()
    listed = list(blobs.iter_blobs())  # before the DB read: see the module docstring
    with db.read() as s:
        referenced = set(s.scalars(select(Blob.sha256)).all())
    for sha, mtime in listed:
        if sha in referenced or now - mtime < grace:
            continue
        if not dry_run:
            with contextlib.suppress(Exception):
                with blobs.open(sha) as f:
                    report.blob_bytes += f.seek(0, 2)
            blobs.delete(sha)
        report.blobs.append(sha)
    archives = open_release_archives(settings, blobs)
    if archives is not None:
        report.release_objects = _release_objects(archives, db, grace, now, dry_run)
    if not dry_run:
        report.upload_tmp = blobs.clean_tmp()

    if _local_job_running(db):
        report.kept_busy = True
    else:
        release_dir = settings.storage_dir / "releases"
        report.staging = [str(p) for p in sorted(release_dir.glob(".*.partial"))] if release_dir.is_dir() else []
    temp_root = Path(temp_root or tempfile.gettempdir())
    report.temp_dirs = [str(p) for prefix in TEMP_DIR_PREFIXES for p in sorted(temp_root.glob(f"{prefix}*"))
                        if p.is_dir() and abandoned_temp_dir(p, now)]
    if not dry_run:
        for p in report.staging + report.temp_dirs:
            shutil.rmtree(p, ignore_errors=True)

    if not dry_run:
        with db.write() as s:
            report.slots = s.execute(delete(UploadSlot).where(UploadSlot.expires_at <= now)).rowcount
            idle = now - max(3600.0, settings.rate_limit_burst * 60.0 / settings.rate_limit_per_minute)
            report.buckets = s.execute(delete(RateBucket).where(RateBucket.updated_at < idle)).rowcount
    if report.blobs or report.release_objects or report.staging or report.temp_dirs:
        log.info("gc: %s", report.summary())
    return report
