"""A ``multiclass`` head's part of ``pictag evaluate``'s terminal output, read from its
``report.json`` section: the per-class table (precision, recall, F1, support, then accuracy and
the macro and weighted averages, as scikit-learn's ``classification_report`` prints them) and
the confusion matrix, or for many classes its most-confused pairs."""

from __future__ import annotations

from typing import Any

import numpy as np

from pictag.heads.texttable import number, short, text_table

MAX_MATRIX = 15  # classes; a wider matrix wraps in a terminal, so the worst pairs are listed
TOP_PAIRS = 10
COLUMN_CHARS = 12  # predicted-class column titles are cut to this, to keep the matrix narrow


def report_text(name: str, section: dict[str, Any]) -> str:
    """The head's per-class table and confusion, as lines of plain text."""
    header = ["class", "precision", "recall", "F1", "support"]
    lines = [f"{name}: per class", *text_table(header, class_rows(section))]
    confusion = confusion_lines(name, section.get("confusion"), section.get("labels") or [])
    if confusion:
        lines += ["", *confusion]
    return "\n".join(lines)


def class_rows(section: dict[str, Any]) -> list[list[str]]:
    """One row per class, a blank row, then accuracy and the macro and weighted averages over
    the ``n`` images with a known class."""
    rows: list[list[str]] = [
        [short(r.get("label")), *(number(r.get(key)) for key in ("precision", "recall", "f1")),
         number(r.get("support"))]
        for r in section.get("per_label") or []
    ]  # fmt: skip
    metrics, n = section.get("metrics") or {}, number(section.get("n"))
    rows += [[], ["accuracy", "", "", number(metrics.get("accuracy")), n]]
    for average in ("macro", "weighted"):
        values = [number(metrics.get(f"{key}_{average}")) for key in ("precision", "recall", "f1")]
        rows.append([f"{average} avg", *values, n])
    return rows


def confusion_lines(name: str, matrix: Any, labels: list[str]) -> list[str]:
    """The confusion matrix with class names (rows true, columns predicted); above
    ``MAX_MATRIX`` classes the most-confused pairs instead, saying so."""
    if not matrix or not labels:
        return []
    counts = np.asarray(matrix, dtype=np.int64).reshape(len(labels), len(labels))
    if len(labels) <= MAX_MATRIX:
        header = ["true \\ predicted", *(short(label, COLUMN_CHARS) for label in labels)]
        rows = [[short(label), *map(str, row)] for label, row in zip(labels, counts, strict=True)]
        title = f"{name}: confusion matrix (rows: true class, columns: predicted class)"
        return [title, *text_table(header, rows)]
    pairs = most_confused(counts)
    if not pairs:
        return [f"{name}: no confusions: every image of a known class was predicted right"]
    title = (
        f"{name}: {len(labels)} classes, too many for the full confusion matrix (report.html "
        f"shows it); the {len(pairs)} most-confused pairs:"
    )
    totals = counts.sum(axis=1)
    rows = [
        [short(labels[true]), short(labels[pred]), str(count), number(count / totals[true], 3)]
        for true, pred, count in pairs
    ]
    return [title, *text_table(["true", "predicted", "images", "share of true"], rows)]


def most_confused(counts: np.ndarray, limit: int = TOP_PAIRS) -> list[tuple[int, int, int]]:
    """``(true, predicted, count)`` of the off-diagonal cells with the most images, most first
    (ties in matrix order), at most ``limit``, none with a zero count."""
    errors = counts.copy()
    np.fill_diagonal(errors, 0)
    order = np.argsort(-errors, axis=None, kind="stable")[:limit]
    cells = [np.unravel_index(flat, errors.shape) for flat in order]
    return [(int(t), int(p), int(errors[t, p])) for t, p in cells if errors[t, p] > 0]
