"""The training sandbox holds against hostile training code (issue #20 item 3), through the real trainer, broker
and Postgres.

Training requests go straight onto the broker, naming the entrypoints of ``sandbox_attacks`` (allow-listed for this
trainer). Each tries one thing — the trainer's environment (its own and ``/proc/<trainer>/environ``), the stack's
secrets in VIGIL_HOME (written by the stack's own code: ``admin.token``, the artifact keyring, the auditor's signing
key, the trainer's event signing key), a TCP connection to the test's Postgres on 127.0.0.1, a file beyond the
size limit, a fork bomb whose children linger (one outside the process group), files written outside the work
directory, a forged result naming a file outside the work directory (absolute, ``../``, a symlink) — and every one
fails with the refusal as the run's error, no secret in any run's log. Afterwards no process of any run is left,
nothing was written outside, and a normal run in the same trainer succeeds: as the sandbox uid, with its memory
request lowered to the operator's cap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from integration.trainer.trainer_support import PROBE, patient_dataset, publish, trainer_settings

from support.services import Tokens, eventually, make_tokens, running
from vigil.artifacts.keyring import ensure_keyring_file
from vigil.auditor.signing import load_signer
from vigil.events import new_id
from vigil.events.authority import service_principal
from vigil.events.catalog.common import DatasetRef
from vigil.events.catalog.training import TrainingRequested
from vigil.events.trust import ensure_keys, private_key_path
from vigil.stack.credentials import ensure_tokens
from vigil.stack.state import StackPaths
from vigil.trainer.app import make_app as make_trainer
from vigil.trainer.sandbox import Sandbox, _grant_traverse, child_env
from vigil.trainer.settings import TrainerSettings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the full sandbox needs a root trainer (it drops to its own uid)"),
]

ATTACKS = "sandbox_attacks"
SECRET_VAR = "VIGIL_TEST_SANDBOX_SECRET_TOKEN"
MAX_PROCESSES = 24
#: A uid of this test's own, with no passwd entry (the setting takes a number so): RLIMIT_NPROC counts per uid, and
#: other tests' runs as ``vigil-sandbox`` must not share this test's small budget.
SANDBOX_UID = 64123
MEMORY_CAP_MB = 3072
MAX_FILE_MB = 2


def _request(model: str, entrypoint: str, dataset: DatasetRef, params: dict[str, Any], **kw: Any) -> TrainingRequested:
    return TrainingRequested(
        model=model, job_id=new_id(), attempt=1, idempotency_key=os.urandom(32).hex(), entrypoint=entrypoint,
        params=params, datasets=[dataset], code_version="git:test", trigger="manual", timeout_s=120, **kw,
    )  # fmt: skip


def _stack_secrets(home: Path) -> list[Path]:
    """The secrets an embedded stack keeps in its home, written by the code that writes them there."""
    paths = StackPaths.at(home)
    ensure_tokens(paths, ["trainer"])
    ensure_keyring_file(paths.artifact_keyring)
    signing_key = home / "auditor" / "signing.key"
    load_signer(None, signing_key)
    event_keys = home / "keys" / "events"  # where `vigil up` keeps the services' event signing keys
    ensure_keys(event_keys)
    return [paths.admin_token, paths.artifact_keyring, signing_key,
            private_key_path(event_keys, service_principal("trainer"))]  # fmt: skip


def _run_processes(work_dir: Path) -> list[int]:
    """Processes whose working directory is (or was) inside ``work_dir``: what a run left running."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(work_dir)):
            found.append(int(entry.name))
    return found


async def test_hostile_training_code_is_contained_and_the_trainer_unharmed(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    secret = uuid.uuid4().hex
    monkeypatch.setenv(SECRET_VAR, secret)  # in the trainer's (this process's) environment
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                  os.environ.get("PYTHONPATH")])))  # fmt: skip
    home = tmp_path / "home"
    home.mkdir()
    secrets = _stack_secrets(home)
    work_dir = home / "trainer-work"
    body = patient_dataset(tmp_path / "data")
    dataset = DatasetRef(dataset="patients", version=1, content_digest=body["content_digest"], uri=body["uri"])
    port = urlsplit(fresh_db).port or 5432
    outside = [str(home), str(work_dir), str(Path(sys.prefix) / "lib"), str(Path(__file__).parent), "/etc", "/dev/shm"]
    if not str(work_dir.resolve()).startswith("/tmp/"):
        outside.append("/tmp")
    attacks = {
        "environ": _request("environ", f"{ATTACKS}:environ", dataset,
                            {"trainer_pid": os.getpid(), "secret_vars": [SECRET_VAR, "VIGIL_DATABASE_URL"]}),
        "keys": _request("keys", f"{ATTACKS}:keys", dataset, {"paths": [str(p) for p in secrets]}),
        "network": _request("network", f"{ATTACKS}:network", dataset, {"port": port}),
        "fork": _request("fork", f"{ATTACKS}:fork_bomb", dataset, {}),
        "write": _request("write", f"{ATTACKS}:write_outside", dataset, {"targets": outside}),
        "forge-absolute": _request("forge-absolute", f"{ATTACKS}:forge_result", dataset,
                                   {"mode": "absolute", "target": str(secrets[0])}),
        "forge-dotdot": _request("forge-dotdot", f"{ATTACKS}:forge_result", dataset,
                                 {"mode": "dotdot", "target": str(secrets[0])}),
        "forge-symlink": _request("forge-symlink", f"{ATTACKS}:forge_result", dataset,
                                  {"mode": "symlink", "target": str(secrets[1])}),
        "big-file": _request("big-file", f"{ATTACKS}:big_file", dataset, {"mb": MAX_FILE_MB + 1}),
        "linger": _request("linger", f"{ATTACKS}:lingering_child", dataset, {}),
    }  # fmt: skip
    normal = _request("normal", PROBE, dataset, {"steps": 2}, memory_limit_mb=1_000_000)
    settings = trainer_settings(
        TrainerSettings, home, dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens,
        trainer_work_dir=work_dir, trainer_dataset_roots=[tmp_path / "data"],
        trainer_entrypoint_allow=[f"{ATTACKS}:*", PROBE], trainer_sandbox_max_processes=MAX_PROCESSES,
        trainer_max_memory_limit_mb=MEMORY_CAP_MB, trainer_sandbox_max_file_mb=MAX_FILE_MB,
        trainer_sandbox_user=str(SANDBOX_UID),
        # One run at a time: RLIMIT_NPROC counts per uid, so a fork bomb starves concurrent runs of the same uid.
        trainer_workers=1,
    )  # fmt: skip

    async with running(make_trainer(settings)) as trainer:
        viewer = tokens.headers("viewer")

        async def finished(count: int) -> dict[str, dict[str, Any]]:
            r = await trainer.client.get("/v1/runs", params={"limit": 100}, headers=viewer)
            done = {i["model"]: i for i in r.json()["items"] if i["state"] in ("succeeded", "failed")}
            return done if len(done) >= count else {}

        async def logs(run_id: str) -> list[str]:
            r = await trainer.client.get(f"/v1/runs/{run_id}/logs", headers=viewer)
            return [line["line"] for line in r.json()["items"]]

        await publish(kafka_bootstrap, topic_prefix, list(attacks.values()), actor="service:scheduler")
        runs = await eventually(lambda: finished(len(attacks)), timeout=240, what="every attack finished")
        left = _run_processes(work_dir)
        # The trainer is unharmed: the next, ordinary run succeeds — as the sandbox uid, its memory capped.
        await publish(kafka_bootstrap, topic_prefix, [normal], actor="service:scheduler")
        runs = await eventually(lambda: finished(len(attacks) + 1), timeout=120, what="the normal run finished")
        all_logs = {model: await logs(run["run_id"]) for model, run in runs.items()}

    assert left == [], f"processes of finished runs still alive: {left}"
    for model, run in runs.items():
        text = json.dumps(run) + "\n".join(all_logs[model])
        assert secret not in text, f"{model}: the trainer's secret reached the run"
        assert all_logs[model] and all_logs[model][0].startswith(f"sandbox: uid {SANDBOX_UID} "), all_logs[model][:3]
    for model in attacks:
        if model != "linger":
            assert runs[model]["state"] == "failed", (model, runs[model])
    assert runs["linger"]["state"] == "succeeded", runs["linger"]["error"]
    errors = {model: runs[model]["error"] for model in attacks}

    assert "FileNotFoundError" in errors["environ"] or "PermissionError" in errors["environ"], errors["environ"]
    assert errors["keys"].startswith("PermissionError: refused: PermissionError"), errors["keys"]
    assert errors["keys"].count("PermissionError:") == 1 + len(secrets), errors["keys"]
    assert "Network is unreachable" in errors["network"], errors["network"]
    assert "File too large" in errors["big-file"], errors["big-file"]
    # The kernel refused the fork bomb at the process limit (the runner itself counts too).
    started = int(errors["fork"].split("fork refused after ")[1].split(" ")[0])
    assert 0 < started < MAX_PROCESSES and "Resource temporarily unavailable" in errors["fork"], errors["fork"]
    refused, _written = errors["write"].removeprefix("PermissionError: refused: ").split(" | written: ")
    for target in outside:
        assert not (Path(target) / f"sandbox-pwned-{runs['write']['run_id']}").exists(), f"wrote into {target}"
    for target in outside:
        if target not in ("/dev/shm", "/tmp"):  # private tmpfs there: writable inside, gone with the run
            assert f"{target} (PermissionError)" in refused, (target, errors["write"])
    assert "not a path inside the run's work directory" in errors["forge-absolute"], errors["forge-absolute"]
    assert "not a path inside the run's work directory" in errors["forge-dotdot"], errors["forge-dotdot"]
    assert "is a symlink" in errors["forge-symlink"], errors["forge-symlink"]
    for model in ("forge-absolute", "forge-dotdot", "forge-symlink"):
        assert runs[model]["artifact_digest"] is None, runs[model]

    assert runs["normal"]["state"] == "succeeded", runs["normal"]["error"]
    assert f"address space {MEMORY_CAP_MB} MB" in all_logs["normal"][0], all_logs["normal"][0]
    assert "network none" in all_logs["normal"][0] and f"processes {MAX_PROCESSES}" in all_logs["normal"][0]


def test_a_runner_without_root_says_it_is_degraded_in_its_log(tmp_path: Path, postgres_dsn: str) -> None:
    """What a trainer not running as root gets: the runner cannot change uid, says so in the run's first log line,
    and still takes the network away when the kernel lets an unprivileged user namespace be made."""
    nobody = 65534
    workdir = tmp_path / "run"
    workdir.mkdir()
    body = patient_dataset(workdir)
    dataset_file = Path(urlsplit(body["uri"]).path)
    for path in (workdir, dataset_file):
        path.chmod(0o777 if path.is_dir() else 0o644)
    _grant_traverse(workdir / "x")  # what a root trainer does for its work directory and interpreter
    _grant_traverse(Path(os.path.realpath(sys.executable)))
    spec = {
        "run_id": new_id(), "job_id": new_id(), "model": "degraded", "entrypoint": f"{ATTACKS}:network",
        "params": {"port": urlsplit(postgres_dsn).port or 5432}, "code_version": "git:test", "workdir": str(workdir),
        "datasets": [{"dataset": "patients", "version": 1, "content_digest": body["content_digest"],
                      "uri": body["uri"]}],
        "staged_datasets": {"0": str(dataset_file)}, "dataset_roots": [], "memory_limit_mb": None,
        "entrypoint_allow": [f"{ATTACKS}:*"],
        "sandbox": Sandbox(None, None, 64, 64, None, degraded="test: not root").spec(None, 60, 1),
    }  # fmt: skip
    (workdir / "spec.json").write_text(json.dumps(spec))
    env = child_env(1, {"HOME": str(workdir), "PYTHONPATH": str(Path(__file__).parent)})
    done = subprocess.run(
        [sys.executable, "-m", "vigil.trainer.runner", str(workdir / "spec.json")],
        user=nobody, group=nobody, extra_groups=[], cwd=workdir, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    first = done.stderr.splitlines()[0]
    assert first.startswith(f"sandbox DEGRADED: same uid as the trainer ({nobody}): test: not root"), done.stderr
    final = json.loads(done.stdout.splitlines()[-1])
    assert final["type"] == "failed", final
    if "network none (user + network namespace)" in first:
        assert "Network is unreachable" in final["error"], final
    else:
        assert "network NOT isolated" in first, first
