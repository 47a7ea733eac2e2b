"""The ``multilabel`` head kind: any number of tags per image, sigmoid, BCE, thresholds.

Targets are float multi-hot vectors ``[B, L]`` with ``MISSING_TAG`` (-1) in each entry whose
value is unknown (a whole missing row is all -1); after MixUp entries are in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import average_precision_score, f1_score, hamming_loss
from torch import Tensor

from pictag.heads.kinds import (
    MISSING_TAG,
    HeadKind,
    LossFn,
    LossOptions,
    as_counts,
    as_probs,
    check_loss_name,
    lam_column,
)
from pictag.heads.losses import asymmetric_loss, binary_cross_entropy

LOSSES = ("default", "focal", "asl")
MAX_POS_WEIGHT = 100.0  # a label seen once in 10,000 images should not swamp the others
METRIC_THRESHOLD = 0.5  # the fixed threshold of the validation F1 and Hamming loss


def pos_weights(counts: np.ndarray, n_samples: int | np.ndarray) -> np.ndarray:
    """Per-label ``pos_weight = n_neg / n_pos``, clipped to ``[1, MAX_POS_WEIGHT]``.

    Never below 1: frequent labels are not down-weighted, only rare ones up-weighted. A label
    with no positive gets a neutral 1, as there is no positive to weigh.

    Args:
        counts: Positives per label.
        n_samples: Samples whose entry is known: one int, or one per label (``(targets >=
            0).sum(0)``) when entries are missing label by label.
    """
    positives = as_counts(counts)
    totals = np.broadcast_to(np.asarray(n_samples, dtype=np.float64), positives.shape)
    negatives = totals - positives
    if (negatives < 0).any():
        raise ValueError(f"n_samples {n_samples} is smaller than a label's positive count")
    weights = np.ones_like(positives)
    seen = positives > 0
    weights[seen] = np.clip(negatives[seen] / positives[seen], 1.0, MAX_POS_WEIGHT)
    return weights


def make_loss(
    options: LossOptions,
    counts: np.ndarray | None = None,
    n_samples: int | np.ndarray | None = None,
) -> LossFn:
    """Build ``loss_fn(logits, targets)`` for a multilabel head.

    Args:
        options: ``name`` is ``default`` (BCE), ``focal`` (``focal_gamma`` on both terms) or
            ``asl`` (``asl_gamma_pos``, ``asl_gamma_neg``, ``asl_clip``).
        counts: Positives per label, needed when ``options.balance``.
        n_samples: Samples with a known entry (int or per label), needed when
            ``options.balance``.

    Returns:
        A function of logits ``[B, L]`` and targets ``[B, L]`` (negative = missing).
    """
    check_loss_name(options, "multilabel", LOSSES)
    if options.label_smoothing:
        raise ValueError("label_smoothing applies to multiclass heads only; set it to 0")
    pos_weight = None
    if options.balance:
        if n_samples is None:
            raise ValueError("balance=True for a multilabel head needs n_samples")
        pos_weight = torch.as_tensor(pos_weights(counts, n_samples), dtype=torch.float32)
    if options.name == "focal":
        shape = (options.focal_gamma, options.focal_gamma, 0.0)
    else:
        shape = (options.asl_gamma_pos, options.asl_gamma_neg, options.asl_clip)

    def loss_fn(logits: Tensor, targets: Tensor) -> Tensor:
        weight = None if pos_weight is None else pos_weight.to(logits.device)
        if options.name == "default":
            return binary_cross_entropy(logits, targets, weight)
        return asymmetric_loss(logits, targets, *shape, pos_weight=weight)

    return loss_fn


def activate(logits: Tensor) -> Tensor:
    """Per-label probabilities (sigmoid), in float32."""
    return logits.float().sigmoid()


def decode(
    probs: np.ndarray,
    thresholds: float | np.ndarray = 0.5,
    top_k: int | None = None,
    at_least_one: bool = False,
) -> np.ndarray:
    """Which labels are on: ``probs >= thresholds``, or the ``top_k`` most probable.

    Args:
        probs: Probabilities ``[N, L]`` (a CPU tensor works too).
        thresholds: One threshold, or one per label ``[L]``.
        top_k: When given, exactly the ``min(top_k, L)`` most probable labels of each row are on,
            whatever the thresholds (ties: lower index first).
        at_least_one: When no label of a row passes its threshold, turn on the most probable.

    Returns:
        Decisions ``[N, L]``, bool.
    """
    probs = as_probs(probs)
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        best = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        chosen = np.zeros(probs.shape, dtype=bool)
        np.put_along_axis(chosen, best, True, axis=1)
        return chosen
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim > 1 or (thresholds.ndim == 1 and len(thresholds) != probs.shape[1]):
        raise ValueError(f"thresholds must be one float or {probs.shape[1]} values")
    chosen = probs >= thresholds
    if at_least_one:
        empty = np.flatnonzero(~chosen.any(axis=1))
        chosen[empty, probs[empty].argmax(axis=1)] = True
    return chosen


def mix_targets(
    targets_a: Tensor, targets_b: Tensor, lam: float | Tensor, num_labels: int
) -> Tensor:
    """``lam * a + (1 - lam) * b`` on multi-hot targets, for MixUp and CutMix.

    Args:
        targets_a: Targets ``[B, L]``, negative where unknown.
        targets_b: The same for the images mixed in.
        lam: Weight of ``a``: a float, or one per row ``[B]``.
        num_labels: Number of labels ``L``.

    Returns:
        Soft targets ``[B, L]``; an entry is ``MISSING_TAG`` where either side is missing.
    """
    expected = (targets_a.shape[0], num_labels)
    if tuple(targets_a.shape) != expected or targets_b.shape != targets_a.shape:
        raise ValueError(
            f"targets must both be {list(expected)}, got {tuple(targets_a.shape)} "
            f"and {tuple(targets_b.shape)}"
        )
    soft_a, soft_b = targets_a.float(), targets_b.float()
    lam = lam_column(lam, soft_a)
    mixed = lam * soft_a + (1.0 - lam) * soft_b
    return mixed.masked_fill((soft_a < 0) | (soft_b < 0), MISSING_TAG)


def average_precisions(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Average precision per label over its known entries; ``nan`` for a label whose known
    entries lack a positive or a negative (AP is undefined or trivially 1 there)."""
    probs, targets = _checked(probs, targets)
    result = np.full(probs.shape[1], math.nan)
    for label in range(probs.shape[1]):
        known = targets[:, label] >= 0
        truth = targets[known, label] >= 0.5
        if truth.any() and not truth.all():
            result[label] = average_precision_score(truth, probs[known, label])
    return result


def metrics(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Validation metrics from probabilities.

    ``mAP`` is the mean AP over labels with at least one known positive and one known negative
    (others are left out; see :func:`average_precisions`), each label using its known entries.
    ``f1_micro``, ``f1_macro`` and ``hamming_loss`` use the threshold 0.5 on the rows with no
    missing entry; ``f1_macro`` leaves out labels with neither a positive nor a prediction in
    those rows. An undefined metric is ``nan``.

    Args:
        probs: Probabilities ``[N, L]``.
        targets: Multi-hot targets ``[N, L]``, negative where unknown.

    Returns:
        ``mAP``, ``f1_micro``, ``f1_macro`` and ``hamming_loss`` as floats.
    """
    probs, targets = _checked(probs, targets)
    precisions = average_precisions(probs, targets)
    found = ~np.isnan(precisions)
    result = {"mAP": float(precisions[found].mean()) if found.any() else math.nan}
    complete = (targets >= 0).all(axis=1)
    if not complete.any():
        return {**result, "f1_micro": math.nan, "f1_macro": math.nan, "hamming_loss": math.nan}
    truth = targets[complete] >= 0.5
    predicted = probs[complete] >= METRIC_THRESHOLD
    # Binary scores on columns, not sklearn's multilabel path: that reads an [N, 1] array (a
    # one-tag head) as a binary column and would score the negatives as a class too.
    result["f1_micro"] = float(f1_score(truth.ravel(), predicted.ravel(), zero_division=np.nan))
    per_label = np.array(
        [f1_score(t, p, zero_division=np.nan) for t, p in zip(truth.T, predicted.T, strict=True)]
    )
    defined = ~np.isnan(per_label)
    result["f1_macro"] = float(per_label[defined].mean()) if defined.any() else math.nan
    result["hamming_loss"] = float(hamming_loss(truth.ravel(), predicted.ravel()))
    return result


def count_labels(targets: np.ndarray, num_labels: int) -> np.ndarray:
    """Positives per label, missing entries skipped.

    The matching ``n_samples`` for :func:`make_loss` is ``(targets >= 0).sum(0)``.
    """
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2 or targets.shape[1] != num_labels:
        raise ValueError(f"targets must be [N, {num_labels}], got shape {targets.shape}")
    return (targets >= 0.5).sum(axis=0).astype(np.int64)


def _checked(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = as_probs(probs)
    targets = np.asarray(targets, dtype=np.float64)
    if targets.shape != probs.shape:
        raise ValueError(f"targets {targets.shape} and probabilities {probs.shape} differ")
    return probs, targets


MULTILABEL = HeadKind(
    name="multilabel",
    make_loss=make_loss,
    activate=activate,
    decode=decode,
    mix_targets=mix_targets,
    metrics=metrics,
    primary_metric="mAP",
    count_labels=count_labels,
)
