"""Heads and their labels: turn raw labels from a source into targets, and back.

A raw label is what a source read: a class name (``str``), a tuple of tags, or ``None`` when the
cell was empty (the target is then missing for that head only); the head's kind says which. A
:class:`Head` is resolved once from the training data and the head's options (renames, numeric
bins, ``min_count`` folding, an explicit label list) and is then stored in the run folder, so
evaluation and prediction encode and decode exactly as training did.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pictag.heads.boxes import Objects
from pictag.heads.labeltext import LabelError, RawLabel, bin_labels, natural_key
from pictag.heads.masks import BACKGROUND, MaskLabel
from pictag.heads.registry import get_kind


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
        get_kind(self.kind)  # a ValueError naming the known kinds
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
        return None if raw is None else get_kind(self.kind).normalize(self, raw)

    def encode(self, raw: RawLabel) -> Any:
        """Class index, tuple of tag indices, ``(objects, class index per box)``, ``(mask,
        class index per class in it)``, or ``None`` for a missing label.

        Raises:
            LabelError: the label is not one of the head's labels.
        """
        value = self.normalize(raw)
        if value is None:
            return None
        index = self._index
        if isinstance(value, Objects):
            unknown = list(dict.fromkeys(b[0] for b in value.boxes if b[0] not in index))
            if unknown:
                raise LabelError(self._unknown_message(unknown))
            return value, tuple(index[b[0]] for b in value.boxes)
        if isinstance(value, MaskLabel):
            unknown = [name for name in value.classes if name not in index]
            if unknown:
                raise LabelError(self._unknown_message(unknown))
            return value, tuple(index[name] for name in value.classes)
        if isinstance(value, tuple):
            unknown = [t for t in value if t not in index]
            if unknown:
                raise LabelError(self._unknown_message(unknown))
            return tuple(sorted(index[t] for t in value))
        if value not in index:
            raise LabelError(self._unknown_message([value]))
        return index[value]

    def target(self, raw: RawLabel) -> np.ndarray:
        """The training target, as the head's kind encodes it (its missing value when ``raw``
        is missing)."""
        return get_kind(self.kind).to_target(self.encode(raw), self.num_labels)

    def decode(self, encoded: int | Iterable[int]) -> str | tuple[str, ...]:
        """Label name for a class index, or label names for tag indices."""
        if isinstance(encoded, (int, np.integer)):
            return self.labels[int(encoded)]
        return tuple(self.labels[int(i)] for i in encoded)

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


def label_indices(encoded: Any) -> tuple[int, ...]:
    """The label indices in an encoded label (see :meth:`Head.encode`): the class, the tags,
    or the class of each box (repeats kept); empty for a missing label."""
    if encoded is None:
        return ()
    if isinstance(encoded, (int, np.integer)):
        return (int(encoded),)
    if encoded and isinstance(encoded[0], (Objects, MaskLabel)):
        return tuple(encoded[1])
    return tuple(encoded)


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
    for option, value in (("bins", edges), ("min_count", min_count)):
        if value and option not in get_kind(kind).options:
            raise ValueError(f"heads.{name}.{option} does not apply to {kind} heads")
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
    background_first = False
    for raw in raws:
        value = draft.normalize(raw)
        if isinstance(value, Objects):
            counts.update(box[0] for box in value.boxes)
        elif isinstance(value, MaskLabel):
            counts.update(value.classes)
            background_first = True  # class 0, which drawings leave transparent
        elif isinstance(value, tuple):
            counts.update(value)
        elif value is not None:
            counts[value] += 1
    if labels is not None:
        return Head(name, kind, tuple(labels), rename, (), frozenset(), other_label)
    folded = frozenset(k for k, n in counts.items() if n < min_count) if min_count else frozenset()
    kept = sorted((k for k in counts if k not in folded), key=natural_key)
    if folded and other_label not in kept:
        kept.append(other_label)
    if background_first and BACKGROUND in kept:
        kept.insert(0, kept.pop(kept.index(BACKGROUND)))
    return Head(name, kind, tuple(kept), rename, (), folded, other_label)
