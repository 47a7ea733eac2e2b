"""What the object-annotation sources (Pascal VOC, COCO, YOLO, a CSV of boxes) share: the heads
they feed, the image's real size, and the samples made of their checked boxes
(:mod:`pictag.data.box_checks`).

A reader turns its file format into :class:`ImageEntry` records (an image, its boxes in pixels
or normalised, the size the annotation states) and hands them to :func:`build_samples`, which
measures each image, checks each box against the real size and gives every configured head its
raw label through ``HeadKind.from_objects``. The checks never raise: each finding is a
:class:`~pictag.data.problems.Problem` naming the file and row. An image with an error (a box
with no area, a box outside the image, an unknown class, ...) gives no sample, so a ``strict``
run stops on it and ``skip`` drops it; warnings (a clipped box, a stated size that differs from
the file's) keep the image with its boxes fixed.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pictag.config import DataConfig, HeadConfig
from pictag.data.box_checks import ImageEntry, check_entry
from pictag.data.problems import Problem
from pictag.data.schema import Sample
from pictag.data.sources_common import head_kind, kind_names, refine_heads, split_note
from pictag.heads import HeadKind
from pictag.heads.boxes import Objects

DEFAULT_HEAD = "objects"
DEFAULT_KIND = "multilabel"  # the one head of an object source when none is configured
_SIZE_WORKERS = 8  # header reads wait on the disk, not the CPU
_ORIENTATION_TAG = 0x0112


@dataclass
class BoxStats:
    """Counts of the samples made, for a source's description line."""

    images: int = 0
    boxes: int = 0
    negatives: int = 0
    classes: set[str] = field(default_factory=set)


def object_heads(
    data: DataConfig, heads: dict[str, HeadConfig], source: str
) -> dict[str, HeadConfig]:
    """The heads an object source feeds: the configured ones, else one multilabel ``objects``.

    Raises:
        ValueError: a head's kind is unknown or cannot read object annotations.
    """
    default = {DEFAULT_HEAD: HeadConfig(kind=DEFAULT_KIND)}
    if data.all_heads:
        heads = refine_heads(default, heads)
    heads = dict(heads) or default
    for name, head in heads.items():
        if head_kind(name, head).from_objects is None:
            fits = kind_names(lambda k: k.from_objects is not None)
            raise ValueError(
                f"heads.{name}.kind: a {head.kind} head cannot read object annotations "
                f"({source}); use {fits}"
            )
    return heads


def head_labels(heads: dict[str, HeadKind], objects: Objects, names: list[str]) -> dict[str, Any]:
    """Each head's raw label of one image, as its kind takes it from the image's objects.

    A tag-list head also gets the classes named without a box: an image-level tag needs no box.
    """
    labels = {}
    for name, kind in heads.items():
        raw = kind.from_objects(objects)  # object_heads let only kinds that have it through
        if kind.tags and names:
            raw = tuple(dict.fromkeys((*raw, *names)))
        labels[name] = raw
    return labels


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image as pictag decodes it (EXIF turns applied), from the
    header only.

    Raises:
        OSError, ValueError: the file cannot be opened as an image.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked later
        with Image.open(path) as im:
            width, height = im.size
            try:
                turned = int(im.getexif().get(_ORIENTATION_TAG, 1)) in (5, 6, 7, 8)
            except (OSError, SyntaxError, ValueError, TypeError):  # a corrupt EXIF block
                turned = False
    return (height, width) if turned else (width, height)


def _size_or_error(path: Path) -> tuple[int, int] | str:
    try:
        return image_size(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return str(err) or type(err).__name__


def build_samples(
    entries: list[ImageEntry], heads: dict[str, HeadConfig]
) -> tuple[list[Sample], list[Problem], BoxStats]:
    """Measure, check and label every entry: the samples, the problems and the counts."""
    kinds = {name: head_kind(name, head) for name, head in heads.items()}
    with ThreadPoolExecutor(max_workers=_SIZE_WORKERS) as pool:
        sizes = list(pool.map(_size_or_error, [entry.path for entry in entries]))
    samples, problems, stats = [], [], BoxStats()
    for entry, size in zip(entries, sizes, strict=True):
        if isinstance(size, str):
            message = f"cannot read the image's size: {size}"
            fix = "replace the file with a readable JPEG or PNG, or remove its annotation"
            problems.append(Problem("unreadable", entry.where, message, fix, path=entry.path))
            continue
        objects, found = check_entry(entry, size)
        problems.extend(found)
        if any(p.severity == "error" for p in found):
            continue  # the problem stands for the image: strict stops, skip leaves it out
        labels = head_labels(kinds, objects, entry.names)
        samples.append(Sample(entry.path, labels, entry.split, entry.where))
        stats.images += 1
        stats.boxes += len(objects.boxes)
        stats.negatives += not objects.boxes
        stats.classes.update(objects.names, entry.names)
    problems.extend(name_variants(entries))
    return samples, problems, stats


def name_variants(entries: list[ImageEntry]) -> list[Problem]:
    """A warning for each class written in several ways that differ only in case or spacing
    (``Raccoon`` and ``raccoon``): they would become separate classes."""
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}  # where each spelling is first written, to point at
    for entry in entries:
        named = [(b.name, b.where) for b in entry.boxes] + [(n, entry.where) for n in entry.names]
        for name, where in named:
            counts[name] += 1
            first.setdefault(name, where)
    groups: dict[str, list[str]] = defaultdict(list)
    for name in counts:
        groups[" ".join(name.split()).casefold()].append(name)
    problems = []
    for variants in groups.values():
        if len(variants) < 2:
            continue
        variants.sort(key=lambda n: -counts[n])
        listed = ", ".join(f"{n!r} ({counts[n]})" for n in variants)
        message = f"class names that differ only in case or spacing: {listed}"
        rename = f"{{{variants[1]!r}: {variants[0]!r}}}"
        fix = f"write one spelling, or map the others with heads.NAME.rename: {rename}"
        problems.append(Problem("class_variants", first[variants[1]], message, fix, "warning"))
    return problems


def describe(stats: BoxStats, samples: list[Sample]) -> str:
    """``200 images, 1 class, 217 boxes, 3 images with no boxes, splits ...``."""
    classes = len(stats.classes)
    text = f"{stats.images:,} images, {classes} class{'es' * (classes != 1)}, {stats.boxes:,} boxes"
    if stats.negatives:
        text += f", {stats.negatives:,} image{'s' * (stats.negatives != 1)} with no boxes"
    return text + split_note(samples)
