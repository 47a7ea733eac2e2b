"""Label text helpers shared by the head kinds and the data sources: tag lists, numeric bins,
natural sort order, and the error a label that cannot be encoded raises."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

RawLabel = str | tuple[str, ...] | None


class LabelError(ValueError):
    """A raw label that the head cannot encode; the message says what to do."""


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


def as_number(value: str, head: str) -> float:
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
