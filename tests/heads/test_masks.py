"""Masks as raw labels: painting COCO shapes, and a prediction's class map at the file's size."""

from __future__ import annotations

import numpy as np

from pictag.heads.masks import IGNORE, IGNORE_NAME, MaskLabel, class_map, freeze
from pictag.heads.segmentation import from_objects
from pictag.heads.segmentation_decide import SMOOTH_PIXELS, full_size_classes


def _square(x1: float, y1: float, x2: float, y2: float) -> tuple:
    return freeze([[x1, y1, x2, y1, x2, y2, x1, y2]])


def test_a_renamed_background_still_fills_the_unpainted_pixels():
    label = MaskLabel((8, 6), shapes=(("cat", _square(0, 0, 4, 3)),), classes=("background", "cat"))
    renamed = label.renamed({"background": "bg"})
    painted = class_map(renamed, {"bg": 0, "cat": 1})
    assert set(np.unique(painted)) == {0, 1}  # before the fix: {1, 255}, the rest ignored
    assert painted[5, 7] == 0 and painted[1, 1] == 1


def test_a_box_only_object_is_ignored_not_taught_as_background():
    from pictag.heads.boxes import Objects

    shapes = (("cat", _square(0, 0, 3, 3)), (IGNORE_NAME, _square(5, 2, 8, 6)))
    label = from_objects(Objects((8, 6), shapes=shapes))
    assert label.classes == ("background", "cat")  # `ignore` is no class
    painted = class_map(label, {"background": 0, "cat": 1})
    assert painted[4, 6] == IGNORE and painted[1, 1] == 1 and painted[5, 0] == 0


def test_a_huge_photo_gets_its_classes_without_full_size_probability_planes():
    probs = np.zeros((2, 8, 8), np.float32)
    probs[0, :, :4], probs[1, :, 4:] = 1.0, 1.0  # left half class 0, right half class 1
    width, height = 6000, 4000  # 24 MP: above SMOOTH_PIXELS
    assert width * height > SMOOTH_PIXELS
    classes = full_size_classes(probs, (width, height))
    assert classes.shape == (height, width)
    assert (classes[:, : width // 2 - 300] == 0).all() and (
        classes[:, width // 2 + 300 :] == 1
    ).all()
    small = full_size_classes(probs, (60, 40))  # below it: resized at the file's own size
    assert small.shape == (40, 60) and small[0, 0] == 0 and small[0, -1] == 1
