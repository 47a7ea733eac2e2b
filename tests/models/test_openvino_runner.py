"""OpenVINO runs the exported ``model.onnx`` as ONNX Runtime does: same metadata, same heads,
the same probabilities as eager PyTorch within float32 rounding, safely from several threads,
and several batches at once in streams of their own for a long prediction."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from pictag.config import Config, HeadConfig, ModelConfig
from pictag.data.schema import Head
from pictag.evaluation.inference import probabilities
from pictag.export import export_run
from pictag.models import openvino_runner
from pictag.models.onnx_runner import OnnxRunner
from pictag.models.openvino_runner import TOLERANCES, OpenVinoRunner, max_difference
from pictag.run import build_model, load_run, run_meta, save_model

pytest.importorskip("openvino")

HEADS = {
    "colour": Head("colour", "multiclass", ("red", "green", "blue")),
    "tags": Head("tags", "multilabel", ("cool", "leafy", "warm")),
}


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.onnx`` of an untrained ``small_cnn`` run at 16 px with a multiclass and a
    multilabel head (random weights are enough for parity)."""
    torch.manual_seed(0)
    model_cfg = ModelConfig(backbone="small_cnn", pretrained="none", image_size=16)
    head_cfgs = {name: HeadConfig(kind=head.kind) for name, head in HEADS.items()}
    model, pre = build_model(model_cfg, HEADS, head_cfgs)
    run_dir = tmp_path_factory.mktemp("openvino") / "run"
    config = Config(heads=head_cfgs, model=model_cfg)
    save_model(run_dir, model.state_dict(), run_meta(config, HEADS, pre, {}))
    return export_run(run_dir).onnx.path


def _batch(n: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16), dtype=np.float32)


@torch.inference_mode()
def _eager(run_dir: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    model = load_run(run_dir).model
    logits = model(torch.from_numpy(images))
    return probabilities(HEADS, {name: value.numpy() for name, value in logits.items()})


@pytest.mark.parametrize("precision", ["auto", "f32"])
def test_same_probabilities_as_pytorch(onnx_file, precision):
    runner = OpenVinoRunner.load(onnx_file, precision)
    images = _batch()
    got, want = runner(images), _eager(onnx_file.parent, images)
    assert list(got) == ["colour", "tags"]
    for name in HEADS:
        assert got[name].dtype == np.float32 and got[name].shape == want[name].shape
        assert np.abs(got[name] - want[name]).max() <= runner.tolerance
    assert runner(torch.from_numpy(images))["tags"] == pytest.approx(got["tags"])  # tensors too


def test_forced_f32_and_its_tolerance(onnx_file):
    runner = OpenVinoRunner.load(onnx_file, "f32")
    assert runner.precision == "f32" and runner.tolerance == TOLERANCES["f32"] == 1e-4
    assert runner.backend == "openvino"
    # This CPU's own choice is f32 without native bf16; either way the tolerance follows it.
    default = OpenVinoRunner.load(onnx_file)
    assert default.tolerance == TOLERANCES[default.precision]


def test_same_metadata_and_outputs_as_onnxruntime(onnx_file):
    runner, reference = OpenVinoRunner.load(onnx_file, "f32"), OnnxRunner.load(onnx_file)
    assert runner.metadata == reference.metadata
    assert runner.outputs == reference.outputs and runner.input_name == reference.input_name
    diff = max_difference(runner, reference, _batch())
    assert set(diff) == set(HEADS) and max(diff.values()) < 1e-5


def test_dynamic_batch_and_calls_from_several_threads(onnx_file):
    runner = OpenVinoRunner.load(onnx_file, "f32")
    batches = [_batch(n, seed=n) for n in (1, 3, 7, 2, 5, 4)]
    alone = [runner(batch) for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(runner, batches))
    for a, b in zip(alone, together, strict=True):
        assert np.array_equal(a["colour"], b["colour"]) and np.array_equal(a["tags"], b["tags"])


def test_a_foreign_file_or_precision_is_refused(onnx_file, tmp_path):
    value = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])
    out = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value], [out])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(ValueError, match="no 'pictag' metadata"):
        OpenVinoRunner.load(path)
    with pytest.raises(ValueError, match="precision must be one of"):
        OpenVinoRunner.load(onnx_file, "int8")


@pytest.fixture
def threads():
    """Sets torch's thread budget for one test (the streams follow it)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _stream_requests(runner: OpenVinoRunner) -> list:
    """The idle infer requests of the runner's streams (all of them when none is running)."""
    idle = runner._streams[1]
    requests = [idle.get() for _ in range(idle.qsize())]
    for request in requests:
        idle.put(request)
    return requests


def test_streams_compute_batches_at_once_with_the_plain_results(onnx_file, threads):
    threads(2)
    runner = OpenVinoRunner.load(onnx_file, "f32")
    assert runner.compiled.get_property("NUM_STREAMS") == 1  # single calls: one stream
    call, count = runner.concurrent()
    assert count == 2
    requests = _stream_requests(runner)
    assert len(requests) == 2 and requests[0] is not requests[1]
    # Each called once when opened, one after the other (two first calls at once can hang).
    assert all(request.latency > 0 for request in requests)
    compiled = requests[0].get_compiled_model()
    assert compiled.get_property("NUM_STREAMS") == 2
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    batches = [_batch(n, seed=n) for n in (1, 3, 7, 2, 5, 4)]
    with ThreadPoolExecutor(count) as pool:
        together = list(pool.map(call, batches))
    for batch, got in zip(batches, together, strict=True):
        want = runner(batch)
        for name in HEADS:
            np.testing.assert_allclose(got[name], want[name], atol=1e-6)
    assert runner.concurrent()[1] == 2
    assert {id(r) for r in _stream_requests(runner)} == {id(r) for r in requests}  # compiled once
    threads(3)
    runner.concurrent()  # the budget changed: compiled again for it (OpenVINO caps the
    # threads at the cores, so the new requests, not their thread count, show it)
    assert runner._streams[0] == 3
    assert not {id(r) for r in _stream_requests(runner)} & {id(r) for r in requests}


def test_one_thread_or_a_precision_that_differs_keeps_one_call_at_a_time(
    onnx_file, threads, monkeypatch, caplog
):
    threads(1)
    runner = OpenVinoRunner.load(onnx_file, "f32")
    assert runner.concurrent() == (runner, 1)
    threads(2)
    monkeypatch.setattr(openvino_runner, "_precision", lambda compiled: "bf16")
    with caplog.at_level(logging.WARNING, logger=openvino_runner.__name__):
        assert runner.concurrent() == (runner, 1)
    assert "in 2 streams (they compute in bf16, not f32): one model call at a time" in caplog.text
    assert runner.concurrent() == (runner, 1)  # not compiled again
    assert caplog.text.count("cannot run") == 1


def test_streams_that_cannot_be_compiled_keep_one_call_at_a_time(
    onnx_file, threads, monkeypatch, caplog
):
    threads(2)
    runner = OpenVinoRunner.load(onnx_file, "f32")
    compile_settings = openvino_runner._config

    def broken(precision, threads, extra):  # stands for any failure to compile the streams
        extra = {**extra, "NUM_STREAMS": "many"} if "NUM_STREAMS" in extra else extra
        return compile_settings(precision, threads, extra)

    monkeypatch.setattr(openvino_runner, "_config", broken)
    with caplog.at_level(logging.WARNING, logger=openvino_runner.__name__):
        assert runner.concurrent() == (runner, 1)
        assert runner.concurrent() == (runner, 1)  # not tried again
    assert caplog.text.count("cannot run") == 1
    assert "in 2 streams" in caplog.text and "one model call at a time" in caplog.text
    images = _batch()
    np.testing.assert_array_equal(runner(images)["tags"], runner(images)["tags"])


def test_streams_whose_first_call_fails_keep_one_call_at_a_time(
    onnx_file, threads, monkeypatch, caplog
):
    threads(2)
    runner = OpenVinoRunner.load(onnx_file, "f32")
    plain = runner(_batch())
    compiled: list[int] = []

    def failing(self, requests):
        compiled.append(len(requests))
        raise RuntimeError("out of memory")

    monkeypatch.setattr(OpenVinoRunner, "_warmed_up", failing)
    with caplog.at_level(logging.WARNING, logger=openvino_runner.__name__):
        assert runner.concurrent() == (runner, 1)
        assert runner.concurrent() == (runner, 1)
    assert compiled == [2]  # tried once
    assert "cannot run" in caplog.text and "(out of memory)" in caplog.text
    np.testing.assert_array_equal(runner(_batch())["tags"], plain["tags"])
