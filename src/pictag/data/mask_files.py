"""Mask files of a segmentation head: which mask belongs to which image (by file stem), what
its values mean (the head's ``mask_values`` or ``mask_colors``), and the checks of one mask
against its image, each finding a :class:`~pictag.data.problems.Problem` naming the mask file.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from pictag.config import HeadConfig
from pictag.data.problems import Problem
from pictag.data.sources_common import list_images
from pictag.heads.masks import (
    IGNORE,
    IGNORE_NAME,
    MAX_CLASSES,
    MaskLabel,
    ValueRange,
    colour_text,
    distinct,
    parse_colours,
    parse_values,
    read_values,
    value_names,
)

MASK_SUFFIXES = ("_mask", "-mask", "_masks", "_seg", "_label", "_labels", "_gt", "_trimap")
SHOWN_VALUES = 8  # values or colours named in one message
_GREY = 0x010101  # a grey RGB colour is its value times this, packed


def mask_stem(stem: str) -> tuple[str, bool]:
    """The image stem a mask stem belongs to, and whether it is the stem itself (no suffix)."""
    lower = stem.lower()
    for suffix in MASK_SUFFIXES:
        if lower.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)], False
    return stem, True


def find_masks(folder: Path) -> tuple[dict[str, Path], list[Problem]]:
    """The mask files under ``folder`` (recursive), keyed by the image stem they belong to.

    Hidden files and macOS ``._name`` files are skipped. When two masks claim one stem, the one
    named exactly like the image wins (else the first in path order) and the other is named in
    a ``duplicate_mask`` warning.

    Returns:
        Image stem -> mask file, and the warnings.
    """
    masks: dict[str, Path] = {}
    exact: set[str] = set()
    problems = []
    for path in list_images(folder):
        stem, is_exact = mask_stem(path.stem)
        kept = masks.get(stem)
        if kept is not None:
            if is_exact and stem not in exact:
                kept, path = path, kept  # the exact name is the better claim
            message = f"two masks for image {stem!r}: {kept.name} is used, {path.name} is not"
            fix = "remove or rename one of them"
            problems.append(Problem("duplicate_mask", str(path), message, fix, "warning"))
            path = kept
        masks[stem] = path
        if path.stem == stem:
            exact.add(stem)
    return masks, problems


def lookup(masks: dict[str, Path], stem: str) -> Path | None:
    """The mask of the image named ``stem``; also one named exactly like an image whose own
    stem ends in a mask suffix (``x_seg.png`` for ``x_seg.png``, filed under ``x``)."""
    if stem in masks:
        return masks[stem]
    base, is_exact = mask_stem(stem)
    found = None if is_exact else masks.get(base)
    return found if found is not None and found.stem == stem else None


def mask_table(name: str, cfg: HeadConfig) -> tuple[ValueRange, ...]:
    """What a head's mask values mean: ``mask_colors``, else ``mask_values``, else the default.

    The default reads a value as a class index: ``labels[v]`` when the head lists its labels
    (values past the list are covered by nothing), else ``str(v)``, for 0..254; 255 is
    ``ignore`` (VOC's void border).

    Raises:
        ValueError: a key of ``heads.NAME.mask_colors`` or ``mask_values`` cannot be read.
    """
    key = "mask_colors" if cfg.mask_colors else "mask_values"
    try:
        if cfg.mask_colors:
            return parse_colours(cfg.mask_colors)
        if cfg.mask_values:
            return parse_values(cfg.mask_values)
    except ValueError as err:
        raise ValueError(f"heads.{name}.{key}: {err}") from None
    names = list(cfg.labels)[:MAX_CLASSES] if cfg.labels else [str(v) for v in range(MAX_CLASSES)]
    return (*((v, v, n) for v, n in enumerate(names)), (IGNORE, IGNORE, IGNORE_NAME))


def mask_label(
    image: Path,
    image_size: tuple[int, int],
    mask: Path,
    name: str,
    cfg: HeadConfig,
    table: tuple[ValueRange, ...],
) -> tuple[MaskLabel | None, list[Problem]]:
    """Read one mask (once) and check it against its image and head ``name``'s ``table``.

    ``image_size`` is the image's upright ``(width, height)``, EXIF turns applied (see
    :func:`~pictag.data.sources_boxes.image_size`). Problems name the mask as ``where`` and
    the image as ``path``.

    Returns:
        The label and its warnings, or None and the errors that leave the image out.
    """
    problem = partial(_problem, image, mask)
    try:
        values, colour = read_values(mask)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        fix = "replace it with a readable PNG, or remove it"
        return None, [problem("unreadable", f"cannot read the mask: {err}", fix)]
    height, width = values.shape[:2]
    if (width, height) != tuple(image_size):
        message = f"mask is {width}x{height}, image {image_size[0]}x{image_size[1]}"
        if (height, width) == tuple(image_size):
            message += " (sides swapped: the image may be turned by its EXIF orientation)"
        fix = "pair the right mask, or resize it to the image with nearest-neighbour"
        return None, [problem("size_mismatch", message, fix)]
    # A greyscale mask saved as RGB (OpenCV writes 3 channels): its grey levels are its values.
    present = distinct(values)
    grey = colour and not cfg.mask_colors and bool(np.all(present % _GREY == 0))
    if colour and not cfg.mask_colors and not grey:
        found = _listed(present.tolist(), colour=True)
        message = f"an RGB colour mask ({found}), but heads.{name}.mask_colors is not set"
        fix = f"set heads.{name}.mask_colors (colour -> class name or {IGNORE_NAME})"
        return None, [problem("colour_mask", message, fix)]
    if cfg.mask_colors and not colour:
        message = f"a greyscale or palette mask, but heads.{name}.mask_colors reads RGB masks"
        fix = f"save it as an RGB colour mask, or map its values with heads.{name}.mask_values"
        return None, [problem("value_mask", message, fix)]
    if grey:
        table = tuple((lo * _GREY, min(hi, 255) * _GREY, n) for lo, hi, n in table if lo < 256)
    names = value_names(values, table)
    unknown = [v // _GREY if grey else v for v, n in names.items() if n is None]
    if unknown:
        key = "mask_colors" if cfg.mask_colors else "mask_values"
        message = f"values no class covers: {_listed(unknown, colour=bool(cfg.mask_colors))}"
        fix = f"add them to heads.{name}.{key} (a class name or {IGNORE_NAME})"
        return None, [problem("unknown_value", message, fix)]
    classes = _ordered({n for n in names.values() if n and n != IGNORE_NAME}, table)
    label = MaskLabel(tuple(image_size), mask, table, colour, classes=classes)
    default = not (cfg.mask_values or cfg.mask_colors)
    return label, _content_warnings(classes, IGNORE_NAME in names.values(), default, name, problem)


def _problem(
    image: Path, mask: Path, kind: str, message: str, fix: str, severity: str = "error"
) -> Problem:
    """A problem of one mask: ``where`` the mask file, ``path`` the image."""
    return Problem(kind, str(mask), message, fix, severity, image)


def _listed(values: list[int], *, colour: bool) -> str:
    """Up to ``SHOWN_VALUES`` values (``#rrggbb`` colours), then how many more."""
    shown = [colour_text(v) if colour else str(v) for v in values[:SHOWN_VALUES]]
    more = len(values) - SHOWN_VALUES
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _ordered(classes: set[str], table: tuple[ValueRange, ...]) -> tuple[str, ...]:
    """``classes`` in the order the table first names them: the same for every image."""
    first: dict[str, int] = {}
    for index, (_, _, name) in enumerate(table):
        first.setdefault(name, index)
    return tuple(sorted(classes, key=lambda n: first.get(n, len(table))))


def _content_warnings(
    classes: tuple[str, ...], ignored: bool, default: bool, head: str, problem: Callable
) -> list[Problem]:
    """Warnings for a mask that teaches nothing (all ignored) or shows a single class."""
    if not classes:
        fix = "check the mask; the image is kept but teaches this head nothing"
        return [problem("empty_mask", "empty mask: every pixel is ignored", fix, "warning")]
    if len(classes) > 1:
        return []
    fix = "keep it if the image shows only that class, else check the mask"
    if ignored and default:
        # A 0/255 binary mask read by the default table: the object became `ignore`.
        fix = f"if 255 marks the object, set heads.{head}.mask_values: {{0: background, 255: ...}}"
    message = f"the whole mask is one class: {classes[0]!r}"
    return [problem("one_class_mask", message, fix, "warning")]
