"""Images far from the rest in embedding space (a screenshot among photos, a blank frame), scored
with cleanlab's ``OutOfDistribution`` (average distance to the nearest neighbours)."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np


def outlier_scores(features: np.ndarray) -> np.ndarray:
    """One score per row in [0, 1]; the lower, the more unlike every other image."""
    from cleanlab.outlier import OutOfDistribution

    if len(features) < 3:
        return np.ones(len(features))
    k = min(10, len(features) - 1)  # cleanlab's default k, for sets smaller than it
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # cleanlab prints its progress and warns on small sets
        scores = OutOfDistribution(params={"k": k}).fit_score(features=features)
    return np.asarray(scores, dtype=np.float64)


def top_outliers(scores: np.ndarray, share: float = 0.02, at_least: int = 5) -> list[int]:
    """Row indices of the most atypical images, most atypical first: the lowest ``share`` of
    scores (at least ``at_least``), for a person to look at."""
    count = min(len(scores), max(at_least, round(share * len(scores))))
    return [int(i) for i in np.argsort(scores, kind="stable")[:count]]
