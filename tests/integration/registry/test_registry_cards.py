"""Model cards through the registry's API against the real broker and Postgres: roles, validation, revisions,
sign-off of the card as it stands, and one ``model.card.*`` event on ``vigil.models`` per change."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from registry_support import Registry, training_completed
from typer.testing import CliRunner

from support.services import eventually, served
from vigil.cli.main import app as vigil_cli
from vigil.events.catalog.cards import CARD_FIELDS, card_digest

pytestmark = pytest.mark.integration

CARD = "/v1/models/cardmodel/versions/1/card"


async def test_card_edits_and_sign_off_are_events(registry: Registry) -> None:
    client = registry.client
    viewer, scientist, deployer = registry.h("viewer"), registry.h("scientist"), registry.h("deployer")
    dataset = await registry.register_dataset("card-patients", "a", [{"name": "age", "type": "float"}])
    await registry.publish(
        "vigil.training",
        training_completed("cardmodel", "run-1", metrics={"auc": 0.8}, datasets=[dataset]),
        key="cardmodel",
    )

    async def registered() -> Any:
        r = await client.get("/v1/models/cardmodel/versions/1", headers=viewer)
        return r.status_code == 200

    await eventually(registered, timeout=20, what="version 1")

    empty = (await client.get(CARD, headers=viewer)).json()
    assert empty["sections"] == dict.fromkeys(CARD_FIELDS) and empty["signed_off"] is False
    assert (await client.get("/v1/models/cardmodel/versions/9/card", headers=viewer)).status_code == 404

    # Who may write: scientists and deployers; not viewers. Bad fields and unknown versions are 4xx with a reason.
    r = await client.put(f"{CARD}/risks", json={"text": "x"}, headers=viewer)
    assert r.status_code == 403
    r = await client.put(f"{CARD}/favourite_colour", json={"text": "x"}, headers=scientist)
    assert r.status_code == 422
    r = await client.put("/v1/models/cardmodel/versions/9/card/risks", json={"text": "x"}, headers=scientist)
    assert r.status_code == 404 and "no version 9" in r.json()["detail"]
    r = await client.put(f"{CARD}/risks", json={"text": "x", "extra": 1}, headers=scientist)
    assert r.status_code == 422

    # Sign-off needs every section, and a deployer.
    r = await client.put(f"{CARD}/intended_use", json={"text": "Screening adults."}, headers=scientist)
    assert r.status_code == 200 and r.json()["revision"] == 1 and r.json()["edited_by"] == "user:test-scientist"
    r = await client.post(f"{CARD}/sign-off", json={}, headers=deployer)
    assert r.status_code == 422 and "out_of_scope_uses" in r.json()["detail"]
    texts = {
        "intended_use": "Screening adults.",
        "out_of_scope_uses": "Children.",
        "risks": "Drift.",
        "ethical_considerations": "Human review.",
    }
    for field, text in texts.items():
        r = await client.put(f"{CARD}/{field}", json={"text": text}, headers=deployer)
        assert r.status_code == 200, r.text
    # The same text again: no change, no event.
    assert (await client.put(f"{CARD}/risks", json={"text": "Drift."}, headers=scientist)).json() is None
    r = await client.post(f"{CARD}/sign-off", json={}, headers=scientist)
    assert r.status_code == 403
    r = await client.post(f"{CARD}/sign-off", json={"statement": "ok"}, headers=deployer)
    assert r.status_code == 201, r.text
    signed = r.json()
    assert signed["role"] == "deployer" and signed["signed_off_by"] == "user:test-deployer"
    assert signed["card_sha256"] == card_digest(texts)
    card = (await client.get(CARD, headers=viewer)).json()
    assert card["signed_off"] is True and card["card_sha256"] == signed["card_sha256"]

    # An edit after the sign-off: the sign-off no longer covers the card; an admin signs the new text.
    r = await client.put(f"{CARD}/risks", json={"text": "Drift; label delay."}, headers=scientist)
    assert r.json()["revision"] == 2
    assert (await client.get(CARD, headers=viewer)).json()["signed_off"] is False
    r = await client.post(f"{CARD}/sign-off", json={}, headers=registry.h("admin"))
    assert r.status_code == 201 and r.json()["role"] == "admin"
    assert (await client.get(CARD, headers=viewer)).json()["signed_off"] is True

    # Every change is one event on vigil.models (after the version's registration): four first edits (rewriting
    # intended_use with the same text was none), the edit after the sign-off, two sign-offs.
    events = [e for e in await registry.events_on("vigil.models", expect=8) if e["type"].startswith("model.card.")]
    kinds = [e["type"] for e in events]
    assert kinds.count("model.card.edited") == 5 and kinds.count("model.card.signed_off") == 2
    assert all(e["subject"] == "model/cardmodel/v1/card" for e in events)
    last = events[-1]["data"]
    assert last["card_sha256"] == card_digest({**texts, "risks": "Drift; label delay."})
    with pytest.raises(Exception, match="append-only"):
        await registry.fetchval("DELETE FROM model_card_edits")


async def test_card_cli_shows_draft_then_signed(registry: Registry) -> None:
    """``vigil card edit|sign-off|show`` against the registry on a real port (the commands a reviewer types)."""
    dataset = await registry.register_dataset("cli-card-patients", "b", [{"name": "age", "type": "float"}])
    await registry.publish(
        "vigil.training",
        training_completed("clicard", "run-1", metrics={"auc": 0.8}, datasets=[dataset]),
        key="clicard",
    )

    async def registered() -> Any:
        r = await registry.client.get("/v1/models/clicard/versions/1", headers=registry.h("viewer"))
        return r.status_code == 200

    await eventually(registered, timeout=20, what="version 1")
    tokens = registry.tokens.by_role
    async with served(registry.service.app) as url:

        def cli(*args: str, role: str = "admin") -> tuple[int, str]:
            result = CliRunner().invoke(vigil_cli, [*args, "--url", url, "--token", tokens[role]])
            return result.exit_code, result.output

        code, out = await asyncio.to_thread(cli, "card", "show", "clicard", "--version", "1")
        assert code == 0 and "DRAFT: not signed off" in out and "-- not written --" in out, out
        code, out = await asyncio.to_thread(
            cli, "card", "edit", "clicard", "--version", "1", "--field", "colour", "--text", "x"
        )
        assert code == 2 and "--field must be one of" in out, out
        for field in CARD_FIELDS:
            code, out = await asyncio.to_thread(
                cli,
                "card",
                "edit",
                "clicard",
                "--version",
                "1",
                "--field",
                field,
                "--text",
                f"{field} text",
                role="scientist",
            )
            assert code == 0 and "revision 1" in out, out
        code, out = await asyncio.to_thread(cli, "card", "sign-off", "clicard", "--version", "1", role="viewer")
        assert code == 1 and "403" in out, out
        code, out = await asyncio.to_thread(cli, "card", "sign-off", "clicard", "--version", "1", role="deployer")
        assert code == 0 and "signed off by user:test-deployer (deployer)" in out, out
        code, out = await asyncio.to_thread(cli, "card", "show", "clicard", "--version", "1")
        assert code == 0 and "signed off by user:test-deployer (deployer)" in out and "risks text" in out, out
