"""A ``multilabel`` head's part of ``pictag evaluate``'s terminal output, read from its
``report.json`` section: one row per tag (precision, recall and F1 at the tuned threshold, AP,
the threshold, support), then the micro, macro and samples averages, as scikit-learn's
``classification_report`` prints them for multilabel targets."""

from __future__ import annotations

from typing import Any

from pictag.heads.texttable import number, short, text_table

HEADER = ["tag", "precision", "recall", "F1", "AP", "threshold", "support"]


def report_text(name: str, section: dict[str, Any]) -> str:
    """The head's per-tag table, as lines of plain text."""
    title = f"{name}: per tag, at the tuned thresholds (AP does not depend on them)"
    return "\n".join([title, *text_table(HEADER, tag_rows(section))])


def tag_rows(section: dict[str, Any]) -> list[list[str]]:
    """One row per tag, a blank row, then the averages; their support is the number of true
    tags (scikit-learn's)."""
    per_label = section.get("per_label") or []
    rows: list[list[str]] = [
        [short(r.get("label")),
         *(number(r.get(key)) for key in ("precision", "recall", "f1", "ap", "threshold")),
         number(r.get("support"))]
        for r in per_label
    ]  # fmt: skip
    metrics = section.get("metrics") or {}
    supports = [r.get("support") for r in per_label if isinstance(r.get("support"), int)]
    total = number(sum(supports)) if supports else number(None)
    averages = (("micro", None), ("macro", "mAP"), ("samples", None))
    rows.append([])
    for average, ap_key in averages:
        values = [number(metrics.get(f"{key}_{average}")) for key in ("precision", "recall", "f1")]
        ap = number(metrics.get(ap_key)) if ap_key else number(None)
        rows.append([f"{average} avg", *values, ap, number(None), total])
    return rows
