"""Graphs the console draws: the audit's why chain and a model's lineage, as nodes and edges for ``graphs.js``.

Pure shaping, no I/O. ``static/graphs.js`` lays a graph out with dagre (from the npm registry, see package.json) and
draws it as SVG; every node names the list item (``item``) of the page's text rendering of the same graph, which holds
the node's evidence, so the picture and the accessible list can never disagree about what a node is.
"""

from __future__ import annotations

from typing import Any

#: Event type prefixes → the node's family (its colour in the drawing; the legend names them).
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("data.", "data"),
    ("dataset.", "data"),
    ("training.", "training"),
    ("job.", "training"),
    ("model.", "model"),
    ("deployment.", "deployment"),
    ("rollback.", "decision"),
    ("retrain.", "decision"),
    ("drift.", "decision"),
    ("slo.", "decision"),
    ("analysis.", "monitor"),
    ("monitor.", "monitor"),
)


def family(event_type: str) -> str:
    """The family of an event type: data, training, model, deployment, decision (a monitor's request) or monitor."""
    return next((f for prefix, f in _FAMILIES if event_type.startswith(prefix)), "other")


def why_item_id(seq: int) -> str:
    """The id of a why-chain entry's item in the page's text list."""
    return f"why-entry-{seq}"


def why_graph(chain: dict[str, Any]) -> dict[str, Any]:
    """The auditor's why chain as a graph: one node per audit entry, an edge from each cause to what it caused
    (``causation_id``), and a dashed edge where the walk followed a decision to the rollout or model version it
    named (the auditor's ``links``), so the drawing shows exactly the steps the auditor took."""
    entries = chain.get("chain") or []
    ids = {e["event_id"] for e in entries}
    nodes = [
        {
            "id": e["event_id"],
            "item": why_item_id(e["seq"]),
            "family": family(e["event_type"]),
            "title": e["event_type"],
            "lines": [e["subject"], f"entry {e['seq']} · {e['actor']}"],
            "label": f"{e['event_type']} on {e['subject']}, audit entry {e['seq']}, by {e['actor']}",
            "seq": e["seq"],
            "first": i == 0,
        }
        for i, e in enumerate(entries)
    ]
    edges = [
        {"source": e["causation_id"], "target": e["event_id"], "kind": "cause", "label": ""}
        for e in entries
        if e.get("causation_id") in ids
    ]
    edges += [
        {"source": link["to_event_id"], "target": link["from_event_id"], "kind": "link", "label": link["kind"]}
        for link in chain.get("links") or []
        if link["to_event_id"] in ids and link["from_event_id"] in ids
    ]
    return {"id": "why", "direction": "TB", "nodes": nodes, "edges": edges}


#: Lineage node kinds in the order the graph reads (left to right).
LINEAGE_KINDS = ("dataset", "job", "run", "model_version", "deployment")


def merge_lineage(graphs: list[dict[str, Any]]) -> dict[str, Any]:
    """The registry's lineage graphs of several versions as one: nodes by id, edges by (source, target, kind)."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: dict[tuple[str, str, str], dict[str, Any]] = {}
    for graph in graphs:
        for n in graph.get("nodes", []):
            nodes.setdefault(n["id"], n)
        for e in graph.get("edges", []):
            edges.setdefault((e["source"], e["target"], e["kind"]), e)
    ordered = sorted(
        nodes.values(),
        key=lambda n: (LINEAGE_KINDS.index(n["kind"]) if n["kind"] in LINEAGE_KINDS else 9, n["name"], n["id"]),
    )
    truncated = any(g.get("truncated") for g in graphs)
    return {"nodes": ordered, "edges": list(edges.values()), "truncated": truncated}


def lineage_item_id(node_id: str) -> str:
    """The id of a lineage node's item in the page's text list (node ids hold ``:`` and ``/``)."""
    return "lineage-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in node_id)


def _short(digest: Any) -> str:
    return str(digest).split(":")[-1][:12] if digest else ""


def _tail(identifier: Any) -> str:
    """The last 8 characters of an id: the ids are time-ordered (UUIDv7), so their heads are alike."""
    return str(identifier or "")[-8:]


def lineage_label(node: dict[str, Any]) -> tuple[str, list[str]]:
    """A lineage node's title and its second lines, in the words the model page uses."""
    facets = node.get("facets") or {}
    kind = node["kind"]
    if kind == "dataset":
        return f"{node['name']} v{node['version']}", [f"dataset · {_short(facets.get('content_digest'))}"]
    if kind == "job":
        job_id = facets.get("job_id") or node["name"].rsplit("/", 1)[-1]
        return f"job …{_tail(job_id)}", ["training job"]
    if kind == "run":
        return f"run …{_tail(node.get('runId'))}", [f"training run · {facets.get('outcome', '')}"]
    if kind == "model_version":
        return f"{node['name']} v{node['version']}", [f"model version · {_short(facets.get('artifact_digest'))}"]
    if kind == "deployment":
        serving = f"v{facets.get('version')} {facets.get('role', '')} {facets.get('status', '')}"
        return node["name"], [f"deployment · {serving}"]
    return node["name"], [kind]


def lineage_graph(merged: dict[str, Any]) -> dict[str, Any]:
    """A model's lineage as a graph read left to right: datasets and jobs → runs → versions → deployments."""
    nodes = []
    for n in merged["nodes"]:
        title, lines = lineage_label(n)
        kind = n["kind"].replace("_", " ")
        nodes.append(
            {
                "id": n["id"],
                "item": lineage_item_id(n["id"]),
                "family": {"model_version": "model", "run": "training", "job": "training", "dataset": "data"}.get(
                    n["kind"], n["kind"]
                ),
                "title": title,
                "lines": [line.strip() for line in lines],
                "label": f"{kind} {title}",
                "kind": n["kind"],
            }
        )
    versions = [n for n in merged["nodes"] if n["kind"] == "model_version"]
    newest = max(versions, key=lambda n: n["version"])["id"] if versions else None
    for node in nodes:
        node["first"] = node["id"] == newest  # selected on arrival: its evidence shows beside the graph
    edges = [{"source": e["source"], "target": e["target"], "kind": e["kind"], "label": ""} for e in merged["edges"]]
    return {"id": "lineage", "direction": "LR", "nodes": nodes, "edges": edges}


#: Facets a lineage node's evidence lists, in this order (others are left to the registry's API).
LINEAGE_FACETS = (
    "content_digest",
    "uri",
    "row_count",
    "producer",
    "outcome",
    "attempt",
    "code_version",
    "gate_policy_version",
    "reason",
    "decided_at",
    "artifact_digest",
    "artifact_format",
    "source",
    "created_at",
    "model",
    "version",
    "role",
    "status",
    "job_id",
)
#: Facets naming the audit entry that recorded the node (the evidence a reader can follow with "why?").
LINEAGE_EVENTS = ("registered_event_id", "decision_event_id", "source_event_id")


def lineage_items(merged: dict[str, Any]) -> list[dict[str, Any]]:
    """The text rendering of the lineage graph: each node with its facets, the audit events that recorded it, and
    the nodes it feeds."""
    titles = {n["id"]: lineage_label(n)[0] for n in merged["nodes"]}
    feeds: dict[str, list[str]] = {}
    for e in merged["edges"]:
        feeds.setdefault(e["source"], []).append(titles.get(e["target"], e["target"]))
    items = []
    for n in merged["nodes"]:
        facets = n.get("facets") or {}
        items.append(
            {
                "id": n["id"],
                "item": lineage_item_id(n["id"]),
                "kind": n["kind"].replace("_", " "),
                "title": titles[n["id"]],
                "run_id": n.get("runId"),
                "facts": [(k, facets[k]) for k in LINEAGE_FACETS if facets.get(k) not in (None, "")],
                "events": [(k.removesuffix("_event_id"), facets[k]) for k in LINEAGE_EVENTS if facets.get(k)],
                "feeds": feeds.get(n["id"], []),
            }
        )
    return items
