"""The leaderboard counts distinct accepted contributions, not resubmissions of one's own work."""

from __future__ import annotations

from quantgrid.hub.server.leaderboard import distinct_counts


def test_own_near_duplicates_count_once_others_do_not_matter():
    rows = [
        (1, 10, {"cosines": {}}),                       # alice's first adapter
        (2, 20, {"cosines": {"1": 0.99}}),              # bob, close to alice's: still his (validation judged it)
        (3, 10, {"cosines": {"1": 0.93, "2": 0.1}}),    # alice again, a near-duplicate of her own #1
        (4, 10, {"cosines": {"1": 0.2, "2": 0.1, "3": 0.25, "release:2026.47": 0.99}}),  # alice, new work
        (5, 30, None),                                  # accepted before similarities were recorded
    ]
    assert distinct_counts(rows, threshold=0.7) == {10: 2, 20: 1, 30: 1}
    assert distinct_counts(rows, threshold=0.95) == {10: 3, 20: 1, 30: 1}
