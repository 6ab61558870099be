"""The `vigil` CLI against a real running stack (six service processes, embedded broker and Postgres)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from vigil.cli.main import app
from vigil.stack.supervisor import RunningStack, default_launches, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("cli-home")
    with running_stack(
        home,
        services=default_launches(free_ports=True),
        broker_port=0,
        postgres_port=0,
        postgres_durable=False,
        echo=lambda _msg: None,
    ) as running:
        yield running


def run(stack: RunningStack, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--home", str(stack.paths.home)])
    return result.exit_code, result.output


def test_status_dlq_and_events_tail(stack: RunningStack) -> None:
    code, out = run(stack, "status", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["healthy"] is True
    assert {s["name"] for s in report["services"]} == {
        "registry",
        "scheduler",
        "trainer",
        "deployer",
        "monitor",
        "auditor",
    }

    body = {
        "dataset": "cli-demo",
        "content_digest": "sha256:" + "ef" * 32,
        "uri": "s3://cli-demo/cli.csv",
        "row_count": 3,
        "producer": "cli-test",
    }
    r = httpx.post(
        f"{stack.url('registry')}/v1/data-updates", json=body, headers={"Authorization": f"Bearer {stack.admin_token}"}
    )
    assert r.status_code == 201, r.text

    code, out = run(
        stack,
        "events",
        "tail",
        "--topic",
        "vigil.data",
        "--type",
        "dataset.version.registered",
        "--from-beginning",
        "--limit",
        "1",
    )
    assert code == 0, out
    assert "dataset.version.registered" in out
    assert "dataset/cli-demo/v1" in out

    code, out = run(stack, "dlq", "list", "registry")
    assert code == 0, out
    assert "dead letters" in out

    code, out = run(stack, "dlq", "replay", "registry", "999")
    assert code == 1
    assert "no dead letter 999" in out


def test_clear_error_when_the_stack_is_down(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["dlq", "list", "auditor", "--home", str(tmp_path)], env={"VIGIL_AUDITOR_URL": "http://127.0.0.1:9"}
    )
    assert result.exit_code == 1
    assert "Is `vigil up` running?" in result.output
