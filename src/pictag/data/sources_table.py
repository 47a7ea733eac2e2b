"""A CSV/TSV label file read into a header and rows, with each row's physical line number.

Forgiving where the meaning is clear: a byte-order mark, Windows or old-Mac line ends, spaces
around cells, blank lines, and a delimiter (``,`` ``;`` tab ``|``) taken from the extension or
sniffed; the cells are not interpreted here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

_DELIMITERS = ",;\t|"
_SNIFF_CHARS = 64 * 1024


@dataclass
class Table:
    """A CSV file's header and its non-blank rows with their 1-based first line numbers."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]
    delimiter: str

    def column(self, name: str, key: str) -> int:
        """Index of a column; ValueError naming the config key and listing the header."""
        if name not in self.header:
            raise ValueError(
                f"{key}: column {name!r} is not in {self.path.name}; its columns are: "
                + ", ".join(repr(h) for h in self.header)
            )
        if self.header.count(name) > 1:
            raise ValueError(f"{key}: column {name!r} appears twice in {self.path.name}'s header")
        return self.header.index(name)

    def cells(self, index: int) -> list[str]:
        """Every row's cell in one column (rows too short to have it are skipped)."""
        return [cells[index] for _, cells in self.rows if index < len(cells)]


def read_table(path: Path) -> Table:
    """Read a CSV/TSV file: BOM dropped, delimiter from the extension or sniffed, cells stripped."""
    if not path.is_file():
        raise ValueError(f"data.labels: label file not found: {path}")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            delimiter = _delimiter(path, handle.read(_SNIFF_CHARS))
            handle.seek(0)
            reader = csv.reader(handle, delimiter=delimiter, skipinitialspace=True)
            rows = []
            start = 1
            for cells in reader:
                # line_num is the last physical line read, so a quoted multi-line cell still
                # reports the line where its row starts.
                rows.append((start, [c.strip() for c in cells]))
                start = reader.line_num + 1
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err}); save it as UTF-8 CSV") from None
    except csv.Error as err:
        raise ValueError(f"{path} cannot be read as CSV: {err}") from None
    rows = [(line, cells) for line, cells in rows if any(cells)]  # blank lines
    if not rows:
        raise ValueError(f"{path} is empty: expected a header row and one row per image")
    (_, header), *body = rows
    return Table(path, header, body, delimiter)


def _delimiter(path: Path, sample: str) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    first_line = sample.splitlines()[0] if sample else ""
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:  # one column, or too irregular to tell
        delimiter = ","
    if delimiter not in first_line:
        # The header is the most reliable line (names rarely hold separators); trust it over
        # a sniff that picked e.g. the '|' inside tag lists.
        delimiter = next((d for d in _DELIMITERS if d in first_line), ",")
    return delimiter
