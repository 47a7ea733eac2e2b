"""Metrics and the report section of a ``multiclass`` head, every formula from scikit-learn
except the ECE. :func:`metrics` is the one implementation that validation, ``report.json``, the
HTML report and the benchmarks use.

Conventions (each pinned against scikit-learn by ``tests/evaluation/test_metrics_golden.py``):

- Rows whose target is missing (negative, ``-100``) are skipped; ``n`` counts the others.
- Precision, recall and F1 count a 0/0 as 0 (scikit-learn's ``zero_division=0``): a class never
  predicted has precision 0. Macro and weighted averages are scikit-learn's, over the classes
  that occur in the targets or the predictions; the per-class rows list all ``C`` classes.
- Decisions are the head's (:mod:`pictag.heads.multiclass_decide`): argmax, or a two-class
  head's tuned threshold on its positive class. ``top5_accuracy`` is ``nan`` with 5 classes or
  fewer (it would be 1 by construction).
- ROC-AUC is one-vs-rest from probabilities, per class; it is ``nan`` (JSON null) for a class
  that is absent from (or is all of) the targets, and ``roc_auc_ovr`` averages the others.
- ``ece`` is hand-written, as scikit-learn has none: see :func:`expected_calibration_error`.
- A two-class head also gets ROC and PR curves of its positive class and the operating point at
  its threshold.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
    top_k_accuracy_score,
)

from pictag.heads.kinds import Params, as_probs
from pictag.heads.multiclass import METRIC_NAMES, TOP_K
from pictag.heads.multiclass_decide import predicted as decided_classes
from pictag.heads.multilabel_report import downsample, pr_curve

ECE_BINS = 15


def section(probs: np.ndarray, targets: np.ndarray, labels: list[str], params: Params) -> dict:
    """One multiclass head's section of ``report.json``.

    Args:
        probs: Softmax probabilities ``[N, C]``.
        targets: Class indices ``[N]``, negative where unknown.
        labels: The ``C`` class names.
        params: The head's decision parameters.

    Returns:
        ``kind``, ``labels``, ``n``, ``params``, ``metrics``, ``per_label``, ``confusion`` (rows
        = true class, columns = predicted) and, when ``C == 2``, ``binary``; all plain values.
    """
    probs, targets = _checked(probs, targets, labels)
    known = targets >= 0
    truth, scores = targets[known], probs[known]
    predicted = decided_classes(scores, params)
    aucs = roc_aucs(scores, truth)
    result = {
        "kind": "multiclass",
        "labels": list(labels),
        "n": int(known.sum()),
        "params": dict(params),
        "metrics": summary_metrics(scores, truth, predicted, aucs),
        "per_label": per_class_rows(truth, predicted, labels, aucs),
        "confusion": _confusion(truth, predicted, len(labels)),
    }
    if "threshold" in params:
        positive = int(params["positive"])
        result["binary"] = binary_curves(
            truth == positive, scores[:, positive], float(params["threshold"])
        )
        result["binary"]["positive"] = labels[positive]
    return result


def metrics(probs: np.ndarray, targets: np.ndarray, params: Params) -> dict[str, float]:
    """The head's metrics (``METRIC_NAMES``) over the rows whose class is known."""
    probs, targets = as_probs(probs), np.asarray(targets).reshape(-1).astype(np.int64)
    known = targets >= 0
    truth, scores = targets[known], probs[known]
    predicted = decided_classes(scores, params)
    return summary_metrics(scores, truth, predicted, roc_aucs(scores, truth))


def summary_metrics(
    scores: np.ndarray, truth: np.ndarray, predicted: np.ndarray, aucs: np.ndarray
) -> dict[str, float]:
    """Accuracy, top-5 accuracy, macro and weighted P/R/F1, ``roc_auc_ovr`` and ``ece``."""
    num_classes = scores.shape[1]
    if len(truth) == 0:
        return dict.fromkeys(METRIC_NAMES, math.nan)
    result = {"accuracy": accuracy_score(truth, predicted), f"top{TOP_K}_accuracy": math.nan}
    if num_classes > TOP_K:
        result[f"top{TOP_K}_accuracy"] = top_k_accuracy_score(
            truth, scores, k=TOP_K, labels=np.arange(num_classes)
        )
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            truth, predicted, average=average, zero_division=0
        )
        result.update({f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f})
    defined = aucs[~np.isnan(aucs)]
    result["roc_auc_ovr"] = defined.mean() if len(defined) else math.nan
    result["ece"] = expected_calibration_error(scores, truth)
    return {name: float(result[name]) for name in METRIC_NAMES}


def roc_aucs(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC-AUC per class from probabilities; ``nan`` where a class is absent from
    the targets or is all of them."""
    result = np.full(scores.shape[1], math.nan)
    for label in range(scores.shape[1]):
        positive = truth == label
        if positive.any() and not positive.all():
            result[label] = roc_auc_score(positive, scores[:, label])
    return result


def per_class_rows(
    truth: np.ndarray, predicted: np.ndarray, labels: list[str], aucs: np.ndarray
) -> list[dict]:
    """One row per class: support, precision, recall, F1 and one-vs-rest ROC-AUC."""
    classes = np.arange(len(labels))
    if len(truth):
        prec, rec, f1, support = precision_recall_fscore_support(
            truth, predicted, labels=classes, average=None, zero_division=0
        )
    else:
        prec = rec = f1 = np.full(len(classes), math.nan)
        support = np.zeros(len(classes), dtype=np.int64)
    return [
        {
            "label": name,
            "support": int(support[i]),
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "roc_auc": float(aucs[i]),
        }
        for i, name in enumerate(labels)
    ]


def expected_calibration_error(
    scores: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Expected calibration error of the top-class confidence (Guo et al., 2017).

    The standard definition: confidences (top probability per row) fall into ``bins`` equal-width
    bins ``((m - 1) / M, m / M]``, and ECE is the sum over bins of ``|accuracy - mean confidence|``
    times the bin's share of rows. Hand-written, as scikit-learn has no ECE.

    Args:
        scores: Probabilities ``[N, C]``.
        truth: Class indices ``[N]`` (all known).
        bins: Number of bins ``M``.

    Returns:
        The ECE in ``[0, 1]``; ``nan`` when there is no row.
    """
    scores = as_probs(scores)
    if len(truth) == 0:
        return math.nan
    confidence = scores.max(axis=1)
    correct = scores.argmax(axis=1) == np.asarray(truth)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # side="left" puts a confidence equal to an edge into the bin it closes (right-closed bins).
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    # |acc - conf| * count / n == |sum(correct) - sum(confidence)| / n, bin by bin.
    hits = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    sure = np.bincount(which, weights=confidence, minlength=bins)
    return float(np.abs(hits - sure).sum() / len(truth))


def binary_curves(positive: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """ROC and PR curves of the positive class and its operating point at ``threshold``.

    Args:
        positive: Whether each row's class is the positive one.
        scores: Probability of the positive class per row.
        threshold: The head's decision threshold on ``scores``.

    Returns:
        ``roc`` (``fpr``, ``tpr``), ``pr`` (``precision``, ``recall``), each at most 200 points and
        empty where undefined, and ``operating_point`` (``threshold``, ``fpr``, ``tpr``,
        ``precision``, ``recall``; ``nan`` where undefined, precision 0 when nothing is positive).
    """
    roc = {"fpr": [], "tpr": []}
    if positive.any() and not positive.all():
        fpr, tpr, _ = roc_curve(positive, scores)
        roc["fpr"], roc["tpr"] = downsample(fpr, tpr)
    decided = scores >= threshold
    point = dict.fromkeys(("fpr", "tpr", "precision", "recall"), math.nan)
    if len(positive):
        truth, chosen = positive.astype(np.int64), decided.astype(np.int64)
        recall = recall_score(truth, chosen, zero_division=np.nan)
        specificity = recall_score(truth, chosen, pos_label=0, zero_division=np.nan)
        point.update(
            fpr=1.0 - specificity,
            tpr=recall,
            precision=precision_score(truth, chosen, zero_division=0),
            recall=recall,
        )
    point = {name: float(value) for name, value in point.items()}
    return {
        "roc": roc,
        "pr": pr_curve(positive, scores),
        "operating_point": {"threshold": float(threshold), **point},
    }


def _confusion(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> list[list[int]]:
    if len(truth) == 0:  # scikit-learn refuses empty input
        return [[0] * num_classes for _ in range(num_classes)]
    return confusion_matrix(truth, predicted, labels=np.arange(num_classes)).tolist()


def _checked(
    probs: np.ndarray, targets: np.ndarray, labels: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    probs = as_probs(probs)
    targets = np.asarray(targets).reshape(-1).astype(np.int64)
    if len(targets) != len(probs):
        raise ValueError(f"{len(probs)} rows of probabilities but {len(targets)} targets")
    if len(labels) != probs.shape[1]:
        raise ValueError(f"{len(labels)} class names for {probs.shape[1]} probability columns")
    if (targets >= probs.shape[1]).any():
        raise ValueError(f"class index {targets.max()} out of range for {probs.shape[1]} classes")
    return probs, targets
