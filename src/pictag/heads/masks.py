"""Masks as sources read them and as a segmentation head stores them.

A segmentation head's raw label is a :class:`MaskLabel`: where the image's mask comes from (a
mask file, or COCO polygons / RLE of its objects) and how the values in it map to class names.
Sources build it once they have checked the file (:mod:`pictag.data.sources_masks`); the
pixels are read again only when a target is made.

A target is one uint8 array ``[MASK_SIDE, MASK_SIDE]`` per image: the class index of every
pixel of the whole image resized (nearest neighbour, aspect ratio not kept, as the network sees
a ``whole`` image), with ``IGNORE`` where a pixel counts for nothing (a void border, a trimap's
unclassified band) and everywhere when the image has no mask for this head. A fixed size keeps
segmentation targets stackable like every other kind's; 256 is above the usual input sizes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

IGNORE = 255  # pixel value of "counts for nothing", in targets and in VOC's palette masks
IGNORE_NAME = "ignore"  # the class name in `mask_values` / `mask_colors` that means IGNORE
BACKGROUND = "background"  # the class of pixels that no polygon covers
MASK_SIDE = 256
MAX_CLASSES = IGNORE  # class indices 0..254 fit a uint8 target beside IGNORE
LOOKUP_LIMIT = 1 << 16  # masks with values below this map through a table, not a sort

# (lowest value, highest value, class name or IGNORE_NAME); colours are packed 0xRRGGBB ints.
ValueRange = tuple[int, int, str]
Shape = tuple[str, Any]  # class name, COCO segmentation as `freeze` makes it hashable


@dataclass(frozen=True)
class MaskLabel:
    """One image's mask: a segmentation head's raw label.

    Attributes:
        size: ``(width, height)`` of the image.
        path: The mask file; None for a mask drawn from ``shapes``.
        table: What the file's values mean, as ranges; colour masks use packed RGB values.
        colour: The file is an RGB colour-coded mask (values are ``0xRRGGBB``).
        shapes: COCO polygons or RLE of the image's objects, painted in order over
            ``BACKGROUND``.
        classes: The class names present in the mask (read when the source checked it), so
            a head's label list is known without reading the masks again.
    """

    size: tuple[int, int]
    path: Path | None = None
    table: tuple[ValueRange, ...] = ()
    colour: bool = False
    shapes: tuple[Shape, ...] = ()
    classes: tuple[str, ...] = ()

    def __str__(self) -> str:
        """For messages: the file, or how many shapes, and the classes in it."""
        where = str(self.path) if self.path else f"{len(self.shapes)} shape(s)"
        return f"mask {where} ({', '.join(self.classes) or 'no classes'})"

    def renamed(self, rename: dict[str, str]) -> MaskLabel:
        """The same mask with class names renamed (``heads.NAME.rename``)."""
        if not rename:
            return self
        name = lambda n: n if n == IGNORE_NAME else rename.get(n, n)  # noqa: E731
        return replace(
            self,
            table=tuple((lo, hi, name(n)) for lo, hi, n in self.table),
            shapes=tuple((name(n), s) for n, s in self.shapes),
            classes=tuple(dict.fromkeys(name(n) for n in self.classes)),
        )


def freeze(segmentation: Any) -> tuple:
    """A COCO segmentation (polygon lists or an RLE dict) as nested tuples, hashable like
    every raw label: ``("polygons", ((x, y, ...), ...))`` or ``("rle", (h, w), counts)``."""
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        counts = tuple(counts) if isinstance(counts, list) else counts
        return ("rle", tuple(segmentation["size"]), counts)
    return ("polygons", tuple(tuple(float(v) for v in polygon) for polygon in segmentation))


def parse_values(values: dict[Any, str] | None) -> tuple[ValueRange, ...]:
    """``heads.NAME.mask_values`` as ranges: keys are ints (``3``) or ranges (``"1-255"``).

    Raises:
        ValueError: a key is not a non-negative int or ``lo-hi`` range.
    """
    ranges = []
    for key, name in (values or {}).items():
        text = str(key).strip()
        lo_text, dash, hi_text = text.partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if dash else lo
        except ValueError:
            raise ValueError(
                f"mask value {key!r} is not a number or a range such as 1-255"
            ) from None
        if lo < 0 or hi < lo:
            raise ValueError(f"mask value range {key!r} must be non-negative and ascending")
        ranges.append((lo, hi, str(name)))
    return tuple(ranges)


def parse_colours(colours: dict[str, str] | None) -> tuple[ValueRange, ...]:
    """``heads.NAME.mask_colors`` (``"#ff0000"`` or ``"255,0,0"`` -> class) as packed values.

    Raises:
        ValueError: a colour is neither ``#rrggbb`` nor three 0-255 numbers.
    """
    ranges = []
    for key, name in (colours or {}).items():
        value = packed_colour(str(key))
        ranges.append((value, value, str(name)))
    return tuple(ranges)


def packed_colour(text: str) -> int:
    """``#rrggbb`` or ``r,g,b`` as ``0xRRGGBB``."""
    text = text.strip()
    try:
        if text.startswith("#") and len(text) == 7:
            return int(text[1:], 16)
        parts = [int(p) for p in text.replace(" ", "").split(",")]
        if len(parts) == 3 and all(0 <= p <= 255 for p in parts):
            return (parts[0] << 16) | (parts[1] << 8) | parts[2]
    except ValueError:
        pass
    raise ValueError(f"mask colour {text!r} must be #rrggbb or r,g,b")


def colour_text(value: int) -> str:
    """``0xRRGGBB`` as ``#rrggbb`` for messages."""
    return f"#{int(value):06x}"


def read_values(path: Path) -> tuple[np.ndarray, bool]:
    """A mask file's raw values ``[h, w]`` and whether they are packed RGB colours.

    Palette PNGs give their palette indices (VOC's ``SegmentationClass``), greyscale and
    16-bit PNGs their values, RGB files ``0xRRGGBB``.

    Raises:
        OSError, ValueError: the file is not a readable image.
    """
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGB", "RGBA"):
            rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
            return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2], True
        if image.mode in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
            return np.asarray(image, dtype=np.int64), False
        return np.asarray(image.convert("L"), dtype=np.int64), False


def value_names(values: np.ndarray, table: Sequence[ValueRange]) -> dict[int, str | None]:
    """Each distinct value of ``values`` -> its class name (``IGNORE_NAME`` included), None
    for a value that no range covers."""
    names: dict[int, str | None] = {}
    for value in distinct(values).tolist():
        names[value] = next((n for lo, hi, n in table if lo <= value <= hi), None)
    return names


def distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values of a mask, ascending: counted (linear time) for greyscale and
    16-bit masks, sorted only for packed colours."""
    if values.size and values.min() >= 0 and values.max() < LOOKUP_LIMIT:
        return np.flatnonzero(np.bincount(values.ravel()))
    return np.unique(values)


def class_map(
    label: MaskLabel, classes: dict[str, int], size: tuple[int, int] | None = None
) -> np.ndarray:
    """The mask as class indices (uint8), ``IGNORE`` for ignored pixels, for values no range
    covers, and for classes not in ``classes``; at the image's size, or resized (nearest
    neighbour) to ``size`` ``(h, w)``.

    Raises:
        OSError, ValueError: the mask file cannot be read.
    """
    width, height = label.size
    if label.path is None:
        painted = _paint_shapes(label, classes, (height, width))
        return painted if size is None else resize_nearest(painted, size)
    values, _ = read_values(label.path)
    if size is not None:  # nearest neighbour keeps values: map the fewer pixels after it
        values = resize_nearest(values, size)
    names = value_names(values, label.table)
    lookup = {v: classes.get(n or IGNORE_NAME, IGNORE) for v, n in names.items()}
    if values.max(initial=0) < LOOKUP_LIMIT:  # greyscale and 16-bit masks: one table lookup
        table = np.full(int(values.max(initial=0)) + 1, IGNORE, dtype=np.uint8)
        table[list(lookup)] = list(lookup.values())
        return table[values]
    uniq, inverse = np.unique(values, return_inverse=True)  # packed colours
    mapped = np.array([lookup[v] for v in uniq.tolist()], dtype=np.uint8)
    return mapped[inverse.reshape(values.shape)]


def _paint_shapes(label: MaskLabel, classes: dict[str, int], size: tuple[int, int]) -> np.ndarray:
    """COCO polygons / RLE painted in order over the background class: the label's first class
    (``BACKGROUND``, or what ``heads.NAME.rename`` made of it)."""
    height, width = size
    background = label.classes[0] if label.classes else BACKGROUND
    out = np.full((height, width), classes.get(background, IGNORE), dtype=np.uint8)
    with warnings.catch_warnings():  # pycocotools' own use of numpy aliases that numpy 2 warns of
        warnings.simplefilter("ignore", DeprecationWarning)
        _paint(out, label.shapes, classes)
    return out


def _paint(out: np.ndarray, shapes: Sequence[Shape], classes: dict[str, int]) -> None:
    from pycocotools import mask as coco_mask

    height, width = out.shape
    for name, (form, *data) in shapes:
        if form == "polygons":
            polygons = [list(polygon) for polygon in data[0]]
            rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
        elif isinstance(data[1], tuple):  # uncompressed RLE: counts as a list of runs
            rle = coco_mask.frPyObjects({"size": list(data[0]), "counts": list(data[1])}, *data[0])
        else:
            counts = data[1].encode("ascii") if isinstance(data[1], str) else data[1]
            rle = {"size": list(data[0]), "counts": counts}
        covered = coco_mask.decode(rle).astype(bool)
        out[covered] = classes.get(name, IGNORE)


def to_target(label: MaskLabel | None, classes: dict[str, int]) -> np.ndarray:
    """The ``[MASK_SIDE, MASK_SIDE]`` uint8 target; all ``IGNORE`` for a missing mask."""
    if label is None:
        return np.full((MASK_SIDE, MASK_SIDE), IGNORE, dtype=np.uint8)
    return class_map(label, classes, (MASK_SIDE, MASK_SIDE))


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A class-index mask resized to ``(h, w)`` by nearest neighbour (pixel centres)."""
    height, width = size
    rows = ((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.int64)
    return mask[np.minimum(rows, mask.shape[0] - 1)][:, np.minimum(cols, mask.shape[1] - 1)]


def pixel_counts(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each class ``[C]`` in class maps of any shape, ``IGNORE`` left out."""
    targets = np.asarray(targets)
    counts = np.bincount(targets[targets != IGNORE].ravel(), minlength=num_classes)
    return counts.astype(np.int64)


def presence(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Bool ``[N, C]``: which classes each class map of ``targets [N, H, W]`` holds."""
    targets = np.asarray(targets)
    present = np.zeros((len(targets), num_classes), dtype=bool)
    for row, target in enumerate(targets):
        present[row] = pixel_counts(target, num_classes)[:num_classes] > 0
    return present


def known(targets: np.ndarray) -> np.ndarray:
    """Bool ``[N]``: images of ``targets [N, H, W]`` with at least one pixel not ignored."""
    targets = np.asarray(targets)
    return (targets != IGNORE).reshape(len(targets), -1).any(axis=1)
