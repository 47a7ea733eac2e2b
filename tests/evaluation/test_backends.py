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
from pictag.models.onnx_runner import OnnxRunner, file_stamp
from pictag.models.openvino_runner import OpenVinoRunner
from pictag.run import backend_choice, read_run_info
from pictag.run.backend_choice import AUTO_BACKEND_FILE, machine_key, read_auto_choice

pytest.importorskip("openvino")


@pytest.fixture
def fresh_choices(monkeypatch, exported_run):
    """No choice of auto's, in this process or stored in the run folder, for tests that change
    what it measures."""
    monkeypatch.setattr(backends, "_AUTO_CHOICES", {})
    stored = exported_run / AUTO_BACKEND_FILE
    stored.unlink(missing_ok=True)
    yield
    stored.unlink(missing_ok=True)


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
    for backend in ("openvino", "onnxruntime"):  # never exported: say so, and what to run
        with pytest.raises(ValueError, match=rf"backend '{backend}' runs .*model\.onnx, which has "
                           r"not been written: write it with `pictag export"):  # fmt: skip
            Predictor.from_run(tiny_run, "cpu", backend=backend)
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
    assert f"per {backends.CPU_BATCH} images (batches in flight" in caplog.text
    assert f"as predict runs them): {expected}" in caplog.text


@pytest.mark.parametrize(("margin", "expected"), [(-100.0, "openvino"), (0.99, "onnxruntime")])
def test_auto_times_both_runtimes_with_batches_in_flight_as_predict_runs_them(
    exported_run, fresh_choices, monkeypatch, margin, expected
):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(backends, "MARGIN", margin)
        predictor = Predictor.from_run(exported_run, "cpu")
        assert predictor.backend == expected
        streams = predictor.runner._streams  # opened, and warmed up, to be timed ...
        assert streams is not None and streams[1] is not None
        predictor.predict(_images(exported_run), batch_size=2)
        assert predictor.runner._streams is streams  # ... and the prediction runs on them
    finally:
        torch.set_num_threads(before)


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


def test_auto_stores_its_choice_for_the_next_process_on_this_machine(
    exported_run, fresh_choices, monkeypatch
):
    first = Predictor.from_run(exported_run, "cpu").backend
    key = machine_key(file_stamp(exported_run / "model.onnx"), torch.get_num_threads())
    assert read_auto_choice(exported_run, key) == first

    def measure(*args):
        raise AssertionError("measured again")

    # A new process (no choice in memory) on this machine takes the stored one, unmeasured.
    monkeypatch.setattr(backends, "_AUTO_CHOICES", {})
    monkeypatch.setattr(backends, "_measure", measure)
    assert Predictor.from_run(exported_run, "cpu").backend == first
    # Another thread budget (or CPU, runtime version, re-export) measures anew.
    monkeypatch.setattr(backends, "_AUTO_CHOICES", {})
    monkeypatch.setattr(torch, "get_num_threads", lambda: 99)
    with pytest.raises(AssertionError, match="measured again"):
        Predictor.from_run(exported_run, "cpu")


def test_a_run_folder_that_cannot_be_written_only_costs_the_measurement(
    exported_run, fresh_choices, monkeypatch
):
    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(backend_choice, "write_json", refuse)
    assert Predictor.from_run(exported_run, "cpu").backend in ("onnxruntime", "openvino")
    assert not (exported_run / AUTO_BACKEND_FILE).exists()
