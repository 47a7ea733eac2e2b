"""A run folder written before head kinds owned decisions (``pictag-run/1``: multilabel
thresholds under ``thresholds``) still evaluates, predicts, serves and exports; one written by a
newer pictag is refused with a message that says what to do."""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient

from pictag.evaluation.evaluate import evaluate_run
from pictag.evaluation.predictor import Predictor
from pictag.run import read_run_info
from pictag.serving.app import app_from_run

OLD_THRESHOLDS = [0.2, 0.3, 0.4, 0.6]


@pytest.fixture
def old_run(tiny_run, tmp_path):
    """The tiny run with ``pictag.json`` as pictag 0.1 wrote it before this schema."""
    run_dir = tmp_path / "old"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "val_outputs.safetensors").unlink(missing_ok=True)
    meta = json.loads((run_dir / "pictag.json").read_text())
    for key in ("schema_version", "decisions"):
        meta.pop(key, None)
    meta["checkpoint_id"] = meta.pop("weights_id")  # one id for weights and metadata then
    meta["format"] = "pictag-run/1"
    meta["thresholds"] = {"tags": OLD_THRESHOLDS}
    for head in meta["config"]["heads"].values():
        head.pop("positive", None)  # a field the old config did not have
    (run_dir / "pictag.json").write_text(json.dumps(meta))
    return run_dir


def test_old_run_reads_with_its_thresholds_and_default_decisions(old_run):
    info = read_run_info(old_run)
    assert info.params == {"colour": {}, "tags": {"thresholds": OLD_THRESHOLDS}}


def test_old_run_evaluates_predicts_and_serves(old_run, tiny_run):
    images = sorted((tiny_run.parent / "data" / "images").glob("*.png"))[:1]
    report = evaluate_run(old_run, out_dir=old_run / "eval", progress=False)
    assert report["heads"]["tags"]["thresholds"] == OLD_THRESHOLDS
    predictor = Predictor.from_run(old_run, backend="torch")
    [prediction] = predictor.predict(images[:1])
    scores = prediction.heads["tags"].scores
    on = [label for label, t in zip(predictor.heads["tags"].labels, OLD_THRESHOLDS, strict=True)
          if scores[label] >= t]  # fmt: skip
    assert sorted(prediction.heads["tags"].labels) == sorted(on)
    model = TestClient(app_from_run(old_run, device="cpu")).get("/model").json()
    assert [h["thresholds"] for h in model["heads"]] == [None, OLD_THRESHOLDS]


def test_run_from_a_newer_pictag_is_refused_clearly(old_run):
    meta = json.loads((old_run / "pictag.json").read_text())
    meta["schema_version"] = 99
    (old_run / "pictag.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"schema_version 99.*upgrade pictag"):
        read_run_info(old_run)
    with pytest.raises(ValueError, match="upgrade pictag"):
        Predictor.from_run(old_run)
