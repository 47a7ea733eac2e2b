"""Report figures as PNG bytes: training curves, confusion heatmaps, PR/ROC curves, label bars,
drawn for the report page and for the head kinds' report sections.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``), which needs no
display and no global backend, so importing this module never changes the caller's pyplot
state. Each function reads the plain dicts of ``report.json``; undefined metrics (``None`` or
NaN) are left out of a plot rather than drawn as zero. Sizes grow with the number of labels up
to a cap, so a head with 80 COCO classes still gives a readable figure of bounded size.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

DPI = 100
MAX_BARS = 40  # label bars: the worst ones are the ones worth reading
MAX_LEGEND = 12  # PR curves: above this many labels only the worst are coloured
ANNOTATE_CELLS = 20  # confusion: write counts in the cells up to this many classes


def training_curves_png(history: list[dict], primary: Sequence[str] = ()) -> bytes | None:
    """Loss and validation score per epoch from the lines of ``metrics.jsonl``.

    Args:
        history: One record per epoch with ``epoch``, ``train/loss``, ``val/loss``,
            ``val/score`` and ``val/<head>/<metric>`` keys.
        primary: ``<head>/<metric>`` names worth a curve beside the score (each head's
            primary metric).

    Returns:
        PNG bytes, or None when the history holds no epoch with a loss or a score.
    """
    records = [r for r in history if isinstance(r, dict) and _number(r.get("epoch")) is not None]
    if not records:
        return None
    epochs = [float(r["epoch"]) for r in records]
    losses = _series(records, ["train/loss", "val/loss"])
    scores = _series(records, ["val/score", *(f"val/{key}" for key in primary)])
    if not losses and not scores:
        return None
    fig = Figure(figsize=(10, 3.6), dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    for axes, series, title in ((left, losses, "loss"), (right, scores, "validation")):
        for key, values in series.items():
            axes.plot(epochs, values, marker="o", markersize=3, label=_plain(key))
        axes.set(title=title, xlabel="epoch")
        axes.grid(alpha=0.3)
        if series:
            axes.legend(fontsize=8)
        else:
            axes.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axes.transAxes)
    return _png(fig)


def confusion_png(matrix: Sequence[Sequence[float]], labels: Sequence[str], title: str) -> bytes:
    """A confusion heatmap: rows are true classes, columns predicted ones.

    Colours show each row's share (recall per class), so rare classes are as visible as common
    ones; the cells carry the raw counts when there are few enough classes to read them.

    Args:
        matrix: Square counts, ``matrix[true][pred]``.
        labels: Class names in matrix order.
        title: Figure title.
    """
    counts = np.asarray(matrix, dtype=float).reshape(len(labels), len(labels))
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n = len(labels)
    side = min(max(3.5, 0.45 * n + 2.0), 14.0)
    font = _tick_font(n, side)
    fig = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
    axes = fig.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=axes, shrink=0.8, label="share of true class")
    ticks = np.arange(n)
    names = [_plain(_short(label)) for label in labels]
    axes.set_xticks(ticks, names, rotation=90, fontsize=font)
    axes.set_yticks(ticks, names, fontsize=font)
    axes.set(xlabel="predicted", ylabel="true", title=_plain(title))
    if n <= ANNOTATE_CELLS:
        for (row, col), value in np.ndenumerate(counts):
            colour = "white" if shares[row, col] > 0.6 else "black"
            axes.text(col, row, f"{value:g}", ha="center", va="center", fontsize=8, color=colour)
    return _png(fig)


def label_bars_png(head_section: dict[str, Any], first: str, second: str) -> bytes | None:
    """Per-label bars of two metrics of the ``per_label`` rows, sorted worst first by ``first``
    (e.g. AP and F1, or F1 and recall).

    Labels whose sorting metric is undefined go last, marked "n/a"; above ``MAX_BARS`` labels
    only the worst are drawn.

    Args:
        head_section: One head's section of ``report.json``.
        first: The row key to sort and draw first (``ap``, ``f1`` or ``recall``).
        second: The row key drawn beside it.

    Returns:
        PNG bytes, or None when the section has no per-label rows.
    """
    rows = [r for r in head_section.get("per_label") or [] if isinstance(r, dict)]
    if not rows:
        return None
    rows = _worst_first(rows, first)
    shown = rows[:MAX_BARS]
    n = len(shown)
    height = min(max(2.2, 0.26 * n + 1.2), 12.0)
    fig = Figure(figsize=(8, height), dpi=DPI, layout="constrained")
    axes = fig.subplots()
    positions = np.arange(n)
    for offset, metric, colour in ((-0.2, first, "#3b75af"), (0.2, second, "#ef8636")):
        values = [_number(r.get(metric)) for r in shown]
        bars = [math.nan if v is None else v for v in values]
        axes.barh(positions + offset, bars, height=0.4, color=colour, label=_METRIC_NAMES[metric])
        for y, value in zip(positions + offset, values, strict=True):
            text = "n/a" if value is None else f"{value:.2f}"
            axes.text((value or 0.0) + 0.01, y, text, va="center", fontsize=7)
    names = [_plain(_short(str(r.get("label", "")))) for r in shown]
    axes.set_yticks(positions, names, fontsize=_tick_font(n, height))
    axes.set_ylim(n - 0.5, -0.5)  # worst at the top, where the eye starts
    axes.set_xlim(0, 1.12)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    title = "per label, worst first"
    if len(rows) > n:
        title = f"{n} worst of {len(rows)} labels"
    axes.set_title(title)
    return _png(fig)


_METRIC_NAMES = {"ap": "AP", "f1": "F1", "recall": "recall", "iou": "IoU", "dice": "Dice"}


def _worst_first(rows: list[dict], metric: str) -> list[dict]:
    """Rows by ``metric`` ascending; rows where it is undefined go last, not first."""
    return sorted(rows, key=lambda r: (_number(r.get(metric)) is None, _number(r.get(metric)) or 0))


def label_pr_png(section: dict[str, Any]) -> bytes | None:
    """One precision-recall curve per label of the section's ``per_label`` rows (beyond
    ``MAX_LEGEND`` labels all are drawn in grey and the worst ones by AP in colour); None when
    no label has a curve."""
    curves = []
    for row in section.get("per_label") or []:
        curve = row.get("pr_curve") if isinstance(row, dict) else None
        if isinstance(curve, dict) and curve.get("precision") and curve.get("recall"):
            curves.append((str(row.get("label", "")), _number(row.get("ap")), curve))
    if not curves:
        return None
    fig = Figure(figsize=(6.5, 5), dpi=DPI, layout="constrained")
    axes = fig.subplots()
    highlight = _worst(curves) if len(curves) > MAX_LEGEND else curves
    if len(highlight) < len(curves):
        for _, _, curve in curves:  # the rest in grey, underneath the coloured ones
            axes.plot(_floats(curve["recall"]), _floats(curve["precision"]), color="0.8",
                      linewidth=0.7, drawstyle="steps-post")  # fmt: skip
    for label, ap, curve in highlight:
        ap_text = "–" if ap is None else f"{ap:.2f}"
        name = _plain(f"{_short(label)} (AP {ap_text})")
        axes.plot(_floats(curve["recall"]), _floats(curve["precision"]), linewidth=1.5,
                  label=name, drawstyle="steps-post")  # fmt: skip
    title = "precision-recall per label"
    if len(highlight) < len(curves):
        title += f" ({len(highlight)} worst by AP in colour)"
    _unit_axes(axes, "recall", "precision", title)
    if highlight:
        axes.legend(fontsize=7, loc="lower left")
    return _png(fig)


def binary_curves_png(section: dict[str, Any]) -> bytes | None:
    """PR and ROC curves of a two-class head's positive class, with its operating point (the
    tuned threshold) marked; None when the section has no curves."""
    binary = section.get("binary")
    if not isinstance(binary, dict) or not binary.get("roc") or not binary.get("pr"):
        return None
    labels = section.get("labels") or ["negative", "positive"]
    point = binary.get("operating_point") or {}
    fig = Figure(figsize=(10, 4.2), dpi=DPI, layout="constrained")
    pr_axes, roc_axes = fig.subplots(1, 2)
    pr, roc = binary["pr"], binary["roc"]
    pr_axes.plot(_floats(pr["recall"]), _floats(pr["precision"]), drawstyle="steps-post")
    roc_axes.plot(_floats(roc["fpr"]), _floats(roc["tpr"]))
    roc_axes.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
    threshold = _number(point.get("threshold"))
    mark = f"operating point (t = {threshold:.2f})" if threshold is not None else "operating point"
    for axes, x_key, y_key in ((pr_axes, "recall", "precision"), (roc_axes, "fpr", "tpr")):
        x, y = _number(point.get(x_key)), _number(point.get(y_key))
        if x is not None and y is not None:
            axes.plot([x], [y], "o", color="#d62728", markersize=7, label=mark)
            axes.legend(fontsize=8, loc="lower left" if axes is pr_axes else "lower right")
    positive = _short(str(binary.get("positive", labels[-1])))
    _unit_axes(pr_axes, "recall", "precision", f"precision-recall (positive: {positive})")
    auc = _number((section.get("metrics") or {}).get("roc_auc_ovr"))
    roc_title = "ROC" + ("" if auc is None else f" (AUC {auc:.3f})")
    _unit_axes(roc_axes, "false positive rate", "true positive rate", roc_title)
    return _png(fig)


def _worst(curves: list[tuple[str, float | None, dict]], count: int = 6) -> list[tuple]:
    known = [c for c in curves if c[1] is not None]
    return sorted(known, key=lambda c: c[1])[:count]


def _unit_axes(axes: Any, xlabel: str, ylabel: str, title: str) -> None:
    axes.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.02), xlabel=xlabel, ylabel=ylabel)
    axes.set_title(_plain(title), fontsize=10)
    axes.grid(alpha=0.3)


def _series(records: list[dict], keys: list[str]) -> dict[str, list[float]]:
    series = {}
    for key in keys:
        values = [_number(r.get(key)) for r in records]
        if any(v is not None for v in values):
            series[key] = [math.nan if v is None else v for v in values]
    return series


def _number(value: Any) -> float | None:
    """A finite float, or None for null, NaN, infinity and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _floats(values: Sequence[Any]) -> list[float]:
    return [math.nan if _number(v) is None else float(v) for v in values]


def _tick_font(count: int, inches: float) -> float:
    # ~70% of the room one tick gets, clamped so 80 classes stay legible and 3 do not look huge
    return float(min(9.0, max(5.0, 0.7 * inches * 72 / max(count, 1))))


def _short(label: str, limit: int = 28) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _plain(text: str) -> str:
    # matplotlib reads $...$ as mathtext; a label such as "$5 note" must print as written
    return text.replace("$", r"\$")


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
