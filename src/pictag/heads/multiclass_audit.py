"""Find likely wrong labels of a ``multiclass`` head with cleanlab's confident learning.

cleanlab decides which rows are label issues (``filter.find_label_issues``) and how bad each is
(``rank.get_label_quality_scores``); this module only maps pictag's targets in and findings, in
label names, out. cleanlab is imported here, on first use, so ``import pictag.heads`` stays
cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pictag.heads.audit_common import check_unit, quiet_cleanlab
from pictag.heads.kinds import as_probs

# Prune within each off-diagonal of the confident joint (cleanlab's default): a row is flagged
# only when it is among the most likely mislabelled of its (given, true) pair, so a class that
# the model merely confuses a little does not flood the findings.
FILTER_BY = "prune_by_noise_rate"
# Self-confidence (the probability of the given class) ranks relabelled images best here: on
# utkface-5k's race head with 5 % of the labels changed at random, 30 % of them were in the top
# N by self-confidence, 24 % by normalized margin (benchmarks/audit_noise.py).
SCORE_METHOD = "self_confidence"
ISSUE = "wrong class"


def label_issues(head: Any, probs: np.ndarray, targets: np.ndarray) -> list[dict[str, Any]]:
    """Rows whose given class looks wrong, most likely wrong first.

    Args:
        head: The :class:`pictag.heads.labels.Head`; its ``labels`` name the classes.
        probs: Out-of-fold class probabilities ``[N, C]``: each row predicted by a model that did
            not train on it (in-sample probabilities have memorised the labels, wrong ones too).
        targets: Class indices ``[N]``; a negative value (``MISSING_CLASS``) is a missing label,
            and that row is left out.

    Returns:
        One dict per flagged row: ``index`` (row in ``probs``/``targets``), ``given`` and
        ``suggested`` (class names; ``suggested`` is the most probable other class), ``score``
        (cleanlab's label quality in [0, 1], low = likely wrong) and ``issue`` (``"wrong
        class"``), sorted by ascending score, then index.

    Raises:
        ValueError: Shapes do not match the head, a class index is out of range, or fewer than
            two classes have a label (there is nothing to tell apart).
    """
    probs, targets = _checked(head, probs, targets)
    rows = np.flatnonzero(targets >= 0)
    labels = targets[rows]
    if len(np.unique(labels)) < 2:
        present = [head.labels[i] for i in np.unique(labels)]
        raise ValueError(
            f"head {head.name!r}: finding wrong labels needs at least two classes with labels, "
            f"got {present or 'none'} in {len(rows)} labelled rows"
        )
    flagged, scores = _cleanlab(head, probs[rows], labels)
    order = flagged[np.argsort(scores[flagged], kind="stable")]
    others = probs[rows].copy()
    others[np.arange(len(rows)), labels] = -np.inf  # the suggestion must differ from the label
    suggested = others.argmax(axis=1)
    return [
        {
            "index": int(rows[i]),
            "given": head.labels[labels[i]],
            "suggested": head.labels[suggested[i]],
            "score": float(scores[i]),
            "issue": ISSUE,
        }
        for i in order
    ]


def _cleanlab(head: Any, probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of flagged rows, quality score of every row) of the labelled rows."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    with quiet_cleanlab(head):
        # n_jobs=1: cleanlab would otherwise fork a process per core; the audit runs inside
        # pictag processes that hold torch threads, and one pass over [N, C] is fast.
        mask = find_label_issues(labels, probs, filter_by=FILTER_BY, n_jobs=1)
        scores = get_label_quality_scores(labels, probs, method=SCORE_METHOD)
    return np.flatnonzero(mask), np.asarray(scores, dtype=np.float64)


def _checked(head: Any, probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities as float64 ``[N, C]`` and targets as int64 ``[N]``, checked against the
    head (cleanlab's own messages name neither the head nor the argument)."""
    probs = as_probs(probs)
    targets = np.asarray(targets)
    if targets.ndim != 1 and targets.shape[1:] != (1,):
        raise ValueError(
            f"head {head.name!r}: targets must be class indices [N], got {targets.shape}"
        )
    if not np.array_equal(targets, np.round(targets)):
        raise ValueError(f"head {head.name!r}: targets must be class indices, not soft targets")
    targets = targets.reshape(-1).astype(np.int64)
    if probs.shape != (len(targets), head.num_labels):
        raise ValueError(
            f"head {head.name!r}: probabilities must be [{len(targets)}, {head.num_labels}] "
            f"(one row per target, one column per class), got {list(probs.shape)}"
        )
    if (targets >= head.num_labels).any():
        raise ValueError(
            f"head {head.name!r}: class index {targets.max()} out of range for "
            f"{head.num_labels} classes"
        )
    return check_unit(head, probs), targets
