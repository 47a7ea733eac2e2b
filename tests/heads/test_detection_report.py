"""The detection head's report section: plain JSON values, every class in the text and HTML."""

from __future__ import annotations

import json
from html import escape

import numpy as np

from pictag.heads.boxes import MISSING
from pictag.heads.detection_report import html, report_text, section

LABELS = ["cat", "dog <big>", "bird"]  # the bird has no box: its AP is undefined


def example() -> dict:
    targets = np.full((3, 2, 5), -1.0)
    targets[0] = [(0, 0.1, 0.1, 0.4, 0.4), (1, 0.5, 0.5, 0.9, 0.9)]
    targets[1, 0] = (0, 0.2, 0.2, 0.6, 0.6)
    targets[2] = MISSING  # unknown boxes: left out
    dets = np.full((3, 3, 6), -1.0)
    dets[0, :2] = [(0.1, 0.1, 0.4, 0.4, 0.9, 0), (0.59, 0.5, 0.99, 0.9, 0.4, 1)]
    dets[1] = [(0.7, 0.7, 0.9, 0.9, 0.8, 0), (0.2, 0.2, 0.6, 0.6, 0.3, 0), (0, 0, 0.1, 0.1, 0.9, 2)]
    dets[2, 0] = (0.1, 0.1, 0.4, 0.4, 0.9, 0)
    return section(dets, targets, LABELS, {"thresholds": [0.5, 0.5, 0.5]})


def test_section_is_json_ready() -> None:
    result = example()
    loaded = json.loads(json.dumps(result))
    assert loaded["kind"] == "detection"
    assert loaded["n_images"] == 2 and loaded["n_boxes"] == 3
    rows = {r["label"]: r for r in loaded["per_label"]}
    assert rows["cat"]["n_true"] == 2 and rows["cat"]["n_pred"] == 2  # 0.9 and 0.8 kept
    assert rows["bird"]["n_pred"] == 1 and rows["bird"]["n_true"] == 0
    assert loaded["metrics"]["precision"] == 1 / 3  # one true cat among 3 kept
    assert set(loaded["pr_curves"]) == set(LABELS)
    assert len(loaded["pr_curves"]["cat"]["precision"]) == 101
    assert loaded["pr_curves"]["bird"] == {"recall": [], "precision": []}


def test_html_and_text_list_every_class() -> None:
    result = example()
    page = html("objects", result)
    text = report_text("objects", result)
    for label in LABELS:
        assert escape(label) in page
        assert label in text
    assert page.count("<img") == 2  # per-class bars and the PR curves
    assert "all" in text.splitlines()[-1]


def test_section_without_detections_or_thresholds() -> None:
    targets = np.zeros((1, 1, 5))
    targets[0, 0] = (0, 0.1, 0.1, 0.4, 0.4)
    result = section(np.full((1, 1, 6), -1.0), targets, ["cat"], {})
    assert result["thresholds"] == [0.5]
    assert result["metrics"]["map"] == 0.0
    json.dumps(result)
    assert "cat" in html("h", result) and "cat" in report_text("h", result)
