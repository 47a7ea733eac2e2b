"""Object annotations from Pascal VOC XML folders and COCO instances files.

Each image's objects become an :class:`~pictag.heads.boxes.Objects` (the file's real size and
its boxes in pixels), from which every configured head takes its raw label: a multilabel head
the class names, a detection head the boxes (:mod:`pictag.data.sources_boxes`). With no head
configured the source feeds one multilabel head ``objects``. An image with no (kept) objects is
a known negative, not a missing label.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pictag.config import DataConfig, HeadConfig
from pictag.data.box_checks import BoxRow, ImageEntry
from pictag.data.problems import Problem
from pictag.data.sources_boxes import build_samples, describe, object_heads
from pictag.data.sources_common import ImageFinder, SourceResult
from pictag.heads.masks import IGNORE_NAME, freeze

_VOC_SPLITS = ("train", "val", "test")
# (annotation folder, image folder) pairs: the VOC devkit's own, then the lower-case layout of
# labelImg exports and of the Oxford-IIIT Pet set (annotations/xmls/).
_VOC_XML_DIRS = ("Annotations", "annotations/xmls", "annotations")
_VOC_IMAGE_DIRS = ("JPEGImages", "images")


def voc_folders(folder: Path) -> tuple[Path, Path] | None:
    """``(annotation folder, image folder)`` of a Pascal VOC root, or None if it is not one.

    The devkit layout (``Annotations/``, ``JPEGImages/``) counts as soon as both folders exist;
    the lower-case ones (``annotations/`` or ``annotations/xmls/`` beside ``images/``) only when
    the annotation folder holds XML files, since other formats use those names too.
    """
    images = next((folder / d for d in _VOC_IMAGE_DIRS if (folder / d).is_dir()), None)
    if images is None:
        return None
    if (folder / "Annotations").is_dir() and images.name == "JPEGImages":
        return folder / "Annotations", images
    for name in _VOC_XML_DIRS:
        xmls = folder / name
        if xmls.is_dir() and next(xmls.glob("*.xml"), None) is not None:
            return xmls, images
    return None


def is_voc_root(folder: Path) -> bool:
    """A Pascal VOC root: XML annotations beside an image folder (see :func:`voc_folders`)."""
    return voc_folders(folder) is not None


def read_voc(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read every Pascal VOC root in ``data.images``: one image per XML file.

    Boxes (``<bndbox>``) are used as written, in pixels: VOC's 1-based inclusive corners sit at
    most a pixel off 0-based ones, less than annotators' own spread, and labelImg writes 0-based.
    An object without a box still names its class for a tag-list head. Objects marked
    ``difficult`` are dropped unless ``data.keep_difficult``. The split comes from
    ``{train,val,test}.txt`` in ``ImageSets/Main`` (or ``annotations/``); ``trainval.txt``
    alone counts as train.

    Raises:
        ValueError: no roots are given, one is not a VOC root, or a head cannot read objects.
    """
    heads = object_heads(data, heads, "a Pascal VOC folder")
    if not data.images:
        raise ValueError("data.images: give the Pascal VOC folder (with Annotations/, JPEGImages/)")
    entries: list[ImageEntry] = []
    problems: list[Problem] = []
    for root in map(Path, data.images):
        folders = voc_folders(root)
        if folders is None:
            raise ValueError(f"data.images: {root} is not a Pascal VOC folder (no Annotations/)")
        splits = _voc_splits(root)
        for xml_path in sorted(folders[0].glob("*.xml")):
            entry, problem = _voc_entry(xml_path, folders[1], data.keep_difficult)
            if problem is not None:
                problems.append(problem)
            if entry is not None:
                entry.split = splits.get(xml_path.stem)
                entries.append(entry)
    samples, found, stats = build_samples(entries, heads)
    roots = ", ".join(Path(p).name or p for p in data.images)
    description = f"Pascal VOC {roots}: {describe(stats, samples)}"
    return SourceResult(samples, heads, problems + found, description, "voc")


def _voc_splits(root: Path) -> dict[str, str]:
    """Image id -> split from ``ImageSets/Main`` (or ``annotations/``, the Pets layout)."""
    for folder in (root / "ImageSets" / "Main", root / "annotations"):
        files = {s: folder / f"{s}.txt" for s in _VOC_SPLITS if (folder / f"{s}.txt").is_file()}
        if "train" not in files and (folder / "trainval.txt").is_file():
            files["train"] = folder / "trainval.txt"
        if files:
            break
    splits = {}
    for split, path in files.items():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                splits[line.split()[0]] = split
    return splits


def _voc_entry(
    xml_path: Path, images: Path, keep_difficult: bool
) -> tuple[ImageEntry | None, Problem | None]:
    where = str(xml_path)
    try:
        node = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as err:
        fix = "fix or remove the annotation file"
        return None, Problem("bad_row", where, f"cannot parse the XML: {err}", fix)
    filename = (node.findtext("filename") or "").strip() or f"{xml_path.stem}.jpg"
    image = images / filename
    if not image.is_file():
        fix = "check the <filename> in the XML and the image folder"
        return None, _missing_image(where, filename, str(images), fix)
    entry = ImageEntry(image, where, stated=_voc_size(node))
    for number, obj in enumerate(node.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        if not name or (difficult and not keep_difficult):
            continue
        box = obj.find("bndbox")
        if box is None:
            entry.names.append(name)
            continue
        corners = _voc_corners(box)
        if corners is None:
            message = f"object {number} ({name!r}): <bndbox> needs numbers xmin, ymin, xmax, ymax"
            entry.problems.append(Problem("bad_box", where, message, "fix the box", path=image))
            continue
        entry.boxes.append(BoxRow(name, corners, where, f"object {number}"))
    return entry, None


def _voc_size(node: ET.Element) -> tuple[float, float] | None:
    try:
        return float(node.findtext("size/width", "")), float(node.findtext("size/height", ""))
    except ValueError:  # no <size>: nothing to compare
        return None


def _voc_corners(box: ET.Element) -> tuple[float, float, float, float] | None:
    try:
        x1, y1, x2, y2 = (float(box.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError:
        return None
    return x1, y1, x2, y2


def read_coco(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read a COCO instances JSON (``data.labels``).

    Images are looked up in ``data.images`` (each in turn) or, by default, in the JSON's folder,
    a sibling ``images/`` and, for the standard layout ``annotations/instances_val2017.json``,
    ``../val2017/``. ``bbox`` is ``[x, y, width, height]`` in pixels. Crowd annotations
    (``iscrowd: 1``) give no box: COCO's evaluation ignores crowd regions, so counting them as
    objects would teach and score wrongly; their class still counts as a tag. Images with no
    annotations are negatives.

    Raises:
        ValueError: the file is missing, not JSON, or has no ``images`` list, or a head cannot
            read objects.
    """
    heads = object_heads(data, heads, "a COCO annotation file")
    path = Path(data.labels or "")
    coco = _load_json(path)
    finder = ImageFinder(
        [Path(p) for p in data.images] or _coco_roots(path), data.allow_outside_roots
    )
    entries, problems = _coco_images(coco, finder, path.name)
    categories = {c.get("id"): str(c.get("name", "")).strip() for c in coco.get("categories", [])}
    problems += _coco_annotations(coco, categories, entries, path.name)
    samples, found, stats = build_samples(list(entries.values()), heads)
    description = f"COCO {path.name}: {describe(stats, samples)}"
    return SourceResult(samples, heads, problems + found, description, "coco")


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"data.labels: COCO file not found: {path}")
    try:
        coco = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError(f"{path} is not a COCO instances file: it has no 'images' list")
    return coco


def _missing_image(where: str, name: str, looked_in: str, fix: str) -> Problem:
    return Problem("missing_file", where, f"image {name!r} not found in {looked_in}", fix)


def _coco_roots(path: Path) -> list[Path]:
    roots = [path.parent, path.parent / "images"]
    stem = path.stem
    if stem.startswith("instances_"):
        roots.append(path.parent.parent / stem.removeprefix("instances_"))
    return roots


def _coco_images(
    coco: dict[str, Any], finder: ImageFinder, file_name: str
) -> tuple[dict[Any, ImageEntry], list[Problem]]:
    """Image id -> entry (no boxes yet) for every image found; the missing ones as problems."""
    entries, problems = {}, []
    roots = ", ".join(str(r) for r in finder.roots)
    for image in coco["images"]:
        where = f"{file_name}:image_id={image.get('id')}"
        hit = finder.find(str(image.get("file_name", "")))
        if hit is None:
            problems.append(
                _missing_image(where, str(image.get("file_name")), roots, "check data.images")
            )
            continue
        stated = (image.get("width"), image.get("height"))
        known = all(isinstance(v, (int, float)) for v in stated)
        # shapes=[]: a COCO image with no annotation is all background for a segmentation head
        entries[image.get("id")] = ImageEntry(
            hit[0], where, stated=stated if known else None, shapes=[]
        )
    return entries, problems


def _coco_annotations(
    coco: dict[str, Any], categories: dict[Any, str], entries: dict[Any, ImageEntry], file_name: str
) -> list[Problem]:
    """Add each annotation to its image's entry; problems of annotations with no image."""
    listed = {image.get("id") for image in coco["images"]}
    problems = []
    for ann in coco.get("annotations", []):
        where = f"{file_name}:annotation_id={ann.get('id')}"
        image_id = ann.get("image_id")
        entry = entries.get(image_id)
        if entry is None:
            if image_id not in listed:  # a listed image that is missing was reported already
                message = f"annotation of image_id {image_id!r}, which is not in 'images'"
                problems.append(
                    Problem("missing_file", where, message, "add the image or drop the annotation")
                )
            continue
        _add_annotation(entry, ann, categories, where)
    return problems


def _add_shape(entry: ImageEntry, segmentation: Any, name: str, where: str) -> None:
    """Keep an annotation's outline (polygons or RLE) for segmentation heads."""
    if entry.shapes is None or not segmentation:
        return
    if isinstance(segmentation, list):
        good = all(
            isinstance(p, list)
            and len(p) >= 6
            and len(p) % 2 == 0
            and all(isinstance(v, (int, float)) for v in p)
            for p in segmentation
        )
    else:
        good = isinstance(segmentation, dict) and {"counts", "size"} <= set(segmentation)
    if not good:
        message = f"segmentation of {name!r} is neither polygons (lists of x, y, ...) nor an RLE"
        fix = "fix the segmentation, or remove it"
        entry.problems.append(Problem("bad_shape", where, message, fix, path=entry.path))
        return
    entry.shapes.append((name, freeze(segmentation), where))


def _add_annotation(
    entry: ImageEntry, ann: dict[str, Any], categories: dict[Any, str], where: str
) -> None:
    category = ann.get("category_id")
    if category not in categories:
        message = f"unknown category_id {category!r}"
        fix = "add the category to 'categories' or fix the id"
        entry.problems.append(Problem("unknown_class", where, message, fix, path=entry.path))
        return
    name = categories[category]
    _add_shape(entry, ann.get("segmentation"), name, where)
    bbox = ann.get("bbox")
    if ann.get("iscrowd") or bbox is None:
        entry.names.append(name)
        return
    if not (
        isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
    ):
        message = f"bbox {bbox!r} of {name!r} is not [x, y, width, height]"
        entry.problems.append(Problem("bad_box", where, message, "fix the bbox", path=entry.path))
        return
    x, y, w, h = map(float, bbox)
    entry.boxes.append(BoxRow(name, (x, y, x + w, y + h), where))
    if entry.shapes is not None and not ann.get("segmentation") and w > 0 and h > 0:
        # A box-only annotation (common in box exports) says an object is there but not which
        # of its pixels: a segmentation head ignores the box rather than learn it as background.
        outline = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        entry.shapes.append((IGNORE_NAME, freeze(outline), where))
