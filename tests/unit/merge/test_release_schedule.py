"""CalVer versions and the weekly schedule (pure functions, no torch)."""

from __future__ import annotations

import datetime as dt

import pytest

from quantgrid.errors import ConfigError
from quantgrid.merge.schedule import calver, last_slot, next_due, parse_schedule, version_key

UTC = dt.timezone.utc


def t(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_calver_is_iso_year_and_week():
    assert calver(t(2026, 11, 22, 3, 0)) == "2026.47"  # a Sunday: still ISO week 47
    assert calver(t(2026, 11, 23, 0, 0)) == "2026.48"  # Monday starts week 48
    assert calver(t(2027, 1, 1, 12)) == "2026.53"  # ISO year differs from the calendar year
    assert calver(t(2025, 12, 29, 9)) == "2026.01"
    # a time zone east of UTC is converted first: Monday 01:00 +02:00 is Sunday 23:00 UTC
    assert calver(dt.datetime(2026, 11, 23, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == "2026.47"


def test_rereleases_in_the_same_week_get_dot_n():
    now = t(2026, 11, 20)
    assert calver(now, ["2026.46"]) == "2026.47"
    assert calver(now, ["2026.47"]) == "2026.47.2"
    assert calver(now, ["2026.47", "2026.47.2"]) == "2026.47.3"
    assert calver(now, ["2026.47", "2026.47.3"]) == "2026.47.2"  # the first free N


def test_versions_sort_numerically_and_reject_junk():
    vs = ["2026.47.10", "2026.47", "2027.01", "2026.47.2", "2026.09"]
    assert sorted(vs, key=version_key) == ["2026.09", "2026.47", "2026.47.2", "2026.47.10", "2027.01"]
    for bad in ("2026.7", "../etc", "2026.47.", "v2026.47", ""):
        with pytest.raises(ConfigError, match="not a release version"):
            version_key(bad)


def test_parse_schedule():
    # the short weekday form is the same schedule as its cron expression
    assert parse_schedule("SUN 03:00") == parse_schedule("0 3 * * SUN") == parse_schedule("0 3 * * 0")
    assert parse_schedule("0 3 * * 7") == parse_schedule("0 3 * * SUN")  # cron: 7 is Sunday too
    assert parse_schedule("mon 23:59") == parse_schedule("59 23 * * MON")
    assert parse_schedule("Sunday 3:05 UTC") == parse_schedule("5 3 * * sun")
    s = parse_schedule("*/15 9-17 * * MON-FRI")
    assert s.minutes == {0, 15, 30, 45} and s.hours == set(range(9, 18)) and s.weekdays == {1, 2, 3, 4, 5}
    for bad in ("SUN", "03:00", "XYZ 03:00", "SUN 24:00", "SUN 03:60", "", "0 3 * *", "0 25 * * *",
                "0 3 * * FUNDAY", "0 3 32 * *", "0 3 * * 1/0"):
        with pytest.raises(ConfigError, match="release schedule"):
            parse_schedule(bad)


def test_off_and_default_schedule():
    from quantgrid.merge.schedule import DEFAULT_SCHEDULE, schedule_or_none

    assert DEFAULT_SCHEDULE == "0 3 * * SUN"
    for off in ("off", "OFF", "none", "", "  ", None):
        assert schedule_or_none(off) is None
    assert schedule_or_none(" 0 3 * * SUN ") == "0 3 * * SUN"
    with pytest.raises(ConfigError):
        schedule_or_none("someday")


def test_cron_slots():
    # first day of the month at 12:30, and cron's OR rule when day and weekday are both given
    assert last_slot("30 12 1 * *", t(2026, 12, 1, 12, 29)) == t(2026, 11, 1, 12, 30)
    assert next_due("30 12 1 * *", t(2026, 11, 1, 12, 30), t(2026, 11, 20)) == t(2026, 12, 1, 12, 30)
    assert last_slot("0 0 13 * FRI", t(2026, 11, 14, 1)) == t(2026, 11, 14 - 1, 0, 0)  # Fri 13 Nov
    assert last_slot("0 0 13 * FRI", t(2026, 11, 12, 1)) == t(2026, 11, 6, 0, 0)  # a Friday (not the 13th)
    with pytest.raises(ConfigError, match="never fires"):
        last_slot("0 0 30 2 *", t(2026, 11, 1))


def test_last_slot():
    assert last_slot("SUN 03:00", t(2026, 11, 22, 3, 0)) == t(2026, 11, 22, 3, 0)  # exactly on time
    assert last_slot("SUN 03:00", t(2026, 11, 22, 2, 59)) == t(2026, 11, 15, 3, 0)
    assert last_slot("SUN 03:00", t(2026, 11, 25, 12)) == t(2026, 11, 22, 3, 0)


def test_next_due_runs_on_schedule():
    # released at this week's slot: the next one is a week later
    assert next_due("SUN 03:00", t(2026, 11, 22, 3, 0, 5), t(2026, 11, 24)) == t(2026, 11, 29, 3, 0)
    # Saturday night, last week's release done: due tomorrow 03:00
    assert next_due("SUN 03:00", t(2026, 11, 15, 3, 1), t(2026, 11, 21, 23)) == t(2026, 11, 22, 3, 0)


def test_missed_release_is_due_at_once():
    # the hub was down over Sunday 03:00 and starts on Tuesday: the missed slot is due now
    now = t(2026, 11, 24, 9)
    due = next_due("SUN 03:00", t(2026, 11, 15, 3, 0), now)
    assert due == t(2026, 11, 22, 3, 0) and due <= now
    # a brand-new hub has never released: the latest slot is due
    assert next_due("SUN 03:00", None, now) <= now
    # down for three weeks: one catch-up release (the latest slot), not three
    assert next_due("SUN 03:00", t(2026, 11, 1, 3), now) == t(2026, 11, 22, 3, 0)


def test_release_version_is_the_one_parser_of_versions():
    from quantgrid.merge.schedule import VERSION_PATTERN, ReleaseVersion

    v = ReleaseVersion.parse("2026.47.2")
    assert (v.year, v.week, v.n, v.number) == (2026, 47, 2, 2) and str(v) == "2026.47.2"
    assert str(ReleaseVersion.parse("2026.09")) == "2026.09" and ReleaseVersion.parse("2026.09").number == 1
    # the bare first release of a week sorts before any .N of it, numerically
    vs = ["2026.10.10", "2026.10.1", "2026.9", "2026.10", "2026.10.2"]
    assert sorted(vs, key=lambda s: ReleaseVersion.parse(s, lenient=True)) == [
        "2026.9", "2026.10", "2026.10.1", "2026.10.2", "2026.10.10"]
    # strict (what the hub writes and its API accepts) versus lenient (hand-named directories)
    assert not ReleaseVersion.valid("2026.9") and ReleaseVersion.valid("2026.9", lenient=True)
    for bad in ("2026.7", "../etc", "2026.47.", "v2026.47", "", None):
        assert not ReleaseVersion.valid(bad)
    with pytest.raises(ConfigError, match="not a release version"):
        ReleaseVersion.parse("2026.470")
    import re

    assert re.match(VERSION_PATTERN, "2026.47.3") and not re.match(VERSION_PATTERN, "2026.4")
