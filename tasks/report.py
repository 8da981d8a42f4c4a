"""The monitor's HTML report: one self-contained file (plots inlined as PNG), logged to MLflow
and kept under ``LEPTON_HOME/reports/DOMAIN/``.

Sections: the verdict and the retrain decision with its reason; drift scores per feature against
the threshold; the training and the new distribution of the features that moved most (and of the
model's output); drift over time (this run after the earlier monitor runs of the domain); the
primary metric over time, estimated without labels (with its band) beside the realised figure
where labels came, and the holdout's at training; performance when labels came with the batch;
and a table of every feature's PSI and test.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from lepton.tasks.monitor import DriftReport, FeatureDrift
from lepton.tasks.plots import _pyplot

SHOWN = 12  # features whose distributions are drawn
DRIFTED, STEADY, REFERENCE = "#c0392b", "#2e86c1", "#95a5a6"


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _figure(title: str, figure: Any, alt: str) -> str:
    return f'<figure><img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{_png(figure)}">' + (
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
    )


def scores_figure(report: DriftReport) -> Any:
    plt = _pyplot()
    method = report.rule.method
    ranked = sorted(report.features.values(), key=lambda d: d.score(method), reverse=True)[:25]
    figure, axis = plt.subplots(figsize=(8, 0.3 * len(ranked) + 1.2))
    values = [d.score(method) for d in ranked]
    axis.barh([d.name for d in ranked], values, color=[DRIFTED if d.drifted else STEADY for d in ranked])
    limit = report.rule.psi_threshold if method == "psi" else 1 - report.rule.p_value
    axis.axvline(limit, color="k", ls="--", lw=1, label=f"threshold {limit:g}")
    axis.invert_yaxis()
    axis.set(xlabel="PSI" if method == "psi" else "1 - p-value", title="Drift per feature (most first)")
    axis.legend(loc="lower right")
    return figure


MAX_TICKS = 12  # tick labels per distribution chart


def distributions_figure(drifts: Sequence[FeatureDrift]) -> Any:
    plt = _pyplot()
    columns = 3
    rows = -(-len(drifts) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(12, 2.8 * rows), squeeze=False)
    for axis, drift in zip(axes.flat, drifts, strict=False):
        x = np.arange(len(drift.labels))
        axis.bar(x - 0.2, drift.reference, 0.4, color=REFERENCE, label="training")
        axis.bar(x + 0.2, drift.current, 0.4, color=DRIFTED if drift.drifted else STEADY, label="this batch")
        every = max(1, -(-len(x) // MAX_TICKS))  # many categories: every k-th labelled, none overlap
        labels = [label[:14] for label in drift.labels][::every]
        axis.set_xticks(x[::every], labels, rotation=60, ha="right", fontsize=7)
        axis.set_ylabel("share of rows", fontsize=8)
        axis.set_title(f"{drift.name}  (PSI {drift.psi:.3f})", fontsize=9)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(drifts) :]:
        axis.axis("off")
    figure.tight_layout()
    return figure


@dataclass(frozen=True)
class DriftPoint:
    """One monitor run on the over-time plots: when, the PSI of each column, and the primary
    metric estimated without labels (value, lower, upper) and realised on labels, where known."""

    time: datetime
    psi: dict[str, float]
    estimated: tuple[float, float, float] | None = None
    realised: float | None = None


def history_figure(history: Sequence[DriftPoint], names: Sequence[str]) -> Any:
    """``history``: earlier monitor runs then this one."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 3.5))
    times = [h.time for h in history]
    for name in names:
        axis.plot(times, [h.psi.get(name, np.nan) for h in history], marker="o", label=name)
    axis.set(ylabel="PSI", title="Drift over time (monitor runs of this domain)")
    axis.legend(fontsize=7, ncol=2)
    figure.autofmt_xdate()
    return figure


def performance_figure(history: Sequence[DriftPoint], metric: str, before: float | None) -> Any:
    """The primary metric per monitor run: the estimate and its band, the realised figure where
    labels came, and the holdout's at training."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 3.5))
    known = [h for h in history if h.estimated is not None]
    times = [h.time for h in known]
    values = np.array([h.estimated for h in known], dtype=np.float64).reshape(-1, 3)
    below, above = values[:, 0] - values[:, 1], values[:, 2] - values[:, 0]
    axis.errorbar(times, values[:, 0], yerr=[below, above], fmt="o-", color=STEADY, capsize=3,
                  label="estimated without labels (90% band)")  # fmt: skip
    labelled = [h for h in history if h.realised is not None]
    if labelled:
        axis.plot([h.time for h in labelled], [h.realised for h in labelled], "x", color=DRIFTED, markersize=9,
                  mew=2, label="realised on labels")  # fmt: skip
    if before is not None:
        axis.axhline(before, color=REFERENCE, linestyle="--", label="holdout at training")
    axis.set(ylabel=metric, title=f"{metric} over time (monitor runs of this domain)")
    axis.legend(fontsize=7)
    figure.autofmt_xdate()
    return figure


def _decision(decision: dict[str, Any]) -> str:
    verdict = "Retrain recommended" if decision["recommended"] else "No retrain"
    return (
        f'<p class="decision {"bad" if decision["recommended"] else "good"}"><b>{verdict}</b> '
        f"(policy {html.escape(str(decision['policy']))}): {html.escape(str(decision['reason']))}</p>"
    )


def _row(d: FeatureDrift) -> str:
    mark = "drifted" if d.drifted else ""
    cells = [d.name, d.kind, f"{d.psi:.4f}", d.test, f"{d.statistic:.4g}", f"{d.p_value:.3g}", mark]
    return f'<tr class="{mark}">' + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


def render(
    *,
    domain: str,
    model: str,
    version: str,
    source: str,
    created: datetime,
    report: DriftReport,
    history: Sequence[DriftPoint] = (),
    performance: dict[str, float] | None = None,
    holdout: dict[str, float] | None = None,
    metric: str | None = None,
    decision: dict[str, Any] | None = None,
) -> str:
    """The drift report as one self-contained HTML page. ``performance``: the champion's
    metrics on the batch's labelled rows; ``holdout``: the same metrics on its holdout at
    training, shown beside them; ``metric``: the primary metric, drawn over time where the
    runs estimated it; ``decision``: the retrain decision (``lepton.tasks.retrain``)."""
    method = report.rule.method
    ranked = sorted(report.features.values(), key=lambda d: d.score(method), reverse=True)
    shown = [*([report.prediction] if report.prediction else []), *ranked[: SHOWN - bool(report.prediction)]]
    verdict = (
        f"Drift detected: {len(report.drifted)} of {len(report.features)} features"
        + (" and the model's output" if report.prediction and report.prediction.drifted else "")
        if report.detected
        else "No drift detected"
    )
    rule = (
        f"PSI is above {report.rule.psi_threshold:g}"
        if method == "psi"
        else f"test p-value is below {report.rule.p_value:g} (KS for numbers, chi-squared for categories)"
    )
    parts = [
        f"<h1>{html.escape(domain)}: drift report</h1>",
        f'<p class="verdict {"bad" if report.detected else "good"}">{html.escape(verdict)}</p>',
        f"<p>Model <b>{html.escape(model)}</b> version {html.escape(version)}; {report.rows:,} rows from "
        f"{html.escape(source)}; {created:%Y-%m-%d %H:%M} UTC. A feature drifts when its {html.escape(rule)}.</p>",
        *([_decision(decision)] if decision else []),
        _figure("Drift per feature", scores_figure(report), "drift scores"),
        _figure("Training and new distributions", distributions_figure(shown), "distributions"),
    ]
    if len(history) >= 2:
        top = [d.name for d in ranked[:6]]
        parts.append(_figure("Drift over time", history_figure(history, top), "drift over time"))
    if metric and any(h.estimated is not None for h in history):
        before = (holdout or {}).get(metric)
        figure = performance_figure(history, metric, before)
        parts.append(_figure(f"{metric} over time: estimated without labels, and realised", figure, "performance"))
    if performance:
        parts.append(_performance_table(performance, holdout or {}))
    header = "".join(f"<th>{h}</th>" for h in ("feature", "kind", "PSI", "test", "statistic", "p-value", ""))
    rows = "".join(_row(d) for d in ([report.prediction] if report.prediction else []) + ranked)
    parts.append(f"<h2>Every feature</h2><table><tr>{header}</tr>{rows}</table>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}"
        "tr.drifted td{color:#c0392b;font-weight:bold}.verdict{font-size:1.3em}.bad{color:#c0392b}"
        ".good{color:#1e8449}img.plot{max-width:100%}figcaption{color:#666;font-size:.9em}"
    )
    title = f"Lepton drift report: {html.escape(domain)}"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


def _performance_table(performance: dict[str, float], holdout: dict[str, float]) -> str:
    """The batch's metrics beside the champion's on its holdout at training, and the change."""
    rows = int(performance.get("labelled_rows", 0))
    header = "".join(f"<th>{h}</th>" for h in ("metric", "this batch", "holdout at training", "change"))
    cells = []
    for name, value in performance.items():
        if name == "labelled_rows":
            continue
        before = holdout.get(name)
        then = "" if before is None else f"{before:.4f}"
        change = "" if before is None else f"{value - before:+.4f}"
        cells.append(f"<tr><td>{html.escape(name)}</td><td>{value:.4f}</td><td>{then}</td><td>{change}</td></tr>")
    return f"<h2>Performance on the {rows:,} labelled rows</h2><table><tr>{header}</tr>{''.join(cells)}</table>"


def markdown_summary(domain: str, version: str, report: DriftReport, report_uri: str) -> str:
    """The Prefect artifact: the verdict and the features that moved most."""
    method = report.rule.method
    ranked = sorted(report.features.values(), key=lambda d: d.score(method), reverse=True)[:10]
    lines = [
        f"# {domain}: {'drift detected' if report.detected else 'no drift'}",
        f"Model version {version}, {report.rows:,} rows; {len(report.drifted)} of {len(report.features)} "
        f"features drifted. Full report: `{report_uri}`",
        "",
        "| feature | PSI | test | p-value | drifted |",
        "|---|---|---|---|---|",
    ]
    for d in ([report.prediction] if report.prediction else []) + ranked:
        lines.append(f"| {d.name} | {d.psi:.4f} | {d.test} | {d.p_value:.3g} | {'yes' if d.drifted else ''} |")
    return "\n".join(lines)
