"""Loss functions on logits that skip missing targets.

Multiclass losses return the mean over the images whose target is present (a weighted mean where
weights are given, as torch's ``cross_entropy`` does); multilabel losses sum over the present
labels of an image and average over images. A batch with nothing present gives an exact zero that
still depends on the logits, so backward runs and DDP's gradient all-reduce sees the same graph
on every rank. Masks are applied by multiplication rather than boolean indexing so no step waits
on the GPU. Losses are computed in float32 whatever the autocast dtype of the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pictag.heads.kinds import MISSING_CLASS

_TINY = 1e-12  # keeps 0 / 0 at 0 when a batch has no present target


def hard_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy with class-index targets; ``MISSING_CLASS`` rows are skipped.

    Args:
        logits: Scores ``[B, C]``.
        targets: Class indices ``[B]`` (int64), ``MISSING_CLASS`` where unknown.
        weight: Optional class weights ``[C]``.
        label_smoothing: Mass spread uniformly over all classes.

    Returns:
        Scalar: ``F.cross_entropy(..., ignore_index=MISSING_CLASS)``, or 0 when all are missing.
    """
    per_sample = F.cross_entropy(
        logits.float(),
        targets,
        weight=weight,
        ignore_index=MISSING_CLASS,
        label_smoothing=label_smoothing,
        reduction="none",
    )
    present = targets != MISSING_CLASS
    sample_weight = present.float()
    if weight is not None:
        sample_weight = sample_weight * weight[targets.clamp(min=0)]
    # Same normalisation as torch's reduction="mean": the sum of the target classes' weights.
    return per_sample.sum() / sample_weight.sum().clamp(min=_TINY)


def soft_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    gamma: float = 0.0,
) -> Tensor:
    """Cross-entropy (focal when ``gamma > 0``) with probability targets, as after MixUp.

    The loss of a row is ``-sum_c w_c t'_c (1 - p_c)^gamma log p_c`` with ``t'`` the smoothed
    target, normalised by ``sum_c w_c t_c`` summed over present rows, so a one-hot row gives
    exactly what :func:`hard_cross_entropy` gives for its class index (weights and smoothing
    included) when ``gamma == 0``.

    Args:
        logits: Scores ``[B, C]``.
        targets: Class probabilities ``[B, C]``; a row with any negative entry is missing.
        weight: Optional class weights ``[C]``.
        label_smoothing: Mass spread uniformly over all classes.
        gamma: Focal exponent; 0 is plain cross-entropy.

    Returns:
        Scalar mean over present rows, or 0 when all are missing.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)
    present = (targets >= 0).all(dim=1, keepdim=True)
    target = torch.where(present, targets.float(), 0.0)
    num_classes = logits.shape[1]
    smoothed = target * (1.0 - label_smoothing) + present * (label_smoothing / num_classes)
    if gamma > 0:
        # -expm1(log p) is 1 - p without cancellation when p is close to 1.
        smoothed = smoothed * (-torch.expm1(log_probs)).pow(gamma)
    class_weight = torch.ones_like(log_probs[0]) if weight is None else weight.float()
    total = -(smoothed * class_weight * log_probs).sum()
    return total / (target * class_weight).sum().clamp(min=_TINY)


def binary_cross_entropy(
    logits: Tensor, targets: Tensor, pos_weight: Tensor | None = None
) -> Tensor:
    """BCE-with-logits summed over present labels, averaged over images; negatives are missing.

    Args:
        logits: Scores ``[B, L]``.
        targets: Multi-hot or soft targets ``[B, L]`` in [0, 1], negative where unknown.
        pos_weight: Optional weight ``[L]`` on the positive term of each label.

    Returns:
        Scalar: summed over present labels, averaged over images; 0 when all are missing.
    """
    present = targets >= 0
    target = torch.where(present, targets.float(), 0.0)
    per_entry = F.binary_cross_entropy_with_logits(
        logits.float(), target, pos_weight=pos_weight, reduction="none"
    )
    return _masked_mean(per_entry, present)


def asymmetric_loss(
    logits: Tensor,
    targets: Tensor,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    pos_weight: Tensor | None = None,
) -> Tensor:
    """Asymmetric loss (ASL, Ridnik et al. 2021), and the focal BCE as its symmetric case.

    Per entry, with ``p = sigmoid(x)`` and the shifted probability ``p_m = max(p - clip, 0)``::

        -[ t * (1 - p)^gamma_pos * log(p) + (1 - t) * p_m^gamma_neg * log(1 - p_m) ]

    ``gamma_pos == gamma_neg == gamma`` with ``clip == 0`` is the focal BCE; all three at 0 is
    BCE. As in the paper, it is summed over labels (and averaged over images).

    Args:
        logits: Scores ``[B, L]``.
        targets: Multi-hot or soft targets ``[B, L]`` in [0, 1], negative where unknown.
        gamma_pos: Focusing exponent on positives.
        gamma_neg: Focusing exponent on negatives.
        clip: Probability shift on negatives, in [0, 1).
        pos_weight: Optional weight ``[L]`` on the positive term of each label.

    Returns:
        Scalar: summed over present labels, averaged over images; 0 when all are missing.
    """
    logits = logits.float()
    present = targets >= 0
    target = torch.where(present, targets.float(), 0.0)
    prob = torch.sigmoid(logits)
    log_pos = F.logsigmoid(logits)
    if clip > 0:
        neg_prob = (prob - clip).clamp(min=0.0)
        log_neg = torch.log1p(-neg_prob)  # finite: neg_prob <= 1 - clip
    else:
        neg_prob = prob
        log_neg = F.logsigmoid(-logits)  # log(1 - p) without cancellation
    pos_term = target * log_pos
    if gamma_pos > 0:
        pos_term = pos_term * torch.sigmoid(-logits).pow(gamma_pos)
    if pos_weight is not None:
        pos_term = pos_term * pos_weight
    neg_term = (1.0 - target) * log_neg
    if gamma_neg > 0:
        neg_term = neg_term * neg_prob.pow(gamma_neg)
    return _masked_mean(-(pos_term + neg_term), present)


def _masked_mean(values: Tensor, present: Tensor) -> Tensor:
    """Sum over the labels of an image, mean over the images with any label present; 0 (still
    attached to the graph) when none is.

    Summing over labels makes a multilabel head pull on a shared backbone as hard as a
    multiclass head does: a mean over all entries divides its gradient by the number of labels,
    and on the built-in multi-output demo (10 tags beside two multiclass heads) the tag head
    then learned far more slowly than the others.
    """
    rows = present.any(dim=1).sum().clamp(min=1)
    return (values * present).sum() / rows
