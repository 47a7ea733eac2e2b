"""Linear probe features: ONNX Runtime on a CPU when it can, eager PyTorch otherwise, with the
same features and targets either way."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from pictag.models.backbone import create_backbone
from pictag.models.classifier import Classifier
from pictag.training.probe import extract_features
from pictag.training.runtime import Runtime

CPU = Runtime(torch.device("cpu"))


def _model_and_loader() -> tuple[Classifier, list]:
    torch.manual_seed(0)
    backbone, _ = create_backbone("small_cnn")
    model = Classifier(backbone, {"colour": 3, "tags": 2})
    loader = [
        (torch.randn(n, 3, 32, 32), {"colour": torch.arange(n) % 3, "tags": torch.ones(n, 2)})
        for n in (4, 4, 3)
    ]
    return model, loader


def _expected(model: Classifier, loader: list) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.eval().forward_features(images) for images, _ in loader])


def test_onnx_features_match_eager_and_keep_their_graph(tmp_path: Path) -> None:
    model, loader = _model_and_loader()
    features, targets = extract_features(model, loader, CPU, progress=False, cache_dir=tmp_path)
    assert [p.suffix for p in tmp_path.iterdir()] == [".onnx"]  # ONNX Runtime ran
    assert features.shape == (11, model.num_features)
    assert torch.allclose(features, _expected(model, loader), atol=1e-5)
    assert targets["colour"].tolist() == [0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2]
    assert targets["tags"].shape == (11, 2)


@pytest.mark.parametrize("block", ["use_onnx=False", "no onnxruntime"])
def test_eager_channels_last_when_onnx_is_off_or_missing(
    block: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model, loader = _model_and_loader()
    expected = _expected(model, loader)
    if block == "no onnxruntime":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
    use_onnx = block != "use_onnx=False"
    features, _ = extract_features(
        model, loader, CPU, progress=False, cache_dir=tmp_path, use_onnx=use_onnx
    )
    assert not list(tmp_path.iterdir())  # nothing exported
    assert model.backbone.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(features, expected, atol=1e-5)


def test_the_backbone_runs_without_autograd_on_every_path(monkeypatch, tmp_path: Path) -> None:
    # A forward with grad on would keep every batch's activations until the pass ends.
    model, loader = _model_and_loader()
    modes = []
    real = model.forward_features
    monkeypatch.setattr(
        model, "forward_features", lambda x: modes.append(torch.is_grad_enabled()) or real(x)
    )
    extract_features(model, loader, CPU, progress=False, use_onnx=False)
    assert modes == [False] * len(loader)


def test_empty_loader_gives_no_features() -> None:
    model, _ = _model_and_loader()
    features, targets = extract_features(model, [], CPU, progress=False)
    assert features.shape == (0, model.num_features)
    assert targets == {}


def test_flip_gives_the_features_of_the_mirror_images() -> None:
    model, loader = _model_and_loader()
    mirrored = [(images.flip(-1), targets) for images, targets in loader]
    features, _ = extract_features(model, loader, CPU, progress=False, flip=True)
    assert torch.allclose(features, _expected(model, mirrored), atol=1e-5)
    assert not torch.allclose(features, _expected(model, loader), atol=1e-3)


def test_onnx_features_keep_two_batches_in_flight_in_loader_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pictag.training import probe

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    streams = []
    real = probe.in_flight
    monkeypatch.setattr(probe, "in_flight", lambda *a: streams.append(a[-1]) or real(*a))
    try:
        model, _ = _model_and_loader()
        loader = [(torch.randn(2, 3, 32, 32), {"colour": torch.tensor([i, i])}) for i in range(7)]
        features, targets = extract_features(model, loader, CPU, progress=False, cache_dir=tmp_path)
    finally:
        torch.set_num_threads(before)
    assert streams == [2]
    assert targets["colour"].tolist() == [i for i in range(7) for _ in range(2)]
    assert torch.allclose(features, _expected(model, loader), atol=1e-5)
