"""Values Postgres cannot hold are refused at the API edge with a 4xx that says why, never answered with a 500.

Each request here answered 500 before the edge was bounded (issue #25, item 4): integers beyond the range of the
column they reach (``INTEGER`` or ``BIGINT``) in path, query and body, a NUL character in a list cursor, and an
export whose ``from_seq`` overflowed only once the stream had sent its 200 headers. Every service runs in-process
against the real Postgres and broker; the refusal must be FastAPI's 422 naming the parameter, and the service must
still answer afterwards. Values at the very edge of a column's range are still accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from integration.trainer.trainer_support import trainer_settings

from support.services import RunningService, Tokens, make_tokens, running, settings_for
from vigil.auditor.app import make_app as make_auditor
from vigil.auditor.settings import AuditorSettings
from vigil.deployer.app import make_app as make_deployer
from vigil.deployer.settings import DeployerSettings
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings
from vigil.scheduler.app import make_app as make_scheduler
from vigil.scheduler.settings import SchedulerSettings
from vigil.service.bounds import BIGINT_MAX, INT_MAX
from vigil.trainer.app import make_app as make_trainer
from vigil.trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration

#: Beyond BIGINT (and beyond 64 bits): the dead-letter id of the report.
HUGE = 170034740730531552830685184
#: Fits BIGINT, not INTEGER: the gate-policy cursor of the report.
BEYOND_INT = 7572500122812119
#: 2**64: the export's from_seq of the report (orjson cannot even write it).
TWO_TO_64 = 18446744073709551616


def refused(r: httpx.Response, *where: str) -> None:
    """A 422 from FastAPI's validation naming the parameter (``where`` = its location, e.g. ``query``, ``after``)."""
    assert r.status_code == 422, f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:500]}"
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    assert detail[0]["msg"], detail
    assert list(detail[0]["loc"][: len(where)]) == list(where), detail


async def _dlq_replay_is_bounded(service: RunningService, admin: dict[str, str]) -> None:
    client = service.client
    refused(await client.post(f"/v1/dlq/{HUGE}/replay", headers=admin), "path", "letter_id")
    refused(await client.post(f"/v1/dlq/{BIGINT_MAX + 1}/replay", headers=admin), "path", "letter_id")
    refused(await client.get("/v1/dlq", params={"after": HUGE}, headers=admin), "query", "after")
    # The largest id a BIGSERIAL can hold is still a valid question: it is just not there.
    assert (await client.post(f"/v1/dlq/{BIGINT_MAX}/replay", headers=admin)).status_code == 404
    r = await client.get("/v1/dlq", params={"after": BIGINT_MAX}, headers=admin)
    assert r.status_code == 200, r.text
    assert (await client.get("/readyz")).status_code == 200


def _common(fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tokens: Tokens) -> dict[str, Any]:
    return {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}


async def test_registry_refuses_out_of_range_cursors_and_nul(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    common = _common(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    settings = settings_for(RegistrySettings, **common, artifact_root=tmp_path / "artifacts")
    async with running(make_registry(settings)) as registry:
        client, admin = registry.client, tokens.headers("admin")
        await _dlq_replay_is_bounded(registry, admin)

        # INTEGER columns (gate policy and dataset versions): a BIGINT-sized cursor is refused by name.
        assert (await client.put("/v1/models/m/gates", json={"gates": []}, headers=admin)).status_code == 200
        r = await client.get("/v1/models/m/gates/versions", params={"after": BEYOND_INT}, headers=admin)
        refused(r, "query", "after")
        refused(await client.get("/v1/datasets/0/versions", params={"after": BEYOND_INT}, headers=admin), "query")
        refused(await client.get("/v1/models/m/versions", params={"after": INT_MAX + 1}, headers=admin), "query")
        refused(await client.get(f"/v1/datasets/0/versions/{INT_MAX + 1}", headers=admin), "path", "version")
        # ... and the last INTEGER is fine.
        r = await client.get("/v1/models/m/gates/versions", params={"after": INT_MAX}, headers=admin)
        assert r.status_code == 200 and r.json()["items"] == [], r.text

        # BIGSERIAL alias-change ids.
        r = await client.get("/v1/models/m/aliases/champion/history", params={"after": HUGE}, headers=admin)
        refused(r, "query", "after")

        # A NUL character in a string cursor (Postgres text cannot hold it).
        refused(await client.get("/v1/datasets", params={"after": "\x00abc"}, headers=admin), "query", "after")
        refused(await client.get("/v1/models", params={"after": "a\x00"}, headers=admin), "query", "after")
        refused(await client.get("/v1/artifacts", params={"after": "\x00"}, headers=admin), "query", "after")
        refused(await client.get("/v1/models/m/aliases", params={"after": "\x00"}, headers=admin), "query", "after")
        refused(await client.get("/v1/models", params={"name_prefix": "\x00"}, headers=admin), "query")
        # Body fields that reach INTEGER / text columns.
        r = await client.put("/v1/models/m/aliases/staging", json={"version": 28299395430}, headers=admin)
        refused(r, "body", "version")
        refused(await client.patch("/v1/models/m", json={"description": "a\x00b"}, headers=admin), "body")
        assert (await client.get("/v1/datasets", params={"after": "zzz"}, headers=admin)).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_scheduler_refuses_out_of_range_cursors(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    async with running(
        make_scheduler(settings_for(SchedulerSettings, **_common(fresh_db, kafka_bootstrap, topic_prefix, tokens)))
    ) as scheduler:
        client, admin = scheduler.client, tokens.headers("admin")
        await _dlq_replay_is_bounded(scheduler, admin)
        refused(await client.get("/v1/triggers", params={"after": HUGE}, headers=admin), "query", "after")
        refused(await client.get("/v1/rejected-transitions", params={"after": HUGE}, headers=admin), "query")
        refused(await client.get("/v1/rejected-transitions", params={"job_id": "\x00"}, headers=admin), "query")
        refused(await client.get("/v1/jobs", params={"after": "\x00"}, headers=admin), "query", "after")
        refused(await client.get("/v1/policies", params={"after": "\x00"}, headers=admin), "query", "after")
        policy = {"datasets": ["d"], "entrypoint": "pkg.mod:train", "code_version": "v1", "memory_limit_mb": 2**40}
        refused(await client.put("/v1/policies/m", json=policy, headers=admin), "body", "memory_limit_mb")
        policy = {**policy, "memory_limit_mb": None, "code_version": "v\x001"}
        refused(await client.put("/v1/policies/m", json=policy, headers=admin), "body", "code_version")
        assert (await client.get("/v1/triggers", params={"after": BIGINT_MAX}, headers=admin)).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_trainer_refuses_out_of_range_log_and_metric_cursors(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    settings = trainer_settings(TrainerSettings, tmp_path, **_common(fresh_db, kafka_bootstrap, topic_prefix, tokens))
    async with running(make_trainer(settings)) as trainer:
        client, admin = trainer.client, tokens.headers("admin")
        await _dlq_replay_is_bounded(trainer, admin)
        run_id = "0a1b2c3d"
        # A finished run to read from (its logs and metrics routes look the run up before the cursor reaches SQL).
        async with trainer.runtime.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO runs (run_id, job_id, attempt, model, state, request, entrypoint, params, datasets, "
                "code_version, timeout_s) "
                "VALUES ($1, 'job-1', 1, 'm', 'failed', $2, 'pkg.mod:train', $3, $4, 'v1', 60)",
                run_id,
                {},
                {},
                [],
            )
        logs, metrics = f"/v1/runs/{run_id}/logs", f"/v1/runs/{run_id}/metrics"
        refused(await client.get(logs, params={"after": BEYOND_INT}, headers=admin), "query", "after")  # INTEGER seq
        refused(await client.get(metrics, params={"after": HUGE}, headers=admin), "query", "after")  # BIGSERIAL id
        refused(await client.get(metrics, params={"name": "loss\x00"}, headers=admin), "query", "name")
        refused(await client.get("/v1/runs", params={"after": "\x00"}, headers=admin), "query", "after")
        refused(await client.get("/v1/runs", params={"job_id": "\x00"}, headers=admin), "query", "job_id")
        assert (await client.get(logs, params={"after": INT_MAX}, headers=admin)).status_code == 200
        assert (await client.get(metrics, params={"after": BIGINT_MAX}, headers=admin)).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_deployer_refuses_versions_beyond_integer(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    common = _common(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    async with running(make_deployer(settings_for(DeployerSettings, **common, artifact_root=tmp_path / "a"))) as dep:
        client, admin = dep.client, tokens.headers("admin")
        await _dlq_replay_is_bounded(dep, admin)
        assert (
            await client.post("/v1/deployments", json={"name": "d", "model": "m"}, headers=admin)
        ).status_code == 201
        r = await client.post("/v1/deployments/d/rollouts", json={"version": 28299395430}, headers=admin)
        refused(r, "body", "version")
        body = {"name": "e", "model": "m", "stable_version": 28299395430}
        refused(await client.post("/v1/deployments", json=body, headers=admin), "body", "stable_version")
        refused(await client.get("/v1/deployments/d/rollouts/a%00b", headers=admin), "path", "rollout_id")
        refused(await client.get("/v1/deployments", params={"after": "\x00"}, headers=admin), "query", "after")
        refused(await client.post("/v1/deployments/d/pause", json={"reason": "\x00"}, headers=admin), "body")
        # The largest INTEGER is a version that is simply not registered.
        r = await client.post("/v1/deployments/d/rollouts", json={"version": INT_MAX}, headers=admin)
        assert r.status_code == 404, r.text
        assert (await client.get("/readyz")).status_code == 200


async def test_auditor_refuses_out_of_range_sequences_and_export_before_streaming(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    common = _common(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    async with running(make_auditor(settings_for(AuditorSettings, **common, home=tmp_path))) as auditor:
        client, admin = auditor.client, tokens.headers("admin")
        await _dlq_replay_is_bounded(auditor, admin)
        # Reads of audit data are themselves chained (access.recorded): the first read gives us an entry to prove.
        r = await client.get("/v1/entries", headers=admin)
        assert r.status_code == 200, r.text
        r = await client.get("/v1/entries", headers=admin)
        event_id = r.json()["items"][0]["event_id"]

        refused(await client.get("/v1/checkpoints", params={"after": HUGE}, headers=admin), "query", "after")
        r = await client.get(f"/v1/proofs/inclusion/{event_id}", params={"tree_size": HUGE}, headers=admin)
        refused(r, "query", "tree_size")
        refused(await client.get("/v1/proofs/consistency", params={"from": 1, "to": HUGE}, headers=admin), "query")
        refused(await client.get("/v1/entries", params={"after": HUGE}, headers=admin), "query", "after")
        refused(await client.get("/v1/entries", params={"subject": "a\x00"}, headers=admin), "query", "subject")
        refused(await client.get("/v1/why", params={"subject": "\x00"}, headers=admin), "query", "subject")

        # The export is refused before anything is streamed: a 422 with a JSON reason, not 200 headers and a cut.
        async with client.stream("GET", "/v1/export", params={"from_seq": TWO_TO_64}, headers=admin) as r:
            body = await r.aread()
            assert r.status_code == 422, body[:500]
            assert r.headers["content-type"].startswith("application/json")
        assert httpx.Response(422, content=body).json()["detail"][0]["loc"] == ["query", "from_seq"]
        async with client.stream("GET", "/v1/export", params={"to_seq": HUGE}, headers=admin) as r:
            await r.aread()
            assert r.status_code == 422

        # At the edge of BIGINT: an empty export and no checkpoint, both well-formed answers.
        r = await client.get("/v1/export", params={"from_seq": BIGINT_MAX}, headers=admin)
        assert r.status_code == 200 and r.text.splitlines()[-1] == '{"kind":"end","entries":0}', r.text[-300:]
        r = await client.get("/v1/checkpoints", params={"after": BIGINT_MAX}, headers=admin)
        assert r.status_code == 200 and r.json()["items"] == [], r.text
        assert (await client.get("/readyz")).status_code == 200


async def test_monitor_dead_letter_replay_is_bounded(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The dead-letter routes are shared (vigil.service.dlq_api); the monitor gets the same bounds."""
    from vigil.monitor.app import make_app as make_monitor
    from vigil.monitor.settings import MonitorSettings

    tokens = make_tokens(tmp_path)
    settings = settings_for(MonitorSettings, **_common(fresh_db, kafka_bootstrap, topic_prefix, tokens))
    async with running(make_monitor(settings)) as monitor:
        await _dlq_replay_is_bounded(monitor, tokens.headers("admin"))
