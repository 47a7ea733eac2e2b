"""OpenVINO runs the exported ``model.onnx`` as ONNX Runtime does: same metadata, same heads,
the same probabilities as eager PyTorch within float32 rounding, safely from several threads."""

from __future__ import annotations

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
