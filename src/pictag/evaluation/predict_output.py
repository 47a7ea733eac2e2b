"""What ``pictag predict`` reads and writes: image arguments expanded to files, predictions as a
table, JSON or CSV, and pictures of each image with its predicted labels beside it."""

from __future__ import annotations

import base64
import csv
import glob
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pictag.data.images import ImageError, load_rgb
from pictag.data.schema import Head
from pictag.data.sources_common import is_image_name, list_images
from pictag.evaluation.prediction import Prediction
from pictag.heads import get_kind
from pictag.heads.drawing import LINE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("table", "json", "csv")
SHOW_PX = 384  # longest side of the image in a --show picture
_GLOB_CHARS = set("*?[")


def expand_inputs(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Image files named by paths, folders (searched recursively) and glob patterns.

    Returns:
        The files, in argument order (each folder and pattern sorted), and a message for each
        folder or pattern that gave no image. A path that does not exist is kept as it is, so
        that predicting it reports the missing file.
    """
    files: list[str] = []
    problems: list[str] = []
    for item in items:
        if os.path.isdir(item):
            found = [str(path) for path in list_images(Path(item))]
            if not found:
                problems.append(f"{item}: no image files in this folder")
        elif _GLOB_CHARS & set(item) and not os.path.exists(item):
            found = sorted(
                path
                for path in glob.glob(item, recursive=True)
                if os.path.isfile(path) and is_image_name(os.path.basename(path))
            )
            if not found:
                problems.append(f"{item}: no image file matches this pattern")
        else:
            found = [item]
        files.extend(found)
    return files, problems


def format_predictions(
    predictions: Sequence[Prediction], heads: dict[str, Head], fmt: str, top_k: int | None = None
) -> str:
    """Predictions as ``table`` (decisions with their scores), ``json`` or ``csv`` (every score).

    In the table each head shows the labels it decided on, or its ``top_k`` best scores when
    ``top_k`` is given.
    """
    if fmt == "json":
        return json.dumps([p.to_dict() for p in predictions], indent=2, ensure_ascii=False)
    if fmt == "csv":
        return _csv(predictions, heads)
    if fmt == "table":
        return _table(predictions, heads, top_k)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")


def _table(predictions: Sequence[Prediction], heads: dict[str, Head], top_k: int | None) -> str:
    rows = [["image", *heads]]
    for prediction in predictions:
        if prediction.error is not None:
            rows.append([prediction.source, "(unreadable, see the message on stderr)"])
            continue
        cells = []
        for head in prediction.heads.values():
            shown = head.scores if top_k else head.labels
            cells.append(", ".join(f"{label} {head.scores[label]:.3f}" for label in shown) or "-")
        rows.append([prediction.source, *cells])
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _csv(predictions: Sequence[Prediction], heads: dict[str, Head]) -> str:
    """One row per image: the decision of each head (labels joined by ``|``), then one column
    ``head:label`` per label with its probability (empty when ``top_k`` left it out)."""
    header = ["image", "error"]
    for name, head in heads.items():
        header += [name, *(f"{name}:{label}" for label in head.labels)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for prediction in predictions:
        row = [prediction.source, prediction.error or ""]
        for name, head in heads.items():
            result = prediction.heads.get(name)
            if result is None:
                row += [""] * (1 + head.num_labels)
                continue
            scores = [result.scores.get(label) for label in head.labels]
            row += ["|".join(result.labels), *("" if s is None else f"{s:.6g}" for s in scores)]
        writer.writerow(row)
    return buffer.getvalue().rstrip("\n")


def save_figures(predictions: Sequence[Prediction], out_dir: str | Path) -> list[Path]:
    """Save ``OUT_DIR/<image name>.png`` for each readable image: the picture on the left, each
    head's best scores on the right with the decided labels in bold green.

    Returns:
        The files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    used: set[str] = set()
    for prediction in predictions:
        if prediction.error is not None:
            continue
        try:
            image = load_rgb(prediction.source)
        except ImageError:
            continue  # in-memory sources have no file to show
        size = image.size  # boxes are in the file's pixels: the thumbnail spans them
        image.thumbnail((SHOW_PX, SHOW_PX))
        path = out_dir / _unique_name(Path(prediction.source).stem, used)
        _figure(prediction, np.asarray(image), size).savefig(path)
        written.append(path)
    return written


def save_masks(predictions: Sequence[Prediction], out_dir: str | Path) -> list[Path]:
    """Write each head's mask as ``<image stem>.<head>.png`` (a palette PNG whose values are
    class indices) and put the file's path in the prediction in place of the pixels."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for prediction in predictions:
        for name, head in prediction.heads.items():
            if head.mask is None or "png" not in head.mask:
                continue
            stem = f"{Path(prediction.source).stem}.{name}"
            path = out_dir / _unique_name(stem, used)
            path.write_bytes(base64.b64decode(head.mask["png"]))
            head.mask = {"file": str(path), **{k: v for k, v in head.mask.items() if k != "png"}}
            written.append(path)
    return written


def _unique_name(stem: str, used: set[str]) -> str:
    name, number = f"{stem}.png", 1
    while name in used:
        number += 1
        name = f"{stem}_{number}.png"
    used.add(name)
    return name


def _figure(prediction: Prediction, pixels: np.ndarray, size: tuple[int, int]) -> Figure:
    """The picture and each head's decision, drawn by the head's kind; laid out in inches so
    long label lists get a taller figure."""
    # Imported here: matplotlib costs ~0.5 s, which every `pictag predict` paid before.
    from matplotlib.figure import Figure

    kinds = {name: get_kind(head.kind) for name, head in prediction.heads.items()}
    lines = sum(kinds[name].text_lines(head.scores) for name, head in prediction.heads.items())
    height = max(4.0, 0.4 + lines * LINE)
    fig = Figure(figsize=(8.5, height), dpi=100)
    axes = fig.add_axes((0.02, 0.05, 0.45, 0.88))
    axes.imshow(pixels, extent=(0, size[0], size[1], 0))
    axes.set_axis_off()
    axes.set_title(Path(prediction.source).name, fontsize=9)
    top = height - 0.4
    for name, head in prediction.heads.items():
        title = f"{name} ({head.kind})"
        top = kinds[name].draw(
            fig, axes, title, head.labels, head.scores, top, objects=head.objects, mask=head.mask
        )
    return fig
