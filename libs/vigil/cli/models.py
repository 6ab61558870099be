"""``vigil models list`` / ``vigil models show``: what the registry holds about models, read-only.

``show`` gathers what a person asks about a model in one place — its versions with metrics and gate results, where
the aliases point, the gate policy — and for one version (``--version``) also its datasets and lineage graph.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

import typer

from vigil.cli import output
from vigil.cli.client import HomeOpt, JsonOpt, Platform, TokenOpt, UrlOpt

app = typer.Typer(help="Models: versions, metrics, gates, aliases, lineage.", no_args_is_help=True)

REG = "registry"


@app.command("list")
def list_models(
    prefix: Annotated[str | None, typer.Option(help="Only names starting with this.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only models with this tag, key=value.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 1000,
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Models by name, with their latest version."""
    platform = Platform(home, token, urls={REG: url})
    items = platform.pages(REG, "/v1/models", limit=limit, name_prefix=prefix, tag=tag)
    if as_json:
        output.emit_json(items)
        return
    rows = [(m["name"], m["latest_version"], m["description"], m["created_by"], output.when(m["updated_at"]))
            for m in items]  # fmt: skip
    output.console().print(output.table("models", ("name", "latest", "description", "created by", "updated"), rows))


@app.command()
def show(
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int | None, typer.Option("--version", "-v", min=1, help="One version in detail.")] = None,
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A model's versions, metrics, gates and aliases; with --version, one version and its lineage."""
    platform = Platform(home, token, urls={REG: url})
    if version is not None:
        _show_version(platform, model, version, as_json)
        return
    found = platform.get(REG, f"/v1/models/{model}")
    versions = platform.pages(REG, f"/v1/models/{model}/versions")
    aliases = platform.pages(REG, f"/v1/models/{model}/aliases")
    policy = platform.get(REG, f"/v1/models/{model}/gates")
    if as_json:
        output.emit_json({"model": found, "versions": versions, "aliases": aliases, "gate_policy": policy})
        return
    pointing: dict[int, list[str]] = defaultdict(list)
    for a in aliases:
        pointing[a["version"]].append(a["alias"])
    out = output.console()
    out.print(f"[bold]{found['name']}[/bold]  latest v{found['latest_version']}  {found['description']}".rstrip())
    rows = [
        (f"v{v['version']}", v["source"], output.metrics(v["metrics"]), output.gates(v["gates"]),
         ", ".join(sorted(pointing.get(v["version"], []))), output.when(v["created_at"]))
        for v in versions
    ]  # fmt: skip
    out.print(output.table("versions", ("version", "source", "metrics", "gates", "aliases", "created"), rows))
    alias_rows = [(a["alias"], f"v{a['version']}", a["updated_by"], output.when(a["updated_at"])) for a in aliases]
    out.print(output.table("aliases", ("alias", "version", "moved by", "at"), alias_rows))
    gate_rows = [(g["name"], g["kind"], g.get("metric"), g.get("threshold")) for g in policy["gates"]]
    out.print(output.table(f"gate policy v{policy['version']}", ("gate", "kind", "metric", "threshold"), gate_rows))


def _show_version(platform: Platform, model: str, version: int, as_json: bool) -> None:
    found = platform.get(REG, f"/v1/models/{model}/versions/{version}")
    lineage = platform.get(REG, f"/v1/lineage/models/{model}/versions/{version}")
    if as_json:
        output.emit_json({"version": found, "lineage": lineage})
        return
    out = output.console()
    out.print(f"[bold]{model} v{version}[/bold]")
    out.print(
        output.pairs(
            [
                ("source", found["source"]),
                ("aliases", found["aliases"]),
                ("job / run", f"{found['job_id'] or '-'} / {found['run_id'] or '-'}"),
                ("artifact", f"{found['artifact_digest']} ({found['artifact_format']})"),
                ("code", found["code_version"]),
                ("params", " ".join(f"{k}={v}" for k, v in sorted(found["params"].items())) or "-"),
                ("registered", f"{output.when(found['created_at'])} by {found['created_by']}"),
                ("event", found["registered_event_id"]),
            ]
        )
    )
    out.print(output.table("metrics", ("metric", "value"), sorted(found["metrics"].items())))
    gate_rows = [
        (g["gate"], g["kind"], g.get("metric"), g.get("value"), g.get("threshold"), g.get("baseline"),
         "pass" if g["passed"] else "FAIL", g.get("detail"))
        for g in found["gates"]
    ]  # fmt: skip
    out.print(
        output.table(
            f"gates (policy v{found['gate_policy_version']})",
            ("gate", "kind", "metric", "value", "threshold", "baseline", "result", "detail"),
            gate_rows,
        )
    )
    data_rows = [(d["dataset"], f"v{d['version']}", d["content_digest"]) for d in found["datasets"]]
    out.print(output.table("trained on", ("dataset", "version", "digest"), data_rows))
    out.print(output.table("lineage", ("from", "edge", "to"), _edges(lineage)))
    if lineage.get("truncated"):
        out.print("(lineage truncated)")


def _edges(lineage: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The graph's edges with node ids, in the order the registry gave them."""
    return [(e["source"], e["kind"], e["target"]) for e in lineage.get("edges", [])]
