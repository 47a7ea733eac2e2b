"""The segmentation head's report section: plain JSON values that agree with the metrics, every
class (escaped) in the HTML and in the text."""

from __future__ import annotations

import json
import math
from html import escape

import numpy as np
import pytest

from pictag.heads.masks import IGNORE
from pictag.heads.segmentation_metrics import segmentation_metrics
from pictag.heads.segmentation_report import html, report_text, section
from pictag.heads.texttable import number

LABELS = ["road", "car <b>", "sky & sea", "boat"]  # no boat anywhere: its IoU is undefined


def example() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, (5, 12, 10)).astype(np.uint8)
    decided = np.where(rng.random(targets.shape) < 0.7, targets, rng.integers(0, 3, targets.shape))
    targets[rng.random(targets.shape) < 0.2] = IGNORE
    targets[3] = IGNORE  # an image without a known pixel
    targets[0, 0, 0] = 2  # sky & sea in the first image for sure
    return decided, targets


@pytest.fixture(scope="module")
def report() -> dict:
    decided, targets = example()
    return section(decided, targets, LABELS, {"mode": "argmax"})


def test_section_is_json_ready_and_agrees_with_the_metrics(report: dict) -> None:
    loaded = json.loads(json.dumps(report, allow_nan=True))
    decided, targets = example()
    expected = segmentation_metrics(decided, targets, len(LABELS))
    assert loaded["metrics"] == pytest.approx(expected)
    assert loaded["labels"] == LABELS and loaded["params"] == {"mode": "argmax"}
    assert loaded["kind"] == "segmentation" and loaded["n"] == 4
    known = targets != IGNORE
    assert loaded["n_pixels"] == int(known.sum()) == sum(map(sum, loaded["confusion"]))
    rows = {r["label"]: r for r in loaded["per_label"]}
    for k, name in enumerate(LABELS):
        assert rows[name]["pixels"] == int((targets == k).sum()) == sum(loaded["confusion"][k])
        assert rows[name]["images"] == int(sum((t == k).any() for t in targets))
    assert math.isnan(rows["boat"]["iou"]) and rows["boat"]["images"] == 0
    defined = [rows[name]["iou"] for name in LABELS[:3]]
    assert loaded["metrics"]["miou"] == pytest.approx(np.mean(defined))


def test_html_names_the_head_and_escapes_labels(report: dict) -> None:
    page = html("lanes <x>", report)
    assert escape("lanes <x>") in page and "lanes <x>" not in page
    for name in LABELS:
        assert escape(name) in page
    assert "car <b>" not in page
    assert page.count("<img") >= 2  # the IoU bars and the confusion heatmap
    assert "<table" in page


def test_report_text_lists_each_class_with_its_iou(report: dict) -> None:
    text = report_text("lanes", report)
    lines = text.splitlines()
    assert lines[0].startswith("lanes:")
    for row in report["per_label"]:
        line = next(line for line in lines if line.startswith(row["label"]))
        assert number(row["iou"]) in line and str(row["pixels"]) in line
    boat = next(line for line in lines if line.startswith("boat"))
    assert boat.split()[1] == "-"  # undefined IoU prints as a dash, not 0
    assert number(report["metrics"]["pixel_accuracy"]) in text
