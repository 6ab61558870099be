"""Lineage graphs from the registry's own tables: dataset versions → training runs (of jobs) → model versions →
deployments.

Field names follow OpenLineage where it has them: datasets and jobs are named by ``namespace`` + ``name``, a run
by ``runId`` and the ``job`` it belongs to. Model versions and deployments use the same ``namespace``/``name`` pair.
Upstream walks follow edges backwards from the root, downstream walks forwards; a walk never turns around, so the
graph of a model version does not pull in every other consumer of its training data. ``max_nodes`` bounds the
answer (``truncated`` says when it cut).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, Field

from vigil.registry import store

Direction = Literal["upstream", "downstream", "both"]
NodeKind = Literal["dataset", "job", "run", "model_version", "deployment"]
EdgeKind = Literal["input", "output", "run_of", "deployed_as"]


class JobRef(BaseModel):
    namespace: str
    name: str


class LineageNode(BaseModel):
    id: str = Field(description="stable node id within the graph, e.g. dataset:patients/v3")
    kind: NodeKind
    namespace: str
    name: str
    version: int | None = None
    runId: str | None = None  # OpenLineage's field name
    job: JobRef | None = None
    facets: dict[str, Any] = Field(default_factory=dict)


class LineageEdge(BaseModel):
    source: str
    target: str
    kind: EdgeKind


class LineageGraph(BaseModel):
    root: str
    direction: Direction
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    truncated: bool


def dataset_id(name: str, version: int) -> str:
    return f"dataset:{name}/v{version}"


def model_id(name: str, version: int) -> str:
    return f"model:{name}/v{version}"


@dataclass
class _Builder:
    conn: asyncpg.Connection
    namespace: str
    max_nodes: int
    nodes: dict[str, LineageNode] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], LineageEdge] = field(default_factory=dict)
    truncated: bool = False

    def add(self, node: LineageNode) -> bool:
        """Add a node; False if it was there already or the graph is full."""
        if node.id in self.nodes:
            return False
        if len(self.nodes) >= self.max_nodes:
            self.truncated = True
            return False
        self.nodes[node.id] = node
        return True

    def link(self, source: str, target: str, kind: EdgeKind) -> None:
        if source in self.nodes and target in self.nodes:
            self.edges[(source, target, kind)] = LineageEdge(source=source, target=target, kind=kind)

    # -- node constructors ----------------------------------------------------------------------------------

    async def dataset_node(self, ref: dict[str, Any]) -> LineageNode:
        found = await store.get_version(self.conn, ref["dataset"], ref["version"])
        facets: dict[str, Any] = {"registered": found is not None}
        if found is not None:
            facets |= {
                "content_digest": found.content_digest,
                "uri": found.uri,
                "row_count": found.row_count,
                "producer": found.producer,
                "schema": found.columns,
                "registered_event_id": found.registered_event_id,
            }
        else:
            facets |= {k: ref[k] for k in ("content_digest", "uri") if k in ref}
        return LineageNode(
            id=dataset_id(ref["dataset"], ref["version"]),
            kind="dataset",
            namespace=self.namespace,
            name=ref["dataset"],
            version=ref["version"],
            facets=facets,
        )

    def job_ref(self, candidate: dict[str, Any]) -> JobRef:
        job = candidate["job_id"] or candidate["run_id"]
        return JobRef(namespace=self.namespace, name=f"{candidate['model']}/job/{job}")

    def run_node(self, candidate: dict[str, Any]) -> LineageNode:
        job = self.job_ref(candidate)
        return LineageNode(
            id=f"run:{candidate['model']}/{candidate['run_id']}",
            kind="run",
            namespace=job.namespace,
            name=job.name,
            runId=candidate["run_id"],
            job=job,
            facets={
                "outcome": candidate["outcome"],
                "attempt": candidate["attempt"],
                "code_version": candidate["code_version"],
                "gate_policy_version": candidate["gate_policy_version"],
                "reason": candidate["reason"],
                "decision_event_id": candidate["decision_event_id"],
                "source_event_id": candidate["source_event_id"],
                "decided_at": candidate["decided_at"].isoformat(),
            },
        )

    def job_node(self, candidate: dict[str, Any]) -> LineageNode:
        job = self.job_ref(candidate)
        return LineageNode(
            id=f"job:{job.name}",
            kind="job",
            namespace=job.namespace,
            name=job.name,
            facets={"job_id": candidate["job_id"]},
        )

    def model_node(self, row: dict[str, Any]) -> LineageNode:
        return LineageNode(
            id=model_id(row["model"], row["version"]),
            kind="model_version",
            namespace=self.namespace,
            name=row["model"],
            version=row["version"],
            facets={
                "source": row["source"],
                "artifact_digest": row["artifact_digest"],
                "artifact_uri": row["artifact_uri"],
                "artifact_format": row["artifact_format"],
                "registered_event_id": row["registered_event_id"],
                "created_at": row["created_at"].isoformat(),
            },
        )

    def deployment_node(self, row: dict[str, Any]) -> LineageNode:
        return LineageNode(
            id=f"deployment:{row['deployment']}",
            kind="deployment",
            namespace=self.namespace,
            name=row["deployment"],
            facets={"model": row["model"], "version": row["version"], "role": row["role"], "status": row["status"]},
        )

    # -- walks -------------------------------------------------------------------------------------------------

    async def upstream_of_model(self, row: dict[str, Any]) -> None:
        me = model_id(row["model"], row["version"])
        if row["source"] == "training":
            for candidate in await store.candidates_of_version(self.conn, row["model"], row["version"]):
                run = self.run_node(candidate)
                self.add(run)
                self.link(run.id, me, "output")
                job = self.job_node(candidate)
                self.add(job)
                self.link(job.id, run.id, "run_of")
                for ref in candidate["datasets"]:
                    node = await self.dataset_node(ref)
                    self.add(node)
                    self.link(node.id, run.id, "input")
        else:
            for ref in row["datasets"]:
                node = await self.dataset_node(ref)
                self.add(node)
                self.link(node.id, me, "input")

    async def downstream_of_dataset(self, name: str, version: int) -> None:
        me = dataset_id(name, version)
        models: deque[dict[str, Any]] = deque()
        for candidate in await store.candidates_using_dataset(self.conn, name, version, limit=self.max_nodes):
            run = self.run_node(candidate)
            if not self.add(run) and run.id not in self.nodes:
                break
            self.link(me, run.id, "input")
            job = self.job_node(candidate)
            self.add(job)
            self.link(job.id, run.id, "run_of")
            if candidate["version"] is not None:
                row = await store.get_model_version(self.conn, candidate["model"], candidate["version"])
                if row is not None:
                    node = self.model_node(row)
                    self.add(node)
                    self.link(run.id, node.id, "output")
                    models.append(row)
        for row in await store.manual_versions_using_dataset(self.conn, name, version, limit=self.max_nodes):
            node = self.model_node(row)
            self.add(node)
            self.link(me, node.id, "input")
            models.append(row)
        for row in models:
            await self.downstream_of_model(row)

    async def downstream_of_model(self, row: dict[str, Any]) -> None:
        me = model_id(row["model"], row["version"])
        for deployment in await store.deployments_of_version(self.conn, row["model"], row["version"]):
            node = self.deployment_node(deployment)
            self.add(node)
            self.link(me, node.id, "deployed_as")

    def graph(self, root: str, direction: Direction) -> LineageGraph:
        return LineageGraph(
            root=root,
            direction=direction,
            nodes=list(self.nodes.values()),
            edges=list(self.edges.values()),
            truncated=self.truncated,
        )


async def model_version_lineage(
    conn: asyncpg.Connection, model: str, version: int, *, direction: Direction, namespace: str, max_nodes: int
) -> LineageGraph | None:
    """The lineage graph around one model version, or None if it does not exist."""
    row = await store.get_model_version(conn, model, version)
    if row is None:
        return None
    builder = _Builder(conn, namespace, max_nodes)
    builder.add(builder.model_node(row))
    if direction in ("upstream", "both"):
        await builder.upstream_of_model(row)
    if direction in ("downstream", "both"):
        await builder.downstream_of_model(row)
    return builder.graph(model_id(model, version), direction)


async def dataset_version_lineage(
    conn: asyncpg.Connection, dataset: str, version: int, *, direction: Direction, namespace: str, max_nodes: int
) -> LineageGraph | None:
    """The lineage graph around one dataset version, or None if the registry does not know it.

    Upstream of a dataset version is its producer (in the node's facets): the registry knows no further.
    """
    if await store.get_version(conn, dataset, version) is None:
        return None
    builder = _Builder(conn, namespace, max_nodes)
    builder.add(await builder.dataset_node({"dataset": dataset, "version": version}))
    if direction in ("downstream", "both"):
        await builder.downstream_of_dataset(dataset, version)
    return builder.graph(dataset_id(dataset, version), direction)
