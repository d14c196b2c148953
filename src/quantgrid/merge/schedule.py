"""Release versions and the weekly schedule: pure functions, no torch.

Versions are CalVer ``YYYY.WW`` (ISO year and ISO week, UTC); the Nth release in one
week is ``YYYY.WW.N`` (N >= 2). Schedules are a weekday and a UTC time, ``"SUN 03:00"``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from quantgrid.errors import ConfigError

UTC = dt.timezone.utc

# ------------------------------------------------------------------ versions

VERSION_RE = re.compile(r"^(\d{4})\.(\d{2})(?:\.(\d+))?$")


def version_key(version: str) -> tuple[int, int, int]:
    """Sortable key of ``YYYY.WW[.N]``; raises ConfigError for anything else."""
    m = VERSION_RE.match(version)
    if m is None:
        raise ConfigError(f"not a release version: {version!r}", hint="versions look like 2026.47 or 2026.47.2")
    return int(m[1]), int(m[2]), int(m[3] or 1)


def calver(now: dt.datetime, existing: Sequence[str] = ()) -> str:
    """``YYYY.WW`` of ``now``'s ISO week, or ``YYYY.WW.N`` if N-1 releases exist that week."""
    year, week, _ = now.astimezone(UTC).isocalendar()
    base = f"{year}.{week:02d}"
    taken = {version_key(v)[2] for v in existing if VERSION_RE.match(v) and v.split(".")[:2] == base.split(".")}
    n = 1
    while n in taken:
        n += 1
    return base if n == 1 else f"{base}.{n}"


# ------------------------------------------------------------------ schedule

_DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


def parse_schedule(schedule: str) -> tuple[int, dt.time]:
    """``"SUN 03:00"`` -> (weekday 6, 03:00), in UTC."""
    m = re.fullmatch(r"\s*([A-Za-z]{3})[a-z]*\s+(\d{1,2}):(\d{2})\s*(?:UTC)?\s*", schedule or "")
    day = m[1].upper() if m else None
    if m is None or day not in _DAYS or int(m[2]) > 23 or int(m[3]) > 59:
        raise ConfigError(f"not a release schedule: {schedule!r}",
                          hint='use a weekday and a UTC time, e.g. --release-schedule "SUN 03:00"')
    return _DAYS.index(day), dt.time(int(m[2]), int(m[3]))


def last_slot(schedule: str, now: dt.datetime) -> dt.datetime:
    """The latest scheduled time at or before ``now``."""
    weekday, at = parse_schedule(schedule)
    now = now.astimezone(UTC)
    slot = dt.datetime.combine(now.date(), at, tzinfo=UTC) - dt.timedelta(days=(now.weekday() - weekday) % 7)
    return slot if slot <= now else slot - dt.timedelta(days=7)


def next_due(schedule: str, last_release_time: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    """When the next scheduled release should run.

    If the latest slot passed without a release since (the hub was down, or this is a new
    hub), that slot is due now: the returned time is <= ``now`` and the caller runs it
    at once. Otherwise it is the next slot after ``now``.
    """
    slot = last_slot(schedule, now)
    if last_release_time is None or last_release_time.astimezone(UTC) < slot:
        return slot
    return slot + dt.timedelta(days=7)
