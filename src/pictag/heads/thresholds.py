"""Decision thresholds tuned on validation probabilities: per label of a multilabel head, and on
the positive class of a two-class multiclass head.

Candidates are the thresholds of scikit-learn's ``precision_recall_curve`` (every distinct score
down to the one reaching full recall), with the decision ``prob >= threshold``. F1 at the chosen
threshold is therefore at least F1 at 0.5 on the tuning data: the decisions at 0.5 are those at
a candidate, or none, or those of the full-recall candidate plus extra false positives.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve

from pictag.heads.kinds import NEUTRAL, as_probs

TUNE_BY = ("f1", "precision", "recall", "fixed")


def tune_thresholds(
    probs: np.ndarray, targets: np.ndarray, by: str = "f1", target: float = 0.5
) -> list[float]:
    """One threshold per label, chosen on validation data.

    Args:
        probs: Sigmoid probabilities ``[N, L]``.
        targets: Multi-hot targets ``[N, L]``; negative entries are missing and ignored.
        by: ``f1`` maximises F1; ``precision`` takes the best recall among the thresholds whose
            precision reaches ``target`` (none reaching it: the highest precision); ``recall``
            the best precision among those whose recall reaches ``target`` (else the highest
            recall); ``fixed`` gives ``target`` to every label.
        target: The precision or recall to reach, or the fixed threshold; unused for ``f1``.

    Returns:
        ``L`` thresholds; 0.5 for a label whose known entries lack a positive or a negative.
    """
    if by not in TUNE_BY:
        raise ValueError(f"threshold_by must be one of {TUNE_BY}, got {by!r}")
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"threshold target must be in [0, 1], got {target}")
    probs = as_probs(probs)
    targets = np.asarray(targets, dtype=np.float64)
    if targets.shape != probs.shape:
        raise ValueError(f"targets {targets.shape} and probabilities {probs.shape} differ")
    return [
        tune_column(probs[:, label], targets[:, label], by, target)
        for label in range(probs.shape[1])
    ]


def tune_column(scores: np.ndarray, target_column: np.ndarray, by: str, target: float) -> float:
    """The threshold of one score column against its targets (1 positive, 0 negative,
    negative = missing), chosen as :func:`tune_thresholds` describes."""
    if by == "fixed":
        return float(target)
    known = target_column >= 0
    truth = target_column[known] >= 0.5
    if not truth.any() or truth.all():
        return NEUTRAL
    precision, recall, candidates = precision_recall_curve(truth, scores[known])
    # The curve's last point (precision 1, recall 0) has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    if by == "f1":
        total = precision + recall
        f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
        return float(candidates[np.argmax(f1)])
    goal, other = (precision, recall) if by == "precision" else (recall, precision)
    return float(candidates[_best(goal, other, target)])


def _best(goal: np.ndarray, other: np.ndarray, target: float) -> int:
    """Index with the best ``other`` among those whose ``goal`` reaches ``target`` (ties: the
    higher ``goal``); when none reaches it, those with the highest ``goal`` compete instead."""
    eligible = goal >= target
    if not eligible.any():
        eligible = goal == goal.max()
    score = np.where(eligible, other, -np.inf)
    tied = np.flatnonzero(score == score.max())
    return int(tied[np.argmax(goal[tied])])
