"""`pictag train` with a detection head from every box format: the same boxes written as COCO
JSON, YOLO txt + data.yaml and a box CSV (VOC is the end-to-end test's), and one COCO file
feeding a tags head beside the boxes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pictag.cli import main

FAST = [
    "--set", "model.backbone=test_efficientnet",
    "--set", "model.pretrained=none",
    "--set", "model.image_size=64",
    "--set", "train.epochs=1",
    "--set", "train.batch_size=8",
    "--set", "train.budget=off",
]  # fmt: skip
CLASSES = ("red", "blue")


def _boxes(voc: Path) -> dict[str, list[tuple[str, int, int, int, int]]]:
    """Image file name -> its boxes, read back from the VOC XML the fixture wrote."""
    found = {}
    for xml in sorted((voc / "Annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        found[root.findtext("filename")] = [
            (
                o.findtext("name"),
                *(int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")),
            )
            for o in root.iter("object")
        ]
    return found


def _coco(voc: Path, out: Path) -> list[str]:
    images, annotations = [], []
    for number, (name, boxes) in enumerate(_boxes(voc).items(), 1):
        images.append({"id": number, "file_name": name, "width": 96, "height": 72})
        for label, x1, y1, x2, y2 in boxes:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": number, "iscrowd": 0,
                 "category_id": CLASSES.index(label) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                 "area": (x2 - x1) * (y2 - y1)}
            )  # fmt: skip
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (out / "instances.json").write_text(json.dumps(coco))
    images_dir = str(voc / "JPEGImages")
    return ["--images", images_dir, "--set", f"data.labels={out / 'instances.json'}"]


def _yolo(voc: Path, out: Path) -> list[str]:
    root = out / "yolo"
    for split, names in (("train", list(_boxes(voc))[:18]), ("val", list(_boxes(voc))[18:])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for name in names:
            (root / "images" / split / name).write_bytes((voc / "JPEGImages" / name).read_bytes())
            lines = [
                f"{CLASSES.index(label)} {(x1 + x2) / 192} {(y1 + y2) / 144} "
                f"{(x2 - x1) / 96} {(y2 - y1) / 72}"
                for label, x1, y1, x2, y2 in _boxes(voc)[name]
            ]
            (root / "labels" / split / name.replace(".png", ".txt")).write_text("\n".join(lines))
    (root / "data.yaml").write_text("names: [red, blue]\n")
    return ["--images", str(root)]


def _boxcsv(voc: Path, out: Path) -> list[str]:
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for name, boxes in _boxes(voc).items():
        rows += [f"{name},96,72,{label},{x1},{y1},{x2},{y2}" for label, x1, y1, x2, y2 in boxes]
    (out / "boxes.csv").write_text("\n".join(rows) + "\n")
    return ["--images", str(voc / "JPEGImages"), "--set", f"data.labels={out / 'boxes.csv'}"]


@pytest.mark.parametrize("source", [_coco, _yolo, _boxcsv], ids=["coco", "yolo", "boxcsv"])
def test_train_reads_boxes_from_each_format(source, make_voc, tmp_path):
    voc = make_voc(tmp_path / "voc", 24)
    run = tmp_path / "run"
    args = ["train", *source(voc, tmp_path), "--out", str(run), *FAST]
    assert main([*args, "--set", "heads.objects.kind=detection"]) == 0
    meta = json.loads((run / "pictag.json").read_text())
    assert meta["heads"][0]["kind"] == "detection"
    assert sorted(meta["heads"][0]["labels"]) == ["blue", "red"]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "val/objects/map50" in history[-1]


def test_one_coco_file_feeds_tags_and_boxes(make_voc, tmp_path):
    voc = make_voc(tmp_path / "voc", 24)
    run = tmp_path / "run"
    heads = ["--set", "heads.objects.kind=detection", "--set", "heads.tags.kind=multilabel"]
    assert main(["train", *_coco(voc, tmp_path), "--out", str(run), *FAST, *heads]) == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"val/objects/map", "val/tags/mAP"} <= set(history[-1])
