"""Metrics for the evaluation report: one section per head, by head kind, and the multi-output
``all_heads_correct``.

Every threshold-free metric (AP, mAP, ROC-AUC, PR/ROC curves, ECE) is computed from
probabilities, never from 0/1 decisions. The conventions for missing targets, undefined metrics
and zero divisions are in :mod:`pictag.evaluation.metrics_multiclass` and
:mod:`pictag.evaluation.metrics_multilabel`; undefined values are ``nan`` (JSON null once written).
"""

from __future__ import annotations

import math

import numpy as np

from pictag.evaluation.metrics_multiclass import multiclass_section
from pictag.evaluation.metrics_multilabel import multilabel_section
from pictag.heads import multilabel
from pictag.heads.kinds import as_probs

Thresholds = list[float] | None


def _multiclass(
    probs: np.ndarray, targets: np.ndarray, labels: list[str], thresholds: Thresholds, top_k: int
) -> dict:
    if thresholds is not None:
        raise ValueError("thresholds apply to multilabel heads only; pass None for multiclass")
    return multiclass_section(probs, targets, labels, top_k=top_k)


def _multilabel(
    probs: np.ndarray, targets: np.ndarray, labels: list[str], thresholds: Thresholds, top_k: int
) -> dict:
    del top_k  # multilabel decisions come from per-label thresholds
    return multilabel_section(probs, targets, labels, thresholds)


SECTIONS = {"multiclass": _multiclass, "multilabel": _multilabel}


def head_report(
    kind: str,
    probs: np.ndarray,
    targets: np.ndarray,
    labels: list[str],
    thresholds: list[float] | None = None,
    top_k: int = 5,
) -> dict:
    """One head's section of ``report.json``.

    Args:
        kind: ``multiclass`` or ``multilabel``.
        probs: Probabilities ``[N, C]`` (softmax) or ``[N, L]`` (sigmoid).
        targets: Class indices ``[N]`` (-100 = missing) or multi-hot ``[N, L]`` (-1 = missing).
        labels: Class or label names, in column order.
        thresholds: Multilabel only: tuned per-label thresholds (``None``: 0.5 each).
        top_k: Multiclass only: the largest ``k`` of the top-k accuracies (``k < C``).

    Returns:
        The section as plain Python values, with ``nan`` for undefined metrics.
    """
    if kind not in SECTIONS:
        raise ValueError(f"unknown head kind {kind!r}; expected one of {sorted(SECTIONS)}")
    return SECTIONS[kind](probs, targets, labels, thresholds, top_k)


def decisions(kind: str, probs: np.ndarray, thresholds: list[float] | None = None) -> np.ndarray:
    """Decisions from probabilities.

    Args:
        kind: ``multiclass`` or ``multilabel``.
        probs: Probabilities ``[N, C]`` or ``[N, L]``.
        thresholds: Multilabel per-label thresholds (``None``: 0.5); unused for multiclass.

    Returns:
        Multiclass: argmax class indices ``[N]`` (ties: lower index). Multilabel: bool ``[N, L]``,
        ``probs >= thresholds``.
    """
    if kind == "multiclass":
        return as_probs(probs).argmax(axis=1)
    if kind == "multilabel":
        return multilabel.decode(probs, 0.5 if thresholds is None else np.asarray(thresholds))
    raise ValueError(f"unknown head kind {kind!r}; expected one of {sorted(SECTIONS)}")


def all_heads_correct(
    kinds: dict[str, str],
    probs: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    thresholds: dict[str, list[float]],
) -> float:
    """Share of images on which every head with a known target is right.

    A multiclass head is right when its argmax is the target class; a multilabel head when its
    decisions match every known entry (an exact set match). A head whose target is missing for
    an image (multilabel: every entry missing) is not judged there; images with no known target
    at all are skipped.

    Args:
        kinds: Head name -> kind.
        probs: Head name -> probabilities.
        targets: Head name -> targets (negative = missing).
        thresholds: Head name -> multilabel thresholds; heads left out use 0.5.

    Returns:
        The share in ``[0, 1]``, or ``nan`` when no image has a known target.
    """
    judged, wrong = None, None
    for name, kind in kinds.items():
        decided = decisions(kind, probs[name], thresholds.get(name))
        target = np.asarray(targets[name])
        if kind == "multiclass":
            target = target.reshape(-1)
            known, right = target >= 0, decided == target
        else:
            entries = target >= 0
            known = entries.any(axis=1)
            right = ((decided == (target >= 0.5)) | ~entries).all(axis=1)
        judged = known if judged is None else judged | known
        miss = known & ~right
        wrong = miss if wrong is None else wrong | miss
    if judged is None or not judged.any():
        return math.nan
    return float(1.0 - wrong[judged].mean())
