"""``vigil card show|edit|sign-off``: the human sections of a model version's card and their sign-off.

Edits take a scientist or deployer token; sign-off a deployer or admin token (the signer is the token's name).
Each edit and sign-off is an audited ``model.card.*`` event; evidence packs cite them (docs/reports.md).
"""

from __future__ import annotations

from typing import Annotated

import typer

from vigil.cli import output
from vigil.cli.client import HomeOpt, JsonOpt, Platform, TokenOpt, UrlOpt
from vigil.events.catalog.cards import CARD_FIELDS

app = typer.Typer(help="Model cards: intended use, out-of-scope uses, risks, ethics; sign-off.", no_args_is_help=True)

REG = "registry"
VersionOpt = Annotated[int, typer.Option("--version", "-v", min=1, help="Model version.")]


def _path(model: str, version: int) -> str:
    return f"/v1/models/{model}/versions/{version}/card"


@app.command()
def show(
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: VersionOpt,
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The card's sections, who wrote them, and whether it is signed off as it stands."""
    card = Platform(home, token, urls={REG: url}).get(REG, _path(model, version))
    if as_json:
        output.emit_json(card)
        return
    out = output.console()
    for name in CARD_FIELDS:
        section = card["sections"].get(name)
        who = f" (rev {section['revision']}, {section['edited_by']})" if section else ""
        out.print(f"[bold]{name}[/bold]{who}: {section['text'] if section else '-- not written --'}")
    sign = card["sign_off"]
    if card["signed_off"]:
        out.print(f"signed off by {sign['signed_off_by']} ({sign['role']}) at {output.when(sign['signed_at'])}")
    elif sign:
        out.print(f"DRAFT: the sign-off by {sign['signed_off_by']} covers an earlier text of the card")
    else:
        out.print("DRAFT: not signed off")


@app.command()
def edit(
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: VersionOpt,
    field: Annotated[str, typer.Option("--field", help=f"One of: {', '.join(CARD_FIELDS)}.")],
    text: Annotated[str, typer.Option("--text", help="The section's new text.")],
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
) -> None:
    """Set one human section of the card (an audited model.card.edited event)."""
    if field not in CARD_FIELDS:
        raise typer.BadParameter(f"--field must be one of: {', '.join(CARD_FIELDS)}")
    answer = Platform(home, token, urls={REG: url}).put(REG, f"{_path(model, version)}/{field}", {"text": text})
    if answer is None:
        typer.echo(f"{field} of {model} v{version} already says that; nothing changed")
    else:
        typer.echo(f"{field} of {model} v{version}: revision {answer['revision']} (event {answer['event_id']})")


@app.command("sign-off")
def sign_off(
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: VersionOpt,
    statement: Annotated[str, typer.Option("--statement", help="What was reviewed, by whom.")] = "",
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
) -> None:
    """Sign the card off as it stands (deployer or admin token; an audited model.card.signed_off event)."""
    answer = Platform(home, token, urls={REG: url}).post(REG, f"{_path(model, version)}/sign-off",
                                                         {"statement": statement})  # fmt: skip
    typer.echo(f"{model} v{version} signed off by {answer['signed_off_by']} ({answer['role']}),"
               f" card {answer['card_sha256']} (event {answer['event_id']})")  # fmt: skip
