"""The CSV/TSV source: one row per image, labels in one column per head or in groups of 0/1 columns.

Real label files come from spreadsheets and scripts, so reading is forgiving where the meaning is
clear (byte-order mark, Windows line ends, spaces around cells, ids without an extension, images
spread over several folders) and reports a :class:`Problem` for each row it cannot use, with the
file name and 1-based line number, instead of stopping at the first one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pictag.config import DataConfig, HeadConfig
from pictag.data.problems import Problem
from pictag.data.schema import RawLabel, Sample
from pictag.data.sources_common import (
    ImageFinder,
    SourceResult,
    head_kind,
    kind_names,
    normalize_split,
    refine_heads,
    split_from_folders,
    split_note,
)
from pictag.data.sources_table import Table, read_table
from pictag.heads import HeadKind

TAG_SEPARATORS = ("|", ";", ",")  # tried in this order; none found -> whitespace
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "-1", "false", "no"}  # -1: Pascal VOC's "absent"


@dataclass
class HeadReader:
    """Reads one head's raw label from a row."""

    name: str
    kind: HeadKind
    indexes: list[int]  # one column, or the 0/1 group
    names: list[str]
    group: bool  # True: `columns` (0/1 group); False: `column`
    separator: str | None = None  # tag-list `column` only; None splits on whitespace

    def read(self, cells: list[str]) -> RawLabel:
        """The raw label; ValueError (message only) when a 0/1 cell is something else."""
        if self.group:
            return self._read_group(cells)
        value = cells[self.indexes[0]]
        if value == "":
            return None
        return self.kind.parse(value, self.separator)

    def _read_group(self, cells: list[str]) -> RawLabel:
        values = [cells[i] for i in self.indexes]
        if all(v == "" for v in values):
            return None
        tags = []  # an empty cell among filled ones counts as 0, as spreadsheets leave them
        for name, value in zip(self.names, values, strict=True):
            flag = parse_flag(value)
            if flag is None and value != "":
                raise ValueError(f"column {name!r} holds {value!r}, expected 1/0 (or true/false)")
            if flag:
                tags.append(name)
        return tuple(tags)


def parse_flag(value: str) -> bool | None:
    """1/true/yes -> True; 0/-1/false/no -> False (also 1.0, 0.0, -1.0); else None."""
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    try:
        number = float(text)
    except ValueError:
        return None
    return {1.0: True, 0.0: False, -1.0: False}.get(number)


def read_csv(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read a CSV or TSV label file (``data.labels``); see the module docstring.

    Raises:
        ValueError: the file is missing or not text, a configured column does not exist, or no
            heads are configured and the columns are not all 0/1.
    """
    if not data.labels:
        raise ValueError("data.labels: give the CSV/TSV label file")
    table = read_table(Path(data.labels))
    image_col = table.column(data.image_column or table.header[0], "data.image_column")
    split_col = table.column(data.split_column, "data.split_column") if data.split_column else None
    if data.all_heads:
        heads = refine_heads(_zero_one_heads(table, {image_col, split_col}) or {}, heads)
    heads = dict(heads) or _auto_heads(table, {image_col, split_col})
    readers = [_head_reader(name, head, table) for name, head in heads.items()]
    used = {r.name: dataclasses.replace(heads[r.name], separator=r.separator) for r in readers}
    finder = ImageFinder(_image_roots(data, table.path), data.allow_outside_roots)
    samples, problems, found = _read_rows(table, image_col, split_col, readers, finder)
    description = (
        f"CSV {table.path.name}: {len(table.rows):,} rows, "
        f"image column {table.header[image_col]!r}, {found:,} images found"
        + split_note(samples)
        + "".join(f", {_head_note(r)}" for r in readers)
    )
    return SourceResult(samples, used, problems, description, "csv")


def _label_columns(table: Table, skip: set[int | None]) -> list[str]:
    """The named columns other than the image and split columns."""
    return [h for i, h in enumerate(table.header) if i not in skip and h]


def _zero_one_heads(table: Table, skip: set[int | None]) -> dict[str, HeadConfig] | None:
    """``{'tags': multilabel over every label column}`` when those columns are all 0/1."""
    columns = _label_columns(table, skip)
    indexes = [table.header.index(c) for c in columns]
    binary = bool(columns) and all(_is_flags(table.cells(i)) for i in indexes)
    return {"tags": HeadConfig(kind="multilabel", columns=columns)} if binary else None


def _is_flags(cells: list[str]) -> bool:
    """Every filled cell 1/0 (true/false, yes/no), and at least one filled."""
    return any(cells) and all(cell == "" or parse_flag(cell) is not None for cell in cells)


def _auto_heads(table: Table, skip: set[int | None]) -> dict[str, HeadConfig]:
    heads = _zero_one_heads(table, skip)
    if heads is None:
        columns = _label_columns(table, skip)
        raise ValueError(
            f"{table.path.name}: no heads are configured and its label columns "
            f"({', '.join(columns) or 'none'}) are not all 0/1; name the heads, e.g. "
            "`heads: {species: multiclass}` or `heads: {tags: {kind: multilabel, column: tags}}`"
        )
    return heads


def _head_reader(name: str, head: HeadConfig, table: Table) -> HeadReader:
    kind = head_kind(name, head)
    if kind.spatial:
        raise ValueError(
            f"heads.{name} is a {kind.name} head: its boxes come from annotations, not a label "
            "cell; use data.format: boxcsv (one row per box), voc, coco or yolo"
        )
    if head.columns is not None:
        if not kind.tags:
            fits = kind_names(lambda k: k.tags)
            raise ValueError(f"heads.{name}.columns (0/1 columns) needs kind: {fits}")
        if not head.columns:
            raise ValueError(f"heads.{name}.columns is empty: list the 0/1 columns, one per tag")
        indexes = [table.column(c, f"heads.{name}.columns") for c in head.columns]
        return HeadReader(name, kind, indexes, list(head.columns), group=True)
    column = head.column or name
    index = table.column(column, f"heads.{name}.column")
    if kind.tags and head.separator is None and _is_flags(table.cells(index)):
        # `--head sea:multilabel` on a 0/1 column means the tag `sea`, not tags "0" and "1".
        return HeadReader(name, kind, [index], [column], group=True)
    separator = head.separator
    if kind.tags and separator is None:
        separator = detect_separator(table.cells(index))
    return HeadReader(name, kind, [index], [column], group=False, separator=separator)


def detect_separator(cells: list[str]) -> str | None:
    """The first of ``|``, ``;``, ``,`` found in any cell; None (whitespace) if none is."""
    return next((s for s in TAG_SEPARATORS if any(s in cell for cell in cells)), None)


def _head_note(reader: HeadReader) -> str:
    if reader.group and len(reader.names) == 1:
        return f"head {reader.name!r}: tag {reader.names[0]!r} where its 0/1 column is 1"
    if reader.group:
        return f"head {reader.name!r} from {len(reader.indexes)} 0/1 columns"
    if reader.kind.tags:
        split = "spaces" if reader.separator is None else repr(reader.separator)
        return f"head {reader.name!r} from column {reader.names[0]!r} (tags split on {split})"
    return f"head {reader.name!r} from column {reader.names[0]!r}"


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
