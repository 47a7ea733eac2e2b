"""Report metrics of a ``multiclass`` head, every formula from scikit-learn except the ECE.

Conventions (each pinned against scikit-learn by ``tests/evaluation/test_metrics_golden.py``):

- Rows whose target is missing (negative, ``-100``) are skipped; ``n`` counts the others.
- Precision, recall and F1 count a 0/0 as 0 (scikit-learn's ``zero_division=0``): a class never
  predicted has precision 0. Macro and weighted averages are scikit-learn's, over the classes
  that occur in the targets or the predictions (as validation's ``macro_f1``); the per-class rows
  list all ``C`` classes.
- ROC-AUC is one-vs-rest from probabilities, per class; it is ``nan`` (JSON null) for a class
  that is absent from (or is all of) the targets, and ``roc_auc_ovr`` averages the others.
- ``ece`` is hand-written, as scikit-learn has none: see :func:`expected_calibration_error`.
- A two-class head also gets ROC and PR curves of the positive class ``labels[1]`` and the
  operating point at threshold 0.5 on its probability.
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

from pictag.evaluation.metrics_multilabel import downsample, pr_curve
from pictag.heads.kinds import as_probs

ECE_BINS = 15
OPERATING_THRESHOLD = 0.5  # a binary head's operating point: positive when P(labels[1]) >= 0.5


def multiclass_section(
    probs: np.ndarray, targets: np.ndarray, labels: list[str], top_k: int = 5
) -> dict:
    """One multiclass head's section of ``report.json``.

    Args:
        probs: Softmax probabilities ``[N, C]``.
        targets: Class indices ``[N]``, negative where unknown.
        labels: The ``C`` class names.
        top_k: Largest ``k`` of the top-k accuracies (reported for ``2 <= k < C``).

    Returns:
        ``kind``, ``labels``, ``n``, ``metrics``, ``per_label``, ``confusion`` (rows = true
        class, columns = predicted) and, when ``C == 2``, ``binary``; all plain Python values.
    """
    probs, targets = _checked(probs, targets, labels)
    known = targets >= 0
    truth, scores = targets[known], probs[known]
    classes = np.arange(probs.shape[1])
    predicted = scores.argmax(axis=1)
    aucs = roc_aucs(scores, truth)
    section = {
        "kind": "multiclass",
        "labels": list(labels),
        "n": int(known.sum()),
        "metrics": summary_metrics(scores, truth, aucs, top_k),
        "per_label": per_class_rows(truth, predicted, labels, aucs),
        "confusion": _confusion(truth, predicted, len(classes)),
    }
    if len(classes) == 2:
        section["binary"] = binary_curves(truth == 1, scores[:, 1])
    return section


def summary_metrics(scores: np.ndarray, truth: np.ndarray, aucs: np.ndarray, top_k: int) -> dict:
    """Accuracy, top-k accuracies, macro and weighted P/R/F1, ``roc_auc_ovr`` and ``ece``."""
    num_classes = scores.shape[1]
    ks = range(2, min(top_k, num_classes - 1) + 1)
    names = [
        "accuracy",
        *(f"top{k}_accuracy" for k in ks),
        *(f"{m}_{a}" for a in ("macro", "weighted") for m in ("precision", "recall", "f1")),
        "roc_auc_ovr",
        "ece",
    ]
    if len(truth) == 0:
        return dict.fromkeys(names, math.nan)
    predicted = scores.argmax(axis=1)
    result = {"accuracy": accuracy_score(truth, predicted)}
    for k in ks:
        result[f"top{k}_accuracy"] = top_k_accuracy_score(
            truth, scores, k=k, labels=np.arange(num_classes)
        )
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            truth, predicted, average=average, zero_division=0
        )
        result.update({f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f})
    defined = aucs[~np.isnan(aucs)]
    result["roc_auc_ovr"] = defined.mean() if len(defined) else math.nan
    result["ece"] = expected_calibration_error(scores, truth)
    return {name: float(result[name]) for name in names}


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


def binary_curves(positive: np.ndarray, scores: np.ndarray) -> dict:
    """ROC and PR curves of the positive class and its operating point at threshold 0.5.

    Args:
        positive: Whether each row's class is the positive one ``labels[1]``.
        scores: Probability of the positive class per row.

    Returns:
        ``roc`` (``fpr``, ``tpr``), ``pr`` (``precision``, ``recall``), each at most 200 points and
        empty where undefined, and ``operating_point`` (``threshold``, ``fpr``, ``tpr``,
        ``precision``, ``recall``; ``nan`` where undefined, precision 0 when nothing is positive).
    """
    roc = {"fpr": [], "tpr": []}
    if positive.any() and not positive.all():
        fpr, tpr, _ = roc_curve(positive, scores)
        roc["fpr"], roc["tpr"] = downsample(fpr, tpr)
    decided = scores >= OPERATING_THRESHOLD
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
        "operating_point": {"threshold": OPERATING_THRESHOLD, **point},
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
