"""Metrics of a ``segmentation`` head, every one from a single pixel confusion count.

Inputs are numpy arrays over ``N`` images of ``H x W`` pixels:

- ``decided [N, H, W]``: the class index the head chose for each pixel.
- ``targets [N, H, W]``: the true class index of each pixel (:mod:`.masks`), ``IGNORE`` where a
  pixel counts for nothing; those pixels are left out of every count.

Conventions (pinned against scikit-learn by ``tests/heads/test_segmentation_metrics.py``):

- The confusion counts pixels: rows are true classes, columns predicted ones. Every metric is
  read from it, so validation, ``report.json`` and the HTML report cannot disagree.
- Per class, IoU is ``TP / (TP + FP + FN)`` (scikit-learn's ``jaccard_score``) and Dice is
  ``2 TP / (2 TP + FP + FN)`` (its ``f1_score``). A class neither true nor predicted on any
  known pixel has IoU and Dice ``nan`` and is left out of the means, as is usual for mIoU:
  scoring it 1 or 0 would reward or punish a class the data never shows.
- Precision is ``nan`` for a class never predicted, recall ``nan`` for a class never true.
- ``mean_accuracy`` is the mean recall over the classes that are true somewhere; no known pixel
  at all gives ``nan`` everywhere.
"""

from __future__ import annotations

import math

import numpy as np

from pictag.heads.masks import IGNORE, MAX_CLASSES

CHUNK_PIXELS = 1 << 22  # pixels counted at once: bounds the index arrays' memory
METRIC_NAMES = ("miou", "dice", "pixel_accuracy", "mean_accuracy")


def confusion(decided: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel counts ``[C, C]`` (int64) of true class (rows) against predicted class (columns),
    over the pixels whose target is not ``IGNORE``.

    Args:
        decided: Predicted class indices ``[N, H, W]``.
        targets: True class indices ``[N, H, W]``, ``IGNORE`` where a pixel is left out.
        num_classes: ``C``.

    Raises:
        ValueError: When the shapes differ or a class index is out of range.
    """
    decided, targets = checked(decided, targets, num_classes)
    flat_decided, flat_targets = decided.reshape(-1), targets.reshape(-1)
    counts = np.zeros(num_classes * num_classes, dtype=np.int64)
    for start in range(0, flat_targets.size, CHUNK_PIXELS):
        stop = start + CHUNK_PIXELS
        counts += _counts(flat_decided[start:stop], flat_targets[start:stop], num_classes)
    return counts.reshape(num_classes, num_classes)


def scores(matrix: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class and mean scores of a confusion count.

    Args:
        matrix: Pixel counts ``[C, C]``, rows true class, columns predicted.

    Returns:
        Per class ``[C]``: ``iou``, ``dice``, ``precision``, ``recall`` (``nan`` where
        undefined); means: ``miou``, ``mdice`` (over the classes whose IoU is defined),
        ``pixel_accuracy`` and ``mean_accuracy`` (mean recall), ``nan`` without a known pixel.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"a confusion count must be square, got {matrix.shape}")
    tp = np.diag(matrix).astype(np.float64)
    true, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    union = true + predicted - tp  # TP + FP + FN
    total = int(matrix.sum())
    iou = _ratio(tp, union)
    dice = _ratio(2 * tp, true + predicted)
    recall = _ratio(tp, true)
    return {
        "iou": iou,
        "dice": dice,
        "precision": _ratio(tp, predicted),
        "recall": recall,
        "miou": _mean(iou),
        "mdice": _mean(dice),
        "pixel_accuracy": float(tp.sum() / total) if total else math.nan,
        "mean_accuracy": _mean(recall),
    }


def summary(found: dict[str, np.ndarray | float]) -> dict[str, float]:
    """The head's metrics (``METRIC_NAMES``) out of :func:`scores`; ``dice`` is the mean Dice."""
    return {
        "miou": float(found["miou"]),
        "dice": float(found["mdice"]),
        "pixel_accuracy": float(found["pixel_accuracy"]),
        "mean_accuracy": float(found["mean_accuracy"]),
    }


def segmentation_metrics(
    decided: np.ndarray, targets: np.ndarray, num_classes: int
) -> dict[str, float]:
    """``miou``, ``dice`` (mean Dice), ``pixel_accuracy`` and ``mean_accuracy`` over the known
    pixels of all images; ``nan`` where undefined."""
    return summary(scores(confusion(decided, targets, num_classes)))


def image_iou(decided: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean IoU of each image ``[N]``, over the classes in its target or its prediction on its
    known pixels; ``nan`` for an image without a known pixel.

    It ranks images from worst to best segmented, e.g. to show the worst ones in a report.
    """
    decided, targets = checked(decided, targets, num_classes)
    result = np.full(len(targets), math.nan)
    for i, (chosen, truth) in enumerate(zip(decided, targets, strict=True)):
        counts = _counts(chosen.reshape(-1), truth.reshape(-1), num_classes)
        result[i] = scores(counts.reshape(num_classes, num_classes))["miou"]
    return result


def checked(
    decided: np.ndarray, targets: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decisions and targets as integer arrays, with a message when shapes or classes are off."""
    decided, targets = np.asarray(decided), np.asarray(targets)
    if decided.ndim != 3 or decided.shape != targets.shape:
        raise ValueError(
            f"decisions and targets must both be [N, H, W] of one shape, got {decided.shape} "
            f"and {targets.shape}"
        )
    for name, values in (("decision", decided), ("target", targets)):
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} class indices must be integers, got {values.dtype}")
    if not 0 < num_classes <= MAX_CLASSES:
        raise ValueError(f"{num_classes} classes: a segmentation head has 1 to {MAX_CLASSES}")
    if decided.size and (decided.min() < 0 or decided.max() >= num_classes):
        raise ValueError(f"a decided class is outside 0..{num_classes - 1}")
    if targets.size and (
        targets.min() < 0 or ((targets >= num_classes) & (targets != IGNORE)).any()
    ):
        raise ValueError(f"a target class is outside 0..{num_classes - 1} (or {IGNORE})")
    return decided, targets


def _counts(decided: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Flat confusion counts ``[C * C]`` of flat pixels, leaving out ``IGNORE`` targets."""
    known = targets != IGNORE
    cells = targets[known].astype(np.intp) * num_classes + decided[known].astype(np.intp)
    return np.bincount(cells, minlength=num_classes * num_classes).astype(np.int64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ``numerator / denominator``, ``nan`` where the denominator is 0."""
    out = np.full(len(denominator), math.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _mean(values: np.ndarray) -> float:
    """The mean of the defined values, ``nan`` (without numpy's warning) when none is."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan
