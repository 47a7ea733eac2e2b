"""Percentile bootstrap intervals of a head's primary metric, computed by the head kind itself.

Each resample draws the evaluated images with replacement (seeded, so a card is reproducible)
and scores it with the kind's one metrics function (:attr:`pictag.heads.HeadKind.metrics`);
the interval is the 2.5th to 97.5th percentile of the resampled values.

That function computes every metric of the kind with scikit-learn, 30-200 ms a call whatever
the number of images, so 1,000 calls would take a minute. A primary metric that is the share of
images the kind judges right (multiclass accuracy) is therefore resampled in one vectorised step
from the kind's own decisions and judgments (``decide``, ``judge``): 1,000 resamples of 5,000
images in well under a second. Whether the metric *is* that share is checked against the
kind's metrics function on all images and on the first resamples, never assumed from its name;
any other metric (multilabel mAP) runs the metrics function on each of fewer resamples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from pictag.heads import HeadKind, Params

RESAMPLES = 1000  # resamples of a judged share (vectorised)
SLOW_RESAMPLES = 200  # resamples that each call the kind's metrics function
SEED = 0
LEVEL = 0.95
CHECKED = 2  # resamples on which a judged share must equal the kind's metric (besides all images)
_CHUNK = 100  # resamples drawn at once: 100 x 5,000 indices are 4 MB


@dataclass(frozen=True)
class Interval:
    """A metric on all images and its bootstrap interval.

    Attributes:
        metric: The metric's name.
        value: The metric on all images.
        low: Lower end of the interval.
        high: Upper end of the interval.
        resamples: Resamples on which the metric was defined (the interval's basis).
        seed: Seed of the resampling.
        level: Coverage of the interval, e.g. 0.95.
    """

    metric: str
    value: float
    low: float
    high: float
    resamples: int
    seed: int = SEED
    level: float = LEVEL


def metric_interval(
    kind: HeadKind,
    probs: np.ndarray,
    targets: np.ndarray,
    params: Params,
    resamples: int | None = None,
    seed: int = SEED,
    level: float = LEVEL,
) -> Interval | None:
    """Percentile bootstrap interval of ``kind.primary_metric`` over the rows of ``probs``.

    Args:
        kind: The head's kind (its metrics, decisions and judgments).
        probs: Probabilities ``[N, C]``.
        targets: The head's targets, as its kind encodes them (negative = missing).
        params: The head's decision parameters.
        resamples: Resamples to draw; default ``RESAMPLES`` for a judged share, else
            ``SLOW_RESAMPLES``.
        seed: Seed of the resampling.
        level: Coverage, in (0, 1).

    Returns:
        The interval, or None when the metric is undefined on all images (no known target)
        or on every resample.
    """
    probs, targets = np.asarray(probs), np.asarray(targets)
    name, n = kind.primary_metric, len(probs)
    if n == 0:
        return None

    def metric(rows: np.ndarray | slice) -> float:
        return float(kind.metrics(probs[rows], targets[rows], params)[name])

    with warnings.catch_warnings():
        # A resample that lacks a class makes scikit-learn warn of undefined scores, once per
        # resample; those values are nan and left out of the interval.
        warnings.simplefilter("ignore")
        value = metric(slice(None))
        if not math.isfinite(value):
            return None
        known, right = kind.judge(kind.decide(probs, params), targets)
        first = next(_resamples(n, min(CHECKED, resamples or CHECKED), seed))
        if _is_share(value, known, right, first, metric):
            values = _share_values(known, right, resamples or RESAMPLES, seed)
        else:
            values = _metric_values(metric, n, resamples or SLOW_RESAMPLES, seed)
    defined = values[np.isfinite(values)]
    if not len(defined):
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return Interval(name, value, float(low), float(high), len(defined), seed, level)


def _resamples(n: int, count: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of ``count`` resamples of ``n`` rows, in chunks ``[k, n]``; the same seed
    gives the same resamples whichever way they are scored."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, _CHUNK):
        yield rng.integers(0, n, size=(min(_CHUNK, count - start), n))


def _is_share(
    value: float,
    known: np.ndarray,
    right: np.ndarray,
    rows: np.ndarray,
    metric: Callable[[np.ndarray], float],
) -> bool:
    """Whether the metric equals the share of known images judged right, on all images and on
    each resample of ``rows``."""
    pairs = [(value, _share(known, right))]
    pairs += [(metric(row), _share(known[row], right[row])) for row in rows]
    return all(math.isclose(a, b, abs_tol=1e-9) for a, b in pairs)


def _share(known: np.ndarray, right: np.ndarray) -> float:
    count = known.sum()
    return float(right.sum() / count) if count else math.nan


def _share_values(known: np.ndarray, right: np.ndarray, count: int, seed: int) -> np.ndarray:
    """The judged share of every resample, a chunk of resamples at a time."""
    parts = []
    for rows in _resamples(len(known), count, seed):
        judged = known[rows].sum(axis=1)
        hits = right[rows].sum(axis=1)
        parts.append(np.divide(hits, judged, out=np.full(len(rows), np.nan), where=judged > 0))
    return np.concatenate(parts)


def _metric_values(
    metric: Callable[[np.ndarray], float], n: int, count: int, seed: int
) -> np.ndarray:
    """The kind's metric on every resample, one call each."""
    return np.array([metric(row) for rows in _resamples(n, count, seed) for row in rows])
