"""Data sources: a folder tree, a CSV/TSV, Pascal VOC, COCO, YOLO, a CSV of boxes, file names or
the built-in demo set, each read into ``Sample(path, {head: raw label}, split, where)`` plus the
problems found.

A source never stops at a bad row: missing images, unparsable rows and non-matching file names
become :class:`~pictag.data.problems.Problem` entries that the checks report together. It raises
``ValueError`` only when nothing sensible can be read at all (a missing label file, a configured
column that does not exist, a folder with no class folders).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

from pictag.config import DataConfig, HeadConfig
from pictag.data.builtin import make_builtin
from pictag.data.builtin_masks import MASK_VALUES
from pictag.data.problems import Problem
from pictag.data.schema import RawLabel, Sample
from pictag.data.sources_annotations import is_voc_root, read_coco, read_voc
from pictag.data.sources_boxcsv import has_box_columns, read_boxcsv
from pictag.data.sources_common import (
    IMAGE_EXTENSIONS,
    SourceResult,
    head_kind,
    is_image_name,
    list_images,
    normalize_split,
    refine_heads,
    single_head,
    split_from_folders,
    split_note,
)
from pictag.data.sources_csv import read_csv
from pictag.data.sources_masks import attach_masks, read_masks
from pictag.data.sources_yolo import is_yolo_root, read_yolo
from pictag.heads import HeadKind, get_kind

__all__ = [
    "IMAGE_EXTENSIONS",
    "SourceResult",
    "detect_format",
    "read_filenames",
    "read_folder",
    "read_samples",
]

DEFAULT_WORKDIR = Path(".pictag-cache") / "builtin"


def read_samples(
    data: DataConfig, heads: dict[str, HeadConfig], workdir: Path | None = None
) -> SourceResult:
    """Read the images and raw labels that ``data`` points at.

    Args:
        data: The data section of the config; ``data.format`` ``auto`` is resolved by
            :func:`detect_format`.
        heads: Configured heads (may be empty: folder, object-annotation (VOC, COCO, YOLO,
            box CSV), file-name and 0/1-column CSV sources then name their heads themselves).
        workdir: Where the built-in dataset is generated (one subfolder per task); default
            ``.pictag-cache/builtin`` under the current folder.

    Returns:
        The samples, the heads used, the problems found, a one-line description and the format.

    Raises:
        ValueError: the data cannot be read at all; the message names the setting to change.
    """
    fmt = detect_format(data) if data.format == "auto" else data.format
    if fmt == "builtin":
        return _read_builtin(data, heads, workdir or DEFAULT_WORKDIR)
    # Heads that read mask folders take their labels from there, whatever the format.
    mask_heads = {name: head for name, head in heads.items() if head.masks}
    # With every head reading masks, `auto` means images and masks alone; a format named
    # explicitly (a COCO file's images, a CSV's rows) still says which images to read.
    if fmt == "masks" or (data.format == "auto" and mask_heads and len(mask_heads) == len(heads)):
        return read_masks(data, heads)
    if mask_heads:
        others = {name: head for name, head in heads.items() if name not in mask_heads}
        result = _read_format(fmt, data, others)
        samples, problems = attach_masks(result.samples, mask_heads)
        heads_used = {**result.heads, **mask_heads}
        return dataclasses.replace(
            result, samples=samples, heads=heads_used, problems=[*result.problems, *problems]
        )
    return _read_format(fmt, data, heads)


def _read_format(fmt: str, data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read a source of format ``fmt`` (not ``builtin``)."""
    readers = {
        "masks": read_masks,
        "folder": read_folder,
        "csv": read_csv,
        "voc": read_voc,
        "coco": read_coco,
        "yolo": read_yolo,
        "boxcsv": read_boxcsv,
        "filename": read_filenames,
    }
    if fmt not in readers:
        choices = ", ".join(["auto", "builtin", *readers])
        raise ValueError(f"data.format: unknown format {fmt!r}; choose one of {choices}")
    return readers[fmt](data, heads)


def detect_format(data: DataConfig) -> str:
    """The format ``auto`` stands for: ``labels`` ending in .json -> coco, other ``labels`` ->
    boxcsv when the header names box corners (``xmin..ymax``, ``x1..y2``), else csv; a
    ``pattern`` -> filename; an image folder with images/, labels/ and data.yaml -> yolo; one
    with XML annotations beside its images (Annotations/ and JPEGImages/) -> voc; else folder."""
    if data.labels:
        if data.labels.lower().endswith(".json"):
            return "coco"
        return "boxcsv" if has_box_columns(Path(data.labels)) else "csv"
    if data.pattern:
        return "filename"
    if data.images and all(is_yolo_root(Path(p)) for p in data.images):
        return "yolo"
    if data.images and all(is_voc_root(Path(p)) for p in data.images):
        return "voc"
    return "folder"


def read_folder(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read ``root/<class>/<image>`` trees (images at any depth under the class folder).

    A root whose ``train/``, ``val/`` (``valid``, ``validation``) or ``test/`` folders hold class
    folders gives each image that split. Every root in ``data.images`` is read.

    Raises:
        ValueError: no roots, a root that is not a folder, or no images in class folders.
    """
    name, head = single_head(
        heads,
        "label",
        "multiclass",
        "a folder tree (one class per folder)",
        tags=False,
        all_heads=data.all_heads,
    )
    roots = _roots(data, "the folder with one subfolder per class")
    samples: list[Sample] = []
    problems: list[Problem] = []
    for root in roots:
        for split, class_dir in _class_folders(root, problems):
            images = list_images(class_dir)
            if not images:  # a class nobody will learn: say so rather than drop it unseen
                problems.append(_empty_class(class_dir))
            samples.extend(
                Sample(path, {name: class_dir.name}, split, str(path)) for path in images
            )
    if not samples:
        raise ValueError(
            f"data.images: no images in class folders under {', '.join(map(str, roots))}; "
            "expected root/<class>/<image> (or root/train/<class>/<image>)"
        )
    classes = Counter(s.labels[name] for s in samples)
    text = f"folder {', '.join(r.name or str(r) for r in roots)}: {len(samples):,} images"
    text += f" in {len(classes)} classes{split_note(samples)}"
    return SourceResult(samples, {name: head}, problems, text, "folder")


def _class_folders(root: Path, problems: list[Problem]) -> list[tuple[str | None, Path]]:
    """(split, class folder) pairs of a root, noting stray files and folders as warnings."""
    children = _subfolders(root)
    split_dirs = [d for d in children if normalize_split(d.name) and _subfolders(d)]
    for path in sorted(root.iterdir()):
        if is_image_name(path.name) and path.is_file():
            problems.append(_ignored(path, "an image outside any class folder"))
    if not split_dirs:
        return [(None, d) for d in children]
    for folder in children:
        if folder not in split_dirs:
            problems.append(_ignored(folder, "a folder beside the split folders"))
    return [(normalize_split(s.name), d) for s in split_dirs for d in _subfolders(s)]


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _empty_class(folder: Path) -> Problem:
    message = f"class folder {folder.name!r} holds no images; the class is left out"
    fix = "add its images, or remove the folder"
    return Problem("empty_class", str(folder), message, fix, severity="warning", path=folder)


def _ignored(path: Path, what: str) -> Problem:
    fix = "move it into a class folder, or remove it"
    return Problem("ignored", str(path), f"{what}; not read", fix, severity="warning", path=path)


def read_filenames(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Take each head's label from a named group of ``data.pattern`` matched on file names.

    The pattern is applied with ``re.match`` to the file name (not the folder): anchored at the
    start, not at the end, so ``(?P<age>\\d+)_(?P<gender>\\d)_`` ignores the rest of the name.
    A head reads the group named by its ``group`` (default: the head name); with no heads
    configured, every named group becomes a multiclass head. Images in a ``train``/``val``/
    ``test`` folder get that split. Names that do not match are 'no_match' warnings.

    Raises:
        ValueError: the pattern is not a valid regex, or names no group a head needs.
    """
    pattern = _compile(data.pattern or "")
    implied = {group: HeadConfig() for group in pattern.groupindex}
    heads = refine_heads(implied, heads) if data.all_heads else dict(heads) or implied
    groups = {name: head.group or name for name, head in heads.items()}
    kinds = {name: head_kind(name, head) for name, head in heads.items()}
    for name, group in groups.items():
        if group not in pattern.groupindex:
            known = ", ".join(pattern.groupindex) or "none"
            raise ValueError(f"heads.{name}: data.pattern has no group {group!r} (groups: {known})")
    samples, problems, total = [], [], 0
    for root in _roots(data, "the folder with the images"):
        for path in list_images(root):
            total += 1
            match = pattern.match(path.name)
            if match is None:
                problems.append(_no_match(path, pattern.pattern))
                continue
            labels = {n: _group_label(match[groups[n]], kinds[n], heads[n]) for n in heads}
            samples.append(Sample(path, labels, split_from_folders(path, root), str(path)))
    text = f"file names under {', '.join(data.images)}: {total:,} images, "
    text += f"{len(samples):,} match {pattern.pattern!r}{split_note(samples)}"
    return SourceResult(samples, heads, problems, text, "filename")


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"data.pattern is not a valid regular expression: {err}") from None
    if not compiled.groupindex:
        raise ValueError(r"data.pattern needs named groups, one per head: (?P<age>\d+)_...")
    return compiled


def _group_label(value: str | None, kind: HeadKind, head: HeadConfig) -> RawLabel:
    if not value:
        return None  # an optional group that did not take part
    return kind.parse(value, head.separator)


def _no_match(path: Path, pattern: str) -> Problem:
    return Problem(
        "no_match",
        str(path),
        f"file name does not match data.pattern {pattern!r}; not read",
        "rename the file, or loosen data.pattern",
        severity="warning",
        path=path,
    )


def _read_builtin(data: DataConfig, heads: dict[str, HeadConfig], workdir: Path) -> SourceResult:
    """Generate (or reuse) the built-in dataset and read it like any CSV, or for the
    ``segmentation`` task like a mask folder (``data.format: masks``).

    The dataset fixes each head's kind (and tag separator, mask folder and mask values); a
    configured head may change its other settings.
    """
    dataset = make_builtin(data.builtin, Path(workdir) / data.builtin)
    unknown = [name for name in heads if name not in dataset.heads]
    if unknown:
        raise ValueError(
            f"heads: the built-in {data.builtin!r} dataset has no head {unknown[0]!r}; "
            f"its heads are {', '.join(dataset.heads)}"
        )
    masks = dataset.masks_dir
    fixed = {"masks": str(masks), "mask_values": dict(MASK_VALUES), "mask_colors": None}
    used = {}
    for name, kind in dataset.heads.items():
        if heads and name not in heads and not data.all_heads:
            continue  # configuring some heads selects them
        separator = " " if get_kind(kind).tags else None  # the built-in sets join tags by spaces
        used[name] = dataclasses.replace(
            heads.get(name, HeadConfig()),
            kind=kind,
            separator=separator,
            **(fixed if masks is not None else {}),
        )
    if masks is not None:  # the segmentation task: masks/ beside images/, matched by stem
        mask_data = dataclasses.replace(
            data, format="masks", images=[str(dataset.root / "images")], labels=None
        )
        result = read_masks(mask_data, used)
    else:
        boxes = dataset.labels_format == "boxcsv"  # the detection task: a row per box
        csv_data = dataclasses.replace(
            data,
            format=dataset.labels_format,
            labels=str(dataset.labels_csv),
            images=[str(dataset.root)],
            image_column=None if boxes else "image",
            split_column=None,
        )
        result = (read_boxcsv if boxes else read_csv)(csv_data, used)
    result.description = f"built-in {data.builtin!r} dataset, {result.description}"
    result.format = "builtin"
    return result


def _roots(data: DataConfig, what: str) -> list[Path]:
    if not data.images:
        raise ValueError(f"data.images: give {what} (or data.format: builtin for the demo set)")
    roots = [Path(p) for p in data.images]
    for root in roots:
        if not root.is_dir():
            raise ValueError(f"data.images: folder not found: {root}")
    return roots
