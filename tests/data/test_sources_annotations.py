"""Tests for the Pascal VOC and COCO sources (pictag.data.sources_annotations, through
read_samples), on tiny annotation sets written in tmp_path."""

import json
from pathlib import Path

import pytest
from PIL import Image

from pictag.config import DataConfig, HeadConfig
from pictag.data.sources import read_samples
from pictag.heads.boxes import Objects
from pictag.heads.masks import freeze


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (3, 2), (10, 200, 10)).save(path)
    return path


def _voc_xml(filename: str, objects: list[tuple[str, int]]) -> str:
    parts = [f"<object><name>{n}</name><difficult>{d}</difficult></object>" for n, d in objects]
    return f"<annotation><filename>{filename}</filename>{''.join(parts)}</annotation>"


def _voc(root: Path, split_files: dict[str, str]) -> Path:
    annotations = {
        "0001": [("dog", 0), ("person", 0), ("dog", 0)],
        "0002": [("cat", 0), ("bottle", 1)],
        "0003": [("chair", 1)],  # only a difficult object
        "0004": [],
    }
    (root / "Annotations").mkdir(parents=True)
    for stem, objects in annotations.items():
        _image(root / "JPEGImages" / f"{stem}.jpg")
        (root / "Annotations" / f"{stem}.xml").write_text(_voc_xml(f"{stem}.jpg", objects))
    (root / "Annotations" / "0005.xml").write_text("<annotation><filename>0005.jpg</filen")
    (root / "Annotations" / "0006.xml").write_text(_voc_xml("gone.jpg", [("cat", 0)]))
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for name, text in split_files.items():
        (main / name).write_text(text)
    return root


def test_voc_objects_difficult_splits_and_bad_files(tmp_path: Path) -> None:
    root = _voc(tmp_path / "VOC2012", {"train.txt": "0001\n0002\n", "val.txt": "0003\n"})
    result = read_samples(DataConfig(images=[str(root)]), {})  # auto-detected
    assert result.format == "voc"
    assert result.heads == {"objects": HeadConfig(kind="multilabel")}
    got = {s.path.name: (s.labels["objects"], s.split) for s in result.samples}
    assert got == {
        "0001.jpg": (("dog", "person"), "train"),
        "0002.jpg": (("cat",), "train"),
        "0003.jpg": ((), "val"),  # its only object is difficult: known to be empty
        "0004.jpg": ((), None),
    }
    assert result.samples[0].where == str(root / "Annotations" / "0001.xml")
    kinds = {(p.kind, Path(p.where).name) for p in result.problems}
    assert kinds == {("bad_row", "0005.xml"), ("missing_file", "0006.xml")}
    assert "4 images" in result.description


def test_voc_keep_difficult_trainval_and_head_name(tmp_path: Path) -> None:
    root = _voc(tmp_path / "voc", {"trainval.txt": "0001\n0002\n0003\n", "test.txt": "0004\n"})
    data = DataConfig(format="voc", images=[str(root)], keep_difficult=True)
    result = read_samples(data, {"things": HeadConfig(kind="multilabel")})
    got = {s.path.name: (s.labels["things"], s.split) for s in result.samples}
    assert got["0002.jpg"] == (("cat", "bottle"), "train")
    assert got["0003.jpg"] == (("chair",), "train")
    assert got["0004.jpg"] == ((), "test")


def test_voc_rejects_a_multiclass_head_and_a_non_voc_folder(tmp_path: Path) -> None:
    root = _voc(tmp_path / "voc", {})
    with pytest.raises(ValueError, match="multilabel"):
        read_samples(DataConfig(images=[str(root)]), {"objects": HeadConfig()})
    with pytest.raises(ValueError, match="not a Pascal VOC"):
        read_samples(DataConfig(format="voc", images=[str(tmp_path)]), {})


def _coco(path: Path) -> Path:
    coco = {
        "images": [
            {"id": 1, "file_name": "a.jpg"},
            {"id": 2, "file_name": "b.jpg"},
            {"id": 3, "file_name": "c.jpg"},
            {"id": 42, "file_name": "missing.jpg"},
            {"id": 5, "file_name": "e.jpg"},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 18, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 1},
            {"id": 12, "image_id": 1, "category_id": 18, "iscrowd": 0},
            {"id": 13, "image_id": 2, "category_id": 1, "iscrowd": 0},
            {"id": 14, "image_id": 5, "category_id": 99, "iscrowd": 0},
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    return path


def test_coco_category_names_crowds_empty_images_and_problems(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg", "e.jpg"):
        _image(tmp_path / "images" / name)  # the default sibling images/ folder
    labels = _coco(tmp_path / "instances.json")
    result = read_samples(DataConfig(labels=str(labels)), {})
    assert result.format == "coco"
    got = {s.path.name: s.labels["objects"] for s in result.samples}
    assert got == {"a.jpg": ("dog", "person"), "b.jpg": ("person",), "c.jpg": ()}
    assert result.samples[0].where == "instances.json:image_id=1"
    problems = {(p.kind, p.where) for p in result.problems}
    assert problems == {
        ("missing_file", "instances.json:image_id=42"),
        ("unknown_class", "instances.json:annotation_id=14"),  # image 5 is left out
    }


def test_coco_images_folder_from_config_and_standard_layout(tmp_path: Path) -> None:
    _image(tmp_path / "pics" / "a.jpg")
    labels = _coco(tmp_path / "annotations" / "instances_val2017.json")
    data = DataConfig(labels=str(labels), images=[str(tmp_path / "pics")])
    result = read_samples(data, {"things": HeadConfig(kind="multilabel")})
    assert [s.path for s in result.samples] == [tmp_path / "pics" / "a.jpg"]
    assert set(result.heads) == {"things"}
    _image(tmp_path / "val2017" / "b.jpg")  # COCO's own layout: annotations/ beside val2017/
    result = read_samples(DataConfig(labels=str(labels)), {})
    assert [s.path for s in result.samples] == [tmp_path / "val2017" / "b.jpg"]


def test_coco_file_that_is_not_coco(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"annotations": []}')
    with pytest.raises(ValueError, match="'images'"):
        read_samples(DataConfig(labels=str(path)), {})


BOX_HEADS = {"tags": HeadConfig(kind="multilabel"), "boxes": HeadConfig(kind="detection")}


def _voc_box_xml(filename: str, size: tuple[int, int], boxes: list[tuple]) -> str:
    objects = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>"
        f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for n, x1, y1, x2, y2 in boxes
    )
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>"
    return f"<annotation><filename>{filename}</filename>{size_xml}{objects}</annotation>"


def test_voc_boxes_feed_a_tag_head_and_a_box_head_in_a_lowercase_layout(tmp_path: Path) -> None:
    root = tmp_path / "raccoons"  # labelImg's layout: annotations/ beside images/
    (root / "annotations").mkdir(parents=True)
    xmls = {
        "a": ((3, 2), [("raccoon", 0, 0, 2, 1), ("dog", 1, 0, 3, 2)]),
        "b": ((30, 20), [("raccoon", 0, 0, 2, 1)]),  # stated size differs: a warning
        "c": ((3, 2), [("raccoon", 0, 0, 3, 9)]),  # partly outside: clipped with a warning
        "d": ((3, 2), [("raccoon", 2, 1, 2, 2)]),  # no width: the image is left out
        "e": ((3, 2), []),  # a negative
    }
    for stem, (size, boxes) in xmls.items():
        _image(root / "images" / f"{stem}.jpg")
        xml = _voc_box_xml(f"{stem}.jpg", size, boxes)
        (root / "annotations" / f"{stem}.xml").write_text(xml)
    result = read_samples(DataConfig(images=[str(root)]), BOX_HEADS)
    assert result.format == "voc"
    got = {s.path.stem: s.labels for s in result.samples}
    assert got["a"] == {
        "tags": ("raccoon", "dog"),
        "boxes": Objects((3, 2), (("raccoon", 0, 0, 2, 1), ("dog", 1, 0, 3, 2))),
    }
    assert got["c"]["boxes"].boxes == (("raccoon", 0, 0, 3, 2),)
    assert got["e"] == {"tags": (), "boxes": Objects((3, 2))}
    assert "d" not in got
    xml = root / "annotations"
    assert {(p.kind, p.severity, p.where) for p in result.problems} == {
        ("size_mismatch", "warning", str(xml / "b.xml")),
        ("box_clipped", "warning", str(xml / "c.xml")),
        ("bad_box", "error", str(xml / "d.xml")),
    }
    assert "4 images, 2 classes, 4 boxes, 1 image with no boxes" in result.description


def test_coco_file_feeds_a_tag_head_and_a_box_head(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        _image(tmp_path / name)
    coco = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 3, "height": 2},
            {"id": 2, "file_name": "b.jpg", "width": 30, "height": 20},
            {"id": 3, "file_name": "c.jpg"},
            {"id": 4, "file_name": "d.jpg"},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 18, "bbox": [0.5, 0, 2, 1.5]},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0, 0, 3, 2], "iscrowd": 1},
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [1, 1, 1, 1]},
            {"id": 13, "image_id": 4, "category_id": 1, "bbox": [1, 1, 0, 1]},
            {"id": 14, "image_id": 4, "category_id": 1, "bbox": [1, 1]},
            {"id": 15, "image_id": 99, "category_id": 1, "bbox": [1, 1, 1, 1]},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    result = read_samples(DataConfig(labels=str(path)), BOX_HEADS)
    got = {s.path.name: s.labels for s in result.samples}
    # [x, y, w, h] -> corners; the crowd region is a tag but not a box
    assert got["a.jpg"] == {
        "tags": ("dog", "person"),
        # COCO with no outline: for a segmentation head the box is ignored, not background
        "boxes": Objects(
            (3, 2),
            (("dog", 0.5, 0, 2.5, 1.5),),
            shapes=(("ignore", freeze([[0.5, 0, 2.5, 0, 2.5, 1.5, 0.5, 1.5]])),),
        ),
    }
    assert got["b.jpg"]["boxes"].boxes == (("person", 1, 1, 2, 2),)
    assert got["c.jpg"] == {"tags": (), "boxes": Objects((3, 2), shapes=())}  # a negative
    assert "d.jpg" not in got
    assert {(p.kind, p.severity, p.where) for p in result.problems} == {
        ("size_mismatch", "warning", "instances.json:image_id=2"),
        ("bad_box", "error", "instances.json:annotation_id=13"),
        ("bad_box", "error", "instances.json:annotation_id=14"),
        ("missing_file", "error", "instances.json:annotation_id=15"),
    }
    assert "3 images, 2 classes, 2 boxes, 1 image with no boxes" in result.description
