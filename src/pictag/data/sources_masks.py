"""Segmentation masks: a folder of mask files matched to images by name (``data.format: masks``).

Each head whose ``masks`` names a folder gets, for every image, a
:class:`~pictag.heads.masks.MaskLabel` from the mask file of the same stem (``a.png``), or of
the stem plus a usual suffix (``a_mask.png``, as PennFudan names them), or None when the image
has none: a missing target for that head only. Every mask is read once here and checked against
its image (size, values no class covers, colour masks without ``mask_colors``); as in the box
sources, a finding is a :class:`~pictag.data.problems.Problem` naming the mask file, never an
exception. An error drops the image; a warning (an empty or one-class mask) keeps it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pictag.config import DataConfig, HeadConfig
from pictag.data.problems import Problem
from pictag.data.schema import Sample
from pictag.data.sources_boxes import image_size
from pictag.data.sources_common import SourceResult, list_images, split_from_folders, split_note
from pictag.heads.masks import (
    IGNORE,
    IGNORE_NAME,
    MAX_CLASSES,
    MaskLabel,
    ValueRange,
    colour_text,
    parse_colours,
    parse_values,
    read_values,
    value_names,
)

MASK_SUFFIXES = ("_mask", "-mask", "_masks", "_seg", "_label", "_labels", "_gt", "_trimap")
SHOWN_VALUES = 8  # values or colours named in one message
SHOWN_NAMES = 5  # file names named in one summary warning
_WORKERS = 8  # mask and header reads wait on the disk and on PNG decoding, not the CPU
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


def _lookup(masks: dict[str, Path], stem: str) -> Path | None:
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
    grey = colour and not cfg.mask_colors and bool(np.all(np.unique(values) % _GREY == 0))
    if colour and not cfg.mask_colors and not grey:
        found = _listed(np.unique(values).tolist(), colour=True)
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


def attach_masks(
    samples: list[Sample], heads: dict[str, HeadConfig]
) -> tuple[list[Sample], list[Problem]]:
    """Give each sample the mask label of every head with a ``masks`` folder (None: no mask).

    Images whose mask (or own size) has an error are left out, and so are images that share a
    stem with a mask, which cannot say whose it is. Masks no image claims, and images with no
    mask, are one warning each per head.

    Returns:
        The kept samples (other heads' labels unchanged) and the problems found.

    Raises:
        ValueError: a mask folder is missing, ``mask_values``/``mask_colors`` cannot be read,
            or no mask in a head's folder matches any image.
    """
    masked = {name: cfg for name, cfg in heads.items() if cfg.masks}
    tables = {name: mask_table(name, cfg) for name, cfg in masked.items()}
    problems: list[Problem] = []
    pairs: dict[str, dict[int, Path]] = {}
    for name, cfg in masked.items():
        folder = Path(str(cfg.masks))
        if not folder.is_dir():
            raise ValueError(f"heads.{name}.masks: mask folder not found: {folder}")
        masks, found = find_masks(folder)
        pairs[name], paired = _pair(samples, masks, name, folder)
        problems += found + paired

    def label(index: int) -> tuple[Sample | None, list[Problem]]:
        wanted = {name: pairs[name].get(index) for name in masked}
        return _label_sample(samples[index], wanted, masked, tables)

    shared = {p.path for p in problems if p.kind == "shared_stem"}
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        results = list(pool.map(label, range(len(samples))))
    kept = []
    for sample, found in results:
        problems += found
        if sample is not None and sample.path not in shared:
            kept.append(sample)
    return kept, problems


def _pair(
    samples: list[Sample], masks: dict[str, Path], name: str, folder: Path
) -> tuple[dict[int, Path], list[Problem]]:
    """Sample index -> its mask, and the problems of matching by stem."""
    stems = Counter(sample.path.stem for sample in samples)
    pairs: dict[int, Path] = {}
    problems, missing = [], []
    for index, sample in enumerate(samples):
        mask = _lookup(masks, sample.path.stem)
        if mask is None:
            missing.append(sample.path)
        elif stems[sample.path.stem] > 1:
            message = f"{stems[sample.path.stem]} images are named {sample.path.stem!r}"
            fix = "give the images unique names: masks are matched by name alone"
            problems.append(Problem("shared_stem", str(mask), message, fix, path=sample.path))
        else:
            pairs[index] = mask
    if samples and not pairs and not problems:
        raise ValueError(
            f"heads.{name}.masks: no mask in {folder} is named like an image (a.png, or "
            f"a_mask.png with one of {', '.join(MASK_SUFFIXES)})"
        )
    claimed = {_lookup(masks, s.path.stem) for s in samples}
    orphans = sorted(set(masks.values()) - claimed)
    if orphans:
        message = f"{len(orphans)} mask(s) match no image: {_names(orphans)}"
        fix = "remove them or add the images"
        problems.append(Problem("orphan_mask", str(folder), message, fix, "warning"))
    if missing:
        message = f"{len(missing)} image(s) have no mask for head {name!r}: {_names(missing)}"
        fix = f"add their masks to {folder}, or keep them without a {name} target"
        problems.append(Problem("missing_mask", str(folder), message, fix, "warning"))
    return pairs, problems


def _names(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:SHOWN_NAMES])
    return shown + (", ..." if len(paths) > SHOWN_NAMES else "")


def _label_sample(
    sample: Sample,
    wanted: dict[str, Path | None],
    heads: dict[str, HeadConfig],
    tables: dict[str, tuple[ValueRange, ...]],
) -> tuple[Sample | None, list[Problem]]:
    """The sample with its mask labels, or None when an error leaves it out."""
    labels: dict[str, Any] = {**sample.labels, **dict.fromkeys(wanted)}
    if not any(wanted.values()):
        return Sample(sample.path, labels, sample.split, sample.where), []
    try:
        size = image_size(sample.path)  # upright, as the masks of a turned JPEG are drawn
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        message = f"cannot read the image's size: {err}"
        fix = "replace the file with a readable JPEG or PNG, or remove it"
        return None, [Problem("unreadable", str(sample.path), message, fix, path=sample.path)]
    problems = []
    for name, mask in wanted.items():
        if mask is not None:
            labels[name], found = mask_label(
                sample.path, size, mask, name, heads[name], tables[name]
            )
            problems += found
    if any(p.severity == "error" for p in problems):
        return None, problems
    return Sample(sample.path, labels, sample.split, sample.where), problems


def read_masks(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read every image under ``data.images`` and each head's masks (``data.format: masks``).

    An image in a ``train``/``val``/``test`` folder gets that split. Files inside a mask folder
    are masks, not images, so the mask folder may sit inside the image root (PennFudan's
    ``PedMasks`` beside ``PNGImages``); it must not hold the root itself.

    Raises:
        ValueError: a head has no ``masks``, an image root is missing or inside a mask folder,
            no images are found, or :func:`attach_masks` cannot read the masks.
    """
    lacking = [name for name, cfg in heads.items() if not cfg.masks] or ["NAME"] * (not heads)
    if lacking:
        raise ValueError(
            f"heads.{lacking[0]}.masks: set the mask folder of each segmentation head "
            "(data.format: masks reads only heads with masks)"
        )
    if not data.images:
        raise ValueError("data.images: give the folder with the images")
    mask_dirs = {name: Path(str(cfg.masks)).resolve() for name, cfg in heads.items()}
    samples = []
    for root in map(Path, data.images):
        if not root.is_dir():
            raise ValueError(f"data.images: folder not found: {root}")
        real = root.resolve()
        for name, folder in mask_dirs.items():
            if folder == real or folder in real.parents:
                raise ValueError(
                    f"heads.{name}.masks: the mask folder {folder} holds the image folder "
                    f"{root}; keep the masks in a folder of their own"
                )
        for path in list_images(root):
            if not any(d in (real / path.relative_to(root)).parents for d in mask_dirs.values()):
                samples.append(Sample(path, {}, split_from_folders(path, root), str(path)))
    if not samples:
        raise ValueError(f"data.images: no images under {', '.join(data.images)}")
    samples, problems = attach_masks(samples, heads)
    # An image with no mask for any head has nothing to learn from here (VOC's JPEGImages
    # holds far more photos than SegmentationClass has masks): left out, said once.
    unlabelled = [s for s in samples if all(v is None for v in s.labels.values())]
    if unlabelled:
        samples = [s for s in samples if any(v is not None for v in s.labels.values())]
        message = f"{len(unlabelled)} image(s) have no mask for any head and are left out: "
        message += _names([s.path for s in unlabelled])
        fix = "add their masks, or ignore this if they are not meant to be used"
        problems.append(Problem("no_mask", data.images[0], message, fix, "warning"))
    roots = ", ".join(Path(p).name or p for p in data.images)
    text = f"masks {roots}: {len(samples):,} images"
    for name in heads:
        have = sum(s.labels.get(name) is not None for s in samples)
        text += f", head {name}: {have:,} masks"
        text += f" ({len(samples) - have:,} missing)" if have < len(samples) else ""
    return SourceResult(samples, dict(heads), problems, text + split_note(samples), "masks")
