"""The checks every box of an object-annotation source goes through, against the image's real
size: what a reader states (:class:`BoxRow`, :class:`ImageEntry`) and what is kept of it
(:func:`check_entry`). The checks never raise: each finding is a
:class:`~pictag.data.problems.Problem` naming the file and row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pictag.data.problems import Problem
from pictag.heads.boxes import MAX_OBJECTS, Box, Objects

# VOC's 1-based inclusive corners and rounding in converters put honest boxes up to a pixel
# past the border; such boxes are clipped without a warning that would only be noise.
EDGE_TOLERANCE = 1.0


@dataclass
class BoxRow:
    """One box as a file states it, before it is checked.

    Attributes:
        name: Class name (stripped).
        corners: ``(x1, y1, x2, y2)``, in pixels, or in fractions of the image when
            ``normalised`` (YOLO), which are scaled by the real size before any check.
        where: Where the box is written, for messages (``labels.csv:12``).
        label: How the message names the box when ``where`` names a whole file (``object 2``).
    """

    name: str
    corners: tuple[float, float, float, float]
    where: str
    label: str = "box"
    normalised: bool = False


@dataclass
class ImageEntry:
    """One image as an annotation file describes it.

    Attributes:
        path: The image file (already found on disk).
        where: Where the image's annotation is, for the sample and its messages.
        split: ``train``/``val``/``test`` when the source says, else None.
        boxes: Its boxes, in file order.
        names: Classes named on the image without a usable box (COCO crowd regions): tags for
            a tag-list head, nothing for a box head.
        stated: ``(width, height)`` the annotation states, if any, checked against the file.
        problems: Problems the reader found in this image's annotation; any error drops it.
        shapes: ``(class name, COCO segmentation, where)`` per outlined object (polygons or
            RLE), for segmentation heads; None when the format has no outlines.
    """

    path: Path
    where: str
    split: str | None = None
    boxes: list[BoxRow] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    stated: tuple[float, float] | None = None
    problems: list[Problem] = field(default_factory=list)
    shapes: list[tuple[str, Any, str]] | None = None


def check_box(
    row: BoxRow, size: tuple[int, int], path: Path | None
) -> tuple[Box | None, Problem | None]:
    """Check one box against the real image size.

    Returns:
        The box to keep (clipped to the image) and no problem; the clipped box and a
        ``box_clipped`` warning; or no box and a ``bad_box`` / ``box_outside`` error.
    """
    width, height = size
    x1, y1, x2, y2 = row.corners
    if row.normalised:
        x1, y1, x2, y2 = x1 * width, y1 * height, x2 * width, y2 * height
    shown = f"{row.label} {row.name!r} ({_num(x1)}, {_num(y1)}, {_num(x2)}, {_num(y2)})"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None, _box_problem(
            "bad_box", row, path, f"{shown} has a coordinate that is not a number"
        )
    if x2 <= x1 or y2 <= y1:
        return None, _box_problem("bad_box", row, path, f"{shown} {_no_area(x1, y1, x2, y2)}")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        message = f"{shown} lies wholly outside the {width}x{height} image"
        return None, _box_problem("box_outside", row, path, message)
    box = (row.name, max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
    past = max(-x1, -y1, x2 - width, y2 - height)
    if past <= EDGE_TOLERANCE:
        return box, None
    message = f"{shown} reaches {_num(past)} px past the {width}x{height} image; clipped to it"
    fix = "fix the box, or keep it clipped"
    return box, Problem("box_clipped", row.where, message, fix, "warning", path)


def _no_area(x1: float, y1: float, x2: float, y2: float) -> str:
    # Corners the wrong way round and a negative COCO/YOLO width read the same: no area.
    return (
        f"has width {_num(x2 - x1)} and height {_num(y2 - y1)}; a box needs both above 0 "
        "(x1 < x2, y1 < y2)"
    )


def _box_problem(kind: str, row: BoxRow, path: Path | None, message: str) -> Problem:
    fix = "fix or remove the box; the image is left out until then"
    return Problem(kind, row.where, message, fix, "error", path)


def _num(value: float) -> str:
    return f"{value:g}"


def check_entry(entry: ImageEntry, size: tuple[int, int]) -> tuple[Objects, list[Problem]]:
    """An image's checked objects and the problems found (the reader's own among them)."""
    problems = list(entry.problems)
    if entry.stated is not None and _differs(entry.stated, size):
        problems.append(_size_problem(entry, size))
    boxes = []
    for row in entry.boxes:
        box, problem = check_box(row, size, entry.path)
        if problem is not None:
            problems.append(problem)
        if box is not None:
            boxes.append(box)
    if len(boxes) > MAX_OBJECTS:
        message = f"{len(boxes)} boxes on one image; the first {MAX_OBJECTS} are kept"
        fix = "split the image into tiles, or accept the cut"
        problems.append(Problem("too_many_boxes", entry.where, message, fix, "warning", entry.path))
        boxes = boxes[:MAX_OBJECTS]
    return Objects(size, tuple(boxes), _checked_shapes(entry, size, problems)), problems


def _checked_shapes(
    entry: ImageEntry, size: tuple[int, int], problems: list[Problem]
) -> tuple[tuple[str, Any], ...] | None:
    """The entry's outlines; an RLE made for another image size is an error (it would paint
    the wrong pixels, or fail to decode in the middle of training)."""
    if entry.shapes is None:
        return None
    kept = []
    for name, segmentation, where in entry.shapes:
        stated = segmentation[1] if segmentation[0] == "rle" else None
        if stated is not None and list(stated) != [size[1], size[0]]:
            message = f"the RLE of {name!r} is for a {stated[1]}x{stated[0]} image, the file is "
            message += f"{size[0]}x{size[1]}"
            fix = "check that the annotation belongs to this image"
            problems.append(Problem("bad_shape", where, message, fix, path=entry.path))
            continue
        kept.append((name, segmentation))
    return tuple(kept)


def _differs(stated: tuple[float, float], size: tuple[int, int]) -> bool:
    # 0 is what some tools write when they did not know the size: not a claim to check.
    return all(stated) and (round(stated[0]), round(stated[1])) != size


def _size_problem(entry: ImageEntry, size: tuple[int, int]) -> Problem:
    stated = f"{_num(entry.stated[0])}x{_num(entry.stated[1])}" if entry.stated else "?"
    message = (
        f"the annotation states {stated}, the file is {size[0]}x{size[1]}; "
        "boxes are read in the file's pixels"
    )
    if entry.stated and (round(entry.stated[0]), round(entry.stated[1])) == size[::-1]:
        message += " (sides swapped: the file may be turned by its EXIF orientation)"
    fix = "check that the annotation belongs to this image (the boxes are not rescaled)"
    return Problem("size_mismatch", entry.where, message, fix, "warning", entry.path)
