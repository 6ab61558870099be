"""``vigil deploy`` / ``promote`` / ``rollback``: the deployer's moves a person with the deployer role makes.

``deploy`` creates an endpoint or, when it exists, rolls a version out on it under its strategy: the deployer has no
"edit a deployment" call (a plan is fixed once traffic flows), so asking an existing deployment for a different model
or plan is refused here with that reason rather than silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from vigil.cli import output
from vigil.cli.client import HomeOpt, JsonOpt, Platform, TokenOpt, UrlOpt, fail

app = typer.Typer()

DEP = "deployer"
STRATEGIES = ("canary", "blue_green", "shadow")
_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[smh]?)$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_step(spec: str) -> dict[str, Any]:
    """One plan step from ``weight=N``, ``analysis``, ``pause`` (until approved) or ``pause=30s|5m|1h``."""
    kind, sep, arg = spec.strip().partition("=")
    kind = kind.strip().lower()
    if kind in ("weight", "set_weight") and sep:
        if not arg.strip().isdigit() or not 0 <= int(arg) <= 100:
            raise ValueError(f"step {spec!r}: the weight must be a whole percent 0..100")
        return {"kind": "set_weight", "weight": int(arg)}
    if kind == "analysis" and not sep:
        return {"kind": "analysis"}
    if kind == "pause":
        if not sep:
            return {"kind": "pause"}
        match = _DURATION.match(arg.strip())
        if match is None or float(match["n"]) <= 0:
            raise ValueError(f"step {spec!r}: a pause lasts e.g. 30, 30s, 5m or 1h")
        return {"kind": "pause", "duration_s": float(match["n"]) * _UNIT_S[match["unit"]]}
    raise ValueError(f"step {spec!r}: use weight=N, analysis, pause or pause=DURATION")


def describe(dep: dict[str, Any]) -> str:
    """One line: what the deployment serves now and the rollout in flight."""
    weights = dep["weights"]
    parts = [f"{dep['name']}: model {dep['model']}, {dep['strategy']}"]
    parts.append(f"stable v{dep['stable_version']} ({weights['stable']}%)" if dep["stable_version"] else "no stable")
    if dep["candidate_version"] is not None:
        mirror = ", mirrored" if dep.get("mirror") else ""
        parts.append(f"candidate v{dep['candidate_version']} ({weights['candidate']}%{mirror})")
    rollout = dep.get("rollout")
    if rollout:
        paused = f", paused: {rollout['pause_reason']}" if rollout.get("pause_reason") else ""
        parts.append(f"rollout {rollout['id']} {rollout['phase']} step {rollout['step_index']}{paused}")
    if dep.get("pending_version") is not None:
        parts.append(f"pending v{dep['pending_version']}")
    return "; ".join(parts)


def _show(dep: dict[str, Any], as_json: bool, headline: str) -> None:
    if as_json:
        output.emit_json(dep)
    else:
        typer.echo(headline)
        typer.echo(f"  {describe(dep)}")


def _refuse_changes(dep: dict[str, Any], model: str, wanted: dict[str, Any]) -> None:
    """Fail if the options ask an existing deployment for something its fixed plan does not have."""
    if dep["model"] != model:
        fail(f"deployment {dep['name']} serves model {dep['model']}, not {model}; create another deployment")
    for field, value in wanted.items():
        if value is not None and value != dep[field]:
            fail(
                f"deployment {dep['name']} exists with {field} {dep[field]!r}; a deployment's plan cannot be changed "
                f"(asked for {value!r}) — create another deployment"
            )


@app.command()
def deploy(
    deployment: Annotated[str, typer.Argument(help="Deployment (endpoint) name.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model it serves.")],
    version: Annotated[
        int | None,
        typer.Option("--version", "-v", min=1, help="Serve this version (new endpoint) or roll it out (existing)."),
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help=f"New endpoints: {' | '.join(STRATEGIES)} (default canary).")
    ] = None,
    step: Annotated[
        list[str] | None,
        typer.Option("--step", help="Plan step, repeatable, in order: weight=N, analysis, pause, pause=5m."),
    ] = None,
    auto_deploy: Annotated[
        str | None, typer.Option(help="auto: roll out every newly registered version; manual (default): only asked.")
    ] = None,
    min_samples: Annotated[int | None, typer.Option(min=1, help="Samples an analysis needs.")] = None,
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create DEPLOYMENT for --model (serving --version at once), or roll --version out on an existing one."""
    if strategy is not None and strategy not in STRATEGIES:
        raise typer.BadParameter(f"{strategy!r} is not one of {', '.join(STRATEGIES)}", param_hint="--strategy")
    if auto_deploy is not None and auto_deploy not in ("auto", "manual"):
        raise typer.BadParameter("auto or manual", param_hint="--auto-deploy")
    try:
        steps = [parse_step(s) for s in step] if step else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--step") from exc
    platform = Platform(home, token, urls={DEP: url})
    existing = platform.get_or_none(DEP, f"/v1/deployments/{deployment}")
    if existing is None:
        body: dict[str, Any] = {"name": deployment, "model": model, "strategy": strategy or "canary"}
        optional = {"steps": steps, "auto_deploy": auto_deploy, "min_samples": min_samples, "stable_version": version}
        body.update({k: v for k, v in optional.items() if v is not None})
        created = platform.post(DEP, "/v1/deployments", body)
        _show(created, as_json, f"created deployment {deployment}")
        return
    current_steps = [{k: v for k, v in s.items() if v is not None} for s in existing["steps"]]
    _refuse_changes(
        {**existing, "steps": current_steps},
        model,
        {"strategy": strategy, "steps": steps, "auto_deploy": auto_deploy, "min_samples": min_samples},
    )
    if version is None or (version == existing["stable_version"] and existing["rollout"] is None):
        _show(existing, as_json, f"deployment {deployment} exists; nothing to change")
        return
    moved = platform.post(DEP, f"/v1/deployments/{deployment}/rollouts", {"version": version})
    _show(moved, as_json, f"rolling v{version} out on {deployment}")


@app.command()
def promote(
    deployment: Annotated[str, typer.Argument(help="Deployment name.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the rollout's history).")] = "",
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Promote the candidate in flight now, skipping the remaining steps (you are recorded as the approver)."""
    dep = Platform(home, token, urls={DEP: url}).post(DEP, f"/v1/deployments/{deployment}/promote", {"reason": reason})
    _show(dep, as_json, f"promoted on {deployment}")


@app.command()
def rollback(
    deployment: Annotated[str, typer.Argument(help="Deployment name.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the event and the rollout's history).")] = "",
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """All traffic back to stable now and the candidate marked failed; after a promotion, the previous stable."""
    dep = Platform(home, token, urls={DEP: url}).post(DEP, f"/v1/deployments/{deployment}/rollback", {"reason": reason})
    _show(dep, as_json, f"rolled back on {deployment}")
