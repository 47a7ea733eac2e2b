"""What ``pictag evaluate`` shows beyond the metrics: small images enlarged in report.html, a
linear probe's training section, and each head's per-label table in the terminal summary."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pictag.config import load_config
from pictag.data.schema import Head, Sample
from pictag.evaluation.evaluate import build_sections, evaluate_run, json_ready, summary_table
from pictag.evaluation.html import render_html
from pictag.evaluation.run_extras import saved_fit
from pictag.training.trainer import train

GATE = ("closed", "open")


def _report(images: list[Path]) -> dict:
    """A one-head report whose mistakes are ``images``."""
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    targets = np.array([0, 1, 1, 0])
    samples = [Sample(str(images[i % len(images)]), {}) for i in range(4)]
    heads = {"gate": Head("gate", "multiclass", GATE)}
    sections = build_sections(heads, {"gate": {}}, samples, {"gate": probs}, {"gate": targets})
    return json_ready({"run": "r", "split": "test", "n_images": 4, **sections})


def _shown_sizes(page: str) -> list[tuple[int, int] | None]:
    """The display size of each mistake thumbnail (width, height attributes), None if unset."""
    sizes = []
    for tag in re.findall(r"<div class=card><img [^>]*>", page):
        width, height = re.search(r'width="(\d+)"', tag), re.search(r'height="(\d+)"', tag)
        sizes.append((int(width[1]), int(height[1])) if width and height else None)
    return sizes


@pytest.mark.parametrize(("side", "shown"), [(32, 160), (28, 140), (90, 180)])
def test_small_images_are_shown_enlarged_with_sharp_pixels(tmp_path, side, shown):
    path = tmp_path / "small.png"
    Image.new("RGB", (side, side), (200, 0, 0)).save(path)
    page = render_html(_report([path]), [])
    assert _shown_sizes(page) == [(shown, shown)] * 2  # two wrong images in _report
    assert all(size[0] >= 96 for size in _shown_sizes(page))
    assert "class=px" in page and ".card img.px{image-rendering:pixelated" in page


def test_large_images_keep_their_thumbnail_size(tmp_path):
    path = tmp_path / "large.png"
    Image.new("RGB", (400, 300), (0, 0, 200)).save(path)
    page = render_html(_report([path]), [])
    assert _shown_sizes(page) == [None, None] and "class=px" not in page


def test_given_small_thumbnails_are_enlarged_too(tmp_path):
    path = tmp_path / "digit.png"
    thumb = io.BytesIO()
    Image.new("L", (28, 20)).save(thumb, format="PNG")
    page = render_html(_report([path]), [], thumbnails={str(path): thumb.getvalue()})
    assert _shown_sizes(page) == [(140, 100)] * 2  # 5x: aspect kept, within 160 px


PROBE = {"epoch": 0, "mode": "linear-probe", "val/loss": 0.41, "val/score": 0.83,
         "val/gate/accuracy": 0.875, "val/gate/ece": None}  # fmt: skip


def test_a_linear_probe_shows_a_note_and_its_validation_metrics(tmp_path):
    page = render_html(_report([tmp_path / "gone.png"]), [PROBE])
    training = page.split("<h2>Training</h2>")[1].split("<h2")[0]
    assert "Linear probe" in training and "no epochs to plot" in training
    assert "<tr><td>gate/accuracy</td><td>0.875</td></tr>" in training
    assert "<tr><td>loss</td><td>0.410</td></tr>" in training
    assert "<tr><td>gate/ece</td><td>–</td></tr>" in training  # logged but undefined
    assert "<img" not in training  # no curve of a single point


def test_saved_fit_turns_the_run_metadata_into_one_record():
    meta = {"epoch": 0, "mode": "linear-probe", "metrics": {"loss": 0.4, "gate/accuracy": 0.9}}
    assert saved_fit(meta) == [
        {"epoch": 0, "mode": "linear-probe", "val/loss": 0.4, "val/gate/accuracy": 0.9}
    ]
    assert saved_fit({"epoch": 3}) == [] and saved_fit({}) == []


def test_a_linear_probe_run_gets_a_training_section(multi_csv, tmp_path):
    overrides = [f"data.labels={multi_csv}", "heads.colour.kind=multiclass",
                 "heads.tags.kind=multilabel", "model.backbone=small_cnn",
                 "model.pretrained=none", "model.image_size=16", "train.batch_size=8",
                 "train.augment=none", "train.mode=linear-probe"]  # fmt: skip
    train(load_config(overrides=overrides), tmp_path / "run", progress=False)
    evaluate_run(tmp_path / "run", progress=False)
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    training = page.split("<h2>Training</h2>")[1].split("<h2")[0]
    assert "Linear probe" in training and "<td>colour/accuracy</td>" in training
    assert "<td>tags/mAP</td>" in training


def test_summary_table_prints_each_heads_table_before_the_all_heads_line():
    probs = {"gate": np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]),
             "tags": np.array([[0.9, 0.2], [0.1, 0.7], [0.6, 0.4]])}  # fmt: skip
    targets = {"gate": np.array([0, 1, 1]), "tags": np.array([[1, 0], [0, 1], [1, 1]])}
    heads = {
        "gate": Head("gate", "multiclass", GATE),
        "tags": Head("tags", "multilabel", ("sea", "sky")),
    }
    params = {"gate": {}, "tags": {"thresholds": [0.5, 0.5]}}
    samples = [Sample(f"{i}.png", {}) for i in range(3)]
    sections = build_sections(heads, params, samples, probs, targets)
    text = summary_table(json_ready({"run": "r", "split": "test", "n_images": 3, **sections}))
    lines = text.splitlines()
    assert lines.index("gate: per class") < lines.index(
        "tags: per tag, at the tuned thresholds (AP does not depend on them)"
    )
    # gate: image 2 (open) was called closed
    assert re.search(r"^closed\s+1\s+0$", text, re.M) and re.search(r"^open\s+1\s+1$", text, re.M)
    assert re.search(r"^sky\s+1\.0000\s+0\.5000\s+0\.6667\s+1\.0000\s+0\.5000\s+2$", text, re.M)
    assert lines[-1] == "all heads correct: 0.6667"
