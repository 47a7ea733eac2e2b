"""The metrics part of a report: each head's section from its kind, and the multi-output
``all_heads_correct``.

Every metric is the head kind's own (:attr:`pictag.heads.HeadKind.metrics`, the one
implementation that validation, the report and the benchmarks share); undefined values are
``nan`` (JSON null once written).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from pictag.heads import Head, Params, get_kind


def head_report(head: Head, probs: np.ndarray, targets: np.ndarray, params: Params) -> dict:
    """One head's section of ``report.json``, as its kind writes it.

    Args:
        head: The head (kind and labels).
        probs: Probabilities ``[N, C]``.
        targets: The head's targets (negative = missing).
        params: The head's decision parameters.
    """
    return get_kind(head.kind).section(probs, targets, list(head.labels), params)


def all_heads_correct(
    heads: Mapping[str, Head],
    probs: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    params: Mapping[str, Params],
) -> float:
    """Share of images on which every head with a known target decides right.

    A head whose target is missing for an image is not judged there; images with no known
    target at all are skipped.

    Returns:
        The share in ``[0, 1]``, or ``nan`` when no image has a known target.
    """
    judged, wrong = None, None
    for name, head in heads.items():
        kind = get_kind(head.kind)
        decided = kind.decide(probs[name], params[name])
        known, right = kind.judge(decided, np.asarray(targets[name]))
        judged = known if judged is None else judged | known
        miss = known & ~right
        wrong = miss if wrong is None else wrong | miss
    if judged is None or not judged.any():
        return math.nan
    return float(1.0 - wrong[judged].mean())
