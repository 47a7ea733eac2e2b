"""The CSV/TSV source: one row per image, labels in one column per head or in groups of 0/1 columns.

Real label files come from spreadsheets and scripts, so reading is forgiving where the meaning is
clear (byte-order mark, Windows line ends, spaces around cells, ids without an extension, images
spread over several folders) and reports a :class:`Problem` for each row it cannot use, with the
file name and 1-based line number, instead of stopping at the first one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pictag.config import DataConfig, HeadConfig
from pictag.data.problems import Problem
from pictag.data.schema import RawLabel, Sample
from pictag.data.sources_common import (
    ImageFinder,
    SourceResult,
    normalize_split,
    refine_heads,
    split_from_folders,
    split_note,
)
from pictag.data.sources_csv_heads import (
    HeadReader,
    auto_heads,
    head_note,
    head_reader,
    zero_one_heads,
)
from pictag.data.sources_table import Table, read_table


def read_csv(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read a CSV or TSV label file (``data.labels``); see the module docstring.

    Raises:
        ValueError: the file is missing or not text, a configured column does not exist, or no
            heads are configured and the columns are not all 0/1.
    """
    if not data.labels:
        raise ValueError("data.labels: give the CSV/TSV label file")
    table = read_table(Path(data.labels))
    if not table.rows:
        raise ValueError(f"{table.path} has a header but no rows: add one row per image")
    image_col = table.column(data.image_column or table.header[0], "data.image_column")
    split_col = table.column(data.split_column, "data.split_column") if data.split_column else None
    if data.all_heads:
        heads = refine_heads(zero_one_heads(table, {image_col, split_col}) or {}, heads)
    heads = dict(heads) or auto_heads(table, {image_col, split_col})
    skip = {image_col, split_col}
    readers = [head_reader(name, head, table, skip) for name, head in heads.items()]
    used = {r.name: dataclasses.replace(heads[r.name], separator=r.separator) for r in readers}
    finder = ImageFinder(_image_roots(data, table.path), data.allow_outside_roots)
    samples, problems, found = _read_rows(table, image_col, split_col, readers, finder)
    problems.extend(_never_set(readers, samples, table.path.name))
    description = (
        f"CSV {table.path.name}: {len(table.rows):,} rows, "
        f"image column {table.header[image_col]!r}, {found:,} images found"
        + split_note(samples)
        + "".join(f", {head_note(r)}" for r in readers)
    )
    return SourceResult(samples, used, problems, description, "csv")


def _never_set(readers: list[HeadReader], samples: list[Sample], where: str) -> list[Problem]:
    """A warning for each 0/1 column of a tag head that no usable row sets to 1: the tag
    cannot be learned and is left out of the head, which should not happen unseen."""
    problems = []
    for reader in (r for r in readers if r.group and len(r.names) > 1):
        seen = {tag for s in samples for tag in (s.labels.get(reader.name) or ())}
        for column in (c for c in reader.names if c not in seen):
            message = f"head {reader.name!r}: column {column!r} is never 1; the tag is left out"
            fix = f"check the column, or leave it out of heads.{reader.name}.columns"
            problems.append(Problem("empty_label", where, message, fix, severity="warning"))
    return problems


def _image_roots(data: DataConfig, csv_path: Path) -> list[Path]:
    if data.images:
        return [Path(p) for p in data.images]
    # Default: the CSV's folder, then its split folders, the common layout of a downloaded set
    # (labels.csv beside train/ and test/).
    folder = csv_path.parent
    splits = sorted(p for p in folder.iterdir() if p.is_dir() and normalize_split(p.name))
    return [folder, *splits]


def _read_rows(
    table: Table,
    image_col: int,
    split_col: int | None,
    readers: list[HeadReader],
    finder: ImageFinder,
) -> tuple[list[Sample], list[Problem], int]:
    """Samples, problems and the number of rows whose image was found."""
    samples: list[Sample] = []
    problems: list[Problem] = []
    first_seen: dict[tuple[str, ...], int] = {}
    found = 0
    for line, cells in table.rows:
        where = f"{table.path.name}:{line}"
        if tuple(cells) in first_seen:
            problems.append(_duplicate(where, first_seen[tuple(cells)]))
            continue
        first_seen[tuple(cells)] = line
        if len(cells) != len(table.header):
            problems.append(_bad_width(where, cells, table))
            continue
        value = cells[image_col]
        hit = finder.find(value) if value else None
        found += hit is not None
        row_problems = _row_problems(where, value, hit, table.header[image_col], finder)
        labels = _read_labels(where, cells, readers, hit, row_problems)
        split = _read_split(where, cells, split_col, hit, row_problems)
        problems.extend(row_problems)
        if hit and not row_problems:
            samples.append(Sample(hit[0], labels, split, where))
    return samples, problems, found


def _read_labels(
    where: str,
    cells: list[str],
    readers: list[HeadReader],
    hit: tuple[Path, Path] | None,
    problems: list[Problem],
) -> dict[str, RawLabel]:
    """Each head's raw label; a cell that cannot be read adds a problem to ``problems``."""
    labels = {}
    for reader in readers:
        try:
            labels[reader.name] = reader.read(cells)
        except ValueError as err:
            problems.append(_bad(where, f"head {reader.name!r}: {err}", hit))
    return labels


def _read_split(
    where: str,
    cells: list[str],
    split_col: int | None,
    hit: tuple[Path, Path] | None,
    problems: list[Problem],
) -> str | None:
    """The split column's value, else the split folder the image was found in."""
    if split_col is None or not cells[split_col]:
        return split_from_folders(*hit) if hit else None
    split = normalize_split(cells[split_col])
    if split is None:
        problems.append(_bad_split(where, cells[split_col], hit))
    return split


def _row_problems(
    where: str, value: str, hit: tuple[Path, Path] | None, column: str, finder: ImageFinder
) -> list[Problem]:
    if not value:
        return [_bad(where, f"the image column {column!r} is empty", None)]
    if hit is not None:
        return []
    roots = ", ".join(str(r) for r in finder.roots)
    if finder.leaves_roots(value):
        return [
            Problem(
                "outside_roots",
                where,
                f"image {value!r} is outside the image folders ({roots}); not read",
                "move the image under data.images and fix the row, or set "
                "data.allow_outside_roots: true if you trust this label file",
            )
        ]
    return [
        Problem(
            "missing_file",
            where,
            f"image {value!r} not found in {roots}",
            f"check data.images / the image column (data.image_column, now {column!r})",
        )
    ]


def _bad(where: str, message: str, hit: tuple[Path, Path] | None) -> Problem:
    fix = "fix the row, or remove it"
    return Problem("bad_row", where, message, fix, path=hit[0] if hit else None)


def _bad_width(where: str, cells: list[str], table: Table) -> Problem:
    delimiter = "tab" if table.delimiter == "\t" else repr(table.delimiter)
    return Problem(
        "bad_row",
        where,
        f"{len(cells)} cells, but the header has {len(table.header)} columns",
        f"quote cells that contain the delimiter ({delimiter}) or fix the row",
    )


def _bad_split(where: str, value: str, hit: tuple[Path, Path] | None) -> Problem:
    return Problem(
        "bad_row",
        where,
        f"split {value!r} is not one of train, val (valid, validation), test",
        "fix the split cell, or leave it empty to let pictag choose",
        path=hit[0] if hit else None,
    )


def _duplicate(where: str, first_line: int) -> Problem:
    return Problem(
        "duplicate_row",
        where,
        f"exact duplicate of line {first_line}; read once",
        "remove the repeated row",
        severity="warning",
    )
