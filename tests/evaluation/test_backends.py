"""Predictor backends on a CPU: OpenVINO when asked (and a clear error when it cannot be),
``auto`` choosing between ONNX Runtime and OpenVINO by a measurement and reporting its choice,
and OpenVINO results that fail the parity check never used."""

from __future__ import annotations

import logging

import pytest
import torch

from pictag.evaluation import backends
from pictag.evaluation.predictor import Predictor
from pictag.models import openvino_runner
from pictag.models.onnx_runner import OnnxRunner
from pictag.models.openvino_runner import OpenVinoRunner
from pictag.run import read_run_info

pytest.importorskip("openvino")


@pytest.fixture
def fresh_choices(monkeypatch):
    """An empty per-process cache of auto's choices, for tests that change what it measures."""
    monkeypatch.setattr(backends, "_AUTO_CHOICES", {})


def _images(run_dir):
    return sorted((run_dir.parent / "data" / "images").glob("*.png"))[:6]


def _scores(predictions):
    return [
        {f"{name}/{label}": s for name, h in p.heads.items() for label, s in h.scores.items()}
        for p in predictions
    ]


@pytest.mark.parametrize("backend", ["openvino", "openvino-fp32"])
def test_openvino_when_asked_gives_the_same_predictions(exported_run, backend):
    predictor = Predictor.from_run(exported_run, "cpu", backend=backend)
    assert predictor.backend == "openvino" and isinstance(predictor.runner, OpenVinoRunner)
    if backend == "openvino-fp32":
        assert predictor.runner.precision == "f32"
    reference = Predictor.from_run(exported_run, "cpu", backend="onnxruntime")
    assert reference.backend == "onnxruntime" and isinstance(reference.runner, OnnxRunner)
    got, want = predictor.predict(_images(exported_run)), reference.predict(_images(exported_run))
    for a, b in zip(_scores(got), _scores(want), strict=True):
        assert a == pytest.approx(b, abs=predictor.runner.tolerance)
    assert [p.heads["colour"].labels for p in got] == [p.heads["colour"].labels for p in want]


def test_openvino_needs_an_up_to_date_export_and_the_cpu(exported_run, tiny_run):
    with pytest.raises(ValueError, match=r"backend 'openvino' needs openvino .*up-to-date"):
        Predictor.from_run(tiny_run, "cpu", backend="openvino")  # never exported
    meta = read_run_info(exported_run).meta
    for backend in ("openvino", "openvino-fp32", "onnxruntime"):
        with pytest.raises(ValueError, match="runs on the CPU, not on cuda"):
            backends.select_runner(exported_run, meta, torch.device("cuda"), backend)
    # auto on a GPU is eager PyTorch, without complaint.
    assert backends.select_runner(exported_run, meta, torch.device("cuda"), "auto") is None
    with pytest.raises(ValueError, match="backend must be one of"):
        Predictor.from_run(exported_run, "cpu", backend="tensorrt")


def test_auto_picks_a_backend_reports_it_and_keeps_it(exported_run, fresh_choices):
    first = Predictor.from_run(exported_run, "cpu")
    assert first.backend in ("onnxruntime", "openvino")
    assert first.backend == backends.backend_name(first.runner)
    assert list(backends._AUTO_CHOICES.values()) == [first.backend]  # measured once ...
    again = Predictor.from_run(exported_run, "cpu")
    assert again.backend == first.backend  # ... and kept for the same file in this process
    assert Predictor.from_run(exported_run, "cpu", backend="torch").backend == "torch"


@pytest.mark.parametrize(("margin", "expected"), [(-100.0, "openvino"), (0.99, "onnxruntime")])
def test_auto_takes_openvino_only_when_it_is_faster(
    exported_run, fresh_choices, monkeypatch, caplog, margin, expected
):
    # A margin of -100 counts OpenVINO faster unless it is 100x slower; 0.99 asks for 100x
    # faster: the two sides of the decision without depending on this machine's speed.
    monkeypatch.setattr(backends, "MARGIN", margin)
    with caplog.at_level(logging.INFO, logger=backends.__name__):
        predictor = Predictor.from_run(exported_run, "cpu")
    assert predictor.backend == expected
    if expected == "openvino":
        assert predictor.runner.precision == "f32"  # auto never trades precision for speed
    assert f"per {backends.SAMPLE_IMAGES} images: {expected}" in caplog.text


def test_openvino_failing_parity_is_never_used(exported_run, fresh_choices, monkeypatch, caplog):
    monkeypatch.setitem(openvino_runner.TOLERANCES, "f32", -1.0)  # every difference fails
    monkeypatch.setitem(openvino_runner.TOLERANCES, "bf16", -1.0)
    monkeypatch.setattr(backends, "MARGIN", -100.0)  # it would win on speed
    with caplog.at_level(logging.WARNING, logger=backends.__name__):
        assert Predictor.from_run(exported_run, "cpu").backend == "onnxruntime"
    assert "OpenVINO differs from ONNX Runtime" in caplog.text
    with pytest.raises(ValueError, match=r"differs from ONNX Runtime .* use backend 'onnxruntime'"):
        Predictor.from_run(exported_run, "cpu", backend="openvino")


def test_unreadable_image_in_the_middle_with_openvino(exported_run, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    images = _images(exported_run)
    predictor = Predictor.from_run(exported_run, "cpu", backend="openvino")
    got = predictor.predict([*images[:3], broken, *images[3:]], batch_size=2)
    assert [p.error is None for p in got] == [True, True, True, False, True, True, True]
    assert got[3].heads == {} and "truncated" in got[3].error
