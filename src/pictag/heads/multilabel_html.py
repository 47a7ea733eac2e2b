"""A ``multilabel`` head's part of ``report.html``: metrics at the tuned thresholds and at 0.5,
per-label bars, the threshold table with 2x2 counts, and PR curves per label."""

from __future__ import annotations

from typing import Any

from pictag import figures
from pictag.htmlparts import figure, table


def html(name: str, section: dict[str, Any]) -> str:
    """The head's report body (the page adds the heading)."""
    del name
    bars = figures.label_bars_png(section, "ap", "f1")
    parts = [f"<div class=row>{_metrics_table(section)}{figure(bars, 'per-label bars')}</div>"]
    parts.append("<h3>Per-label thresholds and 2x2 counts</h3>")
    parts.append(f"<div class=row>{_threshold_table(section)}{_counts_table(section)}</div>")
    curves = figures.label_pr_png(section)
    if curves is not None:
        parts.append("<h3>Precision-recall</h3>" + figure(curves, "precision-recall curves"))
    return "\n".join(parts)


def _metrics_table(section: dict[str, Any]) -> str:
    metrics = section.get("metrics") or {}
    at_half = section.get("metrics_at_0.5") or {}
    rows = [[k, v, at_half.get(k, "")] for k, v in metrics.items()]
    note = "<p class=dim>mAP and ROC-AUC do not depend on the thresholds.</p>"
    return f"<div>{table(['metric', 'tuned thresholds', 'at 0.5'], rows)}{note}</div>"


def _threshold_table(section: dict[str, Any]) -> str:
    header = ["label", "threshold", "precision", "recall", "F1", "AP", "support"]
    rows = [
        [r.get("label"), r.get("threshold"), r.get("precision"), r.get("recall"), r.get("f1"),
         r.get("ap"), r.get("support")]
        for r in section.get("per_label") or []
    ]  # fmt: skip
    return table(header, rows, scroll=True)


def _counts_table(section: dict[str, Any]) -> str:
    rows = []
    for r in section.get("per_label") or []:
        cells = r.get("confusion") or [[None, None], [None, None]]
        (tn, fp), (fn, tp) = cells
        rows.append([r.get("label"), tp, fp, fn, tn])
    return table(["label", "TP", "FP", "FN", "TN"], rows, scroll=True)
