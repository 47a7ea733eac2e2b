"""Metrics and the report section of a ``multilabel`` head, every formula from scikit-learn.
:func:`metrics` is the one implementation that validation, ``report.json``, the HTML report and
the benchmarks use.

Conventions (each pinned against scikit-learn by ``tests/evaluation/test_metrics_golden.py``):

- Missing entries (negative targets) are skipped label by label: a label's AP, ROC-AUC, P/R/F1,
  confusion and support use its known entries, and micro averages pool the known entries of all
  labels. Row-wise metrics (subset accuracy, samples-F1, Hamming loss, cardinalities) use only
  the rows with no missing entry.
- AP and ROC-AUC are computed from probabilities, never from thresholded decisions. They are
  ``nan`` (JSON null) for a label whose known entries lack a positive or a negative (AP would be
  undefined or trivially 1); ``mAP`` and ``roc_auc_macro`` average the other labels.
- Precision, recall and F1 count a 0/0 as 0 (scikit-learn's ``zero_division=0``): a label never
  predicted has precision 0, and a row with no true and no predicted label has samples-F1 0.
  Macro averages are over the labels with a known positive or a positive decision; a label with
  neither is left out (as scikit-learn leaves classes absent from both out of a multiclass macro).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

from pictag.heads.kinds import Params, as_probs
from pictag.heads.multilabel import DECISION_ORDER, ROW_METRICS
from pictag.heads.multilabel_decide import decide, thresholds_of

MAX_CURVE_POINTS = 200  # curves in report.json are downsampled to keep the file small


def section(probs: np.ndarray, targets: np.ndarray, labels: list[str], params: Params) -> dict:
    """One multilabel head's section of ``report.json``.

    Args:
        probs: Sigmoid probabilities ``[N, L]``.
        targets: Multi-hot targets ``[N, L]``, negative where unknown.
        labels: The ``L`` label names.
        params: The head's decision parameters (its per-label thresholds).

    Returns:
        ``kind``, ``labels``, ``n`` (rows with a known entry), ``params``, ``thresholds``,
        ``metrics`` (at the thresholds), ``metrics_at_0.5`` and ``per_label``, as plain values.
    """
    probs, targets = checked(probs, targets, labels)
    tuned = thresholds_of(params, probs.shape[1])
    known = targets >= 0
    truth = known & (targets >= 0.5)
    precisions, aucs = average_precisions(probs, targets), roc_aucs(probs, targets)
    decided = decide(probs, {"thresholds": tuned})
    at_half = decision_metrics(truth, known, decide(probs, {}))
    del at_half["cardinality_true"]  # the same at any threshold; it lives in "metrics"
    summary = _summary(precisions, aucs, truth, known, decided)
    return {
        "kind": "multilabel",
        "labels": list(labels),
        "n": int(known.any(axis=1).sum()),
        "params": {"thresholds": [float(t) for t in tuned]},
        "thresholds": [float(t) for t in tuned],
        "metrics": summary,
        "metrics_at_0.5": at_half,
        "per_label": per_label_rows(probs, truth, known, decided, labels, tuned, precisions, aucs),
    }


def metrics(probs: np.ndarray, targets: np.ndarray, params: Params) -> dict[str, float]:
    """The head's metrics (``METRIC_NAMES``) at the thresholds of ``params``."""
    probs, targets = as_probs(probs), np.asarray(targets, dtype=np.float64)
    if targets.shape != probs.shape:
        raise ValueError(f"targets {targets.shape} and probabilities {probs.shape} differ")
    known = targets >= 0
    truth = known & (targets >= 0.5)
    precisions, aucs = average_precisions(probs, targets), roc_aucs(probs, targets)
    return _summary(precisions, aucs, truth, known, decide(probs, params))


def _summary(
    precisions: np.ndarray,
    aucs: np.ndarray,
    truth: np.ndarray,
    known: np.ndarray,
    decided: np.ndarray,
) -> dict[str, float]:
    """The ``METRIC_NAMES`` values: the label means of AP and ROC-AUC, then the decisions'."""
    summary = {"mAP": _nanmean(precisions), "roc_auc_macro": _nanmean(aucs)}
    summary.update(decision_metrics(truth, known, decided))
    return summary


def average_precisions(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Average precision per label over its known entries; ``nan`` for a label whose known
    entries lack a positive or a negative (AP is undefined or trivially 1 there)."""
    return _per_label(average_precision_score, probs, targets)


def roc_aucs(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """ROC-AUC per label over its known entries, from probabilities; ``nan`` where they lack a
    positive or a negative."""
    return _per_label(roc_auc_score, probs, targets)


def _per_label(score: Any, probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    probs, targets = as_probs(probs), np.asarray(targets, dtype=np.float64)
    result = np.full(probs.shape[1], math.nan)
    for label in range(probs.shape[1]):
        known = targets[:, label] >= 0
        truth = targets[known, label] >= 0.5
        if truth.any() and not truth.all():
            result[label] = score(truth, probs[known, label])
    return result


def decision_metrics(truth: np.ndarray, known: np.ndarray, decided: np.ndarray) -> dict:
    """Threshold metrics of decisions ``[N, L]`` against ``truth`` on the ``known`` entries.

    Args:
        truth: True labels ``[N, L]``, bool, False where unknown.
        known: Which entries have a known target ``[N, L]``.
        decided: Decisions ``[N, L]``, bool.

    Returns:
        Micro, macro and samples P/R/F1, Hamming loss, subset accuracy and the true and
        predicted label cardinality (``nan`` where undefined).
    """
    # Unknown entries are zeroed in both arrays: they then count as true negatives only, which
    # precision, recall and F1 never read.
    truth_k, decided_k = _indicator(truth & known), _indicator(decided & known)
    present = np.flatnonzero((truth | (decided & known)).any(axis=0))
    result = dict.fromkeys(DECISION_ORDER, math.nan)
    if known.any():
        micro = precision_recall_fscore_support(
            truth_k, decided_k, average="micro", zero_division=0
        )
        result.update(precision_micro=micro[0], recall_micro=micro[1], f1_micro=micro[2])
    if len(present):
        macro = precision_recall_fscore_support(
            truth_k, decided_k, average="macro", labels=present, zero_division=0
        )
        result.update(precision_macro=macro[0], recall_macro=macro[1], f1_macro=macro[2])
    result.update(row_metrics(truth, known, decided))
    return {name: float(result[name]) for name in DECISION_ORDER}


def row_metrics(truth: np.ndarray, known: np.ndarray, decided: np.ndarray) -> dict:
    """Samples-F1, Hamming loss, subset accuracy and cardinalities over the complete rows."""
    complete = known.all(axis=1)
    if not complete.any():
        return dict.fromkeys(ROW_METRICS, math.nan)
    rows_true, rows_pred = truth[complete], decided[complete]
    samples = precision_recall_fscore_support(
        _indicator(rows_true), _indicator(rows_pred), average="samples", zero_division=0
    )
    return {
        "f1_samples": samples[2],
        # On the flattened entries: identical to the multilabel Hamming loss, and safe for L == 1.
        "hamming_loss": hamming_loss(rows_true.ravel(), rows_pred.ravel()),
        "subset_accuracy": accuracy_score(_indicator(rows_true), _indicator(rows_pred)),
        "cardinality_true": rows_true.sum(axis=1).mean(),
        "cardinality_pred": rows_pred.sum(axis=1).mean(),
    }


def per_label_rows(
    probs: np.ndarray,
    truth: np.ndarray,
    known: np.ndarray,
    decided: np.ndarray,
    labels: list[str],
    thresholds: np.ndarray,
    precisions: np.ndarray,
    aucs: np.ndarray,
) -> list[dict]:
    """One row per label: support, AP, ROC-AUC, threshold, P/R/F1, 2x2 confusion, PR curve."""
    num_labels = probs.shape[1]
    truth_k, decided_k = _indicator(truth & known), _indicator(decided & known)
    prec, rec, f1, _ = precision_recall_fscore_support(
        truth_k, decided_k, average=None, labels=np.arange(num_labels), zero_division=0
    )
    confusions = multilabel_confusion_matrix(truth_k, decided_k, labels=np.arange(num_labels))
    # The zeroed unknown entries were counted as true negatives: take them back out.
    confusions[:, 0, 0] -= (~known).sum(axis=0)
    unscored = ~known.any(axis=0)  # no known entry: no score at all, rather than a 0/0 = 0
    prec[unscored] = rec[unscored] = f1[unscored] = math.nan
    rows = []
    for i, name in enumerate(labels):
        column = known[:, i]
        rows.append(
            {
                "label": name,
                "support": int(truth[:, i].sum()),
                "ap": float(precisions[i]),
                "roc_auc": float(aucs[i]),
                "threshold": float(thresholds[i]),
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "confusion": confusions[i].tolist(),
                "pr_curve": pr_curve(truth[column, i], probs[column, i]),
            }
        )
    return rows


def pr_curve(truth: np.ndarray, scores: np.ndarray) -> dict:
    """Precision-recall curve of scores against bool ``truth``, at most ``MAX_CURVE_POINTS``
    points; empty lists when there is no positive (the curve is undefined)."""
    if not np.any(truth):
        return {"precision": [], "recall": []}
    precision, recall, _ = precision_recall_curve(truth, scores)
    precision, recall = downsample(precision, recall)
    return {"precision": precision, "recall": recall}


def downsample(*curves: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> list[list[float]]:
    """The same evenly spaced points (first and last kept) of equally long curves, as lists."""
    length = len(curves[0])
    keep = np.unique(np.linspace(0, length - 1, min(length, max_points)).round().astype(int))
    return [np.asarray(curve, dtype=np.float64)[keep].tolist() for curve in curves]


def checked(
    probs: np.ndarray, targets: np.ndarray, labels: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets as float64 ``[N, L]``, with a message when shapes disagree."""
    probs, targets = as_probs(probs), np.asarray(targets, dtype=np.float64)
    if targets.shape != probs.shape:
        raise ValueError(f"targets {targets.shape} and probabilities {probs.shape} differ")
    if len(labels) != probs.shape[1]:
        raise ValueError(f"{len(labels)} label names for {probs.shape[1]} probability columns")
    return probs, targets


def _indicator(decisions: np.ndarray) -> np.ndarray:
    """Bool ``[N, L]`` as an int indicator matrix scikit-learn reads as multilabel.

    scikit-learn reads an ``[N, 1]`` array as a binary column and would score the negatives as a
    class too; an all-zero extra column makes it multilabel and changes no micro, macro (over
    chosen labels), samples or exact-match score.
    """
    decisions = decisions.astype(np.int64)
    if decisions.shape[1] == 1:
        decisions = np.hstack([decisions, np.zeros_like(decisions)])
    return decisions


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if len(defined) else math.nan
