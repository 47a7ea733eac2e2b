"""The built-in canvases of several digits, and the ``segmentation`` task's per-pixel masks.

A canvas holds 1 to 4 of scikit-learn's digits, one per randomly chosen quadrant (``multilabel``,
``multioutput``, ``detection`` and ``segmentation`` draw the same way; the scale range sets only
the digits' sizes). Alongside the pixels, every canvas carries a tight box per digit and a mask:
0 for background, ``d + 1`` where digit ``d``'s stroke is drawn (its upscaled glyph at least
``STROKE_MIN``). Digits are pasted in order, so where two overlapped the last one would win, in
the image and in the mask alike; in quadrants they never do.

The ``segmentation`` task writes the mask as a mode ``L`` PNG of the image's size, with the
image's stem, under ``masks/``, plus an index CSV (``masks.csv``: image, mask, digits present)
that :func:`describe_masks` reads back.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pictag.data.schema import natural_key
from pictag.heads.masks import BACKGROUND

MASKS = "masks"  # folder of the segmentation task's masks, beside images/
MASK_COLUMNS = ("image", "mask", "digits")  # the index CSV: one row per image
STROKE_MIN = 64  # a glyph pixel at least this bright (of 255) is stroke, darker ones background
# What the mask values mean (heads.NAME.mask_values): 0 background, d + 1 digit d.
MASK_VALUES = {"0": BACKGROUND, **{str(d + 1): str(d) for d in range(10)}}

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Canvas:
    """One drawn image.

    Attributes:
        pixels: The greyscale image ``[size, size]`` (uint8).
        digits: The digits drawn, in drawing order.
        boxes: Per digit, the tight box ``(x1, y1, x2, y2)`` of its non-zero pixels (x2, y2
            exclusive); empty for a single jittered digit.
        mask: ``[size, size]`` uint8: 0 background, ``d + 1`` stroke of digit ``d``; None for a
            single jittered digit.
    """

    pixels: np.ndarray
    digits: list[int]
    boxes: list[Box] = field(default_factory=list)
    mask: np.ndarray | None = None


def upscale(digit: np.ndarray, side: int) -> np.ndarray:
    """An 8x8 uint8 digit resized (bicubic) to ``side`` x ``side``."""
    return np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))


def digit_canvases(
    images: np.ndarray,
    targets: np.ndarray,
    n: int,
    rng: np.random.Generator,
    size: int,
    scale: tuple[float, float],
) -> Iterator[Canvas]:
    """1 to 4 digits per image, one per randomly chosen quadrant, so they never overlap.

    Each digit's side is ``scale`` (low, high) times the quadrant's, at a random place inside
    it. The same seed and ``scale`` give the same canvases (``detection`` and ``segmentation``
    share one); another ``scale`` usually gives the same digits in the same quadrants, though
    at very small sizes the bounded draws of positions can fall out of step.
    """
    cell = size // 2
    for _ in range(n):
        count = int(rng.integers(1, 5))
        quadrants = rng.choice(4, size=count, replace=False)
        picks = rng.integers(0, len(images), size=count)
        canvas = np.zeros((size, size), dtype=np.uint8)
        mask = np.zeros((size, size), dtype=np.uint8)
        digits = [int(targets[i]) for i in picks]
        boxes = []
        for quadrant, index, digit in zip(quadrants, picks, digits, strict=True):
            side = max(1, round(cell * rng.uniform(*scale)))
            x0, y0 = (quadrant % 2) * cell, (quadrant // 2) * cell
            x = x0 + int(rng.integers(0, cell - side + 1))
            y = y0 + int(rng.integers(0, cell - side + 1))
            patch = upscale(images[index], side)
            canvas[y : y + side, x : x + side] = patch
            mask[y : y + side, x : x + side] = np.where(stroke(patch), digit + 1, 0)
            boxes.append(ink_box(patch, x, y))
        yield Canvas(canvas, digits, boxes, mask)


def stroke(patch: np.ndarray) -> np.ndarray:
    """Where a drawn glyph is stroke: at least ``STROKE_MIN``, or, for a glyph drawn so small
    that nothing reaches it, its brightest pixels (so every drawn digit has some stroke)."""
    return patch >= max(1, min(STROKE_MIN, int(patch.max())))


def ink_box(patch: np.ndarray, x: int, y: int) -> Box:
    """The tight box of ``patch``'s non-zero pixels, pasted at ``(x, y)``; x2, y2 exclusive."""
    rows = np.flatnonzero(patch.any(axis=1))
    cols = np.flatnonzero(patch.any(axis=0))
    if rows.size == 0:  # cannot happen with sklearn's digits (every one has ink)
        return x, y, x + patch.shape[1], y + patch.shape[0]
    return x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1


def save_mask(root: Path, image: str, canvas: Canvas) -> list[str]:
    """Write ``canvas``'s mask beside its image (``images/a.png`` -> ``masks/a.png``).

    Returns:
        The index CSV row: the image, the mask (both relative to ``root``) and the digits with
        stroke pixels in the mask, distinct and sorted, space-separated.
    """
    if canvas.mask is None:
        raise ValueError("a canvas of one jittered digit has no mask")
    relative = f"{MASKS}/{Path(image).name}"
    Image.fromarray(canvas.mask).save(root / relative, format="PNG")
    present = sorted(int(v) - 1 for v in np.unique(canvas.mask) if v)
    return [image, relative, " ".join(map(str, present))]


def describe_masks(root: Path, index: Path, task: str, heads: dict[str, str]) -> list[str]:
    """Statistics of a mask index CSV: images, masks on disk, and images per class."""
    with index.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    n_masks = sum(1 for row in rows if row["mask"] and (root / row["mask"]).is_file())
    lines = [f"built-in '{task}' dataset: {len(rows)} images and {n_masks} masks in {root}"]
    lines.append(f"  masks: {root / MASKS} (index {index}; value 0 = background, d+1 = digit d)")
    counts = Counter(digit for row in rows for digit in row["digits"].split())
    labels = sorted(counts, key=natural_key)
    width = max((len(label) for label in [BACKGROUND, *labels]), default=0)
    for head, kind in heads.items():
        lines.append(f"  head '{head}' ({kind}, {len(counts) + 1} classes, images per class):")
        lines.append(f"    {BACKGROUND:>{width}}: {n_masks}")
        lines.extend(f"    {label:>{width}}: {counts[label]}" for label in labels)
    return lines
