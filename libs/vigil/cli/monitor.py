"""``vigil monitor show DEPLOYMENT``: a deployment's health and its recent windows, label-free estimate vs realised.

Why a command of its own: the question "is the canary worse?" is asked before labels arrive, and the answer the
monitor has then is an estimate with a band (docs/monitor.md). This prints, per recent window and version, the
estimated accuracy and ROC AUC with their ±3σ band beside the realised figure (``-`` until labels arrive), so a
person sees both and how far apart they are. When the version's profile carries a PCA reference, two more columns:
the multivariate reconstruction error with its band (``*`` when outside) and the share of out-of-distribution rows;
and the domain classifier's AUROC (window rows vs reference rows, 0.5 = indistinguishable) with the upper end of its
band under no drift (``*`` when it judged the window drifted), or why there is none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import typer

from vigil.cli import output
from vigil.cli.client import HomeOpt, JsonOpt, Platform, TokenOpt, UrlOpt

app = typer.Typer(help="The monitor: `vigil monitor show DEPLOYMENT`.", no_args_is_help=True)

MON = "monitor"
SHOWN_METRICS = ("accuracy", "roc_auc")
COLUMNS = ("window start", "version", "variant", "predictions", "labels", *(
    f"{m} {part}" for m in SHOWN_METRICS for part in ("estimate", "realised")
), "multivariate error", "OOD share", "domain AUROC")  # fmt: skip


def multivariate_cells(mv: Mapping[str, Any] | None) -> tuple[str, str]:
    """``2.31 [2.05, 2.11] *`` (``*``: outside the band) and ``1.64 %`` (reference ``0.98 %``); ``-`` without."""
    if not mv or mv.get("error") is None:
        return "-", "-"
    band = f"{mv['error']:.3f} [{mv['lower']:.3f}, {mv['upper']:.3f}]" + (" *" if mv.get("drifted") else "")
    share = mv.get("ood_share")
    ref = mv.get("ood_reference_share")
    ood = "-" if share is None else f"{100 * share:.2f} %" + ("" if ref is None else f" (ref {100 * ref:.2f} %)")
    return band, ood


def domain_cell(mv: Mapping[str, Any] | None) -> str:
    """``0.874 (band ≤ 0.530) *`` (``*``: drifted); ``n/a: <reason>`` when the figure could not be computed; ``-``
    without one (no PCA reference, a rolling window, or figures from before the classifier)."""
    dc = (mv or {}).get("domain_classifier")
    if not dc:
        return "-"
    if dc.get("auroc") is None:
        return f"n/a: {dc.get('reason') or 'not computed'}"
    return f"{dc['auroc']:.3f} (band ≤ {dc['upper']:.3f})" + (" *" if dc.get("drifted") else "")


def estimate_cell(metric: Mapping[str, Any] | None) -> str:
    """``0.8123 [0.79, 0.83]``: the estimate and its band; ``-`` without one."""
    if not metric:
        return "-"
    return f"{metric['value']:.4f} [{metric['lower']:.3f}, {metric['upper']:.3f}]"


def window_rows(windows: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """One row per window (API items of ``GET /v1/windows``): estimate with band and realised per metric."""
    rows = []
    for w in windows:
        fig = w["figures"]
        est = ((fig.get("estimated") or {}).get("metrics")) or {}
        quality = fig.get("quality") or {}
        cells: list[Any] = []
        for m in SHOWN_METRICS:
            e = est.get(m)
            realised = e.get("realised") if e else quality.get(m)
            cells += [estimate_cell(e), None if realised is None else f"{realised:.4f}"]
        cells += multivariate_cells(fig.get("multivariate"))
        cells.append(domain_cell(fig.get("multivariate")))
        rows.append(
            (output.when(fig["start"]), fig["version"], fig["variant"], fig["predictions"], fig["labels"], *cells)
        )
    return rows


@app.command()
def show(
    deployment: Annotated[str, typer.Argument(help="Deployment name.")],
    last: Annotated[int, typer.Option(min=1, max=1000, help="How many recent tumbling windows to show.")] = 10,
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Health of DEPLOYMENT and its recent windows: label-free estimates (± 3σ) beside realised figures."""
    platform = Platform(home, token, urls={MON: url})
    health = platform.get(MON, f"/v1/deployments/{deployment}/health")
    windows = platform.pages(MON, "/v1/windows", limit=100_000, deployment=deployment, kind="tumbling")[-last:]
    if as_json:
        output.emit_json({"health": health, "windows": windows})
        return
    con = output.console()
    con.print(output.pairs([("deployment", deployment), ("status", health["status"]),
                            ("policy version", health["policy_version"])]))  # fmt: skip
    con.print(output.table(f"{deployment}: last {len(windows)} windows", COLUMNS, window_rows(windows)))
    decisions = health.get("recent_decisions") or []
    if decisions:
        rows = [
            (d["event_type"], d["payload"].get("verdict") or d["payload"].get("reason"),
             d["payload"].get("detail") or d["payload"].get("reason"))
            for d in decisions[:10]  # newest first
        ]  # fmt: skip
        con.print(output.table("recent decisions", ("event", "outcome", "why"), rows))
