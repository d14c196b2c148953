"""The contributor leaderboard and upvotes.

Ranking formula (lexicographic, each key descending):

    key(contributor) = ( accepted,   # number of the contributor's *distinct* accepted adapters: one
                                     #   whose delta-W cosine (measured at validation) with an
                                     #   earlier adapter of the same contributor reaches the hub's
                                     #   duplicate_cosine counts once with it
                         impact,     # Σ over those adapters of leave-one-out impact, nats/token:
                                     #   loss(latest release without the adapter) − loss(with it);
                                     #   0 until a release has measured it
                         upvotes )   # Σ over those adapters of other users' upvotes

Ties go to whoever had an adapter accepted first, then to the name (so the order is total
and stable). Contributors with submissions but nothing accepted yet are listed below, with
zeros. Impact is rounded to the hub's ``score_decimals`` before ranking, so noise below the
published precision cannot reorder contributors.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from quantgrid.errors import Conflict, NotFound, PermissionDenied
from quantgrid.hub.schemas import AdapterOut, Leaderboard, LeaderboardEntry, VoteOut
from quantgrid.hub.server.auth import Principal
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.models import Adapter, Submission, User, Vote
from quantgrid.hub.settings import HubSettings

FORMULA = ("rank by distinct accepted adapters (near-duplicates of one's own count once), then impact (sum of leave-one-out loss improvement of the latest "
           "release, nats/token), then upvotes; ties: earliest acceptance, then name")

_FAR_FUTURE = dt.datetime.max.replace(tzinfo=dt.timezone.utc)


def leaderboard(db: Database, settings: HubSettings, limit: int = 100) -> Leaderboard:
    with db.read() as s:
        names = dict(s.execute(select(User.id, User.name)).all())
        subs = dict(s.execute(select(Submission.user_id, func.count()).group_by(Submission.user_id)).all())
        acc = {uid: (n, imp or 0.0, first) for uid, n, imp, first in s.execute(
            select(Adapter.user_id, func.count(), func.sum(Adapter.impact), func.min(Adapter.accepted_at))
            .group_by(Adapter.user_id)).all()}
        distinct = distinct_counts(s.execute(select(Adapter.id, Adapter.user_id, Adapter.delta_info)).all(),
                                   settings.duplicate_cosine)
        acc = {uid: (distinct.get(uid, n), imp, first) for uid, (n, imp, first) in acc.items()}
        votes = dict(s.execute(
            select(Adapter.user_id, func.count()).join(Vote, Vote.adapter_id == Adapter.id).group_by(Adapter.user_id)
        ).all())
    rows = []
    for uid in set(subs) | set(acc):
        n, impact, first = acc.get(uid, (0, 0.0, None))
        if first is not None and first.tzinfo is None:
            first = first.replace(tzinfo=dt.timezone.utc)
        impact = settings.round_score(impact) or 0.0
        rows.append((n, impact, votes.get(uid, 0), first or _FAR_FUTURE, names.get(uid, "?"), subs.get(uid, 0)))
    rows.sort(key=lambda r: (-r[0], -r[1], -r[2], r[3], r[4]))
    entries = [LeaderboardEntry(rank=i + 1, contributor=name, accepted=n, impact=impact, upvotes=up, submissions=ns)
               for i, (n, impact, up, _first, name, ns) in enumerate(rows[:limit])]
    return Leaderboard(formula=FORMULA, entries=entries)


def distinct_counts(rows, threshold: float) -> dict[int, int]:
    """Per user: accepted adapters that are not near-duplicates of an earlier one of theirs.

    ``rows`` are ``(adapter id, user id, delta_info)``; ``delta_info["cosines"]`` holds the
    delta-W cosines validation measured against every adapter accepted before it.
    """
    owner = {aid: uid for aid, uid, _ in rows}
    out: dict[int, int] = {}
    for _aid, uid, info in sorted(rows, key=lambda r: r[0]):
        cosines = (info or {}).get("cosines") or {}
        repeat = any(owner.get(int(other)) == uid and cos >= threshold
                     for other, cos in cosines.items() if str(other).isdigit())
        out[uid] = out.get(uid, 0) + (0 if repeat else 1)
    return out


def list_adapters(db: Database, limit: int = 100, owner: str | None = None) -> list[AdapterOut]:
    """Accepted adapters, newest first; only ``owner``'s when given."""
    with db.read() as s:
        up = select(Vote.adapter_id, func.count().label("n")).group_by(Vote.adapter_id).subquery()
        q = (select(Adapter, User.name, func.coalesce(up.c.n, 0))
             .join(User, User.id == Adapter.user_id)
             .outerjoin(up, up.c.adapter_id == Adapter.id))
        if owner is not None:
            q = q.where(User.name == owner)
        rows = s.execute(q.order_by(Adapter.id.desc()).limit(limit)).all()
    return [AdapterOut(id=a.id, owner=name, score=a.score, impact=a.impact, upvotes=n, accepted_at=a.accepted_at)
            for a, name, n in rows]


def upvote(db: Database, user: Principal, adapter_id: int) -> VoteOut:
    """One vote per user per adapter; never for your own adapter."""
    try:
        with db.write() as s:
            adapter = s.get(Adapter, adapter_id)
            if adapter is None:
                raise NotFound(f"no accepted adapter {adapter_id}",
                               hint="only accepted adapters can be upvoted; see `quantgrid leaderboard`")
            if adapter.user_id == user.id:
                raise PermissionDenied("you cannot upvote your own adapter")
            s.add(Vote(user_id=user.id, adapter_id=adapter_id))
            s.flush()
            n = s.scalar(select(func.count()).select_from(Vote).where(Vote.adapter_id == adapter_id))
    except IntegrityError:
        raise Conflict(f"you already upvoted adapter {adapter_id}") from None
    return VoteOut(adapter_id=adapter_id, upvotes=n)
