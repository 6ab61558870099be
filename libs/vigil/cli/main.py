"""The ``vigil`` command: a thin registry of sub-apps, one module per area under ``vigil.cli``.

Sub-apps added without a name contribute top-level commands (``vigil up``); named ones become groups
(``vigil audit verify``). Keep command logic in the sub-modules and the library, not here.
"""

from __future__ import annotations

import typer

from vigil.cli import (
    alias,
    artifact_keys,
    audit,
    card,
    data,
    demo,
    deploy,
    dlq,
    event_keys,
    events,
    jobs,
    models,
    monitor,
    report,
    stack,
    tokens,
    why,
)

app = typer.Typer(
    name="vigil",
    help="Vigil: an event-driven MLOps control plane.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.add_typer(stack.app)  # vigil up, vigil status
app.add_typer(demo.app)  # vigil demo
app.add_typer(dlq.app, name="dlq")  # vigil dlq list|replay
app.add_typer(events.app, name="events")  # vigil events tail
app.add_typer(audit.app, name="audit")  # vigil audit verify
app.add_typer(data.app, name="data")  # vigil data publish
app.add_typer(models.app, name="models")  # vigil models list|show
app.add_typer(alias.app, name="alias")  # vigil alias set|history
app.add_typer(deploy.app)  # vigil deploy, vigil promote, vigil rollback
app.add_typer(jobs.app, name="jobs")  # vigil jobs [show ID]
app.add_typer(monitor.app, name="monitor")  # vigil monitor show DEPLOYMENT
app.add_typer(why.app)  # vigil why <event-id | entity>
app.add_typer(report.app, name="report")  # vigil report model|verify (evidence packs)
app.add_typer(card.app, name="card")  # vigil card show|edit|sign-off (model cards)
app.add_typer(tokens.app, name="tokens")  # vigil tokens create|list|revoke
app.add_typer(artifact_keys.app, name="keys")  # vigil keys rotate|rewrap (artifact encryption keys)
event_keys.register(artifact_keys.app)  # vigil keys init-signers|issue-producer|issue-service|signers|revoke-signer

if __name__ == "__main__":  # pragma: no cover
    app()
