"""Object boxes in the YOLO (Ultralytics) layout: ``images/``, ``labels/`` and ``data.yaml``.

``labels/<path>.txt`` holds the boxes of ``images/<path>.<ext>``, one line
``class_id cx cy w h`` each, the centre and size as fractions of the image's width and height;
``data.yaml`` names the classes (``names:`` a list, or a mapping id -> name). An image with no
label file, or an empty one, is a negative: Ultralytics reads it so, and datasets rely on it to
hold background images. The boxes are scaled by the image file's real size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pictag.config import DataConfig, HeadConfig
from pictag.data.box_checks import BoxRow, ImageEntry
from pictag.data.problems import Problem
from pictag.data.sources_boxes import build_samples, describe, object_heads
from pictag.data.sources_common import (
    SourceResult,
    list_images,
    normalize_split,
    split_from_folders,
)

DATA_YAML = "data.yaml"
_SPLIT_KEYS = ("train", "val", "test")
_SKIP_LABELS = {"classes.txt"}  # class lists some exporters leave beside the label files


def is_yolo_root(folder: Path) -> bool:
    """A YOLO root holds ``images/``, ``labels/`` and ``data.yaml``."""
    return (
        all((folder / name).is_dir() for name in ("images", "labels"))
        and (folder / DATA_YAML).is_file()
    )


def read_yolo(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read every YOLO root in ``data.images`` (``data.labels`` may name the YAML file).

    The split of an image comes from ``data.yaml``'s ``train``/``val``/``test`` (folders, or
    ``.txt`` lists of images) when they name it, else from a ``train``/``val``/``test`` folder
    on its path (``images/train/...``).

    Raises:
        ValueError: no roots, a root without ``images/`` and ``labels/``, a YAML file that is
            missing or names no classes, or a head that cannot read objects.
    """
    heads = object_heads(data, heads, "a YOLO folder")
    if not data.images:
        raise ValueError("data.images: give the YOLO folder (with images/, labels/, data.yaml)")
    entries: list[ImageEntry] = []
    problems: list[Problem] = []
    for root in map(Path, data.images):
        if not ((root / "images").is_dir() and (root / "labels").is_dir()):
            raise ValueError(f"data.images: {root} is not a YOLO folder (no images/ and labels/)")
        yaml_path = Path(data.labels) if data.labels else root / DATA_YAML
        config = _load_yaml(yaml_path)
        names = _class_names(config, yaml_path)
        splits = _yaml_splits(config, yaml_path)
        images = list_images(root / "images")
        for image in images:
            split = splits.get(image.resolve()) or split_from_folders(image, root / "images")
            entries.append(_entry(root, image, names, split))
        problems.extend(_orphan_labels(root, images))
    samples, found, stats = build_samples(entries, heads)
    roots = ", ".join(Path(p).name or p for p in data.images)
    description = f"YOLO {roots}: {describe(stats, samples)}"
    return SourceResult(samples, heads, problems + found, description, "yolo")


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"data.labels: YOLO data file not found: {path} (it names the classes)")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping with `names:`")
    return config


def _class_names(config: dict[str, Any], path: Path) -> dict[int, str]:
    """Class id -> name from ``names:``, a list or a mapping."""
    names = config.get("names")
    if isinstance(names, list):
        return {i: str(name).strip() for i, name in enumerate(names)}
    if isinstance(names, dict):
        try:
            return {int(i): str(name).strip() for i, name in names.items()}
        except (TypeError, ValueError):
            pass
    raise ValueError(f"{path}: `names:` must list the class names, or map class ids to them")


def _yaml_splits(config: dict[str, Any], path: Path) -> dict[Path, str]:
    """Resolved image path -> split, for the images ``train:``/``val:``/``test:`` name."""
    base = path.parent / str(config.get("path") or "")
    if not base.is_dir():  # a `path:` written for another machine: the YAML's folder instead
        base = path.parent
    splits: dict[Path, str] = {}
    for key in _SPLIT_KEYS:
        values = config.get(key)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and value:
                for image in _split_images(base / value):
                    splits[image.resolve()] = normalize_split(key) or key
    return splits


def _split_images(target: Path) -> list[Path]:
    """The images a split entry names: a folder's images, or the lines of a ``.txt`` list
    (relative to the list's folder, as Ultralytics reads ``./images/...``)."""
    if target.is_dir():
        return list_images(target)
    if target.suffix == ".txt" and target.is_file():
        lines = target.read_text(encoding="utf-8-sig").splitlines()
        return [target.parent / line.strip() for line in lines if line.strip()]
    return []


def _entry(root: Path, image: Path, names: dict[int, str], split: str | None) -> ImageEntry:
    """The image's entry, with the boxes of its label file if it has one."""
    relative = image.relative_to(root / "images").with_suffix(".txt")
    label = root / "labels" / relative
    if not label.is_file():
        return ImageEntry(image, str(image), split)
    where = (Path("labels") / relative).as_posix()
    entry = ImageEntry(image, where, split)
    try:
        lines = label.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        fix = "rewrite it as UTF-8 text, one box a line"
        entry.problems.append(Problem("bad_row", where, f"cannot read: {err}", fix, path=image))
        return entry
    for number, line in enumerate(lines, start=1):
        if line.strip():
            _read_line(entry, line, f"{where}:{number}", names)
    return entry


def _read_line(entry: ImageEntry, line: str, where: str, names: dict[int, str]) -> None:
    """Add one ``class cx cy w h`` line's box to ``entry``, or its problem."""
    fields = line.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"{len(fields)} fields (segment polygons are not read)")
        number = float(fields[0])
        cx, cy, w, h = (float(v) for v in fields[1:])
    except ValueError as err:
        message = f"expected `class_id cx cy w h`, got {line.strip()!r}: {err}"
        fix = "fix the line, or remove it"
        entry.problems.append(Problem("bad_row", where, message, fix, path=entry.path))
        return
    if not number.is_integer() or int(number) not in names:
        message = f"class id {fields[0]} is not in data.yaml's names (0-{len(names) - 1})"
        fix = "fix the id, or add the class to `names:`"
        entry.problems.append(Problem("unknown_class", where, message, fix, path=entry.path))
        return
    corners = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    entry.boxes.append(BoxRow(names[int(number)], corners, where, normalised=True))


def _orphan_labels(root: Path, images: list[Path]) -> list[Problem]:
    """A ``missing_file`` error for each label file whose image is not in ``images/``."""
    stems = {p.relative_to(root / "images").with_suffix("") for p in images}
    problems = []
    for label in sorted((root / "labels").rglob("*.txt")):
        relative = label.relative_to(root / "labels").with_suffix("")
        if label.name in _SKIP_LABELS or label.name.startswith(".") or relative in stems:
            continue
        where = (Path("labels") / relative).as_posix() + ".txt"
        message = f"no image images/{relative.as_posix()}.* for these boxes"
        fix = "add the image, or remove the label file"
        problems.append(Problem("missing_file", where, message, fix))
    return problems
