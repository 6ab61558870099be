"""UUIDv7 ids sort by time and never repeat; canonical JSON is one byte string per value."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.events import canonical_json, new_id, sha256_hex, uuid7
from vigil.events.ids import uuid7_time_ms

pytestmark = pytest.mark.unit


def test_uuid7_layout() -> None:
    u = uuid7()
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert abs(uuid7_time_ms(u) - time.time_ns() // 1_000_000) < 1000


def test_uuid7_is_strictly_increasing_and_unique_in_a_tight_loop() -> None:
    ids = [uuid7() for _ in range(50_000)]  # far more than 4096 per millisecond: exercises counter roll-over
    assert len(set(ids)) == len(ids)
    assert all(a < b for a, b in itertools.pairwise(ids))
    strings = [str(u) for u in ids]
    assert strings == sorted(strings), "the string form must sort like the value (lexicographic = time order)"


def test_new_id_is_the_canonical_string_of_a_uuid7() -> None:
    ids = [new_id() for _ in range(10_000)]  # several blocks of the random pool
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    assert ids == sorted(ids)
    assert len({i[-12:] for i in ids}) == len(ids), "the random tail must not repeat"


def test_uuid7_unique_across_threads() -> None:
    out: list[list[str]] = [[] for _ in range(4)]

    def work(i: int) -> None:
        out[i].extend(new_id() for _ in range(5_000))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [x for part in out for x in part]
    assert len(set(every)) == len(every)
    for part in out:
        assert part == sorted(part)


def test_uuid7_time_is_ordered_across_milliseconds() -> None:
    first = uuid7()
    time.sleep(0.003)
    second = uuid7()
    assert uuid7_time_ms(second) > uuid7_time_ms(first)
    assert second > first


def test_canonical_json_is_key_order_independent_and_compact() -> None:
    a = {"b": 1, "a": {"y": [1, 2, {"d": None, "c": True}], "x": "é"}}
    b = {"a": {"x": "é", "y": [1, 2, {"c": True, "d": None}]}, "b": 1}
    assert canonical_json(a) == canonical_json(b)
    assert canonical_json(a) == '{"a":{"x":"é","y":[1,2,{"c":true,"d":null}]},"b":1}'.encode()
    assert sha256_hex(canonical_json(a)) == sha256_hex(canonical_json(b))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=8))
def test_canonical_json_ignores_insertion_order(value: dict[str, object]) -> None:
    reversed_value = dict(reversed(list(value.items())))
    assert canonical_json(value) == canonical_json(reversed_value)
