"""The built-in demo dataset: scikit-learn's handwritten digits, written as PNG files plus a CSV.

Nothing is downloaded: the 1,797 8x8 digits ship inside scikit-learn. The images are upscaled and
jittered (``digits``, multi-class) or composed 1 to 4 per canvas (``multilabel``: which digits are
present; ``multioutput``: which digits, how many, and the largest; ``detection``: a box around
each digit; ``segmentation``: a mask saying which digit each stroke pixel belongs to), then written
to disk so that pictag's ordinary sources read them exactly like user data: a CSV with one row per
image, for ``detection`` a box CSV (format ``boxcsv``) with one row per box, for ``segmentation``
a mask folder (format ``masks``; see :mod:`pictag.data.builtin_masks`).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pictag.data.builtin_masks import (
    MASK_COLUMNS,
    MASKS,
    Canvas,
    digit_canvases,
    save_mask,
    upscale,
)

TASKS = ("digits", "multilabel", "multioutput", "detection", "segmentation")  # not a head kind
BOX_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")

_HEADS = {  # not a head kind: keyed by demo task (head name -> kind)
    "digits": {"digit": "multiclass"},
    "multilabel": {"digits": "multilabel"},
    "multioutput": {"digits": "multilabel", "count": "multiclass", "largest": "multiclass"},
    "detection": {"objects": "detection"},  # not a head kind
    "segmentation": {"digit_mask": "segmentation"},  # not a head kind
}
_DEFAULT_N = {  # not a head kind: keyed by demo task
    "digits": 1797,
    "multilabel": 2000,  # not a head kind
    "multioutput": 2000,
    "detection": 2000,  # not a head kind
    "segmentation": 2000,  # not a head kind
}
# Demo task -> (label file, format); the other tasks write labels.csv, read as csv. Segmentation's
# masks.csv only indexes its masks/ folder, which the masks format reads.
_LABELS = {  # not a head kind: keyed by demo task
    "detection": ("boxes.csv", "boxcsv"),  # not a head kind
    "segmentation": ("masks.csv", "masks"),  # not a head kind
}
# Side of a canvas digit as a fraction of its quadrant. Detection and segmentation draw a wider
# range, so that their objects vary in size; the range does not change the random draws, so for a
# given seed their canvases hold the same digits in the same quadrants as the multilabel one (and
# segmentation's images are detection's).
_SCALE = (0.8, 0.95)
_DETECTION_SCALE = (0.45, 0.95)
# Bump when the drawing changes, so folders made by an older version are regenerated.
_FORMAT = 1
_META = "meta.json"
_IMAGES = "images"
_MIN_SIZE = 16
_OWN_PNG = re.compile(r"\d+\.png")


@dataclass(frozen=True)
class BuiltinDataset:
    """A generated built-in dataset on disk.

    Attributes:
        root: Folder holding ``images/`` (and ``masks/``) and the labels CSV; paths in the CSV
            are relative to it.
        labels_csv: The labels file. Format ``csv`` (``labels.csv``): one row per image,
            ``image`` then one column per head. Format ``boxcsv`` (``boxes.csv``, the
            ``detection`` task): one row per box, columns ``BOX_COLUMNS``. Format ``masks``
            (``masks.csv``, the ``segmentation`` task): an index of ``masks_dir``, one row per
            image, columns ``MASK_COLUMNS``; the masks format reads the folder, not this file.
        task: One of ``TASKS``.
        heads: Head name -> kind (``multiclass``, ``multilabel``, ``detection`` or
            ``segmentation``).
        n_images: Number of images (rows of a ``csv``; distinct filenames of a ``boxcsv``).
        labels_format: How to read the labels: ``csv``, ``boxcsv`` or ``masks``.
    """

    root: Path
    labels_csv: Path
    task: str
    heads: dict[str, str]
    n_images: int
    labels_format: str = "csv"

    @property
    def boxes_csv(self) -> Path | None:
        """The box CSV (one row per box) for the ``detection`` task, else ``None``."""
        return self.labels_csv if self.labels_format == "boxcsv" else None

    @property
    def masks_dir(self) -> Path | None:
        """The mask folder of the ``segmentation`` task (mode L PNGs named like the images;
        values ``builtin_masks.MASK_VALUES``), else ``None``."""
        return self.root / MASKS if self.labels_format == "masks" else None


def task_heads(task: str) -> dict[str, str]:
    """Head name -> kind of a built-in task, without generating anything."""
    if task not in _HEADS:
        raise ValueError(f"unknown built-in task {task!r}; choose one of {', '.join(TASKS)}")
    return dict(_HEADS[task])


def make_builtin(
    task: str,
    out_dir: str | Path,
    n_images: int | None = None,
    seed: int = 0,
    image_size: int = 64,
) -> BuiltinDataset:
    """Generate (or reuse, if already generated with the same parameters) a built-in dataset.

    Args:
        task: ``digits`` (one multiclass head ``digit``), ``multilabel`` (one multilabel head
            ``digits``), ``multioutput`` (``digits`` multilabel, ``count`` and ``largest``
            multiclass), ``detection`` (one detection head ``objects``: a box per digit,
            written to ``boxes.csv``) or ``segmentation`` (one segmentation head
            ``digit_mask``: a mask per image under ``masks/``, indexed by ``masks.csv``).
        out_dir: Folder to write ``images/``, the labels CSV and ``meta.json`` into.
        n_images: Number of images; default 1,797 for ``digits`` and 2,000 otherwise.
        seed: Seed of the random draws; the same parameters give byte-identical files.
        image_size: Side of the square images in pixels (at least 16).

    Returns:
        The dataset's paths, heads and size.

    Raises:
        ValueError: If the task is unknown or a size is out of range.
    """
    if task not in TASKS:
        raise ValueError(f"unknown built-in task {task!r}; choose one of {', '.join(TASKS)}")
    n = _DEFAULT_N[task] if n_images is None else int(n_images)
    if n < 1:
        raise ValueError(f"n_images must be at least 1, got {n}")
    if image_size < _MIN_SIZE:
        raise ValueError(f"image_size must be at least {_MIN_SIZE}, got {image_size}")
    root = Path(out_dir)
    labels_name, labels_format = _LABELS.get(task, ("labels.csv", "csv"))
    heads = dict(_HEADS[task])
    dataset = BuiltinDataset(root, root / labels_name, task, heads, n, labels_format)
    meta = {"format": _FORMAT, "task": task, "n_images": n, "seed": seed, "image_size": image_size}
    if _read_meta(root) == meta and dataset.labels_csv.is_file():
        return dataset
    _forget_previous(root)
    (root / _IMAGES).mkdir(parents=True, exist_ok=True)
    if dataset.masks_dir is not None:
        dataset.masks_dir.mkdir(exist_ok=True)
    rows = _generate(task, root, n, np.random.default_rng(seed), image_size)
    headers = {"boxcsv": list(BOX_COLUMNS), "masks": list(MASK_COLUMNS)}
    header = headers.get(labels_format, ["image", *dataset.heads])
    _write_csv(dataset.labels_csv, header, rows)
    # meta.json is written last: its presence is what marks a generation as complete.
    _write_atomic(root / _META, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return dataset


def _generate(
    task: str, root: Path, n: int, rng: np.random.Generator, size: int
) -> list[list[str]]:
    """Draw and save every image; return the CSV rows (without the header).

    One row per image, for ``detection`` one row per box (``BOX_COLUMNS``), for
    ``segmentation`` one index row per image (``MASK_COLUMNS``) beside its mask file.
    """
    images, targets = _sklearn_digits()
    name_width = max(5, len(str(n)))
    if task == "digits":
        drawn: Iterator[Canvas] = _jittered_digits(images, targets, n, rng, size)
    else:
        wide = task in ("detection", "segmentation")  # not a head kind: demo tasks
        drawn = digit_canvases(images, targets, n, rng, size, _DETECTION_SCALE if wide else _SCALE)
    rows = []
    for number, canvas in enumerate(drawn, start=1):
        relative = f"{_IMAGES}/{number:0{name_width}d}.png"
        Image.fromarray(canvas.pixels).save(root / relative, format="PNG")
        if task == "detection":  # not a head kind
            height, width = canvas.pixels.shape
            for digit, box in zip(canvas.digits, canvas.boxes, strict=True):
                rows.append([relative, str(width), str(height), str(digit), *map(str, box)])
        elif task == "segmentation":  # not a head kind
            rows.append(save_mask(root, relative, canvas))
        else:
            rows.append([relative, *_label_cells(task, canvas.digits)])
    return rows


def _label_cells(task: str, digits: list[int]) -> list[str]:
    """CSV cells for the digits drawn on one image, in the column order of the task's heads."""
    if task == "digits":
        return [str(digits[0])]
    present = " ".join(str(d) for d in sorted(set(digits)))
    if task == "multilabel":  # not a head kind: the demo task
        return [present]
    return [present, str(len(digits)), str(max(digits))]


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as uint8 images (0..16 stretched to 0..255) and their classes."""
    from sklearn.datasets import load_digits  # deferred: importing sklearn costs ~1 s

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return images, bunch.target.astype(int)


def _digit_indices(rng: np.random.Generator, count: int, total: int) -> np.ndarray:
    """Every source digit once (in random order) before any repeats."""
    rounds = -(-count // total)
    return np.concatenate([rng.permutation(total) for _ in range(rounds)])[:count]


def _jittered_digits(
    images: np.ndarray, targets: np.ndarray, n: int, rng: np.random.Generator, size: int
) -> Iterator[Canvas]:
    """One digit per image, slightly scaled and shifted so repeats are not pixel-identical."""
    max_shift = max(1, size // 16)
    for index in _digit_indices(rng, n, len(images)):
        side = round(size * rng.uniform(0.78, 0.95))
        dx, dy = rng.integers(-max_shift, max_shift + 1, size=2)
        # Centre, shift, and clamp so the scaled digit always stays inside the canvas.
        x = int(np.clip((size - side) // 2 + dx, 0, size - side))
        y = int(np.clip((size - side) // 2 + dy, 0, size - side))
        canvas = np.zeros((size, size), dtype=np.uint8)
        canvas[y : y + side, x : x + side] = upscale(images[index], side)
        yield Canvas(canvas, [int(targets[index])])


def _read_meta(root: Path) -> dict | None:
    try:
        return json.loads((root / _META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _forget_previous(root: Path) -> None:
    """Unmark an earlier generation before overwriting it, and drop its numbered PNGs (images
    and masks)."""
    meta = root / _META
    if not meta.is_file():
        return  # not a folder we made: leave whatever is in it alone
    meta.unlink()
    for folder in (root / _IMAGES, root / MASKS):
        if folder.is_dir():
            for path in folder.iterdir():
                if _OWN_PNG.fullmatch(path.name):
                    path.unlink()


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    # A fixed line terminator keeps the bytes identical across platforms.
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
