"""The dense probe: heads trained on the frozen backbone's cached feature maps."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pictag.config import HeadConfig, ModelConfig, TrainConfig
from pictag.data.dataset import ImageDataset
from pictag.data.schema import Sample
from pictag.data.transforms import eval_transform
from pictag.heads import DETECTION, LossOptions, Objects, resolve_head
from pictag.run.model import build_model
from pictag.training import dense_probe
from pictag.training.budget import Budget
from pictag.training.loaders import Loaders
from pictag.training.loop import Objective
from pictag.training.runtime import setup_runtime


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(12):
        pixels = np.zeros((48, 64, 3), np.uint8)
        x, y = int(rng.integers(0, 30)), int(rng.integers(0, 20))
        pixels[y : y + 24, x : x + 30] = 255
        path = tmp_path / f"{i}.png"
        Image.fromarray(pixels).save(path)
        box = ("box", float(x), float(y), float(x + 30), float(y + 24))
        samples.append(Sample(path, {"objects": Objects((64, 48), (box,))}))
    head = resolve_head("objects", "detection", [s.labels["objects"] for s in samples])
    model_cfg = ModelConfig(backbone="test_efficientnet", pretrained="none", image_size=64)
    model, pre = build_model(model_cfg, {"objects": head}, {"objects": HeadConfig()})
    data = ImageDataset(samples, {"objects": head}, pre, eval_transform(pre))
    loader = DataLoader(data, batch_size=4)
    loaders = Loaders(train=loader, train_plain=loader, val=loader, sampler=None)
    targets = np.stack([head.target(s.labels["objects"]) for s in samples])
    loss = DETECTION.make_loss(LossOptions(), DETECTION.count_labels(targets, 1))
    params = {"objects": DETECTION.default_params(head, None)}
    objective = Objective({"objects": DETECTION}, {"objects": loss}, {"objects": 1.0}, {}, params)
    return model, pre, loaders, objective


def test_dense_probe_trains_the_heads_and_leaves_the_backbone(setup, monkeypatch):
    monkeypatch.setattr(dense_probe, "EPOCHS", 10)  # enough for white boxes on black
    model, pre, loaders, objective = setup
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in model.dense.state_dict().items()}
    runtime = setup_runtime("cpu", "off", 0)
    train = TrainConfig(lr=3e-3, hflip=0.5)
    val, losses = dense_probe.run_dense_probe(
        model, loaders, objective, runtime, train, pre.size, progress=False
    )
    assert set(val.metrics) >= {"loss", "score", "objects/map", "objects/map50"}
    assert val.probs["objects"].shape[0] == 12 and losses["objects"] > 0
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, backbone[key])
    assert any(not torch.equal(v, head[k]) for k, v in model.dense.state_dict().items())
    # White rectangles on black: the heads find them on a random backbone's maps.
    assert val.metrics["objects/map50"] > 0.5


def test_mirrored_loader_moves_the_boxes(setup):
    _, _, loaders, _ = setup
    image, target = loaders.train_plain.dataset[0]
    flipped_image, flipped = dense_probe.mirrored(loaders.train_plain).dataset[0]
    torch.testing.assert_close(flipped_image, image.flip(-1))
    row, mirrored_row = target["objects"][0], flipped["objects"][0]
    assert float(mirrored_row[1]) == pytest.approx(1 - float(row[3]), abs=1e-5)
    assert float(mirrored_row[3]) == pytest.approx(1 - float(row[1]), abs=1e-5)


def test_a_spent_budget_stops_the_probe_after_one_epoch(setup, monkeypatch, caplog):
    model, pre, loaders, objective = setup
    epochs = []
    real_epoch = dense_probe._epoch

    def counted(*args, **kwargs):
        epochs.append(1)
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(dense_probe, "_epoch", counted)
    runtime = setup_runtime("cpu", "off", 0)
    spent = Budget(seconds=10.0, started=time.perf_counter() - 9.0)
    val, _ = dense_probe.run_dense_probe(
        model, loaders, objective, runtime, TrainConfig(hflip=0.0), pre.size, False, spent
    )
    assert len(epochs) == 1 and "objects/map" in val.metrics
