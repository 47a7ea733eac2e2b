"""Tests for the YOLO source (pictag.data.sources_yolo, through read_samples), on tiny
images/ + labels/ + data.yaml trees written in tmp_path."""

from pathlib import Path

import pytest
from PIL import Image

from pictag.config import DataConfig, HeadConfig
from pictag.data.sources import detect_format, read_samples
from pictag.heads.boxes import Objects

HEADS = {"boxes": HeadConfig(kind="detection"), "tags": HeadConfig(kind="multilabel")}


def _image(path: Path, size: tuple[int, int] = (200, 100)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 10)).save(path)
    return path


def _rounded(objects: Objects) -> list[tuple]:
    return [(name, *(round(v, 6) for v in corners)) for name, *corners in objects.boxes]


def _labels(root: Path, relative: str, text: str) -> None:
    path = root / "labels" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _yolo(root: Path, names: str = "names: [cat, dog]\n") -> Path:
    _image(root / "images" / "train" / "a.jpg")
    _labels(root, "train/a.txt", "0 0.5 0.5 0.5 0.4\n\n1 0.25 0.75 0.1 0.2\n")
    _image(root / "images" / "train" / "b.png", (50, 40))
    _labels(root, "train/b.txt", "")  # empty: a negative
    _image(root / "images" / "val" / "c.jpg")  # no label file: a negative
    (root / "data.yaml").write_text(names)
    return root


def test_detect_format_picks_yolo(tmp_path: Path) -> None:
    root = _yolo(tmp_path / "set")
    assert detect_format(DataConfig(images=[str(root)])) == "yolo"
    (root / "data.yaml").unlink()
    assert detect_format(DataConfig(images=[str(root)])) == "folder"


def test_yolo_boxes_in_pixels_of_the_real_image_splits_and_negatives(tmp_path: Path) -> None:
    root = _yolo(tmp_path / "set")
    result = read_samples(DataConfig(images=[str(root)]), HEADS)
    assert result.format == "yolo"
    assert result.problems == []
    got = {s.path.name: s for s in result.samples}
    # cx 0.5, cy 0.5, w 0.5, h 0.4 on 200x100 -> corners (50, 30) and (150, 70)
    boxes = got["a.jpg"].labels["boxes"]
    assert boxes.size == (200, 100)
    assert _rounded(boxes) == [("cat", 50, 30, 150, 70), ("dog", 40, 65, 60, 85)]
    assert got["a.jpg"].labels["tags"] == ("cat", "dog")
    assert got["a.jpg"].where == "labels/train/a.txt"
    assert got["b.png"].labels == {"boxes": Objects((50, 40)), "tags": ()}
    assert got["c.jpg"].labels == {"boxes": Objects((200, 100)), "tags": ()}
    assert {n: s.split for n, s in got.items()} == {
        "a.jpg": "train",
        "b.png": "train",
        "c.jpg": "val",
    }
    assert "3 images, 2 classes, 2 boxes, 2 images with no boxes" in result.description


def test_yolo_names_as_a_mapping_and_splits_from_data_yaml(tmp_path: Path) -> None:
    root = tmp_path / "set"
    _image(root / "images" / "one" / "a.jpg")
    _image(root / "images" / "two" / "b.jpg")
    _labels(root, "one/a.txt", "7 0.5 0.5 0.2 0.2\n")
    (root / "list.txt").write_text("./images/two/b.jpg\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/one\nval: list.txt\nnames: {7: fox}\n")
    result = read_samples(DataConfig(images=[str(root)]), {})  # default head: objects
    got = {s.path.name: (s.labels["objects"], s.split) for s in result.samples}
    assert got == {"a.jpg": (("fox",), "train"), "b.jpg": ((), "val")}


def test_yolo_bad_lines_each_reported_with_file_and_line(tmp_path: Path) -> None:
    root = _yolo(tmp_path / "set")
    lines = [
        "0 0.5 0.5 0.2 0.2",  # fine
        "5 0.5 0.5 0.2 0.2",  # unknown class id
        "0 0.5 0.5 0 0.2",  # zero width
        "0 0.5 0.5 -0.2 0.2",  # negative width
        "0 1.5 0.5 0.2 0.2",  # wholly outside
        "0 0.5 0.5 0.2",  # four fields
        "cat 0.5 0.5 0.2 0.2",  # a name for an id
    ]
    _labels(root, "train/d.txt", "\n".join(lines))
    _image(root / "images" / "train" / "d.jpg")
    _labels(root, "train/e.txt", "1 0.95 0.5 0.2 0.2\n")  # partly outside: clipped
    _image(root / "images" / "train" / "e.jpg")
    _labels(root, "train/gone.txt", "0 0.5 0.5 0.2 0.2\n")  # no image
    result = read_samples(DataConfig(images=[str(root)]), HEADS)
    problems = {(p.kind, p.severity, p.where) for p in result.problems}
    where = "labels/train/d.txt"
    assert problems == {
        ("unknown_class", "error", f"{where}:2"),
        ("bad_box", "error", f"{where}:3"),
        ("bad_box", "error", f"{where}:4"),
        ("box_outside", "error", f"{where}:5"),
        ("bad_row", "error", f"{where}:6"),
        ("bad_row", "error", f"{where}:7"),
        ("box_clipped", "warning", "labels/train/e.txt:1"),
        ("missing_file", "error", "labels/train/gone.txt"),
    }
    got = {s.path.name: s.labels["boxes"] for s in result.samples}
    assert "d.jpg" not in got  # an image with an error is left out
    assert _rounded(got["e.jpg"]) == [("dog", 170, 40, 200, 60)]


def test_yolo_without_class_names(tmp_path: Path) -> None:
    root = _yolo(tmp_path / "set", names="nc: 2\n")
    with pytest.raises(ValueError, match="names"):
        read_samples(DataConfig(format="yolo", images=[str(root)]), HEADS)
    with pytest.raises(ValueError, match="not a YOLO folder"):
        read_samples(DataConfig(format="yolo", images=[str(root / "images")]), HEADS)
