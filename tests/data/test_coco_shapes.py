"""COCO outlines for segmentation heads: polygons and RLE kept as shapes, box-only objects
ignored, and an explicit data.format still choosing the images when every head reads masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from pictag.config import DataConfig, HeadConfig
from pictag.data.sources import read_samples
from pictag.heads.masks import IGNORE, class_map

SEG = {"mask": HeadConfig(kind="segmentation")}


def _coco(tmp_path: Path, annotations: list[dict]) -> Path:
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / name)
    images = [
        {"id": i, "file_name": n, "width": 8, "height": 6} for i, n in ((1, "a.png"), (2, "b.png"))
    ]
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "cat"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return path


def test_polygons_are_painted_and_box_only_objects_ignored(tmp_path):
    path = _coco(
        tmp_path,
        [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 3, 3],
             "segmentation": [[0, 0, 3, 0, 3, 3, 0, 3]]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 2, 3, 4]},  # no outline
        ],
    )  # fmt: skip
    result = read_samples(DataConfig(labels=str(path), images=[str(tmp_path)]), dict(SEG))
    labels = {s.path.name: s.labels["mask"] for s in result.samples}
    painted = class_map(labels["a.png"], {"background": 0, "cat": 1})
    assert painted[1, 1] == 1 and painted[5, 0] == 0
    assert painted[4, 6] == IGNORE  # the box-only cat: not background
    assert (class_map(labels["b.png"], {"background": 0, "cat": 1}) == 0).all()  # a negative


def test_an_explicit_format_reads_its_own_images_beside_a_mask_folder(tmp_path):
    path = _coco(tmp_path, [])
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "masks" / "a.png")
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "c.png")  # not in the JSON
    head = {"mask": HeadConfig(kind="segmentation", masks=str(tmp_path / "masks"))}
    data = DataConfig(format="coco", labels=str(path), images=[str(tmp_path)])
    names = sorted(s.path.name for s in read_samples(data, head).samples)
    assert names == ["a.png", "b.png"]  # the COCO file's images, not every file in the folder
    auto = read_samples(DataConfig(images=[str(tmp_path)]), head)  # auto: images and masks
    assert sorted(s.path.name for s in auto.samples) == ["a.png"]  # b, c: no mask, left out
