"""Submissions: create (idempotent), read (per-object authorization), and the verdict.

Lifecycle: ``queued -> validating -> accepted | rejected``. The upload endpoint only stores
the bytes and queues a ``validate`` job; the validation worker calls :func:`start_validation`
and then :func:`record_verdict`, which also creates the :class:`Adapter` row on acceptance.

Idempotency rules for one user:

* same ``Idempotency-Key`` + same sha256  -> the submission that key made (no new row);
* same ``Idempotency-Key`` + other sha256 -> 422;
* same sha256 again (any or no key)       -> the existing submission (no new row).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quantgrid.errors import Conflict, NotFound, RateLimited, Unprocessable
from quantgrid.hub.schemas import SubmissionOut
from quantgrid.hub.server import ratelimit
from quantgrid.hub.server.auth import Principal
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.jobs import enqueue
from quantgrid.hub.server.models import (
    Adapter,
    Blob,
    IdempotencyKey,
    Job,
    Submission,
    UploadSlot,
    User,
    utcnow,
)
from quantgrid.hub.settings import HubSettings

VALIDATE_JOB = "validate"


def to_out(sub: Submission, owner: str, *, show_report: bool, duplicate: bool = False) -> SubmissionOut:
    return SubmissionOut(
        id=sub.id, owner=owner, filename=sub.filename, sha256=sub.blob_sha256, size_bytes=sub.size_bytes,
        status=sub.status, created_at=sub.created_at, updated_at=sub.updated_at, score=sub.public_score,
        report=sub.report if show_report else None, duplicate=duplicate,
    )


# ---- checks done before reading an upload's body ----


def find_existing(db: Database, user: Principal, sha256: str, key: str | None) -> Submission | None:
    """The submission this push repeats, if any; 422 if ``key`` was used for other bytes."""
    with db.read() as s:
        if key is not None:
            row = s.get(IdempotencyKey, (user.id, key))
            if row is not None:
                if row.sha256 != sha256:
                    raise Unprocessable(
                        f"Idempotency-Key {key!r} was already used for different bytes (sha256 {row.sha256[:12]}…)",
                        hint="use a new idempotency key for a new file (the CLI makes one per push)")
                return s.get(Submission, row.submission_id)
        return s.scalar(select(Submission).where(Submission.user_id == user.id, Submission.blob_sha256 == sha256))


def check_daily_limit(session: Session, user: Principal, settings: HubSettings, pending: int = 0) -> None:
    """429 if the user's submissions of the last 24 h plus ``pending`` uploads reach the limit."""
    since = utcnow() - dt.timedelta(days=1)
    rows = session.scalars(
        select(Submission.created_at).where(Submission.user_id == user.id, Submission.created_at >= since)
        .order_by(Submission.created_at)
    ).all()
    if len(rows) + pending >= settings.daily_submission_limit:
        if not rows:  # only uploads in flight hold the limit
            raise RateLimited(f"daily submission limit reached ({settings.daily_submission_limit} per 24 h, "
                              f"counting {pending} upload(s) in progress)", hint="push again in a minute",
                              retry_after=60)
        oldest = rows[0] if rows[0].tzinfo else rows[0].replace(tzinfo=dt.timezone.utc)
        wait = max(1, int((oldest + dt.timedelta(days=1) - utcnow()).total_seconds()) + 1)
        raise RateLimited(f"daily submission limit reached ({settings.daily_submission_limit} per 24 h)",
                          hint=f"push again in {wait // 3600} h {wait % 3600 // 60} min", retry_after=wait)


def acquire_upload_slot(db: Database, user: Principal, settings: HubSettings) -> int:
    """Reserve one upload for ``user`` before reading its body (see ``ratelimit``); 429 if over a cap."""
    now = time.time()
    with db.write() as s:
        ratelimit.lock_user(s, user.id)
        inflight = ratelimit.live_slots(s, user.id, now)
        cap = settings.max_concurrent_uploads_per_user
        if inflight >= cap:
            raise RateLimited(f"you have {inflight} upload(s) in progress already (the hub allows {cap} at once)",
                              hint="wait for them to finish, then push again", retry_after=5)
        check_daily_limit(s, user, settings, pending=inflight)
        slot = UploadSlot(user_id=user.id, holder=ratelimit.holder_id(), expires_at=now + ratelimit.UPLOAD_SLOT_SECONDS)
        s.add(slot)
        s.flush()
        return slot.id


# ---- create ----


def create(db: Database, user: Principal, settings: HubSettings, *, sha256: str, size: int, filename: str,
           key: str | None, slot_id: int | None = None) -> tuple[Submission, bool]:
    """Record an uploaded blob as a submission + validate job in one transaction, releasing
    the upload slot ``slot_id`` in it.

    Returns ``(submission, created)``. Concurrent identical pushes race on the unique
    constraints; the loser reads the winner's row.
    """
    for _ in range(3):
        existing = find_existing(db, user, sha256, key)
        if existing is not None:
            _remember_key(db, user, key, sha256, existing.id)
            ratelimit.free_slot(db, slot_id)
            return existing, False
        try:
            with db.write() as s:
                ratelimit.lock_user(s, user.id)
                ratelimit.release_slot(s, slot_id)
                check_daily_limit(s, user, settings, pending=ratelimit.live_slots(s, user.id, time.time()))
                if s.get(Blob, sha256) is None:
                    s.add(Blob(sha256=sha256, size_bytes=size))
                sub = Submission(user_id=user.id, blob_sha256=sha256, filename=filename[:255], size_bytes=size)
                s.add(sub)
                s.flush()
                enqueue(s, VALIDATE_JOB, {"submission_id": sub.id}, dedupe_key=f"validate:{sub.id}",
                        max_attempts=settings.job_max_attempts)
                if key is not None:
                    s.add(IdempotencyKey(user_id=user.id, key=key, sha256=sha256, submission_id=sub.id))
            return sub, True
        except IntegrityError:
            continue  # someone else inserted the same row first: loop and read it
    raise Conflict("this upload raced with another push of the same file", hint="push again")


def _remember_key(db: Database, user: Principal, key: str | None, sha256: str, sub_id: int) -> None:
    if key is None:
        return
    try:
        with db.write() as s:
            if s.get(IdempotencyKey, (user.id, key)) is None:
                s.add(IdempotencyKey(user_id=user.id, key=key, sha256=sha256, submission_id=sub_id))
    except IntegrityError:
        pass  # the same key was recorded concurrently; find_existing already vetted it


# ---- read ----


def get_for(db: Database, user: Principal, sub_id: int) -> SubmissionOut:
    """Owner or admin only; anyone else gets the same 404 as for a missing id."""
    with db.read() as s:
        row = s.execute(
            select(Submission, User.name).join(User, User.id == Submission.user_id).where(Submission.id == sub_id)
        ).first()
    if row is None or (row[0].user_id != user.id and not user.is_admin):
        raise NotFound(f"no submission {sub_id}", hint="`quantgrid status` lists your submissions")
    return to_out(row[0], row[1], show_report=True)


def list_for(db: Database, user: Principal, *, all_users: bool = False, limit: int = 100) -> list[SubmissionOut]:
    q = select(Submission, User.name).join(User, User.id == Submission.user_id)
    if not (all_users and user.is_admin):
        q = q.where(Submission.user_id == user.id)
    with db.read() as s:
        rows = s.execute(q.order_by(Submission.id.desc()).limit(limit)).all()
    return [to_out(sub, name, show_report=True) for sub, name in rows]


# ---- verdict (called by the validation worker) ----


def start_validation(db: Database, sub_id: int) -> Submission:
    """Mark ``validating`` and return the row (the blob is ``submission.blob_sha256``)."""
    with db.write() as s:
        sub = s.get(Submission, sub_id)
        if sub is None:
            raise NotFound(f"no submission {sub_id}")
        if sub.status in ("queued", "validating"):  # a retried job may find it validating already
            sub.status = "validating"
        return sub


def record_verdict(db: Database, settings: HubSettings, sub_id: int, *, accepted: bool, report: dict[str, Any],
                   score: float | None = None, delta_info: dict[str, Any] | None = None) -> Submission:
    """Store the outcome. ``score`` (loss improvement, nats/token) is published rounded.

    ``report`` should hold ``stage``, ``check``, ``numbers`` and ``diagnoses``; only the owner
    and admins can read it.
    """
    with db.write() as s:
        sub = s.get(Submission, sub_id)
        if sub is None:
            raise NotFound(f"no submission {sub_id}")
        sub.status = "accepted" if accepted else "rejected"
        sub.report = report
        sub.public_score = settings.round_score(score)
        if accepted and s.get(Adapter, sub_id) is None:
            s.add(Adapter(id=sub_id, user_id=sub.user_id, blob_sha256=sub.blob_sha256,
                          score=sub.public_score, delta_info=delta_info))
        return sub


def give_up_validation(db: Database, job: Job) -> None:
    """Job give-up hook: a validation that crashed ``max_attempts`` times rejects the submission."""
    sub_id = (job.payload or {}).get("submission_id")
    if sub_id is None:
        return
    with db.write() as s:
        sub = s.get(Submission, sub_id)
        if sub is None or sub.status in ("accepted", "rejected"):
            return
        sub.status = "rejected"
        sub.report = {
            "stage": "worker", "check": "attempts_exhausted", "passed": False,
            "message": f"validation did not finish after {job.attempts} attempt(s)",
            "numbers": {"attempts": job.attempts, "max_attempts": job.max_attempts},
            "diagnoses": [job.error or "unknown error"],
            "hint": "this is the hub's fault, not necessarily yours; tell the hub admin the submission id",
        }


def count_by_status(db: Database) -> dict[str, int]:
    with db.read() as s:
        return dict(s.execute(select(Submission.status, func.count()).group_by(Submission.status)).all())
