"""Find likely wrong tag lists of a ``multilabel`` head with cleanlab's confident learning.

cleanlab runs one-vs-rest confident learning per tag (which tag of which row looks wrong) and
scores each row's whole tag list; this module maps pictag's targets in and findings, in tag
names, out. cleanlab is imported here, on first use, so ``import pictag.heads`` stays cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pictag.heads.audit_common import check_unit, quiet_cleanlab
from pictag.heads.kinds import as_probs

# cleanlab's default, as for multiclass heads: per tag, prune the rows most likely mislabelled
# within each (given, true) off-diagonal of that tag's confident joint.
FILTER_BY = "prune_by_noise_rate"


def label_issues(head: Any, probs: np.ndarray, targets: np.ndarray) -> list[dict[str, Any]]:
    """Rows whose tag list looks wrong, most likely wrong first, naming the tags that differ.

    A row is flagged when cleanlab flags any of its tags
    (``multilabel_classification.filter.find_multilabel_issues_per_class``; its ``any`` over
    tags is exactly ``find_label_issues``). ``suggested`` flips only the flagged tags rather
    than re-deciding every tag at a threshold: the flags come from per-tag confident
    thresholds (the mean probability a tag gets where it is given), which suit a rare tag whose
    probabilities never reach 0.5, and they make ``issue`` and ``suggested`` agree.

    Args:
        head: The :class:`pictag.heads.labels.Head`; its ``labels`` name the tags.
        probs: Out-of-fold tag probabilities ``[N, L]``: each row predicted by a model that did
            not train on it (in-sample probabilities have memorised the labels, wrong ones too).
        targets: Multi-hot targets ``[N, L]`` (1 given, 0 not); a negative entry
            (``MISSING_TAG``) is unknown, and a row with any unknown entry is left out, as
            cleanlab needs a row's complete tag list.

    Returns:
        One dict per flagged row: ``index`` (row in ``probs``/``targets``), ``given`` and
        ``suggested`` (lists of tag names in label order), ``score`` (cleanlab's label quality
        of the whole row, ``multilabel_classification.rank.get_label_quality_scores``, in
        [0, 1], low = likely wrong) and ``issue`` (e.g. ``"missing tag dog; extra tags cat,
        sky"``), sorted by ascending score, then index. Tags given on every labelled row, or
        on none, are never flagged: with one side empty there is no confident threshold to
        judge them by.

    Raises:
        ValueError: Shapes do not match the head, targets are not 0/1 (or missing), or no tag
            is given on some labelled rows and not on others (nothing to learn noise from).
    """
    probs, targets = _checked(head, probs, targets)
    rows = np.flatnonzero((targets >= 0).all(axis=1))
    given = targets[rows] > 0.5
    probs = probs[rows]
    # A tag given on every row makes cleanlab raise ("at least 2 classes"); one given on no
    # row only warns, but is as unjudgeable: both are left out of the per-tag search.
    judged = given.any(axis=0) & ~given.all(axis=0)
    if not judged.any():
        raise ValueError(
            f"head {head.name!r}: finding wrong tags needs a tag that is given on some labelled "
            f"rows and not on others; none is among {len(rows)} complete rows"
        )
    flags, scores = _cleanlab(head, probs, given, judged)
    flagged = np.flatnonzero(flags.any(axis=1))
    order = flagged[np.argsort(scores[flagged], kind="stable")]
    return [_finding(head, int(rows[i]), given[i], flags[i], float(scores[i])) for i in order]


AGGREGATOR = {"method": "softmin"}  # cleanlab's softmin over the per-tag scores


def _cleanlab(
    head: Any, probs: np.ndarray, given: np.ndarray, judged: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(flagged ``[n, L]`` with False in unjudged tags, row quality scores ``[n]``)."""
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    as_lists = [np.flatnonzero(row).tolist() for row in given[:, judged]]
    flags = np.zeros_like(given)
    with quiet_cleanlab(head):
        # n_jobs=1: cleanlab would otherwise fork a process per core for every tag; the audit
        # runs inside pictag processes that hold torch threads, and each pass is over [N, 2].
        flags[:, judged] = find_multilabel_issues_per_class(
            as_lists, probs[:, judged], filter_by=FILTER_BY, n_jobs=1
        )
        # The score covers every tag, judged or not. One wrong tag makes the row wrong, so the
        # row scores as its worst tags (softmin) rather than cleanlab's default moving average:
        # on miml-scenes with one tag toggled on 5 % of the rows, 44 % of them were in the top N
        # this way, 15 % with the average (benchmarks/audit_noise.py).
        rows = [np.flatnonzero(row).tolist() for row in given]
        scores = get_label_quality_scores(rows, probs, aggregator_kwargs=AGGREGATOR)
    return flags, np.asarray(scores, dtype=np.float64)


def _finding(
    head: Any, index: int, given: np.ndarray, flags: np.ndarray, score: float
) -> dict[str, Any]:
    """One flagged row in tag names; ``suggested`` is ``given`` with the flagged tags flipped."""
    names = np.asarray(head.labels, dtype=object)
    missing = names[flags & ~given].tolist()
    extra = names[flags & given].tolist()
    parts = [
        f"{word} tag{'s' if len(tags) > 1 else ''} {', '.join(tags)}"
        for word, tags in (("missing", missing), ("extra", extra))
        if tags
    ]
    return {
        "index": index,
        "given": names[given].tolist(),
        "suggested": names[given ^ flags].tolist(),
        "score": score,
        "issue": "; ".join(parts),
    }


def _checked(head: Any, probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets as float64 ``[N, L]``, checked against the head (cleanlab's
    own messages name neither the head nor the argument)."""
    probs = as_probs(probs)
    targets = np.asarray(targets, dtype=np.float64)
    shape = (len(targets), head.num_labels)
    if targets.shape != shape or probs.shape != shape:
        raise ValueError(
            f"head {head.name!r}: probabilities and targets must both be [N, {head.num_labels}] "
            f"(one column per tag), got {list(probs.shape)} and {list(targets.shape)}"
        )
    if not np.isin(targets[targets >= 0], (0.0, 1.0)).all():
        raise ValueError(f"head {head.name!r}: targets must be 0/1 (or missing), not soft targets")
    return check_unit(head, probs), targets
