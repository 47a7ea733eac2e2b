"""What a head kind is: the options of its loss and the functions that make up the kind.

A :class:`HeadKind` bundles everything that differs between a ``multiclass`` and a
``multilabel`` head (loss, activation, decoding, MixUp target mixing, validation metrics), so the
rest of pictag asks the kind instead of branching on ``if multi_label:``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

MISSING_CLASS = -100  # a multiclass target with no known class (torch's ignore_index)
MISSING_TAG = -1.0  # a multilabel entry with no known value; any negative value counts as missing

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class LossOptions:
    """How a head's loss is built.

    Attributes:
        name: ``default`` (cross-entropy for multiclass, BCE for multilabel), ``focal``, or
            ``asl`` (asymmetric loss, multilabel only).
        label_smoothing: Multiclass only: mass spread uniformly over all classes.
        balance: Reweight by label frequency: class weights ``n / (C * count)`` for multiclass,
            per-label ``pos_weight = n_neg / n_pos`` for multilabel.
        focal_gamma: Focusing exponent of the focal loss; 0 gives back the default loss.
        asl_gamma_neg: ASL focusing exponent on negatives.
        asl_gamma_pos: ASL focusing exponent on positives.
        asl_clip: ASL probability shift on negatives: a negative whose probability is below this
            costs nothing, which discards easy negatives.
    """

    name: str = "default"
    label_smoothing: float = 0.0
    balance: bool = False
    focal_gamma: float = 2.0
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for field_name in ("focal_gamma", "asl_gamma_neg", "asl_gamma_pos"):
            if getattr(self, field_name) < 0:
                raise ValueError(f"{field_name} must be >= 0, got {getattr(self, field_name)}")
        if not 0.0 <= self.asl_clip < 1.0:
            raise ValueError(f"asl_clip must be in [0, 1), got {self.asl_clip}")


@dataclass(frozen=True)
class HeadKind:
    """The functions that make a head kind.

    Attributes:
        name: ``multiclass`` or ``multilabel``.
        make_loss: ``(options, counts=None, n_samples=None) -> loss_fn(logits, targets)``, where
            ``counts`` are positives per class/label in the training set (from
            :func:`pictag.heads.label_counts`) and ``n_samples`` the number of training samples
            with a known target (an int, or per label for multilabel heads). The loss is a scalar
            mean over the images with present targets; hard or MixUp-soft targets are both accepted.
        activate: Logits -> probabilities (softmax or sigmoid), in float32.
        decode: Probabilities -> decisions; see the kind's module for its keyword options.
        mix_targets: ``(targets_a, targets_b, lam, num_labels)`` -> soft targets for MixUp and
            CutMix, missing wherever either side is missing.
        metrics: ``(probs [N, C], targets)`` -> named float metrics for validation.
        primary_metric: The metric to select checkpoints and stop early on (higher is better).
        count_labels: ``(targets, num_labels)`` -> positives per class/label, missing skipped.
    """

    name: str
    make_loss: Callable[..., LossFn]
    activate: Callable[[Tensor], Tensor]
    decode: Callable[..., np.ndarray]
    mix_targets: Callable[[Tensor, Tensor, Any, int], Tensor]
    metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    primary_metric: str
    count_labels: Callable[[np.ndarray, int], np.ndarray]


def check_loss_name(options: LossOptions, kind: str, valid: tuple[str, ...]) -> None:
    """Raise a ValueError naming the valid losses when ``options.name`` is not one of them."""
    if options.name not in valid:
        raise ValueError(f"loss {options.name!r} is not for {kind} heads; use one of {valid}")


def as_counts(counts: np.ndarray | None) -> np.ndarray:
    """Counts as a float64 vector, with a message when balancing was asked for without them."""
    if counts is None:
        raise ValueError("balance=True needs label counts from the training targets")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError(f"counts must be a 1-D vector of non-negative counts, got {counts}")
    return counts


def lam_column(lam: float | Tensor, like: Tensor) -> Tensor:
    """The MixUp weight as a tensor broadcasting over ``like [B, C]``: a scalar or one per row."""
    lam = torch.as_tensor(lam, dtype=like.dtype, device=like.device)
    return lam.view(-1, 1) if lam.ndim == 1 else lam


def as_probs(probs: np.ndarray | Tensor) -> np.ndarray:
    """Probabilities ``[N, C]`` as a float64 array (CPU tensors accepted)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be [N, C], got shape {probs.shape}")
    return probs
