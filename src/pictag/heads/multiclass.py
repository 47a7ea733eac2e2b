"""The ``multiclass`` head kind: exactly one class per image, softmax, cross-entropy, argmax.

Targets are int64 class indices ``[B]`` with ``MISSING_CLASS`` (-100) where unknown; after MixUp
they are class probabilities ``[B, C]`` with a missing row all negative.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score
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
from pictag.heads.losses import hard_cross_entropy, soft_cross_entropy

LOSSES = ("default", "focal")
TOP_K = 5  # top-k accuracy is reported only for heads with more than this many classes


def class_weights(counts: np.ndarray) -> np.ndarray:
    """Class weights ``n / (C * count)``, scikit-learn's ``'balanced'``, from class counts.

    A class with no training sample never appears as a target, so its weight only matters for
    label smoothing; it gets a neutral 1.
    """
    counts = as_counts(counts)
    weights = np.ones_like(counts)
    seen = counts > 0
    weights[seen] = counts.sum() / (len(counts) * counts[seen])
    return weights


def make_loss(
    options: LossOptions,
    counts: np.ndarray | None = None,
    n_samples: int | np.ndarray | None = None,
) -> LossFn:
    """Build ``loss_fn(logits, targets)`` for a multiclass head.

    Args:
        options: ``name`` is ``default`` (cross-entropy) or ``focal``; label smoothing applies
            to both.
        counts: Training samples per class, needed when ``options.balance``.
        n_samples: Unused: every known sample has exactly one class, so it is ``counts.sum()``.

    Returns:
        A function of logits ``[B, C]`` and class indices ``[B]`` or soft targets ``[B, C]``.
    """
    del n_samples
    check_loss_name(options, "multiclass", LOSSES)
    weight = None
    if options.balance:
        weight = torch.as_tensor(class_weights(counts), dtype=torch.float32)
    smoothing = options.label_smoothing
    gamma = options.focal_gamma if options.name == "focal" else 0.0

    def loss_fn(logits: Tensor, targets: Tensor) -> Tensor:
        class_weight = None if weight is None else weight.to(logits.device)
        if targets.is_floating_point() or gamma > 0:
            soft = to_soft(targets, logits.shape[1])
            return soft_cross_entropy(logits, soft, class_weight, smoothing, gamma)
        return hard_cross_entropy(logits, targets, class_weight, smoothing)

    return loss_fn


def activate(logits: Tensor) -> Tensor:
    """Class probabilities (softmax over the last dimension), in float32."""
    return logits.float().softmax(dim=-1)


def decode(probs: np.ndarray, top_k: int = 1) -> np.ndarray:
    """The ``top_k`` most probable classes per row, best first (ties: lower index first).

    Args:
        probs: Probabilities ``[N, C]`` (a CPU tensor works too).
        top_k: How many classes per row; more than ``C`` gives all ``C``.

    Returns:
        Class indices ``[N, min(top_k, C)]``, int64.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    probs = as_probs(probs)
    order = np.argsort(-probs, axis=1, kind="stable")
    return order[:, :top_k].astype(np.int64)


def to_soft(targets: Tensor, num_classes: int) -> Tensor:
    """Class indices ``[B]`` -> one-hot float ``[B, C]`` (missing rows all ``MISSING_TAG``).

    Soft targets ``[B, C]`` are returned as they are.
    """
    if targets.is_floating_point():
        if targets.ndim != 2 or targets.shape[1] != num_classes:
            raise ValueError(f"soft targets must be [B, {num_classes}], got {tuple(targets.shape)}")
        return targets
    one_hot = F.one_hot(targets.clamp(min=0), num_classes).float()
    return one_hot.masked_fill((targets < 0).unsqueeze(1), MISSING_TAG)


def mix_targets(
    targets_a: Tensor, targets_b: Tensor, lam: float | Tensor, num_labels: int
) -> Tensor:
    """``lam * a + (1 - lam) * b`` on one-hot targets, for MixUp and CutMix.

    Args:
        targets_a: Class indices ``[B]`` or soft targets ``[B, C]``.
        targets_b: The same for the images mixed in.
        lam: Weight of ``a``: a float, or one per row ``[B]``.
        num_labels: Number of classes ``C``.

    Returns:
        Soft targets ``[B, C]``; a row is missing (all ``MISSING_TAG``) where either side is.
    """
    soft_a, soft_b = to_soft(targets_a, num_labels), to_soft(targets_b, num_labels)
    lam = lam_column(lam, soft_a)
    mixed = lam * soft_a + (1.0 - lam) * soft_b
    missing = (soft_a < 0).any(dim=1, keepdim=True) | (soft_b < 0).any(dim=1, keepdim=True)
    return mixed.masked_fill(missing, MISSING_TAG)


def metrics(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Validation metrics from probabilities, over the rows whose class is known.

    ``macro_f1`` averages over the classes that occur in the targets or the predictions
    (scikit-learn's default); ``top5_accuracy`` is present only when there are more than 5
    classes. Every value is ``nan`` when no row has a known class.

    Args:
        probs: Probabilities ``[N, C]``.
        targets: Class indices ``[N]``, negative where unknown.

    Returns:
        ``accuracy``, ``top5_accuracy`` (C > 5) and ``macro_f1`` as floats.
    """
    probs = as_probs(probs)
    targets = np.asarray(targets).reshape(-1).astype(np.int64)
    if len(targets) != len(probs):
        raise ValueError(f"{len(probs)} rows of probabilities but {len(targets)} targets")
    num_classes = probs.shape[1]
    names = ["accuracy", *(["top5_accuracy"] if num_classes > TOP_K else []), "macro_f1"]
    known = targets >= 0
    if not known.any():
        return dict.fromkeys(names, math.nan)
    truth, scores = targets[known], probs[known]
    predicted = scores.argmax(axis=1)
    result = {"accuracy": float(accuracy_score(truth, predicted))}
    if num_classes > TOP_K:
        labels = np.arange(num_classes)
        result["top5_accuracy"] = float(top_k_accuracy_score(truth, scores, k=TOP_K, labels=labels))
    result["macro_f1"] = float(f1_score(truth, predicted, average="macro", zero_division=0))
    return result


def count_labels(targets: np.ndarray, num_labels: int) -> np.ndarray:
    """Samples per class, missing targets skipped."""
    targets = np.asarray(targets).reshape(-1).astype(np.int64)
    known = targets[targets >= 0]
    if (known >= num_labels).any():
        raise ValueError(f"class index {known.max()} out of range for {num_labels} classes")
    return np.bincount(known, minlength=num_labels)


MULTICLASS = HeadKind(
    name="multiclass",
    make_loss=make_loss,
    activate=activate,
    decode=decode,
    mix_targets=mix_targets,
    metrics=metrics,
    primary_metric="accuracy",
    count_labels=count_labels,
)
