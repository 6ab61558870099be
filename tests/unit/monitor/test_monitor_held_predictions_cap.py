"""The prediction hold's bounds (held_predictions.py): a batch is held whole or not at all, within both caps."""

from __future__ import annotations

from vigil.monitor.held_predictions import over_cap


def test_a_batch_fits_up_to_each_cap_exactly() -> None:
    assert over_cap(100, 900, 900, per_version=1000, total=5000) is None  # 1 000 of its version: at the cap
    assert over_cap(100, 0, 4900, per_version=1000, total=5000) is None  # 5 000 in all: at the cap


def test_the_version_cap_refuses_a_batch_that_would_cross_it() -> None:
    assert over_cap(101, 900, 900, per_version=1000, total=5000) == "version_cap"
    # another version's rows do not count against this version's cap
    assert over_cap(500, 0, 3000, per_version=1000, total=5000) is None


def test_the_total_cap_refuses_a_batch_of_a_version_with_room() -> None:
    assert over_cap(200, 0, 4900, per_version=1000, total=5000) == "total_cap"


def test_a_batch_larger_than_a_cap_is_never_held() -> None:
    assert over_cap(1001, 0, 0, per_version=1000, total=5000) == "version_cap"
    assert over_cap(600, 0, 0, per_version=1000, total=500) == "total_cap"
