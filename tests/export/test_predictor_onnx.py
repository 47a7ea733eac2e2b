"""Predictor on the CPU runs ``RUN_DIR/model.onnx`` through ONNX Runtime when it is up to date,
with the same results as eager PyTorch, and falls back to PyTorch (saying why) otherwise."""

from __future__ import annotations

import json
import logging
import os

import onnx
import pytest
import torch
from onnx import helper

from pictag.evaluation import predictor as predictor_module
from pictag.evaluation.predictor import Predictor
from pictag.models.onnx_runner import OnnxRunner

LOGGER = "pictag.models.onnx_runner"


def _images(run_dir):
    return sorted((run_dir.parent / "images").iterdir())


@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "multioutput"])
def test_onnxruntime_predictions_match_eager(runs, exported, kind):
    run_dir = runs[kind]
    assert exported[kind].onnx.passed
    fast = Predictor.from_run(run_dir, "cpu", backend="onnxruntime")  # auto may take OpenVINO
    eager = Predictor.from_run(run_dir, "cpu", backend="torch")
    assert fast.backend == "onnxruntime" and isinstance(fast.runner, OnnxRunner)
    assert eager.backend == "torch" and eager.runner is None
    images = _images(run_dir)
    got, want = fast.predict(images, batch_size=7), eager.predict(images, batch_size=7)
    for a, b in zip(got, want, strict=True):
        assert a.error is None and list(a.heads) == list(b.heads)
        for name, head in a.heads.items():
            assert head.labels == b.heads[name].labels and head.labels  # clear-cut decisions
            assert head.scores == pytest.approx(b.heads[name].scores, abs=1e-4)
    assert fast.model is not None  # PyTorch model kept for callers that need it (Grad-CAM)


def test_pytorch_model_is_built_only_when_asked_for(runs, exported, monkeypatch):
    calls = []
    real_load_run = predictor_module.load_run

    def counting(*args, **kwargs):
        calls.append(args)
        return real_load_run(*args, **kwargs)

    monkeypatch.setattr(predictor_module, "load_run", counting)
    predictor = Predictor.from_run(runs["multioutput"], "cpu")
    predictor.predict(_images(runs["multioutput"])[:2])
    # Neither ONNX Runtime nor OpenVINO (whichever auto measured faster) needs the model.
    assert predictor.backend in ("onnxruntime", "openvino") and calls == []
    model = predictor.model  # e.g. for Grad-CAM
    assert predictor.model is model and len(calls) == 1  # built once
    assert isinstance(model, torch.nn.Module) and not model.training

    assert Predictor.from_run(runs["multioutput"], "cpu", backend="torch").backend == "torch"
    assert len(calls) == 2  # eager PyTorch loads it at once


def test_unreadable_images_still_reported_with_onnxruntime(runs, exported, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    predictor = Predictor.from_run(runs["multioutput"], "cpu", backend="onnxruntime")
    first, bad = predictor.predict([_images(runs["multioutput"])[0], broken])
    assert first.heads["colour"].labels == ["red"] and first.heads["tags"].labels == ["warm"]
    assert bad.heads == {} and "truncated" in bad.error


def test_stale_export_falls_back_to_pytorch(runs, exported, copy_run, caplog):
    run_dir = copy_run(runs["multiclass"])
    weights = run_dir / "model.safetensors"
    newer = (run_dir / "model.onnx").stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(newer, newer))  # weights written after the export
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        predictor = Predictor.from_run(run_dir, "cpu")
    assert predictor.backend == "torch"
    assert "older than model.safetensors" in caplog.text and "pictag export" in caplog.text
    with pytest.raises(ValueError, match="up-to-date"):
        Predictor.from_run(run_dir, "cpu", backend="onnxruntime")


def test_export_of_another_checkpoint_is_not_used(runs, exported, copy_run, caplog):
    run_dir = copy_run(runs["multiclass"])
    meta_path = run_dir / "pictag.json"
    meta = json.loads(meta_path.read_text())
    meta["checkpoint_id"] = "retrained"
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert Predictor.from_run(run_dir, "cpu").backend == "torch"
    assert "another checkpoint" in caplog.text


def test_export_with_other_labels_is_not_used(runs, exported, copy_run, caplog):
    run_dir = copy_run(runs["multiclass"])
    model = onnx.load(str(run_dir / "model.onnx"))
    for prop in model.metadata_props:
        if prop.key == "pictag":
            meta = json.loads(prop.value)
            meta["heads"][0]["labels"] = ["rouge", "vert", "bleu"]
            prop.value = json.dumps(meta)
    onnx.save(model, str(run_dir / "model.onnx"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert Predictor.from_run(run_dir, "cpu").backend == "torch"
    assert "labels differ" in caplog.text


def test_no_export_or_torch_backend_means_eager(runs, exported, copy_run, tmp_path):
    run_dir = copy_run(runs["multiclass"])
    assert Predictor.from_run(run_dir, "cpu", backend="torch").backend == "torch"
    (run_dir / "model.onnx").unlink()
    assert Predictor.from_run(run_dir, "cpu").backend == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        Predictor.from_run(run_dir, "cpu", backend="tensorrt")


def test_a_foreign_onnx_file_is_refused(tmp_path):
    value = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])
    out = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value], [out])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(ValueError, match="no 'pictag' metadata"):
        OnnxRunner.load(path)
