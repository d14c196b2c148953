"""Limits every API process of a hub enforces together, kept in the hub's database.

* **Request rate**: a token bucket per client (``user:<id>``, or ``ip:<address>`` when
  anonymous): ``burst`` requests at once, refilled at ``per_minute``/60 per second. The bucket
  is a row of ``rate_buckets``, updated by one atomic upsert, so two hub processes behind one
  load balancer share one limit instead of each allowing its own.
* **Uploads in flight**: before the hub reads an upload's body it takes an ``upload_slots``
  row for the user. A user may hold ``max_concurrent_uploads_per_user`` slots, and live slots
  count toward the daily submission limit, so a burst of parallel pushes is refused at the
  headers (no bytes read, no blob stored) instead of after the upload. The slot is released
  with the submission's own transaction, or when the upload fails; a slot whose process died
  expires (``UPLOAD_SLOT_SECONDS``) or, on the same host, is freed at once.
"""

from __future__ import annotations

import math
import os
import socket
import time

from sqlalchemy import case, delete, func, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from quantgrid.errors import RateLimited
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.hostproc import pid_alive
from quantgrid.hub.server.models import RateBucket, UploadSlot, User

UPLOAD_SLOT_SECONDS = 3600.0  # an upload taking longer than this loses its slot


class RateLimiter:
    """The request-rate token buckets, in the database ``db``.

    One statement per request (an upsert that refills, charges and returns the balance), in a
    non-durable transaction: buckets are cheap to lose. A refused request is charged too, down
    to at most one burst of debt, so a client that keeps hammering waits until it stops.
    """

    def __init__(self, db: Database, per_minute: int, burst: int):
        self.db = db
        self.rate = per_minute / 60.0
        self.burst = float(burst)

    def _statement(self, key: str, cost: float, now: float):
        insert = (sqlite_insert if self.db.is_sqlite else pg_insert)(RateBucket)
        t = RateBucket.__table__.c
        refill = t.tokens + (literal(now) - t.updated_at) * self.rate
        refill = case((refill > self.burst, self.burst), else_=refill)
        charged = case((refill - cost < -self.burst, -self.burst), else_=refill - cost)
        stmt = insert.values(key=key, tokens=self.burst - cost, updated_at=now)
        return stmt.on_conflict_do_update(index_elements=[t.key], set_={"tokens": charged, "updated_at": now}
                                          ).returning(t.tokens)

    def hit(self, key: str, cost: float = 1.0) -> None:
        """Spend ``cost`` tokens of ``key``'s bucket or raise RateLimited with a Retry-After."""
        with self.db.write(durable=False) as s:
            left = s.execute(self._statement(key, cost, time.time())).scalar_one()
        if left < 0:
            wait = max(1, math.ceil(-left / self.rate))
            raise RateLimited(f"too many requests; try again in {wait} s",
                              hint="slow down, or ask the hub admin to raise rate_limit_per_minute",
                              retry_after=wait)


# ---- upload slots ----


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def lock_user(session: Session, user_id: int) -> None:
    """Serialise one user's limit checks across processes (SQLite's write lock does this already)."""
    session.execute(select(User.id).where(User.id == user_id).with_for_update())


def live_slots(session: Session, user_id: int, now: float) -> int:
    _free_dead(session, user_id, now)
    return session.scalar(select(func.count()).select_from(UploadSlot)
                          .where(UploadSlot.user_id == user_id, UploadSlot.expires_at > now)) or 0


def _free_dead(session: Session, user_id: int, now: float) -> None:
    host = socket.gethostname()
    rows = session.execute(select(UploadSlot.id, UploadSlot.holder, UploadSlot.expires_at)
                           .where(UploadSlot.user_id == user_id)).all()
    gone = [i for i, holder, exp in rows
            if exp <= now or (holder.startswith(f"{host}:") and not pid_alive(holder.split(":")[1]))]
    if gone:
        session.execute(delete(UploadSlot).where(UploadSlot.id.in_(gone)))


def release_slot(session: Session, slot_id: int | None) -> None:
    if slot_id is not None:
        session.execute(delete(UploadSlot).where(UploadSlot.id == slot_id))


def free_slot(db: Database, slot_id: int | None) -> None:
    """Release a slot in its own transaction (an upload that failed)."""
    if slot_id is not None:
        with db.write() as s:
            release_slot(s, slot_id)
