"""The offset watch: every offset of a partition reaches the handlers in order, gaps are sought back, not skipped."""

from __future__ import annotations

import pytest

from vigil.monitor.offset_watch import OffsetWatch, Verdict

pytestmark = pytest.mark.unit

TP = ("vigil.labels", 0)


def test_records_in_order_are_handled_and_move_the_expectation() -> None:
    w = OffsetWatch()
    for offset in (7, 8, 9):
        assert w.admit(TP, offset, committed=7, now=0.0).verdict is Verdict.HANDLE
    assert w.expected(TP) == 10


def test_an_earlier_offset_is_a_redelivery_handled_without_moving_back() -> None:
    w = OffsetWatch()
    w.admit(TP, 3, committed=3, now=0.0)
    w.admit(TP, 4, committed=3, now=0.0)
    a = w.admit(TP, 3, committed=3, now=0.1)
    assert a.verdict is Verdict.REDELIVERED and a.handle
    assert w.expected(TP) == 5


def test_a_jump_is_skipped_and_sought_back_once_until_the_missing_record_comes() -> None:
    w = OffsetWatch(reseek_s=2.0)
    w.admit(TP, 0, committed=0, now=0.0)
    a = w.admit(TP, 2, committed=0, now=1.0)  # offset 1 was read but never delivered
    assert (a.verdict, a.handle, a.seek_to) == (Verdict.SKIP, False, 1)
    assert w.admit(TP, 3, committed=0, now=1.1).seek_to is None  # the seek is under way: no second seek
    assert w.admit(TP, 4, committed=0, now=3.5).seek_to == 1  # still missing after reseek_s: seek again
    for offset in (1, 2, 3, 4):  # the copies fetched after the seek
        assert w.admit(TP, offset, committed=0, now=4.0).verdict is Verdict.HANDLE
    assert w.seeks == 2 and w.gaps_accepted == 0


def test_the_first_record_after_a_rebalance_is_checked_against_the_committed_offset() -> None:
    w = OffsetWatch()
    w.admit(TP, 10, committed=10, now=0.0)
    w.reset()
    a = w.admit(TP, 13, committed=12, now=1.0)
    assert a.verdict is Verdict.SKIP and a.seek_to == 12


def test_without_a_committed_offset_the_first_record_sets_the_expectation() -> None:
    w = OffsetWatch()
    assert w.admit(TP, 5, committed=None, now=0.0).verdict is Verdict.HANDLE
    assert w.expected(TP) == 6


def test_a_gap_that_survives_max_seeks_is_accepted_and_reported() -> None:
    w = OffsetWatch(reseek_s=1.0, max_seeks=2)
    w.admit(TP, 0, committed=0, now=0.0)
    assert w.admit(TP, 5, committed=0, now=1.0).seek_to == 1
    assert w.admit(TP, 5, committed=0, now=2.5).seek_to == 1
    a = w.admit(TP, 5, committed=0, now=4.0)  # offsets 1..4 are not in the log: retention removed them
    assert a.verdict is Verdict.GAP_ACCEPTED and a.handle and a.gap == (1, 5)
    assert w.expected(TP) == 6 and w.gaps_accepted == 1


def test_a_stalled_partition_with_records_in_its_log_is_sought_back() -> None:
    w = OffsetWatch(stall_s=5.0)
    w.admit(TP, 0, committed=0, now=0.0)  # expected 1; offset 1 exists (highwater 2) but never arrives
    assert w.stalled({TP: 2}, now=3.0) == []  # not long enough
    assert w.stalled({TP: 2}, now=6.0) == [(TP, 1)]
    assert w.stalled({TP: 2}, now=7.0) == []  # one seek per stall_s
    assert w.stalled({TP: 2}, now=11.5) == [(TP, 1)]


def test_an_idle_or_busy_partition_is_not_stalled() -> None:
    w = OffsetWatch(stall_s=5.0)
    w.admit(TP, 0, committed=0, now=0.0)
    assert w.stalled({TP: 1}, now=60.0) == []  # idle: the log ends where the agent is
    for i in range(1, 20):
        w.admit(TP, i, committed=0, now=i * 1.0)  # busy: progress every second
        assert w.stalled({TP: 100}, now=i * 1.0 + 0.5) == []


def test_a_partition_known_only_from_its_committed_offset_is_watched_too() -> None:
    w = OffsetWatch(stall_s=5.0)
    w.track(TP, 4, now=0.0)  # after a rebalance, before any record: its only record (offset 4) is lost
    assert w.stalled({TP: 5}, now=6.0) == [(TP, 4)]
    w.track(TP, 9, now=6.0)  # known already: tracking again does not move it
    assert w.expected(TP) == 4
