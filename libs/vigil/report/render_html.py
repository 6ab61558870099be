"""Render a pack (the JSON) as one self-contained HTML document: inline CSS, charts as inline SVG, no external asset.

Everything shown is read from the pack, so the HTML says nothing the verifier has not checked or marked: each cited
value carries a mark linking to its audit entry in the appendix, each value read from an API says which one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from vigil.report.charts import max_psi, quality_and_drift_svg
from vigil.report.cite import API, CITE, from_api, value

TEMPLATES = Path(__file__).with_name("templates")


def _seq_of(pack: dict[str, Any]) -> dict[str, int]:
    return {eid: int(rec["entry"]["seq"]) for eid, rec in pack["audit"]["entries"].items()}


def _fmt(raw: Any) -> str:
    if raw is None:
        return "–"
    if isinstance(raw, float):
        return f"{raw:.4g}"
    if isinstance(raw, dict | list):
        return json.dumps(raw, sort_keys=True, ensure_ascii=False)
    return str(raw)


def summary(event_type: str, data: dict[str, Any]) -> str:
    """One line a reviewer reads for a decision or a step of the lineage."""
    d = data or {}
    match event_type:
        case "analysis.verdict":
            return (
                f"{d.get('verdict')} — candidate v{d.get('candidate_version')} vs stable v{d.get('stable_version')}"
                f" on {d.get('candidate_samples')}/{d.get('stable_samples')} samples. {d.get('reason', '')}"
            )
        case "deployment.rollout.started":
            return f"rollout of v{d.get('candidate_version')} over v{d.get('stable_version')} ({d.get('strategy')})"
        case "deployment.rollout.step":
            w = d.get("weights") or {}
            weights = f"stable {w.get('stable')} % / candidate {w.get('candidate')} %"
            return f"step {d.get('step_index')} ({d.get('kind')}): {weights}"
        case "deployment.promoted":
            approver = d.get("approved_by") or "analysis"
            return f"v{d.get('version')} promoted over v{d.get('previous_version')} (approved by {approver})"
        case "deployment.rolled_back":
            back = f"v{d.get('failed_version')} rolled back to v{d.get('stable_version')}"
            return f"{back} ({d.get('trigger')}): {d.get('reason')}"
        case "rollback.requested" | "retrain.requested":
            return f"{d.get('reason')}: {d.get('detail', '')}"
        case "drift.detected":
            return f"v{d.get('version')} drifted on {', '.join(d.get('features') or [])}"
        case "model.alias.changed":
            return (
                f"{d.get('alias')}: v{d.get('from_version')} → v{d.get('to_version')} ({d.get('cause')}"
                f"{', ' + d['deployment'] if d.get('deployment') else ''}) {d.get('reason', '')}"
            )
        case "data.updated" | "dataset.version.registered":
            return f"{d.get('dataset')} {d.get('content_digest')} — {d.get('row_count')} rows from {d.get('producer')}"
        case "training.requested" | "training.completed":
            return f"job {d.get('job_id')} run {d.get('run_id', '')} {d.get('entrypoint', '')}".strip()
        case "policy.gates.changed" | "policy.retraining.changed" | "policy.monitor.changed":
            return f"{d.get('change')} (policy version {d.get('policy_version')}) by {d.get('changed_by')}"
        case "monitor.window":
            accuracy = (d.get("quality") or {}).get("accuracy")
            return (
                f"v{d.get('version')} {d.get('variant')}, window from {(d.get('window') or {}).get('start')}:"
                f" {d.get('predictions')} predictions, {d.get('labels')} labels, accuracy {_fmt(accuracy)},"
                f" max PSI {_fmt(max_psi(d))}"
            )
        case "model.version.registered":
            return f"{d.get('model')} v{d.get('version')} ({d.get('artifact_format')}) {d.get('artifact_digest')}"
        case _:
            return ", ".join(f"{k}={_fmt(v)}" for k, v in list(d.items())[:6])


VERSION_KEYS = ("version", "candidate_version", "stable_version", "failed_version")
OPERATORS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}


def evidence_line(ev: dict[str, Any]) -> str:
    """One measured fact behind a decision, as a reviewer reads it: what, value vs threshold, breached or not."""
    what = ev.get("statistic", "?") + (f" [{ev['feature']}]" if ev.get("feature") else "")
    test = f"{_fmt(ev.get('value'))} {OPERATORS.get(str(ev.get('operator')), '?')} {_fmt(ev.get('threshold'))}"
    extra = [f"n={ev.get('sample_size')}"]
    if ev.get("baseline") is not None:
        extra.append(f"baseline {_fmt(ev['baseline'])}")
    if ev.get("p_value") is not None:
        extra.append(f"p={_fmt(ev['p_value'])}")
    return f"{what}: {test}? {'BREACHED' if ev.get('breached') else 'no'} ({', '.join(extra)})"


def render_html(pack: dict[str, Any]) -> str:
    """The HTML document of ``pack``."""
    seqs = _seq_of(pack)

    def shown(node: Any) -> Markup:
        """A fact's value with its origin mark: [seq] for a cited entry, 'api' for an API read."""
        text = escape(_fmt(value(node)))
        if isinstance(node, dict) and CITE in node:
            seq = seqs.get(str(node[CITE]), "?")
            title = f"audit entry {seq}, {escape(node['pointer'])}"
            return Markup(f'{text}<a class="cite" href="#entry-{seq}" title="{title}">[{seq}]</a>')
        if isinstance(node, dict) and API in node:
            return Markup(f'{text}<span class="api" title="{escape(node[API])}">api</span>')
        return Markup(text)

    def mark(node: Any) -> Markup:
        """Only the origin mark of a fact (for values shown piecewise)."""
        if isinstance(node, dict) and CITE in node:
            seq = seqs.get(str(node[CITE]), "?")
            return Markup(f'<a class="cite" href="#entry-{seq}" title="audit entry {seq}">[{seq}]</a>')
        if isinstance(node, dict) and API in node:
            return Markup(f'<span class="api" title="{escape(node[API])}">api</span>')
        return Markup("")

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["fmt"] = _fmt
    env.filters["evidence"] = evidence_line
    env.filters["v"] = value
    env.filters["pretty"] = lambda raw: json.dumps(raw, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if pack.get("kind") == "deployment":
        return _render_period(env, pack, shown, mark)
    deployments = pack["sections"].get("deployments") or []
    charts = {i: quality_and_drift_svg(d.get("windows") or []) for i, d in enumerate(deployments)}
    entries = sorted(pack["audit"]["entries"].values(), key=lambda r: int(r["entry"]["seq"]))
    return env.get_template("pack.html.j2").render(
        pack=pack,
        s=pack["sections"],
        shown=shown,
        mark=mark,
        summary=summary,
        value=value,
        max_psi=max_psi,
        charts={i: Markup(svg) if svg else None for i, svg in charts.items()},
        entries=entries,
        seqs=seqs,
    )


def _render_period(env: Environment, pack: dict[str, Any], shown: Any, mark: Any) -> str:
    """A deployment's period report: the chart spans every version (one line per version and variant)."""
    windows = pack["sections"].get("windows") or []
    relabelled = []
    for window in windows:
        data = value(window["data"])
        relabelled.append({"data": from_api("chart", {**data, "variant": f"v{data['version']} {data['variant']}"})})
    svg = quality_and_drift_svg(relabelled)
    versions = sorted(
        {value(w["data"])["version"] for w in windows}
        | {
            v
            for d in pack["sections"].get("decisions") or []
            for k in VERSION_KEYS
            if isinstance(v := (value(d["data"]) or {}).get(k), int)
        }
    )
    entries = sorted(pack["audit"]["entries"].values(), key=lambda r: int(r["entry"]["seq"]))
    return env.get_template("deployment.html.j2").render(
        pack=pack,
        s=pack["sections"],
        shown=shown,
        mark=mark,
        summary=summary,
        value=value,
        max_psi=max_psi,
        chart=Markup(svg) if svg else None,
        entries=entries,
        versions=[f"v{v}" for v in versions],
    )
