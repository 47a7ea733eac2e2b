"""Tests for the CSV-of-boxes source (pictag.data.sources_boxcsv, through read_samples), on
tiny images and label files written in tmp_path."""

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


def _csv(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


def test_detect_format_picks_boxcsv_by_its_header(tmp_path: Path) -> None:
    boxes = _csv(tmp_path / "boxes.csv", ["filename,width,height,class,xmin,ymin,xmax,ymax"])
    assert detect_format(DataConfig(labels=str(boxes))) == "boxcsv"
    corners = _csv(tmp_path / "corners.csv", ["image;label;x1;y1;x2;y2"])
    assert detect_format(DataConfig(labels=str(corners))) == "boxcsv"
    tags = _csv(tmp_path / "tags.csv", ["image,tags"])
    assert detect_format(DataConfig(labels=str(tags))) == "csv"


def test_rows_grouped_per_image_with_negatives(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.jpg")
    _image(tmp_path / "images" / "b.jpg", (50, 40))
    _image(tmp_path / "images" / "c.jpg")
    labels = _csv(
        tmp_path / "data" / "labels.csv",
        [
            "filename,width,height,class,xmin,ymin,xmax,ymax",
            "a.jpg,200,100,raccoon,10,20,110,90",
            "b.jpg,50,40,dog,1,2,30,40",
            "a.jpg,200,100,dog,0,0,50,50",  # rows of one image need not be adjacent
            "c.jpg,200,100,,,,,",  # no objects
        ],
    )
    result = read_samples(DataConfig(labels=str(labels)), HEADS)  # images/ beside data/
    assert result.format == "boxcsv"
    assert result.problems == []
    got = {s.path.name: s for s in result.samples}
    assert got["a.jpg"].labels == {
        "boxes": Objects((200, 100), (("raccoon", 10, 20, 110, 90), ("dog", 0, 0, 50, 50))),
        "tags": ("raccoon", "dog"),
    }
    assert got["a.jpg"].where == "labels.csv:2"
    assert got["b.jpg"].labels["boxes"] == Objects((50, 40), (("dog", 1, 2, 30, 40),))
    assert got["c.jpg"].labels == {"boxes": Objects((200, 100)), "tags": ()}
    assert "3 images, 2 classes, 3 boxes, 1 image with no boxes" in result.description


def test_other_column_names_and_a_split_column(tmp_path: Path) -> None:
    _image(tmp_path / "pics" / "train" / "a.jpg")
    labels = _csv(
        tmp_path / "boxes.csv",
        ["image_path,label,x1,y1,x2,y2,part", "train/a.jpg,cat,1,1,9,9,val"],
    )
    data = DataConfig(labels=str(labels), images=[str(tmp_path / "pics")], split_column="part")
    result = read_samples(data, {})
    assert [(s.labels["objects"], s.split) for s in result.samples] == [(("cat",), "val")]
    result = read_samples(DataConfig(labels=str(labels), images=[str(tmp_path / "pics")]), {})
    assert result.samples[0].split == "train"  # from the folder


def test_bad_rows_each_reported_with_file_and_line(tmp_path: Path) -> None:
    for name in "abcdefg":
        _image(tmp_path / f"{name}.jpg")
    rows = [
        "filename,width,height,class,xmin,ymin,xmax,ymax",
        "a.jpg,200,100,cat,10,10,10,50",  # 2: zero width
        "b.jpg,200,100,cat,90,10,10,50",  # 3: corners the wrong way round
        "c.jpg,200,100,cat,-30,10,120,50",  # 4: partly outside: clipped, kept
        "d.jpg,200,100,cat,300,10,320,50",  # 5: wholly outside
        "gone.jpg,200,100,cat,10,10,20,20",  # 6: no such image
        "gone.jpg,200,100,cat,30,10,40,20",  # 7: same image, reported once
        "e.jpg,640,480,cat,10,10,20,20",  # 8: stated size differs: warning, kept
        "f.jpg,200,100,cat,10,,20,20",  # 9: part of the box missing
        "g.jpg,200,100,cat,ten,10,20,20",  # 10: not a number
        "e.jpg,640,480,cat,10,10,20,20",  # 11: exact duplicate of 8
    ]
    result = read_samples(DataConfig(labels=str(_csv(tmp_path / "b.csv", rows))), HEADS)
    problems = {(p.kind, p.severity, p.where) for p in result.problems}
    assert problems == {
        ("bad_box", "error", "b.csv:2"),
        ("bad_box", "error", "b.csv:3"),
        ("box_clipped", "warning", "b.csv:4"),
        ("box_outside", "error", "b.csv:5"),
        ("missing_file", "error", "b.csv:6"),
        ("size_mismatch", "warning", "b.csv:8"),
        ("bad_row", "error", "b.csv:9"),
        ("bad_box", "error", "b.csv:10"),
        ("duplicate_row", "warning", "b.csv:11"),
    }
    got = {s.path.name: s.labels["boxes"].boxes for s in result.samples}
    assert got == {"c.jpg": (("cat", 0, 10, 120, 50),), "e.jpg": (("cat", 10, 10, 20, 20),)}


def test_missing_columns_and_class_variants(tmp_path: Path) -> None:
    no_class = _csv(tmp_path / "x.csv", ["filename,xmin,ymin,xmax,ymax"])
    with pytest.raises(ValueError, match="no class column"):
        read_samples(DataConfig(format="boxcsv", labels=str(no_class)), HEADS)
    _image(tmp_path / "a.jpg")
    rows = ["filename,class,xmin,ymin,xmax,ymax", "a.jpg,Raccoon,1,1,5,5", "a.jpg,raccoon,2,2,9,9"]
    result = read_samples(DataConfig(labels=str(_csv(tmp_path / "v.csv", rows))), HEADS)
    assert [(p.kind, p.where) for p in result.problems] == [("class_variants", "v.csv:3")]
