"""ONNX Runtime feature extraction: parity with eager PyTorch, the exported file, its cache, and
every way of declining (no onnxruntime, an export-hostile model, a graph that disagrees)."""

from __future__ import annotations

import logging
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnx
import pytest
import torch
from timm.layers import Conv2dSame
from torch import nn

from pictag.models import onnx_features, static_padding
from pictag.models.backbone import create_backbone
from pictag.models.onnx_export import OPSET, export_backbone_onnx
from pictag.models.onnx_features import onnx_feature_extractor

LOGGER = "pictag.models.onnx_features"


def _backbone(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, int, int]]:
    torch.manual_seed(seed)
    size = 32 if name == "small_cnn" else 64
    model, _ = create_backbone(name, image_size=size)
    return model.eval(), (3, size, size)


def _eager(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images)


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet", "small_cnn"])
def test_extractor_matches_eager_backbone(name: str) -> None:
    model, input_size = _backbone(name)
    extract = onnx_feature_extractor(model, input_size, cache_dir=None)
    assert extract is not None
    images = torch.randn(3, *input_size)  # batch 3: not the export's batch of 2
    features = extract(images)
    expected = _eager(model, images)
    assert features.dtype == torch.float32
    assert features.shape == (3, model.num_features)
    assert torch.allclose(features, expected, rtol=1e-4, atol=1e-3 * float(expected.abs().max()))


def test_export_writes_one_file_with_a_dynamic_batch(tmp_path: Path) -> None:
    model, input_size = _backbone("small_cnn")
    path = export_backbone_onnx(model.train(), input_size, tmp_path / "out" / "bb.onnx")
    assert model.training  # the caller's mode comes back
    assert sorted(p.name for p in path.parent.iterdir()) == ["bb.onnx"]  # no temp, no weights
    graph = onnx.load(str(path))
    batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # symbolic, not a fixed size
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert OPSET >= 17


def test_torchscript_exporter_also_gives_parity(tmp_path: Path) -> None:
    model, input_size = _backbone("small_cnn")
    export_backbone_onnx(model, input_size, tmp_path / "bb.onnx", dynamo=False)
    extract = onnx_feature_extractor(model, input_size, tmp_path)  # agrees: not re-exported
    images = torch.randn(5, *input_size)
    assert torch.allclose(extract(images), _eager(model, images), atol=1e-5)


def test_none_when_onnxruntime_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    model, input_size = _backbone("small_cnn")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert onnx_feature_extractor(model, input_size, tmp_path) is None
    assert "ONNX Runtime unavailable" in caplog.text
    assert not list(tmp_path.iterdir())  # gave up before exporting anything


def test_cached_file_is_reused_and_replaced_when_stale(tmp_path: Path) -> None:
    model, input_size = _backbone("small_cnn")
    assert onnx_feature_extractor(model, input_size, tmp_path) is not None
    (path,) = tmp_path.glob("*.onnx")
    first = path.stat().st_mtime_ns
    assert onnx_feature_extractor(model, input_size, tmp_path) is not None
    assert path.stat().st_mtime_ns == first

    other, _ = _backbone("small_cnn", seed=1)  # other weights: the cached graph is stale
    extract = onnx_feature_extractor(other, input_size, tmp_path)
    assert path.stat().st_mtime_ns != first
    images = torch.randn(2, *input_size)
    assert torch.allclose(extract(images), _eager(other, images), atol=1e-5)


class _DataDependent(nn.Module):
    """Python control flow on a tensor value: ``torch.export`` refuses it, tracing does not."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean((2, 3))
        return y * 2 if float(x.mean()) > 100 else y


def test_a_trace_that_may_depend_on_the_input_is_not_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Traced, the branch taken on the random batch would be frozen into the graph.
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert onnx_feature_extractor(_DataDependent().eval(), (3, 16, 16), None) is None
    assert "TorchScript failed: ValueError: the trace may depend on the input" in caplog.text
    assert "torch.export failed" in caplog.text  # which refuses the branch outright


class _SizeAsNumber(nn.Module):
    """Reads its input's width as a Python number: the tracer warns, ``torch.export`` (which
    fixes the size) captures it."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3)) * int(x.shape[-1])


def test_falls_back_to_torch_export_when_the_trace_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = _SizeAsNumber().eval()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        extract = onnx_feature_extractor(model, (3, 16, 16), None)
    assert "the trace may depend on the input" in caplog.text
    images = torch.randn(3, 3, 16, 16)
    assert torch.allclose(extract(images), _eager(model, images), atol=1e-4)


def test_torchscript_is_tried_first_with_the_same_padding_fixed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    exporters = []

    def recording(*args: object, **kwargs: object) -> Path:
        exporters.append("torch.export" if kwargs["dynamo"] else "TorchScript")
        return export_backbone_onnx(*args, **kwargs)

    monkeypatch.setattr(onnx_features, "export_backbone_onnx", recording)
    torch.manual_seed(0)
    model = nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    extract = onnx_feature_extractor(model.eval(), (3, 17, 17), tmp_path)
    assert exporters == ["TorchScript"]
    images = torch.randn(3, 3, 17, 17)
    assert torch.allclose(extract(images), _eager(model, images), atol=1e-5)
    (path,) = tmp_path.glob("*.onnx")
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Conv" in ops and not ops & {"Shape", "Ceil"}  # padding as constants, not arithmetic


def test_a_torchscript_graph_that_disagrees_falls_back_to_torch_export(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model, input_size = _backbone("small_cnn")
    other, _ = _backbone("small_cnn", seed=1)
    # Stands in for a fixed-padding copy that computes something else than the model.
    monkeypatch.setattr(static_padding, "with_static_padding", lambda module, size: other)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        extract = onnx_feature_extractor(model, input_size, None)
    assert "does not agree with eager PyTorch: torch.export" in caplog.text
    images = torch.randn(3, *input_size)
    assert torch.allclose(extract(images), _eager(model, images), atol=1e-5)


class _Drifting(nn.Module):
    """Each eager call draws a new scale; the exported graph freezes one draw as a constant."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.rng = random.Random(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3)) * (1 + self.rng.random())


def test_none_with_a_warning_when_parity_fails(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert onnx_feature_extractor(_Drifting().eval(), (3, 16, 16), None) is None
    assert any(r.levelno == logging.WARNING and "differ" in r.message for r in caplog.records)


def test_rejects_images_of_another_size() -> None:
    model, input_size = _backbone("small_cnn")
    extract = onnx_feature_extractor(model, input_size, None)
    with pytest.raises(ValueError, match="expected images"):
        extract(torch.randn(1, 3, 48, 48))


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_concurrent_calls_run_in_two_sessions_and_match_the_plain_call(
    tmp_path: Path, two_threads: None
) -> None:
    model, input_size = _backbone("test_efficientnet")
    extract = onnx_feature_extractor(model, input_size, cache_dir=tmp_path)
    assert extract is not None
    call, count = extract.concurrent()
    assert count == 2
    idle = extract._streams[1]
    assert extract.concurrent()[1] == 2 and extract._streams[1] is idle  # opened once
    sessions = [idle.get() for _ in range(2)]
    assert sessions[0] is not sessions[1] and extract.session not in sessions
    for session in sessions:
        idle.put(session)
    batches = [torch.randn(3, *input_size) for _ in range(6)]
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(call, batches))
    for features, images in zip(got, batches, strict=True):
        assert torch.allclose(features, extract(images), atol=1e-5)


def test_one_call_at_a_time_on_one_thread_or_without_the_file(tmp_path: Path) -> None:
    model, input_size = _backbone("small_cnn")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        extract = onnx_feature_extractor(model, input_size, cache_dir=tmp_path)
        assert extract.concurrent() == (extract, 1)
        torch.set_num_threads(2)
        exported_alone = onnx_feature_extractor(model, input_size, cache_dir=None)
        assert exported_alone.concurrent() == (exported_alone, 1)  # its file went with the export
    finally:
        torch.set_num_threads(before)


def test_no_streams_on_a_file_changed_since_its_check(tmp_path: Path, two_threads: None) -> None:
    model, input_size = _backbone("small_cnn")
    extract = onnx_feature_extractor(model, input_size, cache_dir=tmp_path)
    other, _ = _backbone("small_cnn", seed=1)
    export_backbone_onnx(other, input_size, extract.path)  # another process's re-export
    assert extract.concurrent() == (extract, 1)
