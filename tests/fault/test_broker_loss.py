"""The embedded broker keeps its log in memory. Kill it, start it empty: the outbox republishes what was lost and
inboxes absorb what was not — nothing missing, nothing doubled."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from support.services import Tokens, eventually, make_tokens, running, settings_for
from support.testinfra import KafkaUnderTest
from vigil.auditor.app import make_app as make_auditor
from vigil.auditor.settings import AuditorSettings
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings

pytestmark = pytest.mark.fault


def body(n: int) -> dict[str, Any]:
    return {
        "dataset": "labs",
        "content_digest": "sha256:" + hashlib.sha256(f"labs-{n}".encode()).hexdigest(),
        "uri": f"file:///labs/{n}.parquet",
        "row_count": n,
        "producer": "lims",
    }


async def test_broker_restarted_empty_outbox_republishes_and_nothing_is_doubled(
    kafka_bootstrap: str, broker_control: KafkaUnderTest, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    common = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    # the files it announces are made up: a registry that allows their folder (it refuses unreadable file:// URIs)
    registry_settings = settings_for(RegistrySettings, **common, dataset_roots=[Path("/labs")])
    async with running(make_registry(registry_settings)) as registry:
        for n in range(1, 4):
            r = await registry.client.post("/v1/data-updates", json=body(n), headers=tokens.headers("scientist"))
            assert r.status_code == 201, r.text

        async def all_published() -> bool:
            pending = await registry.runtime.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            return pending == 0

        await eventually(all_published, what="the outbox drained to the broker")

        # The six events are on the broker, nobody has consumed them — and the broker loses everything.
        broker_control.restart()
        await eventually(lambda: _losses(registry.runtime), timeout=60, what="the registry noticing the loss")

        # The auditor starts only now: it can only see the events if the registry republished them.
        async with running(make_auditor(settings_for(AuditorSettings, **common))) as auditor:

            async def entries() -> list[dict[str, Any]]:
                resp = await auditor.client.get(
                    "/v1/entries", params={"subject_prefix": "dataset/labs"}, headers=tokens.headers("auditor")
                )
                items: list[dict[str, Any]] = resp.json()["items"]
                return items if len(items) >= 6 else []

            found = await eventually(entries, timeout=60, what="all six events audited after the loss")
            assert sorted(e["event_type"] for e in found) == ["data.updated"] * 3 + ["dataset.version.registered"] * 3
            assert len({e["event_id"] for e in found}) == 6

            # The registry re-read its own republished data.updated events: its inbox made them no-ops.
            versions = await registry.client.get("/v1/datasets/labs/versions", headers=tokens.headers("viewer"))
            assert [v["version"] for v in versions.json()["items"]] == [1, 2, 3]
            verify = await auditor.client.get("/v1/verify", headers=tokens.headers("auditor"))
            assert verify.json()["ok"] is True


async def _losses(runtime: Any) -> int:
    return int(runtime.epoch.losses)
