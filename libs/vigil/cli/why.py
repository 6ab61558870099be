"""``vigil why <event-id | entity>``: walk the audit log's causes from a decision back to the data that started it.

An entity is named the way event subjects name it, with plain version numbers allowed (``model/risk/3`` is the
subject ``model/risk/v3``); the auditor answers for the newest audited event about that subject. ``job/<id>`` is
looked up at the scheduler first (a job's subject carries its model). Anything else with a ``/`` is taken as a
subject verbatim, and a bare id as an event id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from vigil.cli import output
from vigil.cli.client import HomeOpt, JsonOpt, Platform, TokenOpt, UrlOpt

app = typer.Typer()

AUD = "auditor"
_EVENT_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_VERSION = re.compile(r"^v?(\d+)$")
#: Event fields worth a glance in the human output, in this order (the JSON output has every field).
GLANCE = (
    "reason", "trigger", "dataset", "version", "from_version", "to_version", "alias", "stable_version",
    "candidate_version", "failed_version", "verdict", "state", "from_state", "to_state", "job_id", "run_id",
    "row_count",
)  # fmt: skip


@dataclass(frozen=True)
class Target:
    """What to ask the auditor about: an event id, a subject, or a job (whose subject the scheduler knows)."""

    event_id: str | None = None
    subject: str | None = None
    job_id: str | None = None


def _versioned(kind: str, name: str, version: str, text: str) -> str:
    match = _VERSION.match(version)
    if match is None:
        raise ValueError(f"{text!r}: {version!r} is not a version (3 or v3)")
    return f"{kind}/{name}/v{int(match[1])}"


def resolve(text: str) -> Target:
    """Parse the argument of ``vigil why``; ValueError says what form it should take."""
    text = text.strip()
    if "/" not in text:
        if not _EVENT_ID.match(text):
            raise ValueError(f"{text!r} is neither an event id nor an entity like model/<name>/<version>")
        return Target(event_id=text)
    parts = text.split("/")
    if any(not p for p in parts):
        raise ValueError(f"{text!r} has an empty part")
    kind, rest = parts[0], parts[1:]
    if kind == "job" and len(rest) == 1:
        return Target(job_id=rest[0])
    if kind == "model" and len(rest) == 1:
        return Target(subject=f"model/{rest[0]}/alias/champion")  # "why is this model what it is": what serves
    if kind in ("model", "dataset", "deployment") and len(rest) == 2:
        return Target(subject=_versioned(kind, rest[0], rest[1], text))
    return Target(subject=text)


def glance(event: dict[str, Any]) -> str:
    """A few of the event's data fields, and any breached evidence, on one line."""
    raw = event.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    shown = [f"{k}={data[k]}" for k in GLANCE if data.get(k) not in (None, "")]
    evidence = data.get("evidence") or []
    breached = [e for e in evidence if isinstance(e, dict) and e.get("breached")]
    if breached:
        shown.append("breached: " + ", ".join(f"{e.get('statistic')}={output.cell(e.get('value'))}" for e in breached))
    return " ".join(shown)


@app.command()
def why(
    target: Annotated[
        str,
        typer.Argument(
            help="An event id, or an entity: model/<name>/<version>, model/<name> (its champion), "
            "deployment/<name>, dataset/<name>/<version>, dataset/<name>, job/<id>, or any event subject."
        ),
    ],
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Why is this so? The chain of causes, from the event (or the entity's newest event) back to its root."""
    try:
        resolved = resolve(target)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="TARGET") from exc
    platform = Platform(home, token, urls={AUD: url})
    subject = resolved.subject
    if resolved.job_id is not None:
        job = platform.get("scheduler", f"/v1/jobs/{resolved.job_id}")
        subject = f"model/{job['model']}/job/{resolved.job_id}"
    if subject is not None:
        answer = platform.get(AUD, "/v1/why", subject=subject)
    else:
        answer = platform.get(AUD, f"/v1/why/{resolved.event_id}")
    if as_json:
        output.emit_json({"target": target, "subject": subject, **answer})
        return
    _print_chain(target, answer)


def _print_chain(target: str, answer: dict[str, Any]) -> None:
    out = output.console()
    chain = answer["chain"]
    out.print(f"[bold]why {target}[/bold]: {len(chain)} event(s), newest first")
    rows = [
        (str(i), output.when(e["event_time"]), e["event_type"], e["subject"], e["actor"], glance(e["event"]),
         e["event_id"])
        for i, e in enumerate(chain)
    ]  # fmt: skip
    out.print(output.table(None, ("#", "time", "event", "subject", "by", "what", "id"), rows))
    if answer["complete"]:
        root = chain[-1]
        out.print(f"root: {root['event_type']} {root['subject']} by {root['actor']}")
    elif answer.get("missing"):
        out.print(f"incomplete: {answer['missing']}")
    elif answer.get("missing_event_id"):
        out.print(f"incomplete: cause {answer['missing_event_id']} is not in the audit log (yet)")
    else:
        out.print("incomplete: the walk stopped at the auditor's depth limit")
