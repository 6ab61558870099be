"""``vigil jobs`` / ``vigil jobs show``: the scheduler's training jobs and the transitions each went through."""

from __future__ import annotations

from typing import Annotated

import typer

from vigil.cli import output
from vigil.cli.client import HomeOpt, JsonOpt, Platform, TokenOpt, UrlOpt

app = typer.Typer(help="Training jobs: `vigil jobs` lists, `vigil jobs show ID` explains one.")

SCHED = "scheduler"
STATES = ("pending", "scheduled", "running", "succeeded", "failed", "cancelled")


@app.callback(invoke_without_command=True)
def jobs(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model's jobs.")] = None,
    state: Annotated[str | None, typer.Option(help=f"Only jobs in this state: {', '.join(STATES)}.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many (oldest first).")] = 1000,
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List training jobs, oldest first (or `vigil jobs show ID`)."""
    if ctx.invoked_subcommand is not None:
        return
    if state is not None and state not in STATES:
        raise typer.BadParameter(f"{state!r} is not one of {', '.join(STATES)}", param_hint="--state")
    items = Platform(home, token, urls={SCHED: url}).pages(SCHED, "/v1/jobs", limit=limit, model=model, state=state)
    if as_json:
        output.emit_json(items)
        return
    rows = [
        (j["id"], j["model"], j["state"], f"{j['attempt']}/{j['max_attempts']}", j["trigger"],
         ", ".join(f"{d['dataset']}/v{d['version']}" for d in j["datasets"]), output.when(j["created_at"]),
         j["last_reason"])
        for j in items
    ]  # fmt: skip
    columns = ("id", "model", "state", "attempt", "trigger", "datasets", "created", "reason")
    output.console().print(output.table("jobs", columns, rows))


@app.command()
def show(
    job_id: Annotated[str, typer.Argument(help="Job id (from `vigil jobs`).")],
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One job: inputs, run, result, and every state transition with its reason and event."""
    job = Platform(home, token, urls={SCHED: url}).get(SCHED, f"/v1/jobs/{job_id}")
    if as_json:
        output.emit_json(job)
        return
    out = output.console()
    out.print(f"[bold]job {job['id']}[/bold]  {job['model']}  {job['state']}")
    out.print(
        output.pairs(
            [
                ("attempt", f"{job['attempt']}/{job['max_attempts']}"),
                ("trigger", f"{job['trigger']} {', '.join(job['trigger_event_ids'])}".strip()),
                ("datasets", ", ".join(f"{d['dataset']}/v{d['version']}" for d in job["datasets"]) or "-"),
                ("entrypoint", job["entrypoint"]),
                ("params", " ".join(f"{k}={v}" for k, v in sorted(job["params"].items())) or "-"),
                ("code", job["code_version"]),
                ("run", job["run_id"]),
                ("result", " ".join(f"{k}={v}" for k, v in sorted((job["result"] or {}).items())) or "-"),
                ("created", f"{output.when(job['created_at'])} by {job['created_by']}"),
                ("finished", output.when(job["finished_at"])),
            ]
        )
    )
    rows = [
        (output.when(t["at"]), output.cell(t["from_state"]), t["to_state"], t["attempt"], t["actor"], t["reason"],
         t["event_id"])
        for t in job["transitions"]
    ]  # fmt: skip
    out.print(output.table("transitions", ("at", "from", "to", "attempt", "by", "reason", "event"), rows))
