"""How a ``multiclass`` head decides: argmax, or for a two-class head a threshold on its positive
class tuned on validation, and how one decision is judged, described and exported.

Decision parameters (``params``, stored per head in ``pictag.json``): ``{}`` for three or more
classes (argmax); for two classes ``{"positive": index, "threshold": t}``: the positive class is
chosen when its probability is at least ``t``, else the other one. ``t = 0.5`` is argmax.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pictag.heads.kinds import Params, as_probs, untuned_threshold

_EPS = 1e-7  # keeps log(0) finite in the per-image loss


# Labels that read as "the negative class": the other class of a pair is the positive one.
NEGATIVE = frozenset({
    "0", "-1", "false", "no", "n", "f", "negative", "neg", "none", "absent", "off",
    "normal", "ok", "good", "clean", "benign", "healthy", "background", "other",
})  # fmt: skip
NEGATIVE_PREFIXES = ("not_", "not ", "non_", "non-", "no_", "no ")


def positive_index(head: Any, cfg: Any) -> int:
    """Index of a two-class head's positive class: ``heads.NAME.positive``; else the class that
    is not a negative word (``no``/``yes``, ``normal``/``tumour``, ``cat``/``not_cat``); else
    the second label.

    Raises:
        ValueError: ``positive`` names no class of the head; the message lists them.
    """
    positive = getattr(cfg, "positive", None)
    if positive is None:
        negative = [_reads_negative(label) for label in head.labels]
        return negative.index(False) if sorted(negative) == [False, True] else 1
    if positive not in head.labels:
        raise ValueError(
            f"heads.{head.name}.positive: {positive!r} is not one of its classes "
            f"({', '.join(head.labels)})"
        )
    return head.labels.index(positive)


def _reads_negative(label: str) -> bool:
    text = str(label).strip().lower()
    return text in NEGATIVE or text.startswith(NEGATIVE_PREFIXES)


def plan_note(head: Any, cfg: Any) -> str | None:
    """For a two-class head whose positive class pictag chose: which, and how to change it
    (thresholds, recall and precision all speak of that class)."""
    if head.num_labels != 2 or getattr(cfg, "positive", None) is not None:
        return None
    index = positive_index(head, cfg)
    other = head.labels[1 - index]
    why = "the other reads as negative" if _reads_negative(other) else "the second label"
    return (
        f"heads.{head.name}: positive class {head.labels[index]!r} ({why}); thresholds, recall "
        f"and precision speak of it; set heads.{head.name}.positive={other} to change"
    )


def default_params(head: Any, cfg: Any) -> Params:
    """Argmax for three or more classes; a two-class head gets its positive class and the
    threshold 0.5 (``threshold_by: fixed``: ``threshold_target``)."""
    if head.num_labels != 2:
        return {}
    return {"positive": positive_index(head, cfg), "threshold": untuned_threshold(cfg)}


def tune(probs: np.ndarray, targets: np.ndarray, head: Any, cfg: Any) -> Params:
    """A two-class head's threshold on the positive class, chosen on validation outputs by
    ``threshold_by`` / ``threshold_target`` as for a multilabel label; others: argmax."""
    params = default_params(head, cfg)
    if not params:
        return params
    probs = as_probs(probs)
    targets = np.asarray(targets).reshape(-1)
    positive = params["positive"]
    column = np.where(targets < 0, -1.0, (targets == positive).astype(np.float64))
    by, target = cfg.threshold_by, float(cfg.threshold_target)
    from pictag.heads.thresholds import tune_column  # scikit-learn: imported when tuning

    return {**params, "threshold": tune_column(probs[:, positive], column, by, target)}


def decide(probs: np.ndarray, params: Params) -> np.ndarray:
    """One chosen class per row, as a bool matrix ``[N, C]``."""
    probs = as_probs(probs)
    if "threshold" in params:
        positive = int(params["positive"])
        chosen = np.where(probs[:, positive] >= params["threshold"], positive, 1 - positive)
    else:
        chosen = probs.argmax(axis=1)
    decided = np.zeros(probs.shape, dtype=bool)
    decided[np.arange(len(probs)), chosen] = True
    return decided


def predicted(probs: np.ndarray, params: Params) -> np.ndarray:
    """The decided class index per row ``[N]``."""
    return decide(probs, params).argmax(axis=1)


def judge(decided: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which images have a known class, and whether the decided class is it."""
    targets = np.asarray(targets).reshape(-1).astype(np.int64)
    known = targets >= 0
    right = decided[np.arange(len(targets)), np.clip(targets, 0, None)]
    return known, known & right


def image_loss(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Cross-entropy of the true class per image; 0 where the class is unknown."""
    p = np.clip(as_probs(probs), _EPS, 1 - _EPS)
    targets = np.asarray(targets).reshape(-1).astype(np.int64)
    truth = p[np.arange(len(p)), np.clip(targets, 0, None)]
    return np.where(targets >= 0, -np.log(truth), 0.0)


def describe(
    head: Any, probs: np.ndarray, target: np.ndarray, decided: np.ndarray
) -> tuple[str | None, str, float]:
    """True class (None when unknown), decided class and its probability, for one image."""
    index = int(np.asarray(target).reshape(-1)[0])
    chosen = int(np.flatnonzero(decided)[0])
    true = head.labels[index] if index >= 0 else None
    return true, head.labels[chosen], float(probs[chosen])


def export_meta(head: Any, params: Params) -> dict[str, Any]:
    """Activation and decision rule for an exported model's consumer."""
    if "threshold" not in params:
        return {"activation": "softmax", "decision": "argmax"}
    positive = int(params["positive"])
    return {
        "activation": "softmax",
        "decision": "threshold",  # P(positive) >= threshold -> positive, else the other class
        "positive": head.labels[positive],
        "positive_index": positive,
        "threshold": float(params["threshold"]),
    }
