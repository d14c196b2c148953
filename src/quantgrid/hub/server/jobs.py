"""A job queue in the hub's database, safe for several workers on several machines.

Lifecycle: ``queued -> running -> done | failed``.

* **Claim** is one compare-and-set ``UPDATE jobs SET status='running' ... WHERE id = (oldest
  queued) AND status = 'queued' RETURNING id``. SQLite serialises writers; on PostgreSQL the
  inner SELECT uses ``FOR UPDATE SKIP LOCKED`` and the outer ``status='queued'`` re-check makes
  a lost race update zero rows. Either way exactly one worker gets each job.
* **Lease.** A running job belongs to ``lease_owner`` until ``lease_expires_at``; the worker
  renews it from a heartbeat thread while the handler runs. A worker that dies (``kill -9``,
  power loss) stops renewing, and ``requeue_expired`` puts the job back in the queue.
* **Attempts.** Each claim counts one attempt. A job that raised or whose lease expired
  ``max_attempts`` times is ``failed``; its ``error`` says why, and the kind's give-up hook
  runs (a ``validate`` job's submission is rejected with that report).

* **Dead owners.** A lease names its worker as ``host:pid:random``. A running job whose owner
  is a process on this host that no longer exists is requeued at once, without waiting for
  the lease to run out (the check needs the workers of one host to share a pid namespace,
  as processes on one machine or in one container do).

Handlers are plain functions ``handler(ctx: JobContext) -> dict | None`` (the dict is stored
as the job's ``result``). The hub's kinds are imported by name in ``job_kinds.py`` (which
imports this module, so this module looks them up there only when asked); a worker takes
exactly the kinds it has handlers for, and asking for a kind that does not exist is an error.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quantgrid.hub.server.db import Database
from quantgrid.hub.server.hostproc import pid_alive
from quantgrid.hub.server.models import Job, utcnow
from quantgrid.hub.settings import HubSettings

log = logging.getLogger(__name__)



@dataclass
class JobContext:
    """What a handler gets: the job, the hub's settings, its database and blob store."""

    job_id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    settings: HubSettings
    db: Database
    worker_id: str
    lease_lost: threading.Event = field(default_factory=threading.Event)

    @property
    def blobs(self):
        from quantgrid.hub.server.storage import open_blob_store

        return open_blob_store(self.settings)

    def heartbeat(self) -> bool:
        """Extend the lease now (the worker also does this in the background)."""
        ok = heartbeat(self.db, self.job_id, self.worker_id, self.settings.job_lease_seconds)
        if not ok:
            self.lease_lost.set()
        return ok


Handler = Callable[[JobContext], "dict[str, Any] | None"]


def resolve_handlers(kinds: Iterable[str] | None = None) -> dict[str, Handler]:
    """The handlers of ``kinds`` (default: every kind the hub has); ConfigError for an unknown kind."""
    from quantgrid.hub.server.job_kinds import handlers  # job_kinds imports this module

    return handlers(kinds)


# ---- queue operations (each one short transaction) ----


def enqueue(session: Session, kind: str, payload: dict[str, Any], *, dedupe_key: str | None = None,
            priority: int = 100, max_attempts: int = 3, delay_s: float = 0.0) -> Job:
    """Add a job inside the caller's transaction, so it commits (or not) with the caller's rows."""
    job = Job(kind=kind, payload=payload, dedupe_key=dedupe_key, priority=priority,
              max_attempts=max_attempts, run_after=time.time() + delay_s)
    session.add(job)
    session.flush()
    return job


def enqueue_once(db: Database, kind: str, payload: dict[str, Any], dedupe_key: str, **kw) -> int:
    """Enqueue unless a job with ``dedupe_key`` exists; return that job's id either way."""
    try:
        with db.write() as s:
            return enqueue(s, kind, payload, dedupe_key=dedupe_key, **kw).id
    except IntegrityError:
        with db.read() as s:
            return s.scalar(select(Job.id).where(Job.dedupe_key == dedupe_key))


def claim_statement(kinds: list[str], worker_id: str, now: float, lease_seconds: float):
    """The compare-and-set that takes the oldest runnable job (see the module docstring)."""
    oldest = (
        select(Job.id)
        .where(Job.status == "queued", Job.kind.in_(kinds), Job.run_after <= now)
        .order_by(Job.priority, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)  # PostgreSQL: concurrent claimers skip, not wait
        .scalar_subquery()
    )
    return (
        update(Job)
        .where(Job.id == oldest, Job.status == "queued")  # re-checked on the row actually updated
        .values(status="running", lease_owner=worker_id, lease_expires_at=now + lease_seconds,
                attempts=Job.attempts + 1)
        .returning(Job.id)
    )


def claim(db: Database, worker_id: str, kinds: Iterable[str], lease_seconds: float) -> Job | None:
    kinds = list(kinds)
    if not kinds:
        return None
    now = time.time()
    with db.read() as s:  # an idle poll stays a cheap read, not a write lock
        if s.scalar(select(Job.id).where(Job.status == "queued", Job.kind.in_(kinds), Job.run_after <= now)
                    .limit(1)) is None:
            return None
    with db.write() as s:
        job_id = s.execute(claim_statement(kinds, worker_id, now, lease_seconds)).scalar()
        if job_id is None:
            return None
        s.expire_all()
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def heartbeat(db: Database, job_id: int, worker_id: str, lease_seconds: float) -> bool:
    """Renew the lease; False if this worker no longer owns the job."""
    with db.write() as s:
        n = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.lease_owner == worker_id)
            .values(lease_expires_at=time.time() + lease_seconds)
        ).rowcount
    return n == 1


def complete(db: Database, job_id: int, worker_id: str, result: dict[str, Any] | None) -> bool:
    with db.write() as s:
        n = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.lease_owner == worker_id)
            .values(status="done", result=result, lease_owner=None, lease_expires_at=None,
                    finished_at=utcnow(), error=None)
        ).rowcount
    return n == 1


def fail(db: Database, job_id: int, worker_id: str, error: str, retry_delay_s: float = 5.0) -> str | None:
    """Record a failed attempt: back to ``queued`` (later) or ``failed`` when out of attempts."""
    with db.write() as s:
        job = s.get(Job, job_id)
        if job is None or job.status != "running" or job.lease_owner != worker_id:
            return None
        job.error = error[-4000:]
        job.lease_owner = None
        job.lease_expires_at = None
        if job.attempts >= job.max_attempts:
            job.status = "failed"
            job.finished_at = utcnow()
        else:
            job.status = "queued"
            job.run_after = time.time() + retry_delay_s
        status = job.status
    if status == "failed":
        _give_up(db, job_id)
    return status


def _dead_local_owners(s: Session) -> set[str]:
    """Lease owners of running jobs that name a process of this host that no longer exists."""
    host = socket.gethostname()
    owners = s.scalars(select(Job.lease_owner).where(Job.status == "running",
                                                     Job.lease_owner.like(f"{host}:%")).distinct()).all()
    return {o for o in owners if not pid_alive(o.split(":")[1])}


def requeue_expired(db: Database) -> list[int]:
    """Jobs whose worker stopped renewing its lease, or whose worker is a dead process on this
    host, go back to the queue (or fail, if out of tries)."""
    now = time.time()
    stale = (Job.lease_expires_at < now)
    with db.read() as s:  # the common case, nothing expired, takes no write lock
        dead = _dead_local_owners(s)
        if dead:
            stale = stale | Job.lease_owner.in_(dead)
        if s.scalar(select(Job.id).where(Job.status == "running", stale).limit(1)) is None:
            return []
    with db.write() as s:
        expired = s.scalars(
            select(Job).where(Job.status == "running", stale).with_for_update(skip_locked=True)
        ).all()
        given_up = []
        for job in expired:
            why = "its process is gone" if job.lease_owner in dead else "lease expired"
            note = f"worker {job.lease_owner} stopped ({why}) during attempt {job.attempts}"
            job.lease_owner = None
            job.lease_expires_at = None
            job.error = note
            if job.attempts >= job.max_attempts:
                job.status = "failed"
                job.finished_at = utcnow()
                given_up.append(job.id)
            else:
                job.status = "queued"
        ids = [j.id for j in expired]
    for job_id in given_up:
        _give_up(db, job_id)
    return ids


def _give_up(db: Database, job_id: int) -> None:
    from quantgrid.hub.server.job_kinds import GIVE_UP  # job_kinds imports this module

    with db.read() as s:
        job = s.get(Job, job_id)
        hook = GIVE_UP.get(job.kind) if job else None
    if hook is None:
        return
    try:
        hook(db, job)
    except Exception:  # a hook must never take the worker down
        log.exception("give-up hook for job %s failed", job_id)


# ---- the worker loop ----


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def run_one(db: Database, settings: HubSettings, handlers: dict[str, Handler], worker_id: str) -> bool:
    """Claim and run at most one job. True if a job was run (whatever its outcome)."""
    requeue_expired(db)
    job = claim(db, worker_id, handlers, settings.job_lease_seconds)
    if job is None:
        return False
    ctx = JobContext(job.id, job.kind, dict(job.payload or {}), job.attempts, settings, db, worker_id)
    stop_beat = threading.Event()

    def _beat() -> None:
        interval = max(0.05, settings.job_lease_seconds / 3)
        while not stop_beat.wait(interval):
            if not ctx.heartbeat():
                return

    beat = threading.Thread(target=_beat, name=f"job-{job.id}-heartbeat", daemon=True)
    beat.start()
    log.info("job %s (%s) attempt %s/%s started by %s", job.id, job.kind, job.attempts, job.max_attempts, worker_id)
    try:
        result = handlers[job.kind](ctx)
    except Exception as e:
        log.exception("job %s (%s) failed", job.id, job.kind)
        stop_beat.set()
        beat.join()
        status = fail(db, job.id, worker_id, f"{type(e).__name__}: {e}")
        log.info("job %s is now %s", job.id, status)
        return True
    stop_beat.set()
    beat.join()
    if not complete(db, job.id, worker_id, result if isinstance(result, dict) else None):
        log.warning("job %s finished after its lease was lost; its result was discarded", job.id)
    return True


def run_worker(settings: HubSettings, handlers: dict[str, Handler] | None = None,
               stop_event: threading.Event | None = None, *, db: Database | None = None,
               worker_id: str | None = None, max_jobs: int | None = None) -> int:
    """Run jobs until ``stop_event`` is set (or ``max_jobs`` ran). Returns the number run.

    ``handlers=None`` takes every kind the hub has (``job_kinds.py``); a worker given fewer
    kinds leaves the others' jobs queued for a worker that has them.
    """
    stop_event = stop_event or threading.Event()
    db = db or Database(settings.database_url)
    worker_id = worker_id or default_worker_id()
    handlers = resolve_handlers() if handlers is None else handlers
    if not handlers:
        log.warning("worker %s has no job handlers; nothing will be processed", worker_id)
    ran = 0
    while not stop_event.is_set():
        try:
            did = run_one(db, settings, handlers, worker_id)
        except Exception:  # a database hiccup must not kill the worker thread
            log.exception("worker %s: queue error", worker_id)
            did = False
        if did:
            ran += 1
            if max_jobs is not None and ran >= max_jobs:
                break
        else:
            stop_event.wait(settings.worker_poll_seconds)
    return ran


def queue_counts(db: Database) -> dict[str, int]:
    from sqlalchemy import func

    with db.read() as s:
        rows = s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: n for status, n in rows}
