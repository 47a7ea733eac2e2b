"""Per-class score thresholds of a ``detection`` head, tuned on the validation split for the
best F1 at IoU 0.5, counted with the official COCO evaluator's own matches
(:func:`pictag.heads.detection_metrics.class_matches`), so the tuned operating point and the
reported precision and recall agree detection for detection."""

from __future__ import annotations

import numpy as np

from pictag.heads.detection_metrics import (
    DEFAULT_THRESHOLD,
    ClassMatches,
    CocoResult,
    class_matches,
    coco_evaluate,
)


def tune_thresholds(
    dets: np.ndarray, targets: np.ndarray, num_classes: int, iou: float = 0.5
) -> list[float]:
    """The score threshold per class with the best F1 at IoU ``iou`` (one of COCO's
    thresholds, 0.50:0.05:0.95); ``DEFAULT_THRESHOLD`` for a class with no ground truth, no
    detection or no true positive at any threshold (nothing to tune on).

    Args:
        dets: ``[N, K, 6]`` rows ``(x1, y1, x2, y2, score, class)``, normalised, after NMS.
        targets: ``[N, M, 5]`` rows ``(class, x1, y1, x2, y2)``; unknown images are left out.
        num_classes: Number of classes.
    """
    return thresholds_from(coco_evaluate(dets, targets, num_classes), iou)


def thresholds_from(result: CocoResult, iou: float = 0.5) -> list[float]:
    """:func:`tune_thresholds` of an evaluation already run."""
    return [best_threshold(matches) for matches in class_matches(result, iou)]


def best_threshold(matches: ClassMatches) -> float:
    """The score of the cut with the best F1 down a class's detections sorted by score.

    Only cuts between different scores count (a threshold keeps every detection of its score);
    among equally good cuts the highest threshold wins (fewer detections for the same F1).
    """
    if matches.n_true == 0 or len(matches.scores) == 0:
        return DEFAULT_THRESHOLD
    order = np.argsort(-matches.scores, kind="mergesort")
    scores, matched = matches.scores[order], matches.matched[order]
    tp = np.cumsum(matched)
    kept = np.arange(1, len(scores) + 1)
    f1 = 2 * tp / (kept + matches.n_true)
    last_of_score = np.append(scores[1:] != scores[:-1], True)  # cuts a threshold can make
    f1 = np.where(last_of_score, f1, -1.0)
    best = int(np.argmax(f1))  # the first maximum: the highest score
    if tp[best] == 0:
        return DEFAULT_THRESHOLD
    return float(scores[best])
