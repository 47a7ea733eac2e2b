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
from pathlib import Path

from pictag.config import DataConfig, HeadConfig
from pictag.data.builtin import make_builtin
from pictag.data.builtin_masks import MASK_VALUES
from pictag.data.sources_annotations import is_voc_root, read_coco, read_voc
from pictag.data.sources_boxcsv import has_box_columns, read_boxcsv
from pictag.data.sources_common import (
    IMAGE_EXTENSIONS,
    SourceResult,
)
from pictag.data.sources_csv import read_csv
from pictag.data.sources_folders import read_filenames, read_folder
from pictag.data.sources_masks import attach_masks, read_masks
from pictag.data.sources_yolo import is_yolo_root, read_yolo
from pictag.heads import get_kind

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
