"""The fault suite over real processes while the closed loop runs (issue #9).

One stack for the whole module: the six services as ``python -m vigil.<service>`` processes with their own
embedded broker (memory only) and Postgres, started by :func:`vigil.stack.supervisor.running_stack`. The tests run
in order, each one round of the loop (a new dataset version → job → training → registered model version → canary
rollout → promoted) or a stretch of live traffic and labels, with one fault injected while events flow:

- kill -9 of each service process once — trainer mid-training, scheduler mid-dispatch, registry with a batch of
  data announcements in flight, deployer mid gateway batch, monitor while labels stream in, auditor while a round
  runs — then the process is started again and the loop must complete its next step;
- the broker killed and started again empty (services recreate topics, outboxes republish);
- Postgres restarted;
- duplicates (the same envelope bytes delivered twice) and poison (malformed JSON, an unknown schema version, an
  envelope missing attributes) on topics the services consume.

The last test checks the outcome against the ledger of what went in: every decision taken exactly once, nothing
lost, the DLQs hold exactly the poison, the audit chain verifies. Figures (faults, recovery times, events in and
out) go to ``loop-faults.json`` in the module's tmp dir and are printed; docs/faults.md quotes a real run.
Timings are reported, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fault.loop_fault_support import (
    CONSUMERS,
    DEPLOYMENT,
    STACK_ENV,
    WINDOW_S,
    Fault,
    LoopHarness,
    expected_window_counts,
    logged_batches,
    logged_prediction_ids,
    summarise,
)

from vigil.artifacts.keyring import load_keyring
from vigil.events import topics
from vigil.stack.supervisor import RunningStack, default_launches, running_stack
from vigil.trainer.examples import patient_risk

pytestmark = [pytest.mark.fault]

SERVICES = ("registry", "scheduler", "trainer", "deployer", "monitor", "auditor")


@pytest.fixture(scope="module")
def loop_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """All six services as real processes, with a broker and a Postgres of their own (both may be killed here
    without touching the session's infrastructure)."""
    home = tmp_path_factory.mktemp("loop-faults")
    with pytest.MonkeyPatch.context() as mp:
        # The stack must run its own embedded Postgres (this module restarts it), whatever the session uses.
        mp.delenv("DATABASE_URL", raising=False)
        mp.delenv("VIGIL_DATABASE_URL", raising=False)
        with running_stack(
            home,
            services=default_launches(free_ports=True),
            broker_port=0,
            postgres_port=0,
            postgres_durable=False,
            ready_timeout=180.0,
            # A key file, not the ephemeral key tests get by default: checkpoints signed before an auditor restart
            # must still verify after it.
            extra_env={**STACK_ENV, "VIGIL_AUDIT_SIGNING_KEY_FILE": str(home / "auditor" / "signing.key")},
        ) as stack:
            yield stack


@pytest.fixture(scope="module")
async def harness(loop_stack: RunningStack) -> AsyncIterator[LoopHarness]:
    h = LoopHarness(loop_stack, loop_stack.paths.home / "data")
    h.data_dir.mkdir(parents=True, exist_ok=True)
    yield h
    out = loop_stack.paths.home / "loop-faults.json"
    out.write_text(json.dumps(h.ledger.to_json(), indent=2, default=str))
    print(f"\nloop fault figures ({out}):\n{json.dumps(h.ledger.to_json(), indent=2, default=str)}")
    await h.aclose()


async def _wait_labelled_window(h: LoopHarness, version: int, *, timeout: float = 120.0) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        windows = await h.windows()
        found = [w for w in windows if w["figures"]["version"] == version and w["figures"]["labels"] > 0]
        return found[-1] if found else None

    return await h.until(probe, timeout=timeout, what=f"a closed v{version} window with labels")


def _version_of_job(job: dict[str, Any]) -> int:
    (ref,) = [d for d in job["datasets"] if d["dataset"] == patient_risk.DATASET]
    return int(ref["version"])


# ------------------------------------------------------------------------------------------------ the rounds
async def test_01_the_loop_runs_on_real_processes(harness: LoopHarness) -> None:
    """Baseline round: dataset v1 → trained → registered → serving → traffic and labels → a labelled window."""
    started = time.monotonic()
    await harness.configure()
    await harness.announce(1, via="http")
    await harness.wait_serving(1)
    seen = await harness.monitor_rows("predictions")
    served = await harness.serve(200, seed=11)
    assert {s.version for s in served} == {1}
    await harness.wait_monitor_applied("predictions", seen + len(served))
    await harness.label(served, seed=11)
    window = await _wait_labelled_window(harness, 1)
    assert window["figures"]["labels"] <= window["figures"]["predictions"]
    harness.ledger.figures["baseline_round_s"] = round(time.monotonic() - started, 1)


def test_01b_artifacts_are_encrypted_at_rest_by_default(loop_stack: RunningStack) -> None:
    """The stack made a keyring on its first start; the model the trainer just stored is sealed with its current key,
    and no object under the store is readable in plain."""
    keyring = load_keyring(loop_stack.paths.artifact_keyring)
    objects = [
        p for p in (loop_stack.paths.home / "artifacts" / "sha256").rglob("*") if p.is_file() and p.name[0] != "."
    ]
    assert objects, "round 1 stored no artifact"
    current = keyring.current.encode()
    sealed_by = {p.read_bytes()[: 9 + len(current)] for p in objects}
    assert sealed_by == {b"VGLENC2\0" + bytes([len(current)]) + current}


async def test_02_trainer_killed_mid_training(harness: LoopHarness) -> None:
    """kill -9 of the trainer while it trains v2: the lease expires, the run is reaped as lost, the job runs once
    more, and v2 is registered and promoted exactly once."""
    before = {r["run_id"] for r in await harness.runs()}
    await harness.announce(2, via="topic")

    async def running_run() -> dict[str, Any] | None:
        runs = [r for r in await harness.runs() if r["run_id"] not in before]
        return next((r for r in runs if r["state"] == "running"), None)

    run = await harness.until(running_run, timeout=120, what="the v2 training run running")
    killed_at = await harness.kill("trainer")
    fault = Fault("kill -9", "trainer", {"run_id": run["run_id"], "job_id": run["job_id"]})
    harness.ledger.faults.append(fault)
    fault.ready_s = round(await harness.restart("trainer") - killed_at, 1)
    await harness.wait_serving(2)
    fault.recovered_s = round(time.monotonic() - killed_at, 1)

    runs = [r for r in await harness.runs() if r["job_id"] == run["job_id"]]
    assert [(r["attempt"], r["state"]) for r in runs] == [(1, "lost"), (2, "succeeded")], runs
    assert runs[0]["run_id"] == run["run_id"]


async def test_03_scheduler_killed_mid_dispatch(harness: LoopHarness) -> None:
    """kill -9 of the scheduler as soon as it holds the job for v3 (training requested or about to be)."""
    known = {j["id"] for j in await harness.jobs()}
    await harness.announce(3, via="http")

    async def new_job() -> dict[str, Any] | None:
        return next((j for j in await harness.jobs() if j["id"] not in known), None)

    job = await harness.until(new_job, timeout=120, what="the scheduler's job for v3")
    killed_at = await harness.kill("scheduler")
    fault = Fault("kill -9", "scheduler", {"job_id": job["id"], "job_state_at_kill": job["state"]})
    harness.ledger.faults.append(fault)
    fault.ready_s = round(await harness.restart("scheduler") - killed_at, 1)
    await harness.wait_serving(3)
    fault.recovered_s = round(time.monotonic() - killed_at, 1)


async def test_04_registry_killed_with_duplicates_and_poison_in_flight(harness: LoopHarness) -> None:
    """Poison, a duplicate announcement and v4's announcement land on vigil.data; the registry is killed at once
    and started again: v4 becomes exactly one dataset version, the duplicate none, the poison dead letters."""
    await harness.inject_poison(topics.DATA, harness.data_template(), key=patient_risk.DATASET)
    await harness.resend(harness.ledger.announcements[1], topics.DATA, key=patient_risk.DATASET)  # v2, again
    await harness.announce(4, via="topic")
    killed_at = await harness.kill("registry")
    fault = Fault("kill -9", "registry", {"in_flight": "3 poison + 1 duplicate + v4 on vigil.data"})
    harness.ledger.faults.append(fault)
    fault.ready_s = round(await harness.restart("registry") - killed_at, 1)
    await harness.wait_serving(4)
    fault.recovered_s = round(time.monotonic() - killed_at, 1)
    harness.ledger.faults.append(Fault("duplicate", topics.DATA, {"event_id": harness.ledger.announcements[1]}))
    harness.ledger.faults.append(Fault("poison", topics.DATA, {"records": 3}))


async def test_05_deployer_killed_mid_gateway_batch(harness: LoopHarness) -> None:
    """Traffic flows while the deployer is killed: answered predictions are logged at most once; every row the
    restarted deployer answers is logged; only rows of the batch in flight at the kill may be missing."""
    stop = asyncio.Event()
    served_before: list[str] = []
    served_after: list[str] = []
    refused = 0
    phase = served_before

    async def traffic() -> None:
        nonlocal refused
        seed = 500
        while not stop.is_set():
            seed += 1
            try:
                served = await harness.serve(20, seed=seed, rows_per_request=20)
            except Exception:  # the deployer is away: connection refused or reset mid-request
                refused += 1
                await asyncio.sleep(0.1)
                continue
            phase.extend(s.prediction_id for s in served)
            await asyncio.sleep(0.02)  # a steady stream, not a burst: the kill lands between gateway batches

    sender = asyncio.create_task(traffic())
    try:
        await harness.until(lambda: _at_least(served_before, 300), timeout=120, what="300 rows served")
        killed_at = await harness.kill("deployer")
        fault = Fault("kill -9", "deployer", {"rows_served_before_kill": len(served_before)})
        harness.ledger.faults.append(fault)
        fault.ready_s = round(await harness.restart("deployer") - killed_at, 1)
        phase = served_after
        await harness.until(lambda: _at_least(served_after, 300), timeout=120, what="300 rows served after")
        fault.recovered_s = round(time.monotonic() - killed_at, 1)
    finally:
        stop.set()
        await sender
    fault.detail["requests_refused_while_down"] = refused

    async def all_after_logged() -> list[str] | None:
        ids = await logged_prediction_ids(harness.stack.bootstrap_servers)
        return ids if set(served_after) <= set(ids) else None

    logged = await harness.until(all_after_logged, timeout=60, what="every post-restart prediction logged")
    duplicates = [pid for pid, n in Counter(logged).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} prediction ids logged twice"
    served_ids = {s.prediction_id for s in harness.ledger.served}
    # The sender has one request in flight at a time: that one may have been answered and logged by the deployer
    # while the kill cut the connection before the answer reached us. Nothing else may be logged unanswered.
    unanswered_requests = {pid.rsplit("-", 1)[0] for pid in set(logged) - served_ids}
    assert len(unanswered_requests) <= 1, f"logged predictions of {len(unanswered_requests)} unanswered requests"
    fault.detail["logged_but_answer_lost"] = len(set(logged) - served_ids)
    lost = served_ids - set(logged)
    assert lost <= set(served_before), "a prediction answered after the restart was not logged"
    fault.detail["predictions_lost_in_flight"] = len(lost)
    harness.ledger.figures["predictions_logged_before_broker_loss"] = len(logged)


async def _at_least(items: list[str], n: int) -> bool:
    return len(items) >= n


async def _monitor_counts(h: LoopHarness) -> dict[str, int]:
    """Predictions and labels summed over every closed tumbling window of the deployment."""
    windows = await h.windows()
    return {k: sum(int(w["figures"][k]) for w in windows) for k in ("predictions", "labels")}


async def test_06_monitor_killed_while_labels_stream_in(harness: LoopHarness) -> None:
    """Labels for everything served (and three poison records) stream in while the monitor is killed and started
    again: its windows count each logged prediction once and each matching label once."""
    logged_so_far = harness.ledger.figures.get("predictions_logged_before_broker_loss", 0)
    await harness.wait_monitor_applied("predictions", logged_so_far)
    ids = await harness.label(harness.ledger.served[200:], seed=77)  # test_01's rows are labelled already
    await harness.inject_poison(topics.LABELS, harness.label_template(), key=DEPLOYMENT)
    killed_at = await harness.kill("monitor")
    fault = Fault("kill -9", "monitor", {"records_in_flight": len(ids) + 3})
    harness.ledger.faults.append(fault)
    fault.ready_s = round(await harness.restart("monitor") - killed_at, 1)
    harness.ledger.faults.append(Fault("poison", topics.LABELS, {"records": 3}))

    batches = await logged_batches(harness.stack.bootstrap_servers)
    logged = {i for _, b in batches for i in b["prediction_ids"]}
    expected = {"predictions": len(logged), "labels": len(logged & harness.ledger.labelled)}

    harness.ledger.figures["monitor_expected_counts"] = expected

    async def settled() -> dict[str, int] | None:
        got = await _monitor_counts(harness)
        harness.ledger.figures["monitor_windows_counted"] = got
        return got if got == expected else None

    # A window closes WINDOW_S + grace after its start; late labels revise it. Allow several windows.
    try:
        await harness.until(settled, timeout=60, what=f"the monitor's windows to count exactly {expected}")
    except TimeoutError:
        # bug 3 (docs/faults.md, fixed): report what the windows hold, and the restarted monitor's own counters
        got = await _monitor_counts(harness)
        metrics = await harness.monitor_metrics()
        fault.detail["monitor_rows_after_restart"] = {
            k: v for k, v in metrics.items() if "rows" in k or "held" in k or "watermark" in k
        }
        fault.detail["monitor_counted"] = got
        pytest.fail(f"windows count {got}, logged/labelled {expected}; monitor counters: {fault.detail}")
    fault.recovered_s = round(time.monotonic() - killed_at, 1)
    # Not only the sums: every window holds exactly the rows its batches put in it — none closed before the backlog
    # of the monitor's downtime was read (the watermark, docs/monitor.md), so none of them became late rows.
    want = expected_window_counts(batches, harness.ledger.labelled, WINDOW_S)
    got_windows = {
        (int(w["figures"]["version"]), w["figures"]["variant"], w["figures"]["start"]): (
            int(w["figures"]["predictions"]),
            int(w["figures"]["labels"]),
        )
        for w in await harness.windows()
    }
    assert got_windows == want
    assert all(int(w["figures"]["late_rows"]) == 0 for w in await harness.windows())
    metrics = await harness.monitor_metrics()
    fault.detail["late_rows"] = sum(
        v for k, v in metrics.items() if k.startswith("vigil_monitor_rows_total") and 'outcome="late"' in k
    )


async def test_06b_duplicate_label_event_is_counted_once(harness: LoopHarness) -> None:
    """At-least-once delivery means an upstream may deliver the same label.observed twice; the monitor's windows
    must not count its labels twice (a prediction takes at most one label: see docs/monitor.md, *Late labels*)."""
    seen = await harness.monitor_rows("predictions")
    served = await harness.serve(40, seed=4040)
    await harness.wait_monitor_applied("predictions", seen + len(served))
    start = await _monitor_counts(harness)
    (event_id,) = await harness.label(served, seed=4040)

    async def applied() -> dict[str, int] | None:
        got = await _monitor_counts(harness)
        return got if got["labels"] >= start["labels"] + len(served) else None

    before = await harness.until(applied, timeout=90, what="the 40 labels counted in a window")
    refused_before = await _duplicate_label_events(harness)
    await harness.resend(event_id, topics.LABELS, key=DEPLOYMENT)
    harness.ledger.faults.append(Fault("duplicate", topics.LABELS, {"event_id": event_id}))

    async def refused() -> bool:  # the monitor has consumed the re-sent event: its inbox refused it
        return await _duplicate_label_events(harness) > refused_before

    # Refused by the inbox means no effect at all — no state write, so no revision to wait for.
    await harness.until(refused, timeout=60, what="the re-sent label event refused by the monitor's inbox")
    after = await _monitor_counts(harness)
    harness.ledger.figures["monitor_counts_around_duplicate_label"] = {"before": before, "after": after}
    assert after == before


async def _duplicate_label_events(h: LoopHarness) -> float:
    """label.observed events the monitor's inbox refused as already applied (since its process started)."""
    metrics = await h.monitor_metrics("vigil_events_consumed_total")
    return sum(v for k, v in metrics.items() if 'type="label.observed"' in k and 'outcome="duplicate"' in k)


async def test_07_auditor_killed_while_a_round_runs(harness: LoopHarness) -> None:
    """kill -9 of the auditor as v5 is announced: the round completes without it, and after the restart it audits
    what it missed (its consumer resumes from the last commit; audit_log's unique event ids absorb redeliveries)."""
    await harness.announce(5, via="http")
    killed_at = await harness.kill("auditor")
    fault = Fault("kill -9", "auditor", {})
    harness.ledger.faults.append(fault)
    fault.ready_s = round(await harness.restart("auditor") - killed_at, 1)
    await harness.wait_serving(5)

    async def caught_up() -> bool:
        entries = await harness.audit_entries(type="model.version.registered")
        return len(entries) >= 5

    await harness.until(caught_up, timeout=120, what="the auditor catching up with v5")
    fault.recovered_s = round(time.monotonic() - killed_at, 1)


@pytest.mark.slow
async def test_08_broker_killed_and_started_empty(harness: LoopHarness) -> None:
    """The broker dies and comes back empty: every service notices, topics are created again, outboxes
    republish, inboxes absorb the duplicates — and the next round completes."""
    broker = harness.stack.broker
    killed_at = time.monotonic()
    await asyncio.to_thread(broker.kill)
    await asyncio.to_thread(broker.start)
    fault = Fault("kill -9 + empty restart", "broker", {})
    harness.ledger.faults.append(fault)
    fault.ready_s = round(time.monotonic() - killed_at, 1)
    version = max(harness.ledger.dataset_versions) + 1
    await harness.announce(version, via="http")
    await harness.wait_serving(version, timeout=240)
    fault.recovered_s = round(time.monotonic() - killed_at, 1)


@pytest.mark.slow
async def test_08b_monitor_resumes_after_broker_loss(harness: LoopHarness) -> None:
    """After the broker loss the monitor's consumer re-joins on the new log (its window state is in Postgres) and
    consumes the traffic served since."""
    seen = await harness.monitor_rows("predictions")
    served = await harness.serve(100, seed=66)
    await harness.wait_monitor_applied("predictions", seen + len(served), timeout=60)


@pytest.mark.slow
async def test_09_postgres_restarted(harness: LoopHarness) -> None:
    """Postgres goes away and comes back under every service's pool: no event is dead-lettered for it (infrastructure
    errors are retried without spending attempts) and the next round, announced on the topic, completes."""
    pg = harness.stack.postgres
    assert pg is not None
    version = max(harness.ledger.dataset_versions) + 1
    killed_at = time.monotonic()
    await asyncio.to_thread(pg.restart)
    fault = Fault("restart", "postgres", {})
    harness.ledger.faults.append(fault)
    fault.ready_s = round(time.monotonic() - killed_at, 1)
    await harness.announce(version, via="topic")
    await harness.wait_serving(version, timeout=240)
    fault.recovered_s = round(time.monotonic() - killed_at, 1)


# ------------------------------------------------------------------------------------------------ the outcome
async def test_10_every_decision_once_nothing_lost(harness: LoopHarness) -> None:
    h = harness
    versions = sorted(h.ledger.dataset_versions)
    n = len(versions)
    assert versions == list(range(1, n + 1))

    # registry: one dataset version per announcement (the duplicate made none), one model version per dataset
    datasets = await h.get_all("registry", f"/v1/datasets/{patient_risk.DATASET}/versions")
    assert [d["version"] for d in datasets] == versions
    models = await h.get_all("registry", "/v1/models/patient-risk-clf/versions")
    trained_on = sorted(
        ref["version"] for m in models for ref in m["datasets"] if ref["dataset"] == patient_risk.DATASET
    )
    assert trained_on == versions, "model versions per dataset version"
    assert sorted(m["version"] for m in models) == versions

    # scheduler and trainer: one succeeded job per dataset version; runs lost only where a trainer was killed
    jobs = await h.jobs()
    assert sorted(_version_of_job(j) for j in jobs) == versions
    assert {j["state"] for j in jobs} == {"succeeded"}
    runs = await h.runs()
    trainer_kills = sum(1 for f in h.ledger.faults if f.target == "trainer")
    assert Counter(r["state"] for r in runs) == Counter({"succeeded": n, "lost": trainer_kills})

    # deployer: one rollout per candidate, each promoted once
    rollouts = await h.get_all("deployer", f"/v1/deployments/{DEPLOYMENT}/rollouts")
    assert sorted(r["candidate_version"] for r in rollouts) == versions[1:]
    assert {r["phase"] for r in rollouts} == {"promoted"}

    # auditor: every upstream announcement audited once, every decision once, no event id twice
    async def audited() -> list[dict[str, Any]] | None:
        entries = await h.audit_entries()
        kinds = Counter(e["event_type"] for e in entries)
        want = {"data.updated": n, "model.version.registered": n, "deployment.promoted": n}
        return entries if all(kinds[k] >= v for k, v in want.items()) else None

    entries = await h.until(audited, timeout=120, what="the audit log to hold the whole run")
    ids = Counter(e["event_id"] for e in entries)
    assert [eid for eid, c in ids.items() if c > 1] == []
    kinds = Counter(e["event_type"] for e in entries)
    upstream = {e["event_id"] for e in entries if e["event_type"] == "data.updated"}
    assert upstream == set(h.ledger.announcements)
    assert kinds["dataset.version.registered"] == n
    assert kinds["model.version.registered"] == n
    assert kinds["training.completed"] == n
    assert kinds["deployment.promoted"] == n  # v1's first deployment is announced as a promotion too

    # DLQ: exactly the poison, in every service that consumes the poisoned topic, nothing anywhere else
    dlq_figures: dict[str, dict[str, int]] = {}
    for service in SERVICES:
        expected = Counter(p.reason for p in h.ledger.poison if service in CONSUMERS[p.topic])

        async def letters(
            service: str = service, expected: Counter[str] = expected
        ) -> tuple[list[dict[str, Any]]] | None:
            found = await h.dlq(service)
            return (found,) if Counter(d["reason"] for d in found) == expected else None

        try:
            (found,) = await h.until(letters, timeout=30, what=f"{service}'s DLQ to hold exactly {dict(expected)}")
        except TimeoutError:
            found = await h.dlq(service)
            raise AssertionError(
                f"{service} DLQ: {[(d['topic'], d['reason'], d['error'][:120]) for d in found]}, want {expected}"
            ) from None
        dlq_figures[service] = dict(Counter(d["reason"] for d in found))
    h.ledger.figures["dlq"] = dlq_figures

    report = await h.get("auditor", "/v1/verify")
    assert report is not None and report["ok"] is True, report

    h.ledger.figures.update(
        {
            "audit_entries": len(entries),
            "audit_entries_by_type": dict(sorted(kinds.items())),
            "upstream_data_updated_in": len(h.ledger.announcements),
            "audited_data_updated": len(upstream),
            "model_versions": len(models),
            "rollouts": len(rollouts),
            "runs": dict(Counter(r["state"] for r in runs)),
            "recovery": summarise([f.recovered_s for f in h.ledger.faults if f.recovered_s is not None]),
            "audit_verify": {k: report[k] for k in ("ok", "entries_checked") if k in report},
            "cpu_count": os.cpu_count(),
        }
    )
