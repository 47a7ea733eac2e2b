"""Plain-text tables for the terminal, shared by the head kinds' report text
(:mod:`pictag.heads.multiclass_text`, :mod:`pictag.heads.multilabel_text`).

They read the plain dicts of ``report.json``, where an undefined metric is ``None`` (or NaN
before :func:`pictag.evaluation.evaluate.json_ready`); it prints as "-", never as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DASH = "-"
LABEL_CHARS = 40  # longer label names are cut, so one long name cannot widen every row


def number(value: Any, digits: int = 4) -> str:
    """A metric or count as text: integers as they are, floats to ``digits`` decimals, "-" for
    None, NaN and anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return DASH
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}" if math.isfinite(value) else DASH


def short(label: Any, limit: int = LABEL_CHARS) -> str:
    """A label name cut to ``limit`` characters, the cut marked with "…"."""
    text = str(label)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a table: the first column left-aligned (names), the others right-aligned
    (numbers), columns two spaces apart, trailing spaces stripped.

    Args:
        header: Column titles.
        rows: Cells as text, each row as long as ``header``; an empty row prints as a blank
            line (e.g. between the labels and the averages).
    """
    widths = [max(len(row[i]) for row in [header, *rows] if row) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        if not row:
            lines.append("")
            continue
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells).rstrip())
    return lines
