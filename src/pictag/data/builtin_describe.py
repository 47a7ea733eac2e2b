"""What a built-in dataset holds, in words: images (and masks), heads, images per label, read
back from the files :func:`pictag.data.builtin.make_builtin` wrote (what ``pictag demo``
prints before training)."""

from __future__ import annotations

import csv
from collections import Counter

from pictag.data.builtin import BuiltinDataset
from pictag.data.builtin_masks import describe_masks
from pictag.data.schema import natural_key
from pictag.heads import get_kind


def describe(ds: BuiltinDataset) -> str:
    """Human-readable statistics: images (and masks), heads, per-label counts (read back from
    the CSV).

    Args:
        ds: A dataset returned by ``make_builtin``.

    Returns:
        Several lines of text, one block per head with the number of images per label.
    """
    if ds.labels_format == "masks":
        return "\n".join(describe_masks(ds.root, ds.labels_csv, ds.task, ds.heads))
    with ds.labels_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if ds.labels_format == "boxcsv":
        return "\n".join(_describe_boxes(ds, rows))
    lines = [f"built-in '{ds.task}' dataset: {len(rows)} images in {ds.root}"]
    lines.append(f"  labels: {ds.labels_csv}")
    for head, kind in ds.heads.items():
        cells = [row.get(head) or "" for row in rows]
        lines.extend(_describe_head(head, kind, cells))
    return "\n".join(lines)


def _describe_boxes(ds: BuiltinDataset, rows: list[dict[str, str]]) -> list[str]:
    """Statistics of a box CSV: images, boxes per image, and boxes per class."""
    n_images = len({row["filename"] for row in rows})
    lines = [f"built-in '{ds.task}' dataset: {n_images} images in {ds.root}"]
    lines.append(f"  boxes: {ds.labels_csv} ({ds.labels_format})")
    counts = Counter(row["class"] for row in rows)
    labels = sorted(counts, key=natural_key)
    width = max((len(label) for label in labels), default=0)
    for head, kind in ds.heads.items():
        mean = len(rows) / max(n_images, 1)
        lines.append(
            f"  head '{head}' ({kind}, {len(counts)} classes, {len(rows)} boxes, "
            f"{mean:.2f} per image):"
        )
        lines.extend(f"    {label:>{width}}: {counts[label]}" for label in labels)
    return lines


def _describe_head(head: str, kind: str, cells: list[str]) -> list[str]:
    spec = get_kind(kind)
    if spec.tags:
        tag_lists = [spec.parse(cell, None) for cell in cells]
        counts = Counter(tag for tags in tag_lists for tag in tags)
        mean = sum(map(len, tag_lists)) / max(len(tag_lists), 1)
        title = f"  head '{head}' ({kind}, {len(counts)} labels, {mean:.2f} per image):"
    else:
        counts = Counter(cell for cell in cells if cell)
        title = f"  head '{head}' ({kind}, {len(counts)} classes):"
    labels = sorted(counts, key=natural_key)
    width = max((len(label) for label in labels), default=0)
    lines = [title, *(f"    {label:>{width}}: {counts[label]}" for label in labels)]
    missing = sum(1 for cell in cells if not cell.strip())
    if missing:
        lines.append(f"    (no label: {missing})")
    return lines
