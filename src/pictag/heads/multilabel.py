"""The ``multilabel`` head kind: any number of tags per image, sigmoid, BCE, thresholds.

Targets are float multi-hot vectors ``[B, L]`` with ``MISSING_TAG`` (-1) in each entry whose
value is unknown (a whole missing row is all -1); after MixUp entries are in [0, 1]. This module
holds the reading and training side and assembles :data:`MULTILABEL`; decisions, metrics and the
report live in ``multilabel_decide``, ``multilabel_report`` and ``multilabel_html``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

from pictag.heads import drawing
from pictag.heads import multilabel_decide as decide_
from pictag.heads.kinds import (
    MISSING_TAG,
    HeadKind,
    LossFn,
    LossOptions,
    as_counts,
    check_loss_name,
    lam_column,
)
from pictag.heads.labeltext import split_tags

LOSSES = ("default", "focal", "asl")
MAX_POS_WEIGHT = 100.0  # a label seen once in 10,000 images should not swamp the others
# Threshold metrics over complete rows, then all threshold metrics in report.json's order.
ROW_METRICS = (
    "f1_samples",
    "hamming_loss",
    "subset_accuracy",
    "cardinality_true",
    "cardinality_pred",
)
DECISION_ORDER = (
    "f1_micro",
    "f1_macro",
    "f1_samples",
    "precision_micro",
    "recall_micro",
    "precision_macro",
    "recall_macro",
    "hamming_loss",
    "subset_accuracy",
    "cardinality_true",
    "cardinality_pred",
)
METRIC_NAMES = ("mAP", "roc_auc_macro", *DECISION_ORDER)
# Head options that only some kinds take; these are a multilabel head's.
OPTIONS = frozenset({"columns", "separator"})


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
    import torch  # deferred, as everything heavy in pictag.heads (see pictag.heads.kinds)

    from pictag.heads.losses import asymmetric_loss, binary_cross_entropy

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


def parse(text: str, separator: str | None) -> tuple[str, ...]:
    """A tag list: the cell split on ``separator`` (None: whitespace), empty tags dropped."""
    return split_tags(text, separator)


def normalize(head: Any, raw: Any) -> tuple[str, ...]:
    """Tags (a tuple, or a string split on whitespace) renamed, duplicates dropped."""
    tags = raw if isinstance(raw, tuple) else split_tags(raw, None)
    return tuple(dict.fromkeys(head.rename.get(t, t) for t in tags))


def to_target(encoded: Any, num_labels: int) -> np.ndarray:
    """A float32 multi-hot vector; all ``MISSING_TAG`` when the tag list is unknown."""
    if encoded is None:
        return np.full(num_labels, MISSING_TAG, dtype=np.float32)
    vector = np.zeros(num_labels, dtype=np.float32)
    vector[list(encoded)] = 1.0
    return vector


def count_known(targets: np.ndarray) -> np.ndarray:
    """Known entries per label (entries may be missing label by label)."""
    return (np.asarray(targets) >= 0).sum(axis=0)


def sample_weights(targets: np.ndarray, num_labels: int) -> np.ndarray:
    """``1 / count`` of each image's rarest tag; images with no tag get ``1 / N``."""
    del num_labels
    targets = np.asarray(targets, dtype=np.float64)
    counts = np.clip(targets, 0, None).sum(0)
    inverse = np.where(targets > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return np.where(inverse.max(1) > 0, inverse.max(1), 1.0 / max(len(targets), 1))


def count_labels(targets: np.ndarray, num_labels: int) -> np.ndarray:
    """Positives per label, missing entries skipped.

    The matching ``n_samples`` for :func:`make_loss` is ``(targets >= 0).sum(0)``.
    """
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2 or targets.shape[1] != num_labels:
        raise ValueError(f"targets must be [N, {num_labels}], got shape {targets.shape}")
    return (targets >= 0.5).sum(axis=0).astype(np.int64)


# Scoring, reporting and drawing need scikit-learn and matplotlib: imported on first use.


def _metrics(probs: np.ndarray, targets: np.ndarray, params: dict) -> dict[str, float]:
    from pictag.heads import multilabel_report

    return multilabel_report.metrics(probs, targets, params)


def _section(probs: np.ndarray, targets: np.ndarray, labels: list[str], params: dict) -> dict:
    from pictag.heads import multilabel_report

    return multilabel_report.section(probs, targets, labels, params)


def _html(name: str, section: dict) -> str:
    from pictag.heads import multilabel_html

    return multilabel_html.html(name, section)


def _report_text(name: str, section: dict) -> str:
    from pictag.heads import multilabel_text

    return multilabel_text.report_text(name, section)


def _label_issues(head: Any, probs: np.ndarray, targets: np.ndarray) -> list[dict[str, Any]]:
    from pictag.heads import multilabel_audit  # cleanlab: imported on first use

    return multilabel_audit.label_issues(head, probs, targets)


def _no_note(head: Any, cfg: Any) -> None:
    return None  # a tag head's choices (one threshold per tag) show in its report


MULTILABEL = HeadKind(
    name="multilabel",
    tags=True,
    exclusive=False,
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
    primary_metric="mAP",
    lower_is_better=frozenset({"hamming_loss"}),
    summary_metrics=("mAP", "f1_micro", "f1_macro", "subset_accuracy"),
    metrics=_metrics,
    section=_section,
    image_loss=decide_.image_loss,
    label_issues=_label_issues,
    judge=decide_.judge,
    describe=decide_.describe,
    html=_html,
    report_text=_report_text,
    plan_note=_no_note,
    export_meta=decide_.export_meta,
    text_lines=drawing.text_lines,
    draw=drawing.draw_scores,
    from_objects=lambda objects: objects.names,  # the classes drawn in the image, as tags
)
