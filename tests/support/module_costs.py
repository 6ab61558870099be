"""Which test modules take longest, so ``make test`` starts them first.

``make test`` runs four xdist workers with ``--dist loadfile`` (a module's cases share its fixtures). A worker that
picks up a long module near the end keeps the run going alone while the others idle; xdist's default order (modules
with the most cases first) put the console, report, fuzz and Ray modules — a few cases each, minutes each — last.
Ordering modules longest first (the classic longest-processing-time rule) shortens that tail; the conftest sorts the
collection by these weights and the Makefile passes ``--no-loadscope-reorder`` so xdist keeps the order.

The weights are seconds per module from one fresh-clone CI run's JUnit report (2026-12-07, 4 workers on 2 cores,
under extra load), two modules re-timed or re-weighed since (marked); only their order matters. A module not listed
weighs 0 and keeps its place after these.
"""

from __future__ import annotations

MODULE_SECONDS: dict[str, int] = {
    "tests/e2e/test_console.py": 272,  # re-timed with the graph and monitoring cases in it (one story, was 325)
    "tests/integration/test_openapi_fuzz.py": 248,
    "tests/e2e/test_report.py": 196,
    "tests/integration/trainer/test_ray_executor.py": 189,
    "tests/fault/test_loop_faults.py": 148,
    "tests/unit/kernels/test_kernel_drift_alarms.py": 13,  # re-timed after its Fisher kernel, under load (was 137)
    "tests/fault/test_failover_paused.py": 132,
    "tests/fault/test_partition_broker.py": 122,
    "tests/fault/test_failover_all.py": 119,
    "tests/e2e/test_demo.py": 116,
    "tests/integration/test_embedded_stack.py": 76,
    "tests/fault/test_failover_monitor.py": 71,
    "tests/integration/trainer/test_trainer_runs.py": 63,
    "tests/e2e/test_closed_loop.py": 48,
    "tests/integration/deployer/test_deployer_canary.py": 44,
    "tests/integration/test_policy_changes.py": 43,
    "tests/integration/monitor/test_monitor_canary.py": 38,
    "tests/fault/test_failover_scheduler.py": 36,
    "tests/integration/test_cli_commands.py": 35,
    "tests/fault/test_monitor_broker_loss.py": 34,
    "tests/integration/monitor/test_monitor_canary_rollout.py": 32,
    "tests/fault/test_failover_trainer.py": 32,
}


def longest_first(module_paths: list[str]) -> list[str]:
    """The distinct modules of ``module_paths`` (in first-seen order), heaviest first; ties keep their order."""
    seen = list(dict.fromkeys(module_paths))
    return sorted(seen, key=lambda path: -MODULE_SECONDS.get(path, 0))
