"""Boxes as sources read them and as a detection head stores them.

A source that reads object annotations (Pascal VOC, COCO, YOLO, a CSV with one row per box) gives
every image an :class:`Objects`: the image's size and its boxes in that image's pixels. Each head
then takes what its kind needs from it (``HeadKind.from_objects``): a multilabel head the set of
class names, a detection head the boxes themselves.

A detection target is one float32 array ``[MAX_OBJECTS, 5]`` per image: rows of
``(class index, x1, y1, x2, y2)`` with the corners divided by the image's width and height, so
the same target holds for the file, the decode-once cache and the network input alike. Unused
rows have class ``PAD``; an image whose boxes are unknown for this head (not "no objects", but
no annotation at all) has every row ``MISSING``. Fixed-size rows keep detection targets
stackable like every other kind's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Box = tuple[str, float, float, float, float]  # class name, x1, y1, x2, y2 in image pixels
MAX_OBJECTS = 100  # boxes kept per image (COCO's most crowded images hold ~90)
PAD = -1.0  # class of an unused target row
MISSING = -2.0  # class of every row when the image's boxes are unknown for the head


@dataclass(frozen=True)
class Objects:
    """The objects annotated on one image: a detection head's raw label.

    Attributes:
        size: ``(width, height)`` of the image the coordinates refer to (the file's real size,
            which the sources check against what an annotation states).
        boxes: ``(class name, x1, y1, x2, y2)`` per object, in pixels, ``x1 < x2`` and
            ``y1 < y2``, inside the image. Empty: an image with no objects (a negative).
        shapes: ``(class name, COCO segmentation)`` per object outlined by polygons or RLE
            (COCO), which a segmentation head paints into a mask; None when the source has no
            outlines (VOC, YOLO, a box CSV).
    """

    size: tuple[int, int]
    boxes: tuple[Box, ...] = ()
    shapes: tuple[tuple[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        width, height = self.size
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {self.size}")
        for box in self.boxes:
            name, x1, y1, x2, y2 = box
            if not (x1 < x2 and y1 < y2):
                raise ValueError(f"box of {name!r} has no area: {box[1:]}")

    def __str__(self) -> str:
        """For messages: ``2 boxes: cat [10, 20, 110, 90], dog [...]``."""
        shown = [f"{b[0]} [{', '.join(f'{v:g}' for v in b[1:])}]" for b in self.boxes[:4]]
        more = f", ... ({len(self.boxes) - 4} more)" if len(self.boxes) > 4 else ""
        count = f"{len(self.boxes)} box" + ("" if len(self.boxes) == 1 else "es")
        return f"{count}: {', '.join(shown)}{more}" if self.boxes else "no boxes"

    @property
    def names(self) -> tuple[str, ...]:
        """Distinct class names, in order of first appearance."""
        return tuple(dict.fromkeys(box[0] for box in self.boxes))


def empty_target(missing: bool) -> np.ndarray:
    """A target with no boxes: all rows ``PAD`` (no objects) or ``MISSING`` (unknown)."""
    target = np.zeros((MAX_OBJECTS, 5), dtype=np.float32)
    target[:, 0] = MISSING if missing else PAD
    return target


def to_target(objects: Objects, classes: list[int]) -> np.ndarray:
    """The target array of ``objects`` whose boxes have class indices ``classes``.

    Raises:
        ValueError: more than ``MAX_OBJECTS`` boxes (the sources report those first).
    """
    if len(objects.boxes) > MAX_OBJECTS:
        raise ValueError(f"{len(objects.boxes)} boxes on one image; at most {MAX_OBJECTS} are kept")
    target = empty_target(missing=False)
    width, height = objects.size
    for row, (box, index) in enumerate(zip(objects.boxes, classes, strict=True)):
        _, x1, y1, x2, y2 = box
        target[row] = (index, x1 / width, y1 / height, x2 / width, y2 / height)
    return target


def present(target: np.ndarray) -> np.ndarray:
    """Bool mask of the rows of ``target [..., MAX_OBJECTS, 5]`` that are boxes."""
    return target[..., 0] >= 0


def known(targets: np.ndarray) -> np.ndarray:
    """Bool ``[N]``: images of ``targets [N, MAX_OBJECTS, 5]`` whose boxes are known."""
    return targets[:, 0, 0] != MISSING
