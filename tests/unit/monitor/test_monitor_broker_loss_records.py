"""The records that carry the monitor's tables over a broker loss (broker_loss.py): one per live row, keyed the way
faust's json key serializer writes them, on the partition the producer's default partitioner picks."""

from __future__ import annotations

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from vigil.monitor.broker_loss import changelog_records, default_partition

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("key", ["patient-risk", "r", "bench-3", "ünïcode"])
def test_default_partition_is_the_producers(key: str) -> None:
    partitions = list(range(4))
    assert default_partition(key, 4) == DefaultPartitioner()(key.encode(), partitions, partitions)


def test_one_record_per_live_row_on_its_partition() -> None:
    tables = [
        ("app-windows-changelog", {"a|1|stable|0": b"w1", "b|1|stable|0": b"w2"}),
        ("app-joins-changelog", {"a|1|stable|0|e1": b"j1", "gone": None}),  # type: ignore[dict-item]
    ]
    got = changelog_records(tables, lambda key: 0 if key.startswith("a|") else 1)
    assert got == {
        "app-windows-changelog": [(0, orjson.dumps("a|1|stable|0"), b"w1"), (1, orjson.dumps("b|1|stable|0"), b"w2")],
        "app-joins-changelog": [(0, orjson.dumps("a|1|stable|0|e1"), b"j1")],
    }
    assert orjson.loads(got["app-windows-changelog"][0][1]) == "a|1|stable|0"
