"""Heads and their labels: turn raw labels from a source into targets, and back.

A raw label is what a source read: a class name (``str``) for a ``multiclass`` head, a tuple of
tags for a ``multilabel`` head, or ``None`` when the cell was empty (the target is then missing
for that head only). A :class:`Head` is resolved once from the training data and the head's
options (renames, numeric bins, ``min_count`` folding, an explicit label list) and is then stored
in the run folder, so evaluation and prediction encode and decode exactly as training did.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("multiclass", "multilabel")
MISSING_CLASS = -100  # torch cross-entropy's ignore_index
MISSING_TAG = -1.0  # a multilabel entry with no known value

RawLabel = str | tuple[str, ...] | None


@dataclass(frozen=True)
class Sample:
    """One image and its raw labels, as a source read them.

    Attributes:
        path: The image file.
        labels: Head name -> raw label (``None`` when that head's label is missing).
        split: ``train``/``val``/``test`` when the source says (folders, a split column), else None.
        where: Where the sample came from, for messages: ``labels.csv:12`` or a file path.
    """

    path: Path
    labels: dict[str, RawLabel]
    split: str | None = None
    where: str = ""


class LabelError(ValueError):
    """A raw label that the head cannot encode; the message says what to do."""


@dataclass(frozen=True)
class Head:
    """A named output of the model and the mapping between raw labels and targets.

    Attributes:
        name: Head name, as used in configs, reports and predictions.
        kind: ``multiclass`` (exactly one class) or ``multilabel`` (any number of tags).
        labels: Label names in target order.
        rename: Raw label -> label name, applied before anything else.
        bins: Ascending numeric edges; a value ``v`` falls in bin ``i`` when
            ``bins[i-1] <= v < bins[i]``.
        folded: Labels merged into ``other_label`` because they had fewer than ``min_count`` images.
        other_label: Name of the class that collects folded labels.
    """

    name: str
    kind: str
    labels: tuple[str, ...]
    rename: Mapping[str, str] = field(default_factory=dict)
    bins: tuple[float, ...] = ()
    folded: frozenset[str] = frozenset()
    other_label: str = "other"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"head {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if len(set(self.labels)) != len(self.labels):
            dupes = sorted(k for k, n in Counter(self.labels).items() if n > 1)
            raise ValueError(f"head {self.name!r}: duplicate label names {dupes}")
        if not self.labels:
            raise ValueError(f"head {self.name!r} has no labels: is the label column empty?")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def normalize(self, raw: RawLabel) -> str | tuple[str, ...] | None:
        """Apply renames, bins and folding to a raw label, without checking it is known."""
        if raw is None:
            return None
        if self.kind == "multilabel":
            tags = raw if isinstance(raw, tuple) else split_tags(raw, None)
            return tuple(dict.fromkeys(self.rename.get(t, t) for t in tags))
        value = raw.strip() if isinstance(raw, str) else str(raw)
        if value == "":
            return None
        if self.bins:
            value = bin_label(_as_number(value, self.name), self.bins)
        value = self.rename.get(value, value)
        return self.other_label if value in self.folded else value

    def encode(self, raw: RawLabel) -> int | tuple[int, ...] | None:
        """Class index, tuple of tag indices, or ``None`` for a missing label.

        Raises:
            LabelError: the label is not one of the head's labels.
        """
        value = self.normalize(raw)
        if value is None:
            return None
        index = self._index
        if isinstance(value, tuple):
            unknown = [t for t in value if t not in index]
            if unknown:
                raise LabelError(self._unknown_message(unknown))
            return tuple(sorted(index[t] for t in value))
        if value not in index:
            raise LabelError(self._unknown_message([value]))
        return index[value]

    def target(self, raw: RawLabel) -> np.ndarray:
        """The training target: int64 scalar (``MISSING_CLASS`` when missing) or a float32
        multi-hot vector (all ``MISSING_TAG`` when missing)."""
        encoded = self.encode(raw)
        if self.kind == "multiclass":
            return np.asarray(MISSING_CLASS if encoded is None else encoded, dtype=np.int64)
        if encoded is None:
            return np.full(self.num_labels, MISSING_TAG, dtype=np.float32)
        vector = np.zeros(self.num_labels, dtype=np.float32)
        vector[list(encoded)] = 1.0
        return vector

    def decode(self, encoded: int | Iterable[int]) -> str | tuple[str, ...]:
        """Label name(s) for a class index or for tag indices."""
        if self.kind == "multiclass":
            return self.labels[int(encoded)]  # type: ignore[arg-type]
        return tuple(self.labels[int(i)] for i in encoded)  # type: ignore[union-attr]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored in ``pictag.json``."""
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["rename"] = dict(self.rename)
        data["bins"] = list(self.bins)
        data["folded"] = sorted(self.folded)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Head:
        return cls(
            name=data["name"],
            kind=data["kind"],
            labels=tuple(data["labels"]),
            rename=dict(data.get("rename", {})),
            bins=tuple(data.get("bins", ())),
            folded=frozenset(data.get("folded", ())),
            other_label=data.get("other_label", "other"),
        )

    @property
    def _index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def _unknown_message(self, unknown: Sequence[str]) -> str:
        shown = ", ".join(repr(u) for u in unknown[:5])
        known = ", ".join(self.labels[:20]) + (" ..." if self.num_labels > 20 else "")
        return (
            f"head {self.name!r}: unknown label(s) {shown}; known labels: {known}. "
            f"Add them to heads.{self.name}.labels, or map them with heads.{self.name}.rename."
        )


def resolve_head(
    name: str,
    kind: str,
    raws: Iterable[RawLabel],
    *,
    labels: Sequence[str] | None = None,
    rename: Mapping[str, str] | None = None,
    bins: Sequence[float] | None = None,
    min_count: int = 0,
    other_label: str = "other",
) -> Head:
    """Build a head's label list from the raw labels seen in the data and the head's options.

    Args:
        name: Head name.
        kind: ``multiclass`` or ``multilabel``.
        raws: Raw labels of every sample (``None`` for missing).
        labels: Explicit label list, in order; labels outside it then are errors at encoding.
            With ``bins`` it names the bins instead of the generated ``<=a``/``a-b``/``>=b`` names.
        rename: Raw label -> label name.
        bins: Ascending numeric edges for a multiclass head whose raw values are numbers.
        min_count: Classes of a multiclass head with fewer images are folded into ``other_label``.
        other_label: Name of the class that collects rare classes.

    Raises:
        ValueError: an option does not fit the head kind; the message names the option.
    """
    rename = dict(rename or {})
    edges = tuple(float(b) for b in bins or ())
    if kind == "multilabel" and (edges or min_count):
        raise ValueError(f"heads.{name}: bins and min_count apply to multiclass heads only")
    if edges and list(edges) != sorted(set(edges)):
        raise ValueError(f"heads.{name}.bins must be strictly ascending, got {list(edges)}")
    if edges:
        bin_names = bin_labels(edges)
        if labels is not None:
            if len(labels) != len(bin_names):
                raise ValueError(
                    f"heads.{name}.labels names the bins: {len(bins or ())} edges need "
                    f"{len(bin_names)} labels, got {len(labels)}"
                )
            rename = {**dict(zip(bin_names, labels, strict=True)), **rename}
            return Head(name, kind, tuple(labels), rename, edges, frozenset(), other_label)
        return Head(name, kind, tuple(bin_names), rename, edges, frozenset(), other_label)
    draft = Head(name, kind, ("?",), rename)
    counts: Counter[str] = Counter()
    for raw in raws:
        value = draft.normalize(raw)
        if isinstance(value, tuple):
            counts.update(value)
        elif value is not None:
            counts[value] += 1
    if labels is not None:
        return Head(name, kind, tuple(labels), rename, (), frozenset(), other_label)
    folded = frozenset(k for k, n in counts.items() if n < min_count) if min_count else frozenset()
    kept = sorted((k for k in counts if k not in folded), key=natural_key)
    if folded and other_label not in kept:
        kept.append(other_label)
    return Head(name, kind, tuple(kept), rename, (), folded, other_label)


def split_tags(value: str, separator: str | None) -> tuple[str, ...]:
    """Split a tag-list cell; ``None`` splits on any whitespace. Empty tags are dropped."""
    parts = value.split(separator) if separator else value.split()
    return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))


def bin_labels(edges: Sequence[float]) -> list[str]:
    """Readable names for the bins that ``edges`` make, e.g. ``[2010]`` -> ``<=2009, >=2010``
    for whole numbers, ``[0.5]`` -> ``<0.5, >=0.5`` otherwise."""
    if all(float(e).is_integer() for e in edges):
        ints = [int(e) for e in edges]
        names = [f"<={ints[0] - 1}"]
        for low, high in itertools.pairwise(ints):
            names.append(str(low) if high - low == 1 else f"{low}-{high - 1}")
        return [*names, f">={ints[-1]}"]
    text = [f"{e:g}" for e in edges]
    middle = [f"{a}-<{b}" for a, b in itertools.pairwise(text)]
    return [f"<{text[0]}", *middle, f">={text[-1]}"]


def bin_label(value: float, edges: Sequence[float]) -> str:
    """The name of the bin that holds ``value``."""
    return bin_labels(edges)[int(np.searchsorted(np.asarray(edges), value, side="right"))]


def natural_key(label: str) -> tuple[Any, ...]:
    """Sort key that orders ``2`` before ``10`` and keeps text labels alphabetical."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", label))


def _as_number(value: str, head: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise LabelError(
            f"head {head!r} has numeric bins but the label {value!r} is not a number; "
            f"fix the value or remove heads.{head}.bins"
        ) from None
    if math.isnan(number):
        raise LabelError(f"head {head!r}: label {value!r} is not a number")
    return number
