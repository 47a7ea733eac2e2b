"""Train/val/test splits: kept from the source or a split file, else drawn stratified by label.

A split file (``image,split`` CSV) fixes every image's split, so a second run or another tool
sees exactly the same sets. Without one, images whose source named a split keep it; the rest are
split with ``data.seed`` so that every class keeps its share in each split (one multiclass head),
or every label of every head does (multilabel or several heads: iterative stratification). A
dataset that ships only train and test still gets a validation set, carved from train, so early
stopping and threshold tuning never touch the test images.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit
from sklearn.model_selection import train_test_split

from pictag.config import DataConfig
from pictag.data.schema import Head, LabelError, Sample
from pictag.data.sources_common import normalize_split
from pictag.data.split_file import (
    SPLITS,
    SplitError,
    load_split_file,
    names_from_split_file,
    save_splits,
)
from pictag.heads import get_kind
from pictag.heads.labels import label_indices

__all__ = [
    "SPLITS",
    "SplitError",
    "assign_splits",
    "load_split_file",
    "save_splits",
    "split_summary",
]

logger = logging.getLogger(__name__)


def assign_splits(
    samples: list[Sample], heads: dict[str, Head], data: DataConfig
) -> dict[str, list[Sample]]:
    """Put every sample in train, val or test.

    Args:
        samples: All samples, in source order; ``sample.split`` is kept when set.
        heads: Head name -> head, used to stratify the automatic split.
        data: ``split_file`` (wins over everything), ``val_fraction``, ``test_fraction``, ``seed``.

    Returns:
        Split name -> its samples (source order, ``.split`` set), with all of ``SPLITS`` as keys.

    Raises:
        SplitError: the split file misses images or has bad rows, a source split is unknown, or
            no image is left for training.
    """
    if data.split_file:
        names = names_from_split_file(samples, Path(data.split_file))
    else:
        names = _names_from_samples(samples, heads, data)
    splits: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for sample, name in zip(samples, names, strict=True):
        splits[name].append(sample if sample.split == name else replace(sample, split=name))
    if samples and not splits["train"]:
        raise SplitError(
            f"no training images: all {len(samples)} images are marked val or test; "
            "mark some as train, or leave their split empty to split them automatically"
        )
    if not splits["val"] and (data.val_fraction > 0 or data.split_file):
        warnings.warn(
            f"the validation split is empty ({len(samples)} images in all): early stopping, "
            "best-checkpoint selection and threshold tuning have nothing to measure on",
            stacklevel=2,
        )
    return splits


def split_summary(splits: dict[str, list[Sample]], heads: dict[str, Head]) -> str:
    """A plain-text table of image counts per split, then label counts per split for each head."""
    lines = ["images " + "  ".join(f"{name} {len(splits.get(name, []))}" for name in SPLITS)]
    for name, head in heads.items():
        counts = {split: Counter[str]() for split in SPLITS}
        for split in SPLITS:
            for sample in splits.get(split, []):
                counts[split].update(_label_names(head, sample.labels.get(name)))
        extra = [k for k in ("(missing)", "(unknown)") if any(c[k] for c in counts.values())]
        rows = [*head.labels, *extra]
        width = max(len(label) for label in [*rows, name])
        lines.append("")
        lines.append(f"{name:<{width}} " + "".join(f"{split:>8}" for split in SPLITS))
        for label in rows:
            cells = "".join(f"{counts[split][label]:>8}" for split in SPLITS)
            lines.append(f"{label:<{width}} {cells}")
    return "\n".join(lines)


def _label_names(head: Head, raw: object) -> list[str]:
    try:
        encoded = head.encode(raw)  # type: ignore[arg-type]
    except LabelError:
        return ["(unknown)"]
    if encoded is None:
        return ["(missing)"]
    return [head.labels[i] for i in (encoded if isinstance(encoded, tuple) else (encoded,))]


def _names_from_samples(
    samples: list[Sample], heads: dict[str, Head], data: DataConfig
) -> list[str]:
    names: list[str | None] = [_source_split(s) for s in samples]
    # Sorting by path makes the split depend on the set of images, not on listing order.
    order = np.array(sorted(range(len(samples)), key=lambda i: str(samples[i].path)), dtype=int)
    unsplit = np.array([i for i in order if names[i] is None], dtype=int)
    strata = _strata(samples, heads) if len(unsplit) else None
    if len(unsplit):
        n_val, n_test = _sizes(len(unsplit), data.val_fraction, data.test_fraction)
        rest, test = _take(unsplit, n_test, strata, data.seed)
        train, val = _take(rest, n_val, strata, data.seed)
        for indices, name in ((train, "train"), (val, "val"), (test, "test")):
            for i in indices:
                names[i] = name
    if "val" not in names and data.val_fraction > 0 and "train" in names:
        # Official train/test sets (or a train-only one): carve val from train, never from test.
        train = np.array([i for i in order if names[i] == "train"], dtype=int)
        n_val, _ = _sizes(len(train), data.val_fraction, 0.0)
        strata = strata if strata is not None else _strata(samples, heads)
        for i in _take(train, n_val, strata, data.seed)[1]:
            names[i] = "val"
    return [name or "train" for name in names]


def _source_split(sample: Sample) -> str | None:
    if not sample.split:
        return None
    name = normalize_split(sample.split)
    if name is None:
        raise SplitError(
            f"{sample.where or sample.path}: unknown split {sample.split!r}; "
            "use train, val (or valid, validation) or test"
        )
    return name


def _sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Images for val and test out of ``n``, rounded half up, always leaving one for train."""
    n_test = min(math.floor(n * test_fraction + 0.5), max(n - 1, 0))
    n_val = min(math.floor(n * val_fraction + 0.5), max(n - 1 - n_test, 0))
    return n_val, n_test


def _strata(samples: list[Sample], heads: dict[str, Head]) -> np.ndarray | None:
    """What to stratify on: class indices (1-D, -1 = missing) for one head of an exclusive kind
    (one class per image), else a concatenated one-hot/multi-hot matrix (missing = zeros); None
    without heads."""
    if not heads:
        return None
    encoded = {
        name: [_encode(head, s.labels.get(name)) for s in samples] for name, head in heads.items()
    }
    if len(heads) == 1 and get_kind(next(iter(heads.values())).kind).exclusive:
        return np.array([-1 if v is None else v for v in next(iter(encoded.values()))])
    blocks = []
    for name, head in heads.items():
        block = np.zeros((len(samples), head.num_labels), dtype=np.int8)
        for row, value in enumerate(encoded[name]):
            block[row, list(label_indices(value))] = 1
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


def _encode(head: Head, raw: object) -> int | tuple[int, ...] | None:
    try:
        return head.encode(raw)  # type: ignore[arg-type]
    except LabelError:
        return None  # unknown labels are validate.py's to report; here they just don't stratify


def _take(
    indices: np.ndarray, n_take: int, strata: np.ndarray | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (kept, taken) with ``n_take`` taken, stratified when possible."""
    n_take = min(n_take, len(indices) - 1)  # train is never left empty
    if n_take <= 0:
        return indices, indices[:0]
    if strata is None:
        return _take_random(indices, n_take, seed)
    if strata.ndim == 1:
        return _take_by_class(indices, strata, n_take, seed)
    y = strata[indices]
    if y.shape[1] < 2:  # iterstrat wants a multilabel-indicator; an all-zero column is neutral
        y = np.pad(y, ((0, 0), (0, 2 - y.shape[1])))
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_take, random_state=seed)
    kept, taken = next(splitter.split(np.zeros(len(indices)), y))
    if len(kept) == 0:  # iterative stratification trades exact sizes for balance
        kept, taken = taken[:1], taken[1:]
    return indices[kept], indices[taken]


def _take_by_class(
    indices: np.ndarray, classes: np.ndarray, n_take: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    labels = classes[indices]
    counts = Counter(labels.tolist())
    # A class with one image cannot be in two splits; it stays in train, where it can be learnt.
    shared = np.array([counts[c] >= 2 for c in labels.tolist()], dtype=bool)
    pool, singles = indices[shared], indices[~shared]
    if n_take < len(pool):
        try:
            kept, taken = train_test_split(
                pool, test_size=n_take, stratify=classes[pool], random_state=seed
            )
            return np.concatenate([singles, kept]), taken
        except ValueError as err:  # fewer images to take than classes, or the reverse
            logger.info(
                "cannot stratify %d of %d images (%s); splitting at random",
                n_take,
                len(indices),
                err,
            )
    return _take_random(indices, n_take, seed)


def _take_random(indices: np.ndarray, n_take: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    kept, taken = train_test_split(indices, test_size=n_take, random_state=seed)
    return np.asarray(kept, dtype=int), np.asarray(taken, dtype=int)
