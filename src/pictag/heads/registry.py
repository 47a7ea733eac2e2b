"""Look up a head kind by name, and count labels the way that kind needs for its loss."""

from __future__ import annotations

import numpy as np

from pictag.heads.kinds import HeadKind
from pictag.heads.multiclass import MULTICLASS
from pictag.heads.multilabel import MULTILABEL

KINDS: dict[str, HeadKind] = {kind.name: kind for kind in (MULTICLASS, MULTILABEL)}


def get_kind(name: str) -> HeadKind:
    """The head kind called ``name``.

    Raises:
        ValueError: ``name`` is not a known kind; the message lists the known ones.
    """
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown head kind {name!r}; use one of {sorted(KINDS)}") from None


def label_counts(kind: HeadKind | str, targets: np.ndarray, num_labels: int) -> np.ndarray:
    """Positives per class (multiclass) or per label (multilabel), missing targets skipped.

    Args:
        kind: A head kind or its name.
        targets: Training targets: class indices ``[N]`` or multi-hot ``[N, L]``.
        num_labels: Number of classes or labels.

    Returns:
        int64 counts ``[num_labels]``, the ``counts`` argument of ``kind.make_loss``.
    """
    if isinstance(kind, str):
        kind = get_kind(kind)
    return kind.count_labels(targets, num_labels)
