"""The `vigil` CLI against real services (registry, scheduler, trainer, deployer, auditor on the real broker and
Postgres, served over HTTP on local ports): data → jobs → models → deploy → promote → rollback → aliases → why,
each outcome checked in the services themselves; and the errors a person meets — refused tokens, unknown things,
a stack that is down — as one clean line and exit 1."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from integration.cli_support import Cli, write_home
from integration.trainer.trainer_support import trainer_settings

from support import testinfra
from support.services import Tokens, eventually, make_tokens, running, served, settings_for
from vigil.auditor.app import make_app as make_auditor
from vigil.auditor.settings import AuditorSettings
from vigil.deployer.app import make_app as make_deployer
from vigil.deployer.settings import DeployerSettings
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings
from vigil.scheduler.app import make_app as make_scheduler
from vigil.scheduler.settings import SchedulerSettings
from vigil.trainer.app import make_app as make_trainer
from vigil.trainer.examples import patient_risk
from vigil.trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration

MODEL = "cli-risk"
DATASET = patient_risk.DATASET
DEPLOYMENT = "cli-risk-api"
POLICY = {
    "datasets": [DATASET],
    "entrypoint": "vigil.trainer.examples.patient_risk:train",
    "params": {"epochs": 60, "seed": 1},
    "code_version": "git:cli-test",
    "debounce_s": 0.2,
    "max_attempts": 2,
    "backoff_base_s": 0.2,
    "timeout_s": 120,
}


@dataclass
class Stack:
    cli: Cli
    urls: dict[str, str]
    tokens: Tokens
    data: Path

    def api(self, service: str, role: str = "admin") -> httpx.AsyncClient:
        """A plain HTTP client to check outcomes in the service itself, not through the CLI."""
        return httpx.AsyncClient(base_url=self.urls[service], headers=self.tokens.headers(role), timeout=10)


@pytest_asyncio.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, postgres: testinfra.PostgresUnderTest
) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("cli")
    tokens = make_tokens(tmp)
    db_name, dsn = postgres.create_database()
    common: dict[str, Any] = {
        "dsn": dsn, "bootstrap": kafka_bootstrap, "prefix": f"test.{uuid.uuid4().hex[:12]}.", "tokens": tokens,
    }  # fmt: skip
    artifacts = {"artifact_root": tmp / "artifacts"}
    apps = {
        "registry": make_registry(settings_for(RegistrySettings, **common, **artifacts)),
        "scheduler": make_scheduler(settings_for(SchedulerSettings, **common, scheduler_tick_interval_ms=100)),
        "trainer": make_trainer(trainer_settings(TrainerSettings, tmp, **common, trainer_workers=1)),
        "deployer": make_deployer(settings_for(DeployerSettings, **common, **artifacts, rollout_tick_interval_ms=100)),
        "auditor": make_auditor(settings_for(AuditorSettings, **common)),
    }
    try:
        async with AsyncExitStack() as services:
            urls = {}
            for name, app in apps.items():
                await services.enter_async_context(running(app))
                urls[name] = await services.enter_async_context(served(app))
            home = tmp / "home"
            write_home(home, urls, tokens.by_role["admin"])
            yield Stack(Cli(home), urls, tokens, tmp / "data")
    finally:
        postgres.drop_database(db_name)


async def _job_states(stack: Stack, version: int) -> list[dict[str, Any]] | None:
    """The model's jobs once the one for dataset ``version`` has succeeded (through `vigil jobs`)."""
    jobs: list[dict[str, Any]] = await stack.cli.json("jobs", "--model", MODEL)
    done = [j for j in jobs if j["state"] == "succeeded" and j["datasets"][0]["version"] == version]
    return jobs if done else None


def _registered(stack: Stack, version: int) -> Callable[[], Awaitable[bool]]:
    """Probe: `vigil models list` shows ``version`` as the model's latest."""

    async def probe() -> bool:
        models = await stack.cli.json("models", "list", "--prefix", MODEL)
        return bool(models) and models[0]["latest_version"] == version

    return probe


def _champion_is(stack: Stack, version: int) -> Callable[[], Awaitable[bool]]:
    """Probe, in the registry itself: ``champion`` points at ``version``."""

    async def probe() -> bool:
        async with stack.api("registry", "viewer") as registry:
            r = await registry.get(f"/v1/models/{MODEL}/aliases/champion")
        return r.status_code == 200 and r.json()["version"] == version

    return probe


async def test_the_loop_through_the_cli(stack: Stack) -> None:
    cli = stack.cli
    async with stack.api("scheduler") as scheduler:
        assert (await scheduler.put(f"/v1/policies/{MODEL}", json=POLICY)).status_code == 200

    # data publish: the CLI computes what the upstream contract needs from the file itself, and copies the file into
    # the content-addressed store through the registry, so the trainer reads it wherever it was (#25 item 1)
    v1_file = stack.data / "v1.csv"
    expected = patient_risk.write_dataset(v1_file, rows=400, seed=7)
    published = await cli.json("data", "publish", DATASET, str(v1_file), "--producer", "cli-test")
    assert (published["dataset"], published["version"], published["created"]) == (DATASET, 1, True)
    announced = published["announced"]
    assert announced["content_digest"] == expected["content_digest"]
    in_store = f"vigil-artifact://{expected['content_digest']}"
    assert (announced["uri"], announced["row_count"]) == (in_store, 400)
    assert published["stored"]["uri"] == in_store and published["stored"]["size_bytes"] == v1_file.stat().st_size
    assert [c["name"] for c in announced["columns"]] == [c["name"] for c in expected["columns"]]
    assert {c["name"]: c["type"] for c in announced["columns"]}["age"] == "float"
    async with stack.api("registry", "viewer") as registry:
        stored = (await registry.get(f"/v1/datasets/{DATASET}/versions/1")).json()
    assert (stored["content_digest"], stored["producer"]) == (expected["content_digest"], "cli-test")
    again = await cli.ok("data", "publish", DATASET, str(v1_file))
    assert "already registered (same content) as v1" in again.stdout
    assert f"copied into the artifact store: {in_store}" in again.stdout
    # --uri naming a file no trainer may read (outside the registry's dataset roots): refused, with the roots named
    out = await cli.error("data", "publish", DATASET, str(v1_file), "--uri", v1_file.resolve().as_uri())
    assert "answered 422" in out and "outside the allowed dataset roots (" in out, out

    assert await cli.json("dlq", "list", "registry") == []  # the announcement went through, nothing dead-lettered

    # jobs: the scheduler turned the announcement into a job, the trainer ran it
    jobs = await eventually(lambda: _job_states(stack, 1), timeout=120, what="job for dataset v1 succeeded")
    job = jobs[0]
    shown = await cli.json("jobs", "show", job["id"])
    assert [t["to_state"] for t in shown["transitions"]][-1] == "succeeded"
    assert shown["run_id"]
    listing = await cli.ok("jobs", "--state", "succeeded")
    assert job["id"] in listing.stdout and MODEL in listing.stdout
    assert job["id"] in (await cli.ok("jobs", "show", job["id"])).stdout

    # models: the run became v1 behind the gates, with lineage back to the dataset
    await eventually(_registered(stack, 1), timeout=60, what="v1 registered")
    detail = await cli.json("models", "show", MODEL, "--version", "1")
    assert detail["version"]["gates"] and all(g["passed"] for g in detail["version"]["gates"])
    assert detail["version"]["job_id"] == job["id"]
    node_ids = {n["id"] for n in detail["lineage"]["nodes"]}
    assert f"dataset:{DATASET}/v1" in node_ids and f"model:{MODEL}/v1" in node_ids
    human = (await cli.ok("models", "show", MODEL, "--version", "1")).stdout
    assert "input_schema" in human and f"dataset:{DATASET}/v1" in human

    # deploy: a new endpoint serving v1 at once, with a plan that waits for a person after 50 %
    created = await cli.json(
        "deploy", DEPLOYMENT, "--model", MODEL, "--version", "1", "--step", "weight=50", "--step", "pause"
    )
    assert (created["stable_version"], created["strategy"]) == (1, "canary")
    assert created["steps"][1]["kind"] == "pause"

    # a second dataset version → v2, rolled out by hand on the existing endpoint
    v2_file = stack.data / "v2.csv"
    patient_risk.write_dataset(v2_file, rows=400, seed=8)
    published_v2 = await cli.json("data", "publish", DATASET, str(v2_file))
    assert published_v2["version"] == 2
    await eventually(lambda: _job_states(stack, 2), timeout=120, what="job for dataset v2 succeeded")
    await eventually(_registered(stack, 2), timeout=60, what="v2 registered")
    canary = await cli.json("deploy", DEPLOYMENT, "--model", MODEL, "--version", "2")
    assert (canary["candidate_version"], canary["weights"]["candidate"]) == (2, 50)
    assert canary["rollout"]["phase"] == "paused"
    refused = await cli.error("deploy", DEPLOYMENT, "--model", "another-model", "--version", "2")
    assert "serves model cli-risk" in refused

    # promote: v2 takes all traffic, and the registry moves champion to it
    promoted = await cli.json("promote", DEPLOYMENT)
    assert (promoted["stable_version"], promoted["candidate_version"]) == (2, None)
    await eventually(_champion_is(stack, 2), timeout=45, what="champion → v2")

    # rollback: the previous stable serves again, champion returns to v1
    rolled = await cli.ok("rollback", DEPLOYMENT, "--reason", "cli test says no")
    assert "stable v1 (100%)" in rolled.stdout
    async with stack.api("deployer", "viewer") as deployer:
        assert (await deployer.get(f"/v1/deployments/{DEPLOYMENT}")).json()["stable_version"] == 1
    await eventually(_champion_is(stack, 1), timeout=45, what="champion back to v1")

    # alias set: moved in the registry; setting it again says so; history shows who and why
    moved = await cli.json("alias", "set", MODEL, "staging", "2", "--reason", "try it")
    assert (moved["from_version"], moved["to_version"], moved["reason"]) == (None, 2, "try it")
    async with stack.api("registry", "viewer") as registry:
        assert (await registry.get(f"/v1/models/{MODEL}/aliases/staging")).json()["version"] == 2
    assert "already points at v2" in (await cli.ok("alias", "set", MODEL, "staging", "2")).stdout
    history = await cli.json("alias", "history", MODEL, "champion")
    assert [h["cause"] for h in history][-2:] == ["promotion", "rollback"]
    overview = await cli.json("models", "show", MODEL)
    assert {a["alias"]: a["version"] for a in overview["aliases"]} == {"champion": 1, "staging": 2}
    assert [v["version"] for v in overview["versions"]] == [1, 2]

    # why: a model version walks back to the data announcement that started it
    async def model_chain() -> dict[str, Any] | None:
        answer: dict[str, Any] = await cli.json("why", f"model/{MODEL}/2")
        return answer if answer["complete"] and answer["chain"][-1]["event_type"] == "data.updated" else None

    chain = await eventually(model_chain, timeout=45, what="why model v2 reaches data.updated")
    types = [e["event_type"] for e in chain["chain"]]
    assert types[0] == "model.version.registered" and "training.completed" in types
    assert chain["chain"][-1]["event"]["data"]["content_digest"] == published_v2["announced"]["content_digest"]
    by_id = await cli.json("why", chain["chain"][1]["event_id"])
    assert [e["event_id"] for e in by_id["chain"]] == [e["event_id"] for e in chain["chain"][1:]]
    text = (await cli.ok("why", f"model/{MODEL}/v2")).stdout
    assert "model.version.registered" in text and "root: data.updated" in text

    # why the champion is what it is: the alias move, caused by the rollback a person asked for
    async def champion_chain() -> dict[str, Any] | None:
        answer: dict[str, Any] = await cli.json("why", f"model/{MODEL}")
        return answer if answer["chain"][0]["event"]["data"].get("to_version") == 1 else None

    champion = await eventually(champion_chain, timeout=45, what="why champion names the rollback")
    assert [e["event_type"] for e in champion["chain"]][:2] == ["model.alias.changed", "deployment.rolled_back"]
    assert champion["chain"][1]["event"]["data"]["reason"] == "cli test says no"
    deployment = await cli.json("why", f"deployment/{DEPLOYMENT}")
    assert deployment["chain"][0]["event_type"] == "deployment.rolled_back"
    dataset = await cli.json("why", f"dataset/{DATASET}/2")
    assert [e["event_type"] for e in dataset["chain"]] == ["dataset.version.registered", "data.updated"]
    job_chain = await cli.json("why", f"job/{job['id']}")
    assert job_chain["subject"] == f"model/{MODEL}/job/{job['id']}"
    assert job_chain["chain"][-1]["event_type"] == "data.updated"


async def test_refusals_and_unknown_things_are_one_line(stack: Stack) -> None:
    cli = stack.cli
    out = await cli.error("models", "list", "--token", "not-a-token")
    assert "refused the call (401)" in out and "Check --token" in out
    out = await cli.error("alias", "set", MODEL, "champion", "1", "--token", stack.tokens.by_role["viewer"])
    assert "refused the call (403)" in out
    out = await cli.error("models", "show", "no-such-model")
    assert "answered 404" in out and "no-such-model" in out
    out = await cli.error("promote", "no-such-deployment")
    assert "no deployment no-such-deployment" in out
    out = await cli.error("jobs", "show", "0123abcd")
    assert "no job 0123abcd" in out
    bad = stack.data / "bad.csv"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("a,b\n1,2\n")
    out = await cli.error("data", "publish", "not a name!", str(bad))
    assert "answered 422" in out and "dataset" in out
    out = await cli.error("why", "model/x/latest", code=2)
    assert "not a version" in out
    # a home without admin.token (and no --token): the CLI says where the token should come from
    empty = stack.data.parent / "empty-home"
    result = await cli("models", "list", "--home", str(empty), "--url", stack.urls["registry"], home=False)
    assert result.exit_code == 1 and "no token" in result.stderr and "admin.token" in result.stderr


async def test_stack_down_names_the_service_url(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    cli = Cli(tmp_path / "home")
    write_home(cli.home, {"registry": dead, "deployer": dead, "auditor": dead, "scheduler": dead}, "token")
    for args, service in [
        (("models", "list"), "registry"),
        (("data", "publish", "ds", str(cli.home / "stack.json")), "registry"),
        (("rollback", "api"), "deployer"),
        (("jobs",), "scheduler"),
        (("why", "model/m/1"), "auditor"),
    ]:
        out = await cli.error(*args)
        assert f"cannot reach the {service} at {dead}" in out and "Is `vigil up` running?" in out
