"""The console's graph shaping without a browser: why-chain edges (causes and the auditor's links), the lineage of
several versions joined, and the ids that tie a drawn node to its item in the page's text list."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.console import graphs

pytestmark = pytest.mark.unit


def _entry(seq: int, event_type: str, cause: str | None = None) -> dict[str, Any]:
    return {
        "seq": seq,
        "event_id": f"e{seq}",
        "event_type": event_type,
        "subject": "deployment/d",
        "actor": "service:deployer",
        "causation_id": cause,
    }


def test_why_graph_draws_causes_and_links_and_nothing_outside_the_chain() -> None:
    chain = {
        "chain": [
            _entry(9, "deployment.rolled_back", "e8"),
            _entry(8, "rollback.requested", "e7"),
            _entry(7, "monitor.window"),
            _entry(3, "deployment.rollout.started", "e0"),  # its cause is not in the chain: no edge
            _entry(2, "data.updated"),
        ],
        "links": [
            {"kind": "rollout", "from_event_id": "e9", "to_event_id": "e3", "detail": "rollout r"},
            {"kind": "model_version", "from_event_id": "e9", "to_event_id": "e404", "detail": "m v2"},
        ],
    }
    graph = graphs.why_graph(chain)
    assert [n["seq"] for n in graph["nodes"]] == [9, 8, 7, 3, 2]
    assert [n["item"] for n in graph["nodes"]][:1] == ["why-entry-9"]
    assert [n["first"] for n in graph["nodes"]] == [True, False, False, False, False]
    assert [n["family"] for n in graph["nodes"]] == ["deployment", "decision", "monitor", "deployment", "data"]
    edges = {(e["source"], e["target"], e["kind"], e["label"]) for e in graph["edges"]}
    assert edges == {("e8", "e9", "cause", ""), ("e7", "e8", "cause", ""), ("e3", "e9", "link", "rollout")}


def _node(node_id: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "kind": kind, "name": node_id.split(":")[1].split("/")[0], "facets": {}, **extra}


def test_lineage_of_versions_is_joined_once_per_node_and_edge() -> None:
    shared = _node("dataset:p/v1", "dataset", version=1)
    deployment = _node("deployment:d", "deployment")
    v1 = _node("model:m/v1", "model_version", version=1)
    v2 = _node("model:m/v2", "model_version", version=2)
    first = {"nodes": [shared, v1, deployment], "edges": [{"source": "model:m/v1", "target": "deployment:d",
                                                           "kind": "deployed_as"}]}  # fmt: skip
    second = {"nodes": [shared, v2, deployment], "edges": [{"source": "model:m/v2", "target": "deployment:d",
                                                            "kind": "deployed_as"}]}  # fmt: skip
    merged = graphs.merge_lineage([first, second, first])
    assert [n["id"] for n in merged["nodes"]] == ["dataset:p/v1", "model:m/v1", "model:m/v2", "deployment:d"]
    assert len(merged["edges"]) == 2
    graph = graphs.lineage_graph(merged)
    assert [n["id"] for n in graph["nodes"] if n["first"]] == ["model:m/v2"]  # the newest version, selected
    assert graph["direction"] == "LR"


def test_lineage_labels_tell_time_ordered_ids_apart_and_item_ids_are_safe() -> None:
    run_id = "01a24e78-0000-7000-8000-00000000beef"
    run = {
        "id": f"run:m/{run_id}",
        "kind": "run",
        "name": "m/job/x",
        "runId": run_id,
        "facets": {"outcome": "registered"},
    }
    title, lines = graphs.lineage_label(run)
    assert title == "run …0000beef" and lines == ["training run · registered"]
    assert graphs.lineage_item_id("dataset:patients/v3") == "lineage-dataset-patients-v3"
