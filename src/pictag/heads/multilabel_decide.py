"""How a ``multilabel`` head decides: per-label thresholds tuned on validation (or the ``top_k``
most probable labels), and how one decision is judged, described and exported.

Decision parameters (``params``, stored per head in ``pictag.json``): ``{"thresholds": [t, ...]}``,
one per label. At prediction time ``top_k`` and ``at_least_one`` may be added.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pictag.heads.kinds import NEUTRAL, Params, as_probs, untuned_threshold

_EPS = 1e-7  # keeps log(0) finite in the per-image loss


def default_params(head: Any, cfg: Any) -> Params:
    """0.5 for every label (``threshold_by: fixed``: ``threshold_target``)."""
    return {"thresholds": [untuned_threshold(cfg)] * head.num_labels}


def tune(probs: np.ndarray, targets: np.ndarray, head: Any, cfg: Any) -> Params:
    """Per-label thresholds chosen on validation outputs by ``threshold_by`` and
    ``threshold_target``."""
    del head
    from pictag.heads.thresholds import tune_thresholds  # scikit-learn: imported when tuning

    return {"thresholds": tune_thresholds(probs, targets, cfg.threshold_by, cfg.threshold_target)}


def thresholds_of(params: Params, num_labels: int) -> np.ndarray:
    """The per-label thresholds in ``params`` (0.5 each when there are none)."""
    values = params.get("thresholds")
    if values is None:
        return np.full(num_labels, NEUTRAL)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) != num_labels:
        raise ValueError(f"{len(values)} thresholds for {num_labels} labels")
    return values


def decide(probs: np.ndarray, params: Params) -> np.ndarray:
    """Labels on per row ``[N, L]``: ``probs >= thresholds``; with ``top_k`` exactly the
    ``top_k`` most probable (ties: lower index first); with ``at_least_one`` the most probable
    when none passes."""
    probs = as_probs(probs)
    top_k = params.get("top_k")
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        best = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        chosen = np.zeros(probs.shape, dtype=bool)
        np.put_along_axis(chosen, best, True, axis=1)
        return chosen
    chosen = probs >= thresholds_of(params, probs.shape[1])
    if params.get("at_least_one"):
        empty = np.flatnonzero(~chosen.any(axis=1))
        chosen[empty, probs[empty].argmax(axis=1)] = True
    return chosen


def judge(decided: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images with a known entry, and whether the decisions match every known entry."""
    targets = np.asarray(targets, dtype=np.float64)
    entries = targets >= 0
    right = ((decided == (targets >= 0.5)) | ~entries).all(axis=1)
    known = entries.any(axis=1)
    return known, known & right


def image_loss(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mean binary cross-entropy over each image's known entries (0 with none)."""
    p = np.clip(as_probs(probs), _EPS, 1 - _EPS)
    targets = np.asarray(targets, dtype=np.float64)
    entries, truth = targets >= 0, targets >= 0.5
    bce = -np.where(truth, np.log(p), np.log(1 - p)) * entries
    return bce.sum(axis=1) / np.maximum(entries.sum(axis=1), 1)


def describe(
    head: Any, probs: np.ndarray, target: np.ndarray, decided: np.ndarray
) -> tuple[list[str] | None, list[str], list[float]]:
    """True tags (None when every entry is unknown), decided tags and their probabilities."""
    known = target >= 0
    truth = [head.labels[i] for i in np.flatnonzero(known & (target >= 0.5))]
    on = np.flatnonzero(decided)
    pred = [head.labels[i] for i in on]
    return (truth if known.any() else None), pred, [float(probs[i]) for i in on]


def export_meta(head: Any, params: Params) -> dict[str, Any]:
    """Activation, decision rule and thresholds for an exported model's consumer."""
    thresholds = thresholds_of(params, head.num_labels)
    return {
        "activation": "sigmoid",
        "decision": "threshold",
        "thresholds": [float(t) for t in thresholds],
    }
