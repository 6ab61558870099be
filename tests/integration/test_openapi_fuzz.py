"""A bounded schemathesis run over every service's OpenAPI document: no request answers 5xx, no stream breaks.

Each service runs in-process with its real lifespan against the real Postgres and broker (as the other integration
tests do) and is served by uvicorn on 127.0.0.1: schemathesis's own ASGI client runs the app on an event loop of its
own, which the service's database pool (bound to the test's loop) cannot serve. The schema is the one the running
app publishes at ``/openapi.json``. Every operation gets a fixed number of generated requests, valid ones
(``positive``) and invalid ones (``negative``), derandomized so a run is repeatable, all with an admin token.

Checks: no status >= 500, the response read to its end (a stream cut after its 200 headers fails the request), and,
for valid requests, schemathesis's conformance checks (status code, content type and body as the schema declares).
Every 5xx found here was a value the API edge let through to Postgres or a JSON encoder; each has a plain regression
request in ``test_api_bounds.py`` or below.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import pkgutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from integration.trainer.trainer_support import trainer_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from support.services import Tokens, make_tokens, running, served, settings_for

pytestmark = [
    pytest.mark.integration,
    # schemathesis's strategies draw from `random` (hypothesis deprecates that); the warnings are errors here.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

#: Generated requests per operation and generation mode (valid, invalid); VIGIL_FUZZ_EXAMPLES for a deeper run.
MAX_EXAMPLES = int(os.environ.get("VIGIL_FUZZ_EXAMPLES", "10"))
#: One request may take this long (a 5xx is what we look for, not latency; the loaded CI machine is slow).
REQUEST_TIMEOUT_S = 30.0

POSITIVE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NEGATIVE_CHECKS = [not_a_server_error]


def _registry(common: dict[str, Any], tmp: Path) -> FastAPI:
    from vigil.registry.app import make_app
    from vigil.registry.settings import RegistrySettings

    return make_app(settings_for(RegistrySettings, **common, artifact_root=tmp / "artifacts"))


def _scheduler(common: dict[str, Any], tmp: Path) -> FastAPI:
    from vigil.scheduler.app import make_app
    from vigil.scheduler.settings import SchedulerSettings

    return make_app(settings_for(SchedulerSettings, **common))


def _trainer(common: dict[str, Any], tmp: Path) -> FastAPI:
    from vigil.trainer.app import make_app
    from vigil.trainer.settings import TrainerSettings

    return make_app(trainer_settings(TrainerSettings, tmp, **common))


def _deployer(common: dict[str, Any], tmp: Path) -> FastAPI:
    from vigil.deployer.app import make_app
    from vigil.deployer.settings import DeployerSettings

    return make_app(settings_for(DeployerSettings, **common, artifact_root=tmp / "artifacts"))


def _monitor(common: dict[str, Any], tmp: Path) -> FastAPI:
    from vigil.monitor.app import make_app
    from vigil.monitor.settings import MonitorSettings

    return make_app(settings_for(MonitorSettings, **common))


def _auditor(common: dict[str, Any], tmp: Path) -> FastAPI:
    from vigil.auditor.app import make_app
    from vigil.auditor.settings import AuditorSettings

    return make_app(settings_for(AuditorSettings, **common, home=tmp))


SERVICES: dict[str, Callable[[dict[str, Any], Path], FastAPI]] = {
    "registry": _registry,
    "scheduler": _scheduler,
    "trainer": _trainer,
    "deployer": _deployer,
    "monitor": _monitor,
    "auditor": _auditor,
}


#: Packages whose modules the fuzz run may import for the first time from its worker thread.
_FUZZING_PACKAGES = ("schemathesis", "hypothesis", "anyio")
_SKIPPED_MODULES = (".cli", "__main__", ".extra", ".pytest", "._pytest", ".tests")


@functools.cache
def _import_fuzzing_stack() -> int:
    """Import every module of the fuzzing stack now, on the main thread, before any thread runs (once per process).

    Why: these packages are pytest plugins, so pytest rewrites their modules' asserts on import (``ast.parse`` and
    ``compile`` of a tree), and schemathesis, hypothesis and anyio import many modules lazily. A first import in the
    fuzz thread while the service's event loop, on the main thread, lazily imported one of anyio's (the first request
    uvicorn served) failed a CI run with CPython 3.11's ``SystemError: AST constructor recursion depth mismatch``:
    the AST converter's recursion counter is shared between threads. Imported up front, neither side parses an AST
    while the other runs. Returns the number of modules imported (optional extras that are not installed are
    skipped).
    """
    count = 0
    for package in _FUZZING_PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if any(part in info.name for part in _SKIPPED_MODULES):
                continue
            try:
                importlib.import_module(info.name)
            except ImportError:  # an optional backend or extra that is not installed (trio, allure, …)
                continue
            count += 1
    return count


@dataclass
class FuzzReport:
    operations: int = 0
    requests: int = 0
    failures: dict[str, str] = field(default_factory=dict)


def _fuzz(raw_schema: dict[str, Any], base_url: str, headers: dict[str, str]) -> FuzzReport:
    """Run every operation of ``raw_schema`` against ``base_url`` (blocking: call it off the event loop)."""
    schema = schemathesis.openapi.from_dict(raw_schema)
    report = FuzzReport()
    session = requests.Session()

    def one_mode(operation: schemathesis.APIOperation, mode: schemathesis.GenerationMode, checks: list[Any]) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: a bounded run; the failure names its request
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        def run(case: schemathesis.Case) -> None:
            report.requests += 1
            # A stream cut after its headers surfaces here as a requests error (ChunkedEncodingError & co).
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=REQUEST_TIMEOUT_S)
            case.validate_response(response, checks=checks, headers=headers)

        run()

    for result in schema.get_all_operations():
        operation = result.ok()
        report.operations += 1
        for mode, checks in (
            (schemathesis.GenerationMode.POSITIVE, POSITIVE_CHECKS),
            (schemathesis.GenerationMode.NEGATIVE, NEGATIVE_CHECKS),
        ):
            try:
                one_mode(operation, mode, checks)
            except Unsatisfiable:
                pass  # nothing to make invalid (no parameters, no body): the valid requests covered it
            except (Exception, BaseExceptionGroup) as exc:  # every failure of every operation is reported at the end
                report.failures[f"{operation.label} [{mode.value}]"] = _describe(exc)[:4000]
    return report


def _describe(exc: BaseException) -> str:
    """The exception and, for groups (schemathesis's failures, hypothesis's flaky reports), each one inside."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, BaseExceptionGroup):
        text += "".join("\n  - " + _describe(sub).replace("\n", "\n    ") for sub in exc.exceptions)
    return text


@pytest.mark.parametrize("service", list(SERVICES))
async def test_openapi_fuzz(
    service: str, kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    assert _import_fuzzing_stack() > 100  # before the service's loop and the fuzz thread run (see the function)
    tokens: Tokens = make_tokens(tmp_path)
    common = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    async with running(SERVICES[service](common, tmp_path)) as running_service:
        r = await running_service.client.get("/openapi.json")
        assert r.status_code == 200, r.text
        async with served(running_service.app) as base_url:
            started = time.monotonic()
            report = await asyncio.to_thread(_fuzz, r.json(), base_url, tokens.headers("admin"))
            elapsed = time.monotonic() - started
        # The service is still well after the run.
        assert (await running_service.client.get("/readyz")).status_code == 200
    print(f"{service}: {report.operations} operations, {report.requests} requests in {elapsed:.1f}s")
    assert report.operations > 0
    assert not report.failures, "\n\n".join(f"== {label}\n{text}" for label, text in report.failures.items())


# Regressions: each request below answered 500 before its body's type refused it (found by the run above, or by
# the report that asked for it: JSON bodies that reach jsonb columns and JSON encoders).

WIDE = 2**84  # wider than 64 bits: orjson cannot write it, BIGINT cannot hold it


def _refused(r: httpx.Response, *where: str) -> None:
    assert r.status_code == 422, f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:500]}"
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    assert list(detail[0]["loc"][: len(where)]) == list(where), detail


async def test_registry_bodies_refuse_nul_and_wide_integers(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    common = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    async with running(_registry(common, tmp_path)) as registry:
        client, admin = registry.client, tokens.headers("admin")
        update = {
            "dataset": "d",
            "content_digest": "sha256:" + "ab" * 32,
            "uri": "s3://bucket/d.csv",  # not a file the registry checks: the body reaches the database
            "row_count": WIDE,
            "producer": "p",
        }
        _refused(await client.post("/v1/data-updates", json=update, headers=admin), "body", "row_count")
        for field_name, value in (("uri", "file:///x\x00"), ("producer", "p\x00")):
            r = await client.post("/v1/data-updates", json={**update, "row_count": 1, field_name: value}, headers=admin)
            _refused(r, "body", field_name)
        body = {**update, "row_count": 1, "columns": [{"name": "a\x00", "type": "float"}]}
        _refused(await client.post("/v1/data-updates", json=body, headers=admin), "body", "columns")

        version = {"artifact_digest": "sha256:" + "cd" * 32}
        for extra, where in (
            ({"params": {"p": "a\x00"}}, "params"),
            ({"params": {"p": ["\x00"]}}, "params"),
            ({"tags": {"t": "\x00"}}, "tags"),
            ({"reference_profile": {"k": {"nested": "\x00"}}}, "reference_profile"),
            ({"reference_profile": {"k": [1, WIDE]}}, "reference_profile"),
        ):
            r = await client.post("/v1/models/m/versions", json={**version, **extra}, headers=admin)
            _refused(r, "body", where)
        assert (await client.get("/readyz")).status_code == 200


async def test_scheduler_params_refuse_nul_and_read_wide_integers_as_numbers(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    common = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    async with running(_scheduler(common, tmp_path)) as scheduler:
        client, admin = scheduler.client, tokens.headers("admin")
        policy = {"datasets": ["d"], "entrypoint": "pkg.mod:train", "code_version": "v1", "params": {"p": "a\x00"}}
        _refused(await client.put("/v1/policies/m", json=policy, headers=admin), "body", "params")
        # A JSON integer wider than 64 bits is the number it also is (JSON Schema's `number`), never a 500.
        r = await client.put("/v1/policies/m", json={**policy, "params": {"p": WIDE}}, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["params"]["p"] == float(WIDE)
        r = await client.post("/v1/policies/m/trigger", json={"params": {"p": "\x00"}}, headers=admin)
        _refused(r, "body", "params")
        r = await client.post("/v1/policies/m/trigger", json={"params": {"p": [WIDE]}}, headers=admin)
        assert r.status_code < 500, r.text
        assert (await client.get("/readyz")).status_code == 200


async def test_monitor_policy_refuses_nul_and_wide_integers(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    common = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    async with running(_monitor(common, tmp_path)) as monitor:
        client, admin = monitor.client, tokens.headers("admin")
        for body, where in (
            ({"drift": {"features": ["age", "\x00"]}}, ("body", "drift", "features")),
            ({"fairness": {"attribute": "sex\x00"}}, ("body", "fairness", "attribute")),
            ({"fairness": {"min_samples": WIDE}}, ("body", "fairness", "min_samples")),
            ({"canary": {"min_labels": WIDE}}, ("body", "canary", "min_labels")),
        ):
            _refused(await client.put("/v1/policies/d", json=body, headers=admin), *where)
        r = await client.put("/v1/policies/d", json={"drift": {"features": ["age"]}}, headers=admin)
        assert r.status_code == 200, r.text
        assert (await client.get("/readyz")).status_code == 200
