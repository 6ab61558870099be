"""``vigil report model M --version N`` builds an evidence pack, ``vigil report deployment D --from --to`` a period
report; ``vigil report verify PACK`` checks either offline.

The pack is written as JSON (the facts, the cited audit entries with their proofs, the signed checkpoint), HTML
(self-contained) and, with ``--pdf``, PDF. ``verify`` needs nothing but the JSON and the auditor's public key.
docs/reports.md.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from vigil.cli.client import HomeOpt, Platform, TokenOpt, fail
from vigil.report.collect import build_model_pack
from vigil.report.pdf import html_to_pdf
from vigil.report.period import build_deployment_pack
from vigil.report.render_html import render_html
from vigil.report.sources import ReportError, Sources
from vigil.report.verify import verify_pack

app = typer.Typer(
    help="Evidence packs: model cards and change-control records, verifiable offline.", no_args_is_help=True
)


@app.command()
def model(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Option("--version", "-v", min=1, help="The version the pack is about.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory the pack's files go to.")] = Path("."),
    pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="Also print the HTML to PDF with Chromium.")] = False,
    home: HomeOpt = None,
    token: TokenOpt = None,
) -> None:
    """Build the evidence pack of one model version: <model>-v<n>.json, .html (and .pdf)."""
    platform = Platform(home, token)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{name}-v{version}"
    try:
        with Sources(platform.urls, platform.token) as sources:
            pack = build_model_pack(sources, name, version)
        _write(pack, stem, pdf)
    except ReportError as exc:
        fail(str(exc))
    cited = len(pack["audit"]["entries"])
    state = "DRAFT (not signed off)" if pack["status"]["draft"] else "signed off"
    typer.echo(
        f"{stem}.json, {stem}.html{', ' + str(stem) + '.pdf' if pdf else ''}: {cited} audit entries cited,"
        f" checkpoint 1..{pack['audit']['checkpoint']['to_seq']}, {state}"
    )


def _moment(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{option}: not an ISO-8601 time ({exc})") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def deployment(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    start: Annotated[str, typer.Option("--from", help="Start of the period, ISO-8601 (naive = UTC).")],
    end: Annotated[str, typer.Option("--to", help="End of the period (excluded), ISO-8601 (naive = UTC).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory the pack's files go to.")] = Path("."),
    pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="Also print the HTML to PDF with Chromium.")] = False,
    home: HomeOpt = None,
    token: TokenOpt = None,
) -> None:
    """A deployment's period report: versions served, every decision, incidents with their causes."""
    since, until = _moment(start, "--from"), _moment(end, "--to")
    platform = Platform(home, token)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{name}-{since:%Y%m%dT%H%M%S}-{until:%Y%m%dT%H%M%S}"
    try:
        with Sources(platform.urls, platform.token) as sources:
            pack = build_deployment_pack(sources, name, since, until)
        _write(pack, stem, pdf)
    except ReportError as exc:
        fail(str(exc))
    typer.echo(
        f"{stem}.json, {stem}.html{', ' + str(stem) + '.pdf' if pdf else ''}: "
        f"{len(pack['sections']['decisions'])} decisions, {len(pack['sections']['incidents'])} incidents, "
        f"{len(pack['audit']['entries'])} audit entries cited"
    )


def _write(pack: dict[str, Any], stem: Path, pdf: bool) -> None:
    html = render_html(pack)
    stem.with_suffix(".json").write_text(json.dumps(pack, indent=1, ensure_ascii=False), encoding="utf-8")
    stem.with_suffix(".html").write_text(html, encoding="utf-8")
    if pdf:
        html_to_pdf(html, stem.with_suffix(".pdf"))


@app.command()
def verify(
    pack_file: Annotated[Path, typer.Argument(help="The pack's JSON file.", exists=True, dir_okay=False)],
    public_key: Annotated[str, typer.Option("--public-key", help="The auditor's public key: 32 bytes, hex or base64.")],
) -> None:
    """Check a pack offline: checkpoint signature, every cited entry's proof, every cited fact against its entry."""
    try:
        pack = json.loads(pack_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"cannot read {pack_file}: {exc}")
    verdict = verify_pack(pack, public_key)
    if not verdict.ok:
        fail(f"FAILED: {verdict.problem}")
    sources = sorted(set(verdict.facts_from_apis))
    typer.echo(
        f"OK: checkpoint 1..{verdict.checkpoint_size} signed by key {verdict.key_id}; {verdict.entries_checked}"
        f" audit entries proven; {verdict.facts_cited} cited facts match their entries."
    )
    typer.echo(f"{len(verdict.facts_from_apis)} facts are read from APIs and not backed by an audit entry:")
    for source in sources:
        typer.echo(f"  - {source}")
