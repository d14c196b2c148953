"""Release versions and the weekly schedule: pure functions, no torch.

Versions are CalVer ``YYYY.WW`` (ISO year and ISO week, UTC); the Nth release in one
week is ``YYYY.WW.N`` (N >= 2). Schedules are standard 5-field cron expressions in UTC (``"0 3 * * SUN"``, the default:
weekly, Sunday 03:00) or the short form ``"SUN 03:00"``; ``"off"`` turns them off.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from quantgrid.errors import ConfigError

UTC = dt.timezone.utc

# ------------------------------------------------------------------ versions

VERSION_PATTERN = r"^(\d{4})\.(\d{2})(?:\.(\d+))?$"
VERSION_RE = re.compile(VERSION_PATTERN)
# Also a one-digit week ("2026.9"): release directories a person named by hand, which
# `quantgrid serve --release DIR` has always accepted. The hub only ever writes two digits.
_LENIENT_RE = re.compile(r"^(\d{4})\.(\d{1,2})(?:\.(\d+))?$")
_VERSION_HINT = "versions look like 2026.47 or 2026.47.2"


@functools.total_ordering
@dataclass(frozen=True)
class ReleaseVersion:
    """A release version ``YYYY.WW[.N]``: the one parser and ordering of release versions.

    ``n`` is the N of the Nth release of a week (None for the week's first, which has no
    suffix). Versions order numerically, and the bare first release sorts before any
    ``.N`` of the same week (so ``2026.10`` < ``2026.10.1`` < ``2026.10.2`` < ``2026.10.10``).
    """

    year: int
    week: int
    n: int | None = None

    @classmethod
    def parse(cls, text: str, *, lenient: bool = False) -> ReleaseVersion:
        """Parse ``text``; ConfigError for anything else. ``lenient`` also takes a one-digit week."""
        m = (_LENIENT_RE if lenient else VERSION_RE).match(text) if isinstance(text, str) else None
        if m is None:
            raise ConfigError(f"not a release version: {text!r}", hint=_VERSION_HINT)
        return cls(int(m[1]), int(m[2]), int(m[3]) if m[3] is not None else None)

    @classmethod
    def valid(cls, text: str, *, lenient: bool = False) -> bool:
        return isinstance(text, str) and (_LENIENT_RE if lenient else VERSION_RE).match(text) is not None

    @property
    def number(self) -> int:
        """Which release of its week this is (1 for the bare ``YYYY.WW``)."""
        return self.n if self.n is not None else 1

    def key(self) -> tuple[int, int, int, int]:
        return self.year, self.week, self.number, int(self.n is not None)

    def __lt__(self, other: ReleaseVersion) -> bool:
        if not isinstance(other, ReleaseVersion):
            return NotImplemented
        return self.key() < other.key()

    def __str__(self) -> str:
        return f"{self.year}.{self.week:02d}" + (f".{self.n}" if self.n is not None else "")


def version_key(version: str) -> tuple[int, int, int]:
    """Sortable key of ``YYYY.WW[.N]``; raises ConfigError for anything else."""
    v = ReleaseVersion.parse(version)
    return v.year, v.week, v.number


def calver(now: dt.datetime, existing: Sequence[str] = ()) -> str:
    """``YYYY.WW`` of ``now``'s ISO week, or ``YYYY.WW.N`` if N-1 releases exist that week."""
    year, week, _ = now.astimezone(UTC).isocalendar()
    taken = {v.number for v in map(_parsed, existing) if v is not None and (v.year, v.week) == (year, week)}
    n = 1
    while n in taken:
        n += 1
    return str(ReleaseVersion(year, week, n if n > 1 else None))


def _parsed(text: str) -> ReleaseVersion | None:
    return ReleaseVersion.parse(text) if ReleaseVersion.valid(text) else None


# ------------------------------------------------------------------ schedule

DEFAULT_SCHEDULE = "0 3 * * SUN"  # weekly, Sunday 03:00 UTC
OFF = frozenset({"off", "none", "never", "disabled", "false", "0"})

_DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_CRON_DAYS = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
_MONTHS = {m: i + 1 for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT",
                                           "NOV", "DEC"))}
_HINT = ('use a standard 5-field cron expression in UTC, e.g. --release-schedule "0 3 * * SUN", or a weekday '
         'and a time, e.g. "SUN 03:00"; "off" turns scheduled releases off')


@dataclass(frozen=True)
class Schedule:
    """A cron schedule in UTC: the sets of minutes, hours, days of month, months and
    weekdays (cron numbering, 0 = Sunday) it fires on.

    Hand-written rather than a dependency: five small sets and cron's one quirk (when both
    the day of month and the weekday are restricted, either one matching is enough).
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_restricted: bool
    weekday_restricted: bool

    def matches_day(self, d: dt.date) -> bool:
        if d.month not in self.months:
            return False
        dom, dow = d.day in self.days, (d.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return dom or dow
        return dom and dow

    def last_at_or_before(self, now: dt.datetime) -> dt.datetime:
        now = now.astimezone(UTC)
        day = now.date()
        times = sorted(((h, m) for h in self.hours for m in self.minutes), reverse=True)
        for back in range(366 * 8 + 1):  # every day-of-month/weekday combination recurs within 8 years
            d = day - dt.timedelta(days=back)
            if not self.matches_day(d):
                continue
            for h, m in times:
                slot = dt.datetime(d.year, d.month, d.day, h, m, tzinfo=UTC)
                if slot <= now:
                    return slot
        raise ConfigError("the release schedule never fires (e.g. February 30)", hint=_HINT)

    def next_after(self, t: dt.datetime) -> dt.datetime:
        t = t.astimezone(UTC)
        times = sorted((h, m) for h in self.hours for m in self.minutes)
        for ahead in range(366 * 8 + 1):
            d = t.date() + dt.timedelta(days=ahead)
            if not self.matches_day(d):
                continue
            for h, m in times:
                slot = dt.datetime(d.year, d.month, d.day, h, m, tzinfo=UTC)
                if slot > t:
                    return slot
        raise ConfigError("the release schedule never fires (e.g. February 30)", hint=_HINT)


def _field(text: str, lo: int, hi: int, names: dict[str, int] | None, what: str) -> tuple[frozenset[int], bool]:
    """One cron field: ``*``, ``N``, ``A-B``, ``*/S``, ``A-B/S``, lists of those, names (SUN, JAN)."""
    def value(tok: str) -> int:
        key = tok.upper()[:3]
        if names and key in names and tok.isalpha():
            return names[key]
        if not tok.isdigit():
            raise ValueError(tok)
        return int(tok)

    out: set[int] = set()
    for part in text.split(","):
        rng, _, step_s = part.partition("/")
        step = int(step_s) if step_s.isdigit() and int(step_s) > 0 else (1 if not step_s else None)
        if step is None:
            raise ConfigError(f"bad step {step_s!r} in the {what} field of the release schedule", hint=_HINT)
        try:
            if rng == "*":
                a, b = lo, hi
            elif "-" in rng:
                a, b = (value(x) for x in rng.split("-", 1))
            else:
                a = b = value(rng)
                if step_s:
                    b = hi
        except ValueError:
            raise ConfigError(f"bad {what} {rng!r} in the release schedule", hint=_HINT) from None
        if not (lo <= a <= hi and lo <= b <= hi and a <= b):
            raise ConfigError(f"{what} {rng!r} is out of range {lo}-{hi} in the release schedule", hint=_HINT)
        out.update(x % 7 if what == "weekday" else x for x in range(a, b + 1, step))  # cron: 7 is Sunday too
    return frozenset(out), text != "*"


def parse_schedule(schedule: str) -> Schedule:
    """A cron expression (``"0 3 * * SUN"``) or a weekday and a time (``"SUN 03:00"``), UTC."""
    text = (schedule or "").strip()
    m = re.fullmatch(r"([A-Za-z]{3})[a-z]*\s+(\d{1,2}):(\d{2})\s*(?:UTC)?", text)
    if m is not None:
        day = m[1].upper()
        if day not in _DAYS or int(m[2]) > 23 or int(m[3]) > 59:
            raise ConfigError(f"not a release schedule: {schedule!r}", hint=_HINT)
        text = f"{int(m[3])} {int(m[2])} * * {day}"
    parts = text.split()
    if len(parts) != 5:
        raise ConfigError(f"not a release schedule: {schedule!r}", hint=_HINT)
    minutes, _ = _field(parts[0], 0, 59, None, "minute")
    hours, _ = _field(parts[1], 0, 23, None, "hour")
    days, day_r = _field(parts[2], 1, 31, None, "day of month")
    months, _ = _field(parts[3], 1, 12, _MONTHS, "month")
    weekdays, wd_r = _field(parts[4], 0, 7, _CRON_DAYS, "weekday")
    return Schedule(minutes, hours, days, months, weekdays, day_r, wd_r)


def schedule_or_none(schedule: str | None) -> str | None:
    """The schedule text, or None when releases are off ("off", "none", empty); validates it."""
    if schedule is None or schedule.strip().lower() in OFF or not schedule.strip():
        return None
    parse_schedule(schedule)
    return schedule.strip()


def last_slot(schedule: str, now: dt.datetime) -> dt.datetime:
    """The latest scheduled time at or before ``now``."""
    return parse_schedule(schedule).last_at_or_before(now)


def next_due(schedule: str, last_release_time: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    """When the next scheduled release should run.

    If the latest slot passed without a release since (the hub was down, or this is a new
    hub), that slot is due now: the returned time is <= ``now`` and the caller runs it
    at once. Otherwise it is the next slot after ``now``.
    """
    sched = parse_schedule(schedule)
    slot = sched.last_at_or_before(now)
    if last_release_time is None or last_release_time.astimezone(UTC) < slot:
        return slot
    return sched.next_after(now)
