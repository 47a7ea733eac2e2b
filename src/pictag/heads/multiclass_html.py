"""A ``multiclass`` head's part of ``report.html``: metrics, per-class bars, the confusion
heatmap with the per-class table, and for a two-class head its operating point on PR/ROC."""

from __future__ import annotations

from typing import Any

from pictag import figures
from pictag.htmlparts import figure, table


def html(name: str, section: dict[str, Any]) -> str:
    """The head's report body (the page adds the heading)."""
    labels = section.get("labels") or []
    bars = figures.label_bars_png(section, "f1", "recall")
    parts = [f"<div class=row>{_metrics_table(section)}{figure(bars, 'per-class bars')}</div>"]
    heatmap = None
    if section.get("confusion"):
        heatmap = figures.confusion_png(section["confusion"], labels, f"{name}: confusion")
    parts.append("<h3>Confusion and per-class metrics</h3>")
    heatmap_html = figure(heatmap, "confusion matrix")
    parts.append(f"<div class=row>{heatmap_html}<div>{_class_table(section)}</div></div>")
    curves = figures.binary_curves_png(section)
    if curves is not None:
        parts.append("<h3>Precision-recall and ROC</h3>" + figure(curves, "PR and ROC curves"))
    return "\n".join(parts)


def _metrics_table(section: dict[str, Any]) -> str:
    metrics = section.get("metrics") or {}
    return table(["metric", "value"], [[k, v] for k, v in metrics.items()])


def _class_table(section: dict[str, Any]) -> str:
    header = ["class", "support", "precision", "recall", "F1", "ROC-AUC"]
    rows = [
        [r.get("label"), r.get("support"), r.get("precision"), r.get("recall"), r.get("f1"),
         r.get("roc_auc")]
        for r in section.get("per_label") or []
    ]  # fmt: skip
    binary = section.get("binary") or {}
    point = binary.get("operating_point")
    result = table(header, rows, scroll=True)
    if point:
        # What a medical or quality-control user asks first: the threshold, and what it costs.
        keys = ["threshold", "precision", "recall", "tpr", "fpr"]
        title = f"Operating point (positive class: {binary.get('positive', '')})"
        result += f"<h3>{title}</h3>" + table(keys, [[point.get(k) for k in keys]])
    return result
