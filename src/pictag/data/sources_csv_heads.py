"""How the CSV/TSV source reads each head from a row: which columns (one column per head, or a
group of 0/1 columns), the tag separator, and the heads a file implies when none are configured.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from pictag.config import HeadConfig
from pictag.data.schema import RawLabel
from pictag.data.sources_common import head_kind, kind_names
from pictag.data.sources_table import Table
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


def label_columns(table: Table, skip: set[int | None]) -> list[str]:
    """The named columns other than the image and split columns."""
    return [h for i, h in enumerate(table.header) if i not in skip and h]


def zero_one_heads(table: Table, skip: set[int | None]) -> dict[str, HeadConfig] | None:
    """``{'tags': multilabel over every label column}`` when those columns are all 0/1."""
    columns = label_columns(table, skip)
    indexes = [table.header.index(c) for c in columns]
    binary = bool(columns) and all(_is_flags(table.cells(i)) for i in indexes)
    return {"tags": HeadConfig(kind="multilabel", columns=columns)} if binary else None


def _is_flags(cells: list[str]) -> bool:
    """Every filled cell 1/0 (true/false, yes/no), and at least one filled."""
    return any(cells) and all(cell == "" or parse_flag(cell) is not None for cell in cells)


def auto_heads(table: Table, skip: set[int | None]) -> dict[str, HeadConfig]:
    heads = zero_one_heads(table, skip)
    if heads is None:
        columns = label_columns(table, skip)
        raise ValueError(
            f"{table.path.name}: no heads are configured and its label columns "
            f"({', '.join(columns) or 'none'}) are not all 0/1; name the heads, e.g. "
            "`heads: {species: multiclass}` or `heads: {tags: {kind: multilabel, column: tags}}`"
        )
    return heads


def head_reader(
    name: str,
    head: HeadConfig,
    table: Table,
    skip: Collection[int | None] = (),
) -> HeadReader:
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
    if kind.tags and column not in table.header:
        _refuse_for_flag_columns(name, column, table, skip)
    index = table.column(column, f"heads.{name}.column")
    if kind.tags and head.separator is None and _is_flags(table.cells(index)):
        # `--head sea:multilabel` on a 0/1 column means the tag `sea`, not tags "0" and "1".
        return HeadReader(name, kind, [index], [column], group=True)
    separator = head.separator
    if kind.tags and separator is None:
        separator = detect_separator(table.cells(index))
    return HeadReader(name, kind, [index], [column], group=False, separator=separator)


def _refuse_for_flag_columns(
    name: str, column: str, table: Table, skip: Collection[int | None]
) -> None:
    """A tag head named after no column, in a file whose label columns are all 0/1 (one per
    tag): say how to read those, which ``--head tags:multilabel`` from the quick start does
    not. Otherwise the column list of :meth:`Table.column` says more."""
    found = zero_one_heads(table, set(skip))
    flags = found["tags"].columns or [] if found else []
    if flags:
        shown = ", ".join(flags[:6]) + (", ..." if len(flags) > 6 else "")
        raise ValueError(
            f"heads.{name}.column: {table.path.name} has no column {column!r}, but 0/1 "
            f"columns, one per tag ({shown}): leave out --head (and heads:) to read them all "
            f"as one multilabel head, or choose some with heads.{name}.columns, e.g. "
            f"--set heads.{name}.columns=[{','.join(flags[:2])}]"
        )


def detect_separator(cells: list[str]) -> str | None:
    """The first of ``|``, ``;``, ``,`` found in any cell; None (whitespace) if none is."""
    return next((s for s in TAG_SEPARATORS if any(s in cell for cell in cells)), None)


def head_note(reader: HeadReader) -> str:
    if reader.group and len(reader.names) == 1:
        return f"head {reader.name!r}: tag {reader.names[0]!r} where its 0/1 column is 1"
    if reader.group:
        return f"head {reader.name!r} from {len(reader.indexes)} 0/1 columns"
    if reader.kind.tags:
        split = "spaces" if reader.separator is None else repr(reader.separator)
        return f"head {reader.name!r} from column {reader.names[0]!r} (tags split on {split})"
    return f"head {reader.name!r} from column {reader.names[0]!r}"
