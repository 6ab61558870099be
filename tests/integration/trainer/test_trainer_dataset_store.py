"""Data published from anywhere trains (#25 item 1), through the real registry, scheduler, trainer, broker and
Postgres: the file is copied into the encrypted content-addressed store through the registry and the trainer reads
it from there, verified; a ``file://`` announcement outside the dataset roots is refused by the registry with the
roots named, and a trainer that meets one anyway names its roots too."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from integration.trainer.trainer_support import policy, publish, put_policy, registered, trainer_settings, wait_job

from support.services import Tokens, eventually, make_tokens, running, settings_for
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings
from vigil.scheduler.app import make_app as make_scheduler
from vigil.scheduler.settings import SchedulerSettings
from vigil.trainer.app import make_app as make_trainer
from vigil.trainer.examples import breast_cancer
from vigil.trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration

KEY = "11" * 32  # AES-256: the store is encrypted at rest


async def _job_of(sched: Any, tokens: Tokens, model: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        r = await sched.client.get("/v1/jobs", params={"model": model}, headers=tokens.headers("viewer"))
        items: list[dict[str, Any]] = r.json()["items"]
        return items[0] if items else None

    job: dict[str, Any] = await eventually(found, what=f"a job of {model}")
    return job


async def test_a_file_outside_the_home_trains_from_the_store_and_unreadable_uris_name_the_roots(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    common: dict[str, Any] = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    home, artifacts = tmp_path / "home", tmp_path / "home" / "artifacts"
    shared = {"home": home, "artifact_root": artifacts, "artifact_encryption_key": KEY}  # no dataset roots set
    body = breast_cancer.write_dataset(tmp_path / "exports")  # the user's own directory, outside the home
    csv = (tmp_path / "exports" / f"{breast_cancer.DATASET}.csv").read_bytes()
    trainer = trainer_settings(TrainerSettings, tmp_path, **common, **shared, trainer_dataset_roots=[])
    async with (
        running(make_registry(settings_for(RegistrySettings, **common, **shared))) as registry,
        running(make_scheduler(settings_for(SchedulerSettings, **common, scheduler_tick_interval_ms=100))) as sched,
        running(make_trainer(trainer)),
    ):
        scientist = tokens.headers("scientist")
        entry = "vigil.trainer.examples.breast_cancer:train"
        for model in ("bc-from-store", "bc-from-file"):
            dataset = breast_cancer.DATASET if model == "bc-from-store" else "bc-elsewhere"
            await put_policy(
                sched.client, tokens, model,
                policy([dataset], entrypoint=entry, params={"epochs": 20, "seed": 1}, memory_limit_mb=2048),
            )  # fmt: skip

        # What `vigil data publish` does without --uri: copy the bytes into the store, announce the store's URI.
        r = await registry.client.post(
            "/v1/dataset-files",
            params={"digest": body["content_digest"]},
            content=csv,
            headers={**scientist, "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text
        uri = r.json()["uri"]
        assert uri == f"vigil-artifact://{body['content_digest']}"
        hexd = body["content_digest"].removeprefix("sha256:")
        on_disk = (artifacts / "sha256" / hexd[:2] / hexd[2:]).read_bytes()
        assert not on_disk.startswith(csv[:20]) and hashlib.sha256(on_disk).hexdigest() != hexd  # encrypted

        # The file's own location is outside every root: refused at announce time, with the roots named.
        refused = await registry.client.post("/v1/data-updates", json=body, headers=scientist)
        assert refused.status_code == 422, refused.text
        assert "outside the allowed dataset roots" in refused.json()["detail"]
        assert str(home.resolve()) in refused.json()["detail"]

        r = await registry.client.post("/v1/data-updates", json={**body, "uri": uri}, headers=scientist)
        assert r.status_code == 201, r.text

        job = await _job_of(sched, tokens, "bc-from-store")
        done = await wait_job(sched.client, tokens, job["id"], {"succeeded", "failed"}, timeout=120)
        assert done["state"] == "succeeded", done["last_reason"]
        assert done["result"]["artifact_digest"].startswith("sha256:")

        # An upstream that bypasses the registry's check: the trainer refuses, naming the roots it reads.
        await publish(kafka_bootstrap, topic_prefix, [registered("bc-elsewhere", 1, body)])
        job = await _job_of(sched, tokens, "bc-from-file")
        done = await wait_job(sched.client, tokens, job["id"], {"succeeded", "failed"}, timeout=60)
        assert done["state"] == "failed"
        assert "outside the allowed dataset roots" in done["last_reason"], done["last_reason"]
        assert str(home.resolve()) in done["last_reason"], done["last_reason"]
