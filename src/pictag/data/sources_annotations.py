"""Detection-style annotation sources read as multi-label data: Pascal VOC and COCO.

Each image's label is the set of object class names drawn in it (boxes themselves are not used);
an image with no (kept) objects gets an empty tuple, a known "nothing here" rather than a missing
label.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from pictag.config import DataConfig, HeadConfig
from pictag.data.problems import Problem
from pictag.data.schema import Sample
from pictag.data.sources_common import ImageFinder, SourceResult, single_head, split_note

_VOC_SPLITS = ("train", "val", "test")


def is_voc_root(folder: Path) -> bool:
    """A Pascal VOC root holds ``Annotations/`` and ``JPEGImages/``."""
    return (folder / "Annotations").is_dir() and (folder / "JPEGImages").is_dir()


def read_voc(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read every Pascal VOC root in ``data.images`` into one multilabel head of object names.

    Objects marked ``difficult`` are dropped unless ``data.keep_difficult``. The split comes from
    ``ImageSets/Main/{train,val,test}.txt`` (``trainval.txt`` alone counts as train).

    Raises:
        ValueError: no roots are given, or one is not a VOC root.
    """
    name, head = single_head(
        heads, "objects", "multilabel", "a Pascal VOC folder", tags=True, all_heads=data.all_heads
    )
    if not data.images:
        raise ValueError("data.images: give the Pascal VOC folder (with Annotations/, JPEGImages/)")
    samples: list[Sample] = []
    problems: list[Problem] = []
    for root in map(Path, data.images):
        if not is_voc_root(root):
            raise ValueError(f"data.images: {root} is not a Pascal VOC folder (no Annotations/)")
        splits = _voc_splits(root)
        for xml_path in sorted((root / "Annotations").glob("*.xml")):
            sample, problem = _voc_sample(xml_path, root, name, data.keep_difficult, splits)
            if problem is not None:
                problems.append(problem)
            if sample is not None:
                samples.append(sample)
    roots = ", ".join(Path(p).name or p for p in data.images)
    description = f"Pascal VOC {roots}: {_summary(samples, name)}"
    return SourceResult(samples, {name: head}, problems, description, "voc")


def _voc_splits(root: Path) -> dict[str, str]:
    """Image id -> split from ``ImageSets/Main``."""
    folder = root / "ImageSets" / "Main"
    files = {s: folder / f"{s}.txt" for s in _VOC_SPLITS if (folder / f"{s}.txt").is_file()}
    if "train" not in files and (folder / "trainval.txt").is_file():
        files["train"] = folder / "trainval.txt"
    splits = {}
    for split, path in files.items():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                splits[line.split()[0]] = split
    return splits


def _voc_sample(
    xml_path: Path, root: Path, head: str, keep_difficult: bool, splits: dict[str, str]
) -> tuple[Sample | None, Problem | None]:
    where = str(xml_path)
    try:
        tree = ET.parse(xml_path)
    except (ET.ParseError, OSError) as err:
        fix = "fix or remove the annotation file"
        return None, Problem("bad_row", where, f"cannot parse the XML: {err}", fix)
    node = tree.getroot()
    filename = (node.findtext("filename") or "").strip() or f"{xml_path.stem}.jpg"
    image = root / "JPEGImages" / filename
    if not image.is_file():
        message = f"image {filename!r} not found in {root / 'JPEGImages'}"
        fix = "check the <filename> in the XML and the JPEGImages folder"
        return None, Problem("missing_file", where, message, fix)
    names = []
    for obj in node.iter("object"):
        name = (obj.findtext("name") or "").strip()
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        if name and (keep_difficult or not difficult):
            names.append(name)
    labels = {head: tuple(dict.fromkeys(names))}
    return Sample(image, labels, splits.get(xml_path.stem), where), None


def read_coco(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read a COCO instances JSON (``data.labels``) into one multilabel head of category names.

    Images are looked up in ``data.images`` (each in turn) or, by default, in the JSON's folder,
    a sibling ``images/`` and, for the standard layout ``annotations/instances_val2017.json``,
    ``../val2017/``. Crowd annotations count like the others.

    Raises:
        ValueError: the file is missing, not JSON, or has no ``images`` list.
    """
    name, head = single_head(
        heads,
        "objects",
        "multilabel",
        "a COCO annotation file",
        tags=True,
        all_heads=data.all_heads,
    )
    path = Path(data.labels or "")
    coco = _load_json(path)
    finder = ImageFinder(
        [Path(p) for p in data.images] or _coco_roots(path), data.allow_outside_roots
    )
    categories = {c["id"]: str(c["name"]) for c in coco.get("categories", [])}
    by_image, bad, problems = _coco_objects(coco, categories, path.name)
    samples = []
    for image in coco["images"]:
        where = f"{path.name}:image_id={image.get('id')}"
        hit = finder.find(str(image.get("file_name", "")))
        if hit is None:
            roots = ", ".join(str(r) for r in finder.roots)
            message = f"image {image.get('file_name')!r} not found in {roots}"
            problems.append(Problem("missing_file", where, message, "check data.images"))
        elif image.get("id") not in bad:
            labels = {name: tuple(dict.fromkeys(by_image.get(image.get("id"), [])))}
            samples.append(Sample(hit[0], labels, None, where))
    description = f"COCO {path.name}: {_summary(samples, name)}"
    return SourceResult(samples, {name: head}, problems, description, "coco")


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


def _coco_roots(path: Path) -> list[Path]:
    roots = [path.parent, path.parent / "images"]
    stem = path.stem
    if stem.startswith("instances_"):
        roots.append(path.parent.parent / stem.removeprefix("instances_"))
    return roots


def _coco_objects(
    coco: dict[str, Any], categories: dict[Any, str], file_name: str
) -> tuple[dict[Any, list[str]], set[Any], list[Problem]]:
    """Image id -> category names, the ids of images with a bad annotation, and the problems."""
    objects: dict[Any, list[str]] = {}
    bad: set[Any] = set()
    problems = []
    for ann in coco.get("annotations", []):
        image_id, category = ann.get("image_id"), ann.get("category_id")
        if category not in categories:
            bad.add(image_id)
            where = f"{file_name}:image_id={image_id}"
            message = f"annotation {ann.get('id')!r} has unknown category_id {category!r}"
            problems.append(Problem("bad_row", where, message, "add the category or fix the id"))
            continue
        objects.setdefault(image_id, []).append(categories[category])
    return objects, bad, problems


def _summary(samples: list[Sample], head: str) -> str:
    tags = Counter(t for s in samples for t in s.labels[head] or ())
    return f"{len(samples):,} images, {len(tags)} object classes{split_note(samples)}"
