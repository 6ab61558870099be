"""Jobs through the real broker and Postgres: idempotency keys, retrain requests under the same policy, the state
machine refusing out-of-order reports (and recording them), cancellation, and re-queue when no trainer answers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from integration.trainer.trainer_support import (
    fake_registered,
    job,
    jobs,
    of_job,
    policy,
    publish,
    put_policy,
    read_events,
    trigger,
    wait_job,
)

from support.services import Tokens, eventually, make_tokens, running, settings_for
from vigil.events import topics
from vigil.events.catalog.common import Evidence, Window
from vigil.events.catalog.monitoring import RetrainRequested
from vigil.events.catalog.training import Environment, TrainingCompleted, TrainingStarted
from vigil.scheduler.app import make_app
from vigil.scheduler.settings import SchedulerSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return make_tokens(tmp_path)


def retrain(model: str) -> RetrainRequested:
    now = datetime.now(UTC)
    return RetrainRequested(
        deployment=f"{model}-prod",
        model=model,
        version=1,
        reason="drift",
        window=Window(start=now - timedelta(minutes=5), end=now),
        evidence=[
            Evidence(
                statistic="psi", feature="age", value=0.4, threshold=0.2, operator="gt", breached=True, sample_size=500
            )
        ],
        policy_version=1,
    )


async def test_idempotency_retrain_state_machine_and_cancellation(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tokens: Tokens
) -> None:
    settings = settings_for(
        SchedulerSettings, dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens,
        scheduler_tick_interval_ms=100,
    )  # fmt: skip
    async with running(make_app(settings)) as scheduler:
        c = scheduler.client
        await put_policy(
            c, tokens, "risk", policy(["patients"], debounce_s=0.5, max_concurrent=10, params={"epochs": 5})
        )
        r = await trigger(c, tokens, "risk")
        assert r.status_code == 409, r.text  # no dataset version known yet
        await publish(kafka_bootstrap, topic_prefix, [fake_registered("patients", 1)])
        first = (await eventually(lambda: jobs(c, tokens, model="risk"), what="the dataset job"))[0]

        # Same inputs (model, digests, code version, params) → the same job, however it is asked for.
        again = await trigger(c, tokens, "risk")
        assert again.status_code == 200 and again.json()["created"] is False
        assert again.json()["job"]["id"] == first["id"]
        # The monitor's retrain request obeys the policy: a window, then the key — nothing new to train on.
        await publish(kafka_bootstrap, topic_prefix, [retrain("risk"), retrain("no-policy")])

        async def deduplicated() -> list[dict[str, object]]:
            resp = await c.get("/v1/triggers", params={"model": "risk"}, headers=tokens.headers("viewer"))
            return [t for t in resp.json()["items"] if t["kind"] == "retrain" and t["state"] == "deduplicated"]

        (dup,) = await eventually(deduplicated, what="the retrain window deduplicated against the job")
        assert dup["job_id"] == first["id"]
        assert len(await jobs(c, tokens, model="risk")) == 1

        # Different params → a different key → a new job; force → a new job even for equal inputs.
        other = await trigger(c, tokens, "risk", {"epochs": 7})
        assert other.status_code == 201 and other.json()["created"] is True
        forced = await trigger(c, tokens, "risk", force=True)
        assert forced.status_code == 201 and forced.json()["job"]["id"] != first["id"]
        assert len(await jobs(c, tokens, model="risk")) == 3

        # The first job is scheduled (no trainer runs here). A completion before a start is out of order.
        await wait_job(c, tokens, str(first["id"]), {"scheduled"})
        completed = TrainingCompleted(
            model="risk",
            job_id=str(first["id"]),
            attempt=1,
            run_id="run-x",
            artifact_digest="sha256:" + "a" * 64,
            artifact_uri="vigil-artifact://sha256:" + "a" * 64,
            artifact_format="json",
            artifact_size_bytes=2,
            datasets=first["datasets"],
            code_version="git:test",
            environment=Environment(python="3.11", platform="linux"),
            duration_s=1.0,
        )
        stale_start = TrainingStarted(model="risk", job_id=str(first["id"]), attempt=2, run_id="run-y", worker="w")
        await publish(kafka_bootstrap, topic_prefix, [completed, stale_start], actor="service:trainer")

        async def rejected() -> list[dict[str, object]]:
            resp = await c.get(
                "/v1/rejected-transitions", params={"job_id": first["id"]}, headers=tokens.headers("viewer")
            )
            items: list[dict[str, object]] = resp.json()["items"]
            return items if len(items) >= 2 else []

        refusals = await eventually(rejected, what="both refusals recorded")
        assert [(x["current_state"], x["requested_state"], x["event_type"]) for x in refusals] == [
            ("scheduled", "succeeded", "training.completed"),
            ("scheduled", "running", "training.started"),
        ]
        assert "attempt 2" in str(refusals[1]["detail"])
        assert (await job(c, tokens, str(first["id"])))["state"] == "scheduled"

        # Cancellation by API; cancelling again is refused (409) and recorded too.
        r = await c.post(f"/v1/jobs/{first['id']}/cancel", headers=tokens.headers("scientist"))
        assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
        r = await c.post(f"/v1/jobs/{first['id']}/cancel", headers=tokens.headers("scientist"))
        assert r.status_code == 409
        r = await c.post(f"/v1/jobs/{first['id']}/cancel", headers=tokens.headers("viewer"))
        assert r.status_code == 403
        detail = await job(c, tokens, str(first["id"]))
        assert [(t["from_state"], t["to_state"]) for t in detail["transitions"]] == [
            (None, "pending"),
            ("pending", "scheduled"),
            ("scheduled", "cancelled"),
        ]
        assert detail["transitions"][-1]["actor"] == "user:test-scientist"

    events = await read_events(kafka_bootstrap, topic_prefix, topics.TRAINING)
    changes = of_job(events, str(first["id"]), "job.state_changed")
    assert [e.data["to_state"] for e in changes] == ["pending", "scheduled", "cancelled"]
    assert changes[-1].actor == "user:test-scientist"


async def test_scheduled_job_nobody_starts_is_requeued_with_backoff_then_fails(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tokens: Tokens
) -> None:
    settings = settings_for(
        SchedulerSettings, dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens,
        scheduler_tick_interval_ms=100, scheduler_dispatch_timeout_s=1.0,
    )  # fmt: skip
    async with running(make_app(settings)) as scheduler:
        c = scheduler.client
        await put_policy(
            c, tokens, "orphan",
            policy(["d"], max_attempts=2, backoff_base_s=1.0, cooldown_s=30, max_concurrent=2),
        )  # fmt: skip
        await publish(kafka_bootstrap, topic_prefix, [fake_registered("d", 1)])
        (j,) = await eventually(lambda: jobs(c, tokens, model="orphan"), what="the job")
        final = await wait_job(c, tokens, str(j["id"]), {"failed"}, timeout=30)
        steps = [(t["from_state"], t["to_state"], t["attempt"]) for t in final["transitions"]]
        assert steps == [
            (None, "pending", 1),
            ("pending", "scheduled", 1),
            ("scheduled", "pending", 1),
            ("pending", "scheduled", 2),
            ("scheduled", "failed", 2),
        ]
        assert "no trainer" in final["transitions"][2]["reason"]
        assert "attempts exhausted" in final["last_reason"]
        # Backoff: the second dispatch waited at least backoff_base_s after the re-queue.
        requeued_at = datetime.fromisoformat(final["transitions"][2]["at"])
        redispatched_at = datetime.fromisoformat(final["transitions"][3]["at"])
        assert redispatched_at - requeued_at >= timedelta(seconds=0.9)

        # Cooldown after the failure: a new job for the model waits.
        r = await trigger(c, tokens, "orphan", {"x": 1})
        assert r.status_code == 201
        await asyncio.sleep(1.5)
        assert (await job(c, tokens, r.json()["job"]["id"]))["state"] == "pending"
        p = (await c.get("/v1/policies/orphan", headers=tokens.headers("viewer"))).json()
        assert p["cooldown_until"] is not None

        # The failed job does not block a new attempt on the very same inputs (no force needed): a retrain after an
        # outage must not be swallowed as a duplicate of the job that failed.
        again = await trigger(c, tokens, "orphan")
        assert again.status_code == 201, again.text
        assert again.json()["job"]["id"] != j["id"]
        assert again.json()["job"]["idempotency_key"] == j["idempotency_key"]
