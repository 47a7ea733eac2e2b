"""``--fix-csv``: a copy of the run's label CSV with the audit's suggestions in new columns, for
a person to review and accept row by row. The original file is never rewritten."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from pictag.config import DataConfig
from pictag.fileio import write_text


def write_fix_csv(data: DataConfig, issues: list[dict[str, Any]], out_dir: Path) -> Path:
    """Write ``<labels stem>.audit.csv`` in ``out_dir``: every row of ``data.labels``, plus
    ``audit_<head>`` (the suggested label; tags joined by spaces) and ``audit_<head>_score``
    on the rows the audit flagged (found by the ``file.csv:LINE`` each finding carries).

    Raises:
        ValueError: The run's labels are not a CSV/TSV file (folders, VOC, COCO: the findings
            are in ``audit.json``).
    """
    labels = Path(data.labels) if data.labels else None
    if labels is None or labels.suffix.lower() not in (".csv", ".tsv", ".txt"):
        raise ValueError(
            "--fix-csv needs a run trained from a CSV/TSV label file; the findings are in "
            "audit.json and audit.html"
        )
    text = labels.read_text(encoding="utf-8-sig")
    dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",\t;")
    reader = csv.reader(io.StringIO(text), dialect)
    rows = [(reader.line_num, row) for row in reader]
    heads = list(dict.fromkeys(item["head"] for item in issues))
    by_line: dict[tuple[int, str], dict[str, Any]] = {}
    for item in issues:
        name, _, line = str(item.get("where", "")).rpartition(":")
        if Path(name).name == labels.name and line.isdigit():
            by_line.setdefault((int(line), item["head"]), item)
    buffer = io.StringIO()
    writer = csv.writer(buffer, dialect, lineterminator="\n")
    for number, row in rows:
        if number == rows[0][0]:  # the header
            writer.writerow([*row, *(f"audit_{h}{end}" for h in heads for end in ("", "_score"))])
            continue
        extra = []
        for head in heads:
            item = by_line.get((number, head))
            extra += [_text(item["suggested"]), f"{item['score']:.4f}"] if item else ["", ""]
        writer.writerow([*row, *extra])
    path = out_dir / f"{labels.stem}.audit.csv"
    write_text(path, buffer.getvalue())
    return path


def _text(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)
