"""Garbage collection: what crashes and refused uploads leave behind, removed safely.

``quantgrid hub gc`` runs :func:`collect`; every hub start runs it too, so a crash never
leaves litter for longer than one restart. It removes:

* **unreferenced blobs**: in the store (local or S3) but named by no ``blobs`` row, and
  older than ``gc_grace_seconds`` (a younger one may belong to an upload about to commit;
  blobs are listed before the database is read, so a commit racing the scan keeps its blob);
* **upload temp files** whose writing process is gone (or older than a day);
* **release staging directories** (``releases/.<version>.*.partial``) and the release
  engine's temp directories (``qg-release-*``, ``qg-trial-*``, ``qg-loo-*`` in the system temp dir), but
  only while no job of this host is running and, for the temp dirs, once older than the grace;
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
from quantgrid.hub.server.models import Blob, Job, RateBucket, UploadSlot
from quantgrid.hub.server.storage import BlobStore
from quantgrid.hub.settings import HubSettings

log = logging.getLogger(__name__)

TEMP_DIR_PREFIXES = ("qg-release-", "qg-trial-", "qg-loo-")


@dataclass
class GcReport:
    blobs: list[str] = field(default_factory=list)
    blob_bytes: int = 0
    upload_tmp: int = 0
    staging: list[str] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)
    slots: int = 0
    buckets: int = 0
    kept_busy: bool = False  # staging/temp dirs kept because a job of this host is running

    def summary(self) -> str:
        parts = [f"{len(self.blobs)} unreferenced blob(s)", f"{self.upload_tmp} upload temp file(s)",
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
    if not dry_run:
        report.upload_tmp = blobs.clean_tmp()

    if _local_job_running(db):
        report.kept_busy = True
    else:
        release_dir = settings.storage_dir / "releases"
        staging = sorted(release_dir.glob(".*.partial")) if release_dir.is_dir() else []
        temp_root = Path(temp_root or tempfile.gettempdir())
        temps = [p for prefix in TEMP_DIR_PREFIXES for p in temp_root.glob(f"{prefix}*")
                 if p.is_dir() and now - p.stat().st_mtime >= grace]
        for p in staging + temps:
            if not dry_run:
                shutil.rmtree(p, ignore_errors=True)
            (report.staging if p in staging else report.temp_dirs).append(str(p))

    if not dry_run:
        with db.write() as s:
            report.slots = s.execute(delete(UploadSlot).where(UploadSlot.expires_at <= now)).rowcount
            idle = now - max(3600.0, settings.rate_limit_burst * 60.0 / settings.rate_limit_per_minute)
            report.buckets = s.execute(delete(RateBucket).where(RateBucket.updated_at < idle)).rowcount
    if report.blobs or report.staging or report.temp_dirs:
        log.info("gc: %s", report.summary())
    return report
