"""`pictag demo` trains on the built-in digits offline and says what it is doing as it goes."""

from __future__ import annotations

import logging

from pictag.demo import run_demo


def test_demo_trains_and_reports_its_progress(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        table = run_demo(tmp_path, tasks=["digits"], epochs=1)
    logged = [record.getMessage() for record in caplog.records]
    assert "demo 1/1: digits (1 epochs)" in logged
    assert any(line.startswith("model: small_cnn, from scratch, 32 px") for line in logged)
    assert any(line.startswith("epoch 1/1 (") for line in logged)  # progress while it trains
    header, rule, row = table.splitlines()[:3]
    assert header.split()[:3] == ["task", "heads", "train/val"] and row.startswith("digits")
    assert set(rule.replace(" ", "")) == {"-"}
    assert "digit/accuracy=" in row


def test_the_detection_demo_reads_boxes_with_a_backbone_that_has_feature_maps(tmp_path):
    from pictag.demo import DENSE_BACKBONE, DENSE_IMAGES, demo_config

    config = demo_config("detection", tmp_path)
    assert config.data.format == "boxcsv" and config.data.labels.endswith("boxes.csv")
    assert config.heads["objects"].kind == "detection"
    assert config.model.backbone == DENSE_BACKBONE and config.model.pretrained == "offline"
    assert len(list((tmp_path / "images").glob("*.png"))) == DENSE_IMAGES
