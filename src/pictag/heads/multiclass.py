"""The ``multiclass`` head kind: exactly one class per image, softmax, cross-entropy, argmax
(a two-class head: a tuned threshold on its positive class).

Targets are int64 class indices ``[B]`` with ``MISSING_CLASS`` (-100) where unknown; after MixUp
they are class probabilities ``[B, C]`` with a missing row all negative. This module holds the
reading and training side and assembles :data:`MULTICLASS`; decisions, metrics and the report
live in ``multiclass_decide``, ``multiclass_report`` and ``multiclass_html``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

from pictag.heads import drawing
from pictag.heads import multiclass_decide as decide_
from pictag.heads.kinds import (
    MISSING_CLASS,
    MISSING_TAG,
    HeadKind,
    LossFn,
    LossOptions,
    as_counts,
    check_loss_name,
    lam_column,
)
from pictag.heads.labeltext import as_number, bin_label

LOSSES = ("default", "focal")
TOP_K = 5  # top-k accuracy is defined only for heads with more classes than this
METRIC_NAMES = (
    "accuracy",
    f"top{TOP_K}_accuracy",
    *(f"{m}_{a}" for a in ("macro", "weighted") for m in ("precision", "recall", "f1")),
    "roc_auc_ovr",
    "ece",
)
# Head options that only some kinds take; these are a multiclass head's.
OPTIONS = frozenset({"bins", "min_count", "other_label", "label_smoothing", "positive"})


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
    import torch  # deferred, as everything heavy in pictag.heads (see pictag.heads.kinds)

    from pictag.heads.losses import hard_cross_entropy, soft_cross_entropy

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


def to_soft(targets: Tensor, num_classes: int) -> Tensor:
    """Class indices ``[B]`` -> one-hot float ``[B, C]`` (missing rows all ``MISSING_TAG``).

    Soft targets ``[B, C]`` are returned as they are.
    """
    if targets.is_floating_point():
        if targets.ndim != 2 or targets.shape[1] != num_classes:
            raise ValueError(f"soft targets must be [B, {num_classes}], got {tuple(targets.shape)}")
        return targets
    import torch.nn.functional as F

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


def parse(text: str, separator: str | None) -> str:
    """A class name is the cell as it is (no tag splitting)."""
    del separator
    return text


def normalize(head: Any, raw: Any) -> str | None:
    """Strip, bin (numeric ``bins``), rename and fold a raw class; None when empty."""
    value = raw.strip() if isinstance(raw, str) else str(raw)
    if value == "":
        return None
    if head.bins:
        value = bin_label(as_number(value, head.name), head.bins)
    value = head.rename.get(value, value)
    return head.other_label if value in head.folded else value


def to_target(encoded: Any, num_labels: int) -> np.ndarray:
    """The class index as an int64 scalar array; ``MISSING_CLASS`` when unknown."""
    del num_labels
    return np.asarray(MISSING_CLASS if encoded is None else encoded, dtype=np.int64)


def count_known(targets: np.ndarray) -> int:
    """Images with a known class."""
    return int((np.asarray(targets) >= 0).sum())


def sample_weights(targets: np.ndarray, num_labels: int) -> np.ndarray:
    """``1 / count`` of each image's class (0 where unknown), for balanced sampling."""
    targets = np.asarray(targets).reshape(-1).astype(np.int64)
    valid = targets >= 0
    counts = np.bincount(targets[valid], minlength=num_labels).astype(float)
    return np.where(valid, 1.0 / np.maximum(counts[np.clip(targets, 0, None)], 1), 0.0)


def count_labels(targets: np.ndarray, num_labels: int) -> np.ndarray:
    """Samples per class, missing targets skipped."""
    targets = np.asarray(targets).reshape(-1).astype(np.int64)
    known = targets[targets >= 0]
    if (known >= num_labels).any():
        raise ValueError(f"class index {known.max()} out of range for {num_labels} classes")
    return np.bincount(known, minlength=num_labels)


# Scoring, reporting and drawing need scikit-learn and matplotlib: imported on first use.


def _metrics(probs: np.ndarray, targets: np.ndarray, params: dict) -> dict[str, float]:
    from pictag.heads import multiclass_report

    return multiclass_report.metrics(probs, targets, params)


def _section(probs: np.ndarray, targets: np.ndarray, labels: list[str], params: dict) -> dict:
    from pictag.heads import multiclass_report

    return multiclass_report.section(probs, targets, labels, params)


def _html(name: str, section: dict) -> str:
    from pictag.heads import multiclass_html

    return multiclass_html.html(name, section)


def _report_text(name: str, section: dict) -> str:
    from pictag.heads import multiclass_text

    return multiclass_text.report_text(name, section)


def _label_issues(head: Any, probs: np.ndarray, targets: np.ndarray) -> list[dict[str, Any]]:
    from pictag.heads import multiclass_audit  # cleanlab: imported on first use

    return multiclass_audit.label_issues(head, probs, targets)


MULTICLASS = HeadKind(
    name="multiclass",
    tags=False,
    exclusive=True,
    options=OPTIONS,
    losses=LOSSES,
    parse=parse,
    normalize=normalize,
    to_target=to_target,
    count_labels=count_labels,
    count_known=count_known,
    sample_weights=sample_weights,
    make_loss=make_loss,
    activate=activate,
    mix_targets=mix_targets,
    default_params=decide_.default_params,
    tune=decide_.tune,
    decide=decide_.decide,
    metric_names=METRIC_NAMES,
    primary_metric="accuracy",
    lower_is_better=frozenset({"ece"}),
    summary_metrics=("accuracy", "f1_macro", "roc_auc_ovr", "ece"),
    metrics=_metrics,
    section=_section,
    image_loss=decide_.image_loss,
    label_issues=_label_issues,
    judge=decide_.judge,
    describe=decide_.describe,
    html=_html,
    report_text=_report_text,
    plan_note=decide_.plan_note,
    export_meta=decide_.export_meta,
    text_lines=drawing.text_lines,
    draw=drawing.draw_scores,
)
