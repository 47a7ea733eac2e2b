"""The report section of a ``detection`` head: its part of ``report.json`` (from the COCO
evaluator, :mod:`pictag.heads.detection_metrics`), of ``pictag evaluate``'s terminal output and
of ``report.html``."""

from __future__ import annotations

from typing import Any

import numpy as np

from pictag import figures
from pictag.heads.boxes import known
from pictag.heads.detection_metrics import (
    DEFAULT_THRESHOLD,
    METRIC_ORDER,
    average_precisions,
    class_matches,
    coco_evaluate,
    counts,
    metrics_of,
    pr_curves,
    rates,
)
from pictag.heads.texttable import number, short, text_table
from pictag.htmlparts import figure, table

TEXT_HEADER = ["class", "AP", "AP50", "precision", "recall", "F1", "threshold", "boxes", "kept"]
ROW_KEYS = ("ap", "ap50", "precision", "recall", "f1", "threshold", "n_true", "n_pred")


def section(
    dets: np.ndarray, targets: np.ndarray, labels: list[str], params: dict[str, Any]
) -> dict[str, Any]:
    """One detection head's section of ``report.json``.

    Args:
        dets: ``[N, K, 6]`` rows ``(x1, y1, x2, y2, score, class)``, normalised, after NMS.
        targets: ``[N, M, 5]`` rows ``(class, x1, y1, x2, y2)``; unknown images are left out.
        labels: The class names.
        params: The head's decision parameters; ``thresholds`` holds a score threshold per
            class (``DEFAULT_THRESHOLD`` each when absent).

    Returns:
        ``kind``, ``labels``, ``n`` and ``n_images`` (images with known boxes), ``n_boxes``,
        ``thresholds``, ``metrics``, ``per_label`` (label, ap, ap50, threshold, n_true, n_pred,
        precision, recall, f1) and ``pr_curves`` (``{label: {recall, precision}}`` at IoU 0.5),
        as plain values (``nan`` where undefined).
    """
    thresholds = [float(t) for t in params.get("thresholds") or []]
    thresholds = thresholds or [DEFAULT_THRESHOLD] * len(labels)
    result = coco_evaluate(dets, targets, len(labels))
    metrics = metrics_of(result, labels, thresholds)
    ap, ap50 = average_precisions(result)
    tp, kept, n_true = counts(class_matches(result), thresholds)
    n_pred = _kept_per_class(np.asarray(dets)[known(np.asarray(targets))], thresholds)
    rows = []
    for k, name in enumerate(labels):
        row = {"label": name, "ap": float(ap[k]), "ap50": float(ap50[k])}
        row.update(threshold=thresholds[k], n_true=int(result.n_true[k]), n_pred=int(n_pred[k]))
        row.update(rates(int(tp[k]), int(kept[k]), int(n_true[k])))
        rows.append(row)
    return {
        "kind": "detection",
        "labels": list(labels),
        "n": result.n_images,
        "n_images": result.n_images,
        "n_boxes": int(result.n_true.sum()),
        "params": {"thresholds": thresholds},
        "thresholds": thresholds,
        "metrics": metrics,
        "per_label": rows,
        "pr_curves": pr_curves(result, labels),
    }


def _kept_per_class(dets: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """Detections per class whose score is at least the class's threshold."""
    rows = dets.reshape(-1, 6)
    rows = rows[rows[:, 5] >= 0]
    classes = rows[:, 5].astype(np.int64)
    kept = rows[:, 4] >= np.asarray(thresholds, dtype=np.float64)[classes]
    return np.bincount(classes[kept], minlength=len(thresholds))


def report_text(name: str, section: dict[str, Any]) -> str:
    """The head's per-class table, then the overall row, as lines of plain text."""
    title = (
        f"{name}: per class, COCO AP@[.5:.95] and AP@.5; precision, recall and F1 at IoU 0.5 "
        "and the tuned thresholds"
    )
    rows = [
        [short(r.get("label")), *(number(r.get(key)) for key in ROW_KEYS)]
        for r in section.get("per_label") or []
    ]
    metrics = section.get("metrics") or {}
    n_pred = [r.get("n_pred") for r in section.get("per_label") or []]
    total = number(sum(n_pred)) if n_pred and all(isinstance(n, int) for n in n_pred) else "-"
    overall = [number(metrics.get(key)) for key in ("map", "map50", "precision", "recall", "f1")]
    rows += [[], ["all", *overall, number(None), number(section.get("n_boxes")), total]]
    return "\n".join([title, *text_table(TEXT_HEADER, rows)])


def html(name: str, section: dict[str, Any]) -> str:
    """The head's report body (the page adds the heading): the metrics, per-class bars, the
    per-class table and COCO's precision-recall curves at IoU 0.5."""
    del name
    bars = figures.label_bars_png(section, "ap", "recall")
    parts = [f"<div class=row>{_metrics_table(section)}{figure(bars, 'per-class bars')}</div>"]
    parts.append("<h3>Per class</h3>" + _class_table(section))
    curves = figures.label_pr_png(_curve_rows(section))
    if curves is not None:
        parts.append(
            "<h3>Precision-recall at IoU 0.5</h3>" + figure(curves, "precision-recall curves")
        )
    return "\n".join(parts)


def _metrics_table(section: dict[str, Any]) -> str:
    metrics = section.get("metrics") or {}
    rows = [[key, metrics.get(key)] for key in METRIC_ORDER if key in metrics]
    rows += [["images", section.get("n_images")], ["boxes", section.get("n_boxes")]]
    note = (
        "<p class=dim>COCO mAP@[.5:.95], mAP@.5, mAP@.75 and AR@100 do not depend on the "
        "thresholds; precision, recall and F1 are at IoU 0.5 and the tuned thresholds.</p>"
    )
    return f"<div>{table(['metric', 'value'], rows)}{note}</div>"


def _class_table(section: dict[str, Any]) -> str:
    header = ["class", "AP", "AP50", "precision", "recall", "F1", "threshold", "boxes", "kept"]
    rows = [
        [r.get("label"), *(r.get(key) for key in ROW_KEYS)] for r in section.get("per_label") or []
    ]
    return table(header, rows, scroll=True)


def _curve_rows(section: dict[str, Any]) -> dict[str, Any]:
    """The ``pr_curves`` as the ``per_label`` rows :func:`pictag.figures.label_pr_png` reads,
    each with its AP@.5 (the mean of its curve)."""
    curves = section.get("pr_curves") or {}
    rows = [
        {"label": r.get("label"), "ap": r.get("ap50"), "pr_curve": curves.get(r.get("label"))}
        for r in section.get("per_label") or []
    ]
    return {"per_label": rows}
