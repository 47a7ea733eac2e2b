"""Object boxes from a CSV with one row per box, as labelImg converters and many tutorials write::

    filename,width,height,class,xmin,ymin,xmax,ymax
    raccoon-1.jpg,650,417,raccoon,81,88,522,408

The rows of one image need not be adjacent. The image column may also be called ``image``,
``image_path`` or ``path`` (or be set with ``data.image_column``), the class column ``label`` or
``name``, the corners ``x1,y1,x2,y2``; ``width``/``height`` are optional and checked against
the file. A row whose four box cells are empty stands for an image with no objects (a negative).
Image paths resolve like the CSV source's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pictag.config import DataConfig, HeadConfig
from pictag.data.box_checks import BoxRow, ImageEntry
from pictag.data.problems import Problem
from pictag.data.sources_boxes import build_samples, describe, object_heads
from pictag.data.sources_common import (
    ImageFinder,
    SourceResult,
    normalize_split,
    split_from_folders,
)
from pictag.data.sources_table import Table, read_table

_IMAGE_NAMES = ("filename", "image", "image_path", "path", "file")
_CLASS_NAMES = ("class", "label", "name")
_CORNER_NAMES = (("xmin", "ymin", "xmax", "ymax"), ("x1", "y1", "x2", "y2"))


@dataclass(frozen=True)
class _Columns:
    """Where each field of a row is (indexes into the header)."""

    image: int
    name: int
    corners: tuple[int, int, int, int]
    size: tuple[int, int] | None
    split: int | None


def has_box_columns(path: Path) -> bool:
    """Whether a CSV's header names box corners (``xmin..ymax`` or ``x1..y2``); False when it
    cannot be read (the CSV source then says why)."""
    try:
        with path.open(encoding="utf-8-sig") as handle:
            header = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    cells = {cell.strip().strip('"').lower() for cell in re.split(r"[,;\t|]", header)}
    return any(set(corners) <= cells for corners in _CORNER_NAMES)


def read_boxcsv(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read a CSV of boxes (``data.labels``); see the module docstring.

    Raises:
        ValueError: no file is given, it cannot be read, a needed column is missing, or a head
            cannot read objects.
    """
    heads = object_heads(data, heads, "a CSV of boxes")
    if not data.labels:
        raise ValueError("data.labels: give the CSV of boxes (one row per box)")
    table = read_table(Path(data.labels))
    columns = _find_columns(table, data)
    finder = ImageFinder(_image_roots(data, table.path), data.allow_outside_roots)
    entries, problems = _read_rows(table, columns, finder)
    samples, found, stats = build_samples(entries, heads)
    description = f"CSV of boxes {table.path.name}: {len(table.rows):,} rows, "
    description += describe(stats, samples)
    return SourceResult(samples, heads, problems + found, description, "boxcsv")


def _find_columns(table: Table, data: DataConfig) -> _Columns:
    lower = [h.lower() for h in table.header]

    def find(names: tuple[str, ...], what: str) -> int:
        index = next((lower.index(n) for n in names if n in lower), None)
        if index is None:
            found = ", ".join(repr(h) for h in table.header)
            raise ValueError(
                f"{table.path.name}: no {what} column (one of {', '.join(names)}); "
                f"its columns are: {found}"
            )
        return index

    if data.image_column:
        image = table.column(data.image_column, "data.image_column")
    else:
        image = find(_IMAGE_NAMES, "image")
    corners = next((c for c in _CORNER_NAMES if set(c) <= set(lower)), _CORNER_NAMES[0])
    x1, y1, x2, y2 = (find((c,), "box corner") for c in corners)
    size = (
        (lower.index("width"), lower.index("height")) if {"width", "height"} <= set(lower) else None
    )
    split = table.column(data.split_column, "data.split_column") if data.split_column else None
    return _Columns(image, find(_CLASS_NAMES, "class"), (x1, y1, x2, y2), size, split)


def _image_roots(data: DataConfig, csv_path: Path) -> list[Path]:
    if data.images:
        return [Path(p) for p in data.images]
    # Default: the CSV's folder and its split folders (as the CSV source), then an images/
    # folder beside the CSV or beside its folder (raccoon: data/labels.csv, images/).
    folder = csv_path.parent
    splits = sorted(p for p in folder.iterdir() if p.is_dir() and normalize_split(p.name))
    return [folder, *splits, folder / "images", folder.parent / "images"]


def _read_rows(
    table: Table, columns: _Columns, finder: ImageFinder
) -> tuple[list[ImageEntry], list[Problem]]:
    """One entry per image found, its rows' boxes added; problems of rows with no entry."""
    entries: dict[str, ImageEntry] = {}
    missing: set[str] = set()
    problems: list[Problem] = []
    first_seen: dict[tuple[str, ...], int] = {}
    for line, cells in table.rows:
        where = f"{table.path.name}:{line}"
        if tuple(cells) in first_seen:
            message = f"exact duplicate of line {first_seen[tuple(cells)]}; read once"
            problems.append(Problem("duplicate_row", where, message, "remove it", "warning"))
            continue
        first_seen[tuple(cells)] = line
        if len(cells) != len(table.header):
            message = f"{len(cells)} cells, but the header has {len(table.header)} columns"
            problems.append(Problem("bad_row", where, message, "fix the row"))
            continue
        value = cells[columns.image]
        if value in missing:
            continue  # reported at the image's first row
        entry = entries.get(value) or _new_entry(value, where, cells, columns, finder, problems)
        if entry is None:
            missing.add(value)
            continue
        entries[value] = entry
        _add_row(entry, cells, columns, where)
    return list(entries.values()), problems


def _new_entry(
    value: str,
    where: str,
    cells: list[str],
    columns: _Columns,
    finder: ImageFinder,
    problems: list[Problem],
) -> ImageEntry | None:
    """The entry of an image's first row, or None (and a problem) when it is not found."""
    hit = finder.find(value) if value else None
    if hit is None:
        problems.append(_not_found(value, where, finder))
        return None
    split = split_from_folders(*hit)
    if columns.split is not None and cells[columns.split]:
        split = normalize_split(cells[columns.split])
        if split is None:
            message = f"split {cells[columns.split]!r} is not one of train, val, test"
            problems.append(Problem("bad_row", where, message, "fix the split cell", path=hit[0]))
            return None
    return ImageEntry(hit[0], where, split, stated=_stated(cells, columns))


def _not_found(value: str, where: str, finder: ImageFinder) -> Problem:
    if not value:
        return Problem("bad_row", where, "the image column is empty", "fix the row, or remove it")
    roots = ", ".join(str(r) for r in finder.roots)
    if finder.leaves_roots(value):
        message = f"image {value!r} is outside the image folders ({roots}); not read"
        fix = "move it under data.images, or set data.allow_outside_roots: true"
        return Problem("outside_roots", where, message, fix)
    fix = "check data.images and the image column"
    return Problem("missing_file", where, f"image {value!r} not found in {roots}", fix)


def _stated(cells: list[str], columns: _Columns) -> tuple[float, float] | None:
    if columns.size is None:
        return None
    try:
        return float(cells[columns.size[0]]), float(cells[columns.size[1]])
    except ValueError:  # an empty or odd size cell: nothing to compare
        return None


def _add_row(entry: ImageEntry, cells: list[str], columns: _Columns, where: str) -> None:
    """Add a row's box to its image, a row with no box (a negative) adds nothing."""
    name = cells[columns.name]
    values = [cells[i] for i in columns.corners]
    if not any(values) and not name:
        return
    fix = "fill in the class and all four corners, or leave all five empty for no objects"
    if not all(values) or not name:
        message = f"class {name!r} with corners {values}: some of the box is missing"
        entry.problems.append(Problem("bad_row", where, message, fix, path=entry.path))
        return
    try:
        x1, y1, x2, y2 = (float(v) for v in values)
    except ValueError:
        message = f"corners {values} are not all numbers"
        entry.problems.append(Problem("bad_box", where, message, fix, path=entry.path))
        return
    entry.boxes.append(BoxRow(name, (x1, y1, x2, y2), where))
