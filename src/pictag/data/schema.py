"""What a data source yields: :class:`Sample` (an image and its raw labels per head).

The label schema itself (:class:`Head`, :func:`resolve_head`) belongs to the head kinds and lives
in :mod:`pictag.heads.labels`; it is re-exported here for the data modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pictag.heads.labels import Head, resolve_head
from pictag.heads.labeltext import (
    LabelError,
    RawLabel,
    bin_label,
    bin_labels,
    natural_key,
    split_tags,
)

__all__ = [
    "Head",
    "LabelError",
    "RawLabel",
    "Sample",
    "bin_label",
    "bin_labels",
    "natural_key",
    "resolve_head",
    "split_tags",
]


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
