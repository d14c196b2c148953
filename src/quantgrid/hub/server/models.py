"""The hub's tables (SQLAlchemy 2.x declarative). Alembic migrations in ``migrations/`` create them.

Any change here needs a new migration (``tests/unit/hub/test_db.py`` fails on drift).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on the way in and out (SQLite forgets the zone; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, dt.datetime: UTCDateTime}


# Submission lifecycle: queued -> validating -> accepted | rejected.
SUBMISSION_STATES = ("queued", "validating", "accepted", "rejected")
# Job lifecycle: queued -> running -> done | failed (a crashed run goes back to queued).
JOB_STATES = ("queued", "running", "done", "failed")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Token(Base):
    """An API token. Only its sha256 is stored; the token itself is shown once."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to tell tokens apart
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Blob(Base):
    """A file in the content-addressed store; the path is derived from the sha256."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (
        # The same zip pushed twice by one user is one submission.
        UniqueConstraint("user_id", "blob_sha256", name="uq_submission_user_blob"),
        Index("ix_submissions_user_created", "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    blob_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    # Full report (stage, check, numbers, diagnoses): owner and admins only.
    report: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # Rounded loss improvement (nats/token) shown publicly once accepted.
    public_score: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Adapter(Base):
    """An accepted submission; it joins every later release."""

    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), primary_key=True)  # = submission id
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    blob_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    score: Mapped[float | None] = mapped_column(Float, default=None)  # rounded loss improvement
    # Leave-one-out impact on the latest release (nats/token), filled in by the release job.
    impact: Mapped[float | None] = mapped_column(Float, default=None)
    impact_release: Mapped[str | None] = mapped_column(String(32), default=None)
    # Delta-W summary for near-duplicate checks and merging (written by the validator).
    delta_info: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    accepted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Vote(Base):
    __tablename__ = "votes"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), primary_key=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Release(Base):
    """A published (or attempted) weekly release; the release engine fills these rows."""

    __tablename__ = "releases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="building")
    path: Mapped[str | None] = mapped_column(Text, default=None)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    notes: Mapped[str | None] = mapped_column(Text, default=None)
    is_current: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Job(Base):
    """A unit of background work, claimed atomically by one worker at a time (see jobs.py)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "status", "kind", "priority", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # At most one live job per dedupe key (e.g. "validate:42").
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True, default=None)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    priority: Mapped[int] = mapped_column(Integer, default=100)  # lower runs first
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    # Epoch seconds (floats compare the same on every database).
    run_after: Mapped[float] = mapped_column(Float, default=0.0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class IdempotencyKey(Base):
    """(user, key) -> the submission it made and the sha256 of the bytes that made it."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RateBucket(Base):
    """A token bucket of the request rate limit, shared by every API process of the hub."""

    __tablename__ = "rate_buckets"

    key: Mapped[str] = mapped_column(String(96), primary_key=True)  # "user:<id>" or "ip:<address>"
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)  # epoch seconds of the last refill


class UploadSlot(Base):
    """An upload in progress. It counts toward its user's concurrent-upload cap and daily limit
    until the submission is recorded (or the upload fails, or the slot expires)."""

    __tablename__ = "upload_slots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    holder: Mapped[str] = mapped_column(String(128))  # host:pid of the API process reading the body
    expires_at: Mapped[float] = mapped_column(Float)  # epoch seconds


class HumanEvalItem(Base):
    """One question of a public benchmark with the base's and a candidate's answer, for maintainers
    to grade blind (see human_eval.py). ``candidate_first`` is the side the page shows the
    candidate on; it is drawn at random when the pair is stored and never leaves the server."""

    __tablename__ = "human_eval_items"
    __table_args__ = (
        # One answer pair per question per candidate: regenerating replaces nothing.
        UniqueConstraint("target_kind", "target", "question_id", name="uq_human_eval_item"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target_kind: Mapped[str] = mapped_column(String(16))  # "adapter" or "release"
    target: Mapped[str] = mapped_column(String(64))  # adapter id or release version
    benchmark: Mapped[str] = mapped_column(String(64))  # the public set the question comes from
    question_id: Mapped[str] = mapped_column(String(64))
    question: Mapped[str] = mapped_column(Text)
    context: Mapped[str | None] = mapped_column(Text, default=None)
    base_answer: Mapped[str] = mapped_column(Text)
    candidate_answer: Mapped[str] = mapped_column(Text)
    candidate_first: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class HumanEvalGrade(Base):
    """One maintainer's grades of one answer pair, already mapped back from A/B to base/candidate:
    ``scores = {"base": {...}, "candidate": {...}}``, each with the rubric's 1-5 scores and the
    risk flag (true/false)."""

    __tablename__ = "human_eval_grades"

    item_id: Mapped[int] = mapped_column(ForeignKey("human_eval_items.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    scores: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
