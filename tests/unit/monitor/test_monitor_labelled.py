"""LabelledSet: which predictions of a window have their label — the first label wins, across runs and merges."""

from __future__ import annotations

import numpy as np

from vigil.monitor.joins import LabelledSet, decode_labelled, encode_labelled


def test_first_label_wins_and_repeats_in_one_record_count_once() -> None:
    s = LabelledSet()
    first = np.array([5, 3, 3, 9], dtype=np.uint64)
    assert s.fresh(first).tolist() == [True, True, False, True]
    s.add(first)
    for i in range(40):  # many runs, merged log-structured style
        s.add(np.array([100 + i], dtype=np.uint64))
    assert s.size == 43
    assert s.fresh(np.array([9, 4, 120, 4], dtype=np.uint64)).tolist() == [False, True, False, False]


def test_labelled_value_round_trips() -> None:
    hashes = np.array([2**63 + 7, 1, 1], dtype=np.uint64)
    window, back = decode_labelled(encode_labelled("d|1|stable|0", hashes))
    assert window == "d|1|stable|0" and back.tolist() == [1, 2**63 + 7]
