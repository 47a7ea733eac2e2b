"""The report section of a ``segmentation`` head: its part of ``report.json`` (from the pixel
confusion count of :mod:`pictag.heads.segmentation_metrics`), of ``pictag evaluate``'s terminal
output and of ``report.html``.

Figures are drawn only when :func:`html` runs, so importing this module stays cheap.
"""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np

from pictag.heads.masks import IGNORE, presence
from pictag.heads.segmentation_metrics import confusion, scores, summary
from pictag.heads.texttable import number, short, text_table
from pictag.htmlparts import figure, table

ROW_KEYS = ("iou", "dice", "precision", "recall", "pixels", "images")
HEADER = ["class", "IoU", "Dice", "precision", "recall", "pixels", "images"]


def section(
    decided: np.ndarray, targets: np.ndarray, labels: list[str], params: dict[str, Any]
) -> dict[str, Any]:
    """One segmentation head's section of ``report.json``.

    Args:
        decided: Predicted class indices ``[N, H, W]``.
        targets: True class indices ``[N, H, W]``, ``IGNORE`` where a pixel counts for nothing.
        labels: The ``C`` class names.
        params: The head's decision parameters.

    Returns:
        ``kind``, ``labels``, ``n`` (images with a known pixel), ``n_pixels`` (known pixels),
        ``params``, ``metrics``, ``per_label`` (label, iou, dice, precision, recall, pixels:
        true pixels, images: images whose target holds the class) and ``confusion`` (pixel
        counts, rows true class, columns predicted), as plain values (``nan`` where undefined).
    """
    matrix = confusion(decided, targets, len(labels))  # checks the shapes and classes
    targets = np.asarray(targets)
    found = scores(matrix)
    pixels = matrix.sum(axis=1)
    images = _images_per_label(targets, len(labels))
    rows = [
        {
            "label": name,
            **{key: float(found[key][k]) for key in ("iou", "dice", "precision", "recall")},
            "pixels": int(pixels[k]),
            "images": int(images[k]),
        }
        for k, name in enumerate(labels)
    ]
    known = (targets != IGNORE).reshape(len(targets), -1)
    return {
        "kind": "segmentation",
        "labels": list(labels),
        "n": int(known.any(axis=1).sum()),
        "n_pixels": int(matrix.sum()),
        "params": dict(params),
        "metrics": summary(found),
        "per_label": rows,
        "confusion": matrix.tolist(),
    }


def _images_per_label(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """How many images hold each class in their target ``[C]``."""
    return presence(targets, num_classes).sum(axis=0)


def report_text(name: str, section: dict[str, Any]) -> str:
    """The head's per-class table, then the means and the pixel accuracy, as plain text."""
    title = f"{name}: per class, pixel IoU, Dice, precision and recall (ignored pixels left out)"
    rows = [
        [short(r.get("label")), *(number(r.get(key)) for key in ROW_KEYS)]
        for r in section.get("per_label") or []
    ]
    metrics = section.get("metrics") or {}
    mean = ["mean", number(metrics.get("miou")), number(metrics.get("dice")), "",
            number(metrics.get("mean_accuracy")), number(section.get("n_pixels")),
            number(section.get("n"))]  # fmt: skip
    rows += [[], mean]
    accuracy = f"pixel accuracy {number(metrics.get('pixel_accuracy'))}"
    return "\n".join([title, *text_table(HEADER, rows), "", accuracy])


def html(name: str, section: dict[str, Any]) -> str:
    """The head's report body: the metrics beside per-class IoU bars, then the row-normalised
    confusion heatmap beside the per-class table."""
    from pictag import figures  # matplotlib: only when a report is drawn

    labels = [str(label) for label in section.get("labels") or []]
    rows = [r for r in section.get("per_label") or [] if isinstance(r, dict)]
    parts = [f"<h3>{escape(name)}: pixel metrics</h3>"]
    bars = figure(figures.label_bars_png({"per_label": rows}, "iou", "dice"), "per-class IoU")
    parts.append(f"<div class=row>{_metrics_table(section)}{bars}</div>")
    heatmap = None
    if section.get("confusion") and labels:
        heatmap = figures.confusion_png(section["confusion"], labels, f"{name}: pixel confusion")
    parts.append("<h3>Confusion and per-class metrics</h3>")
    heatmap_html = figure(heatmap, "pixel confusion matrix")
    parts.append(f"<div class=row>{heatmap_html}<div>{_class_table(rows)}</div></div>")
    return "\n".join(parts)


def _metrics_table(section: dict[str, Any]) -> str:
    metrics = section.get("metrics") or {}
    rows = [[key, value] for key, value in metrics.items()]
    rows += [["images", section.get("n")], ["known pixels", section.get("n_pixels")]]
    note = (
        "<p class=dim>Pixels marked ignore are left out. mIoU and mean Dice average the "
        "classes seen in the targets or the predictions; mean accuracy is the mean recall.</p>"
    )
    return f"<div>{table(['metric', 'value'], rows)}{note}</div>"


def _class_table(rows: list[dict[str, Any]]) -> str:
    cells = [[r.get("label"), *(r.get(key) for key in ROW_KEYS)] for r in rows]
    return table(HEADER, cells, scroll=True)
