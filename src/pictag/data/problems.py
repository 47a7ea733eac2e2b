"""A problem found in the data, named by where it is and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input data.

    Attributes:
        kind: Short machine-readable kind, e.g. ``missing_file``, ``unreadable``, ``too_large``,
            ``unknown_label``, ``no_labels``, ``conflicting_duplicate``, ``rare_label``,
            ``separator``, ``duplicate_row``, ``bad_row``, ``no_match``.
        where: Where it is, for people: ``labels.csv:12`` (file and 1-based line) or a path.
        message: What is wrong.
        fix: What to do about it.
        severity: ``error`` (the sample is dropped under the ``skip`` policy and stops a
            ``strict`` run) or ``warning`` (reported only).
        path: The image file concerned, if any.
    """

    kind: str
    where: str
    message: str
    fix: str
    severity: str = "error"
    path: Path | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.message} -> {self.fix}"
