"""The learning-rate range test: files, a geometric sweep, a suggestion in range, the model
left as it was, and an early stop when the loss diverges."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pictag.config import TrainConfig, load_config
from pictag.heads import get_kind
from pictag.models.classifier import Classifier
from pictag.training.loop import Objective
from pictag.training.lr_find import lr_find, range_test, suggest
from pictag.training.optim import build_optimizer
from pictag.training.runtime import Runtime

FAST = [
    "model.backbone=small_cnn",
    "model.pretrained=none",
    "model.image_size=16",
    "train.batch_size=4",
    "train.augment=none",
    "train.amp=off",
    "train.device=cpu",
]
CPU = Runtime(torch.device("cpu"))


class Colours(Dataset):
    """(image, {"h": class}) pairs whose class is the brightest channel, as pictag batches."""

    def __init__(self, size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.labels = torch.arange(size) % 3
        self.images = torch.rand(size, 3, 8, 8, generator=generator)
        self.images[torch.arange(size), self.labels] += 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], {"h": self.labels[i]}


def _model() -> Classifier:
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    backbone.num_features = 4
    return Classifier(backbone, {"h": 3})


def _objective() -> Objective:
    ce = nn.functional.cross_entropy
    return Objective({"h": get_kind("multiclass")}, {"h": ce}, {"h": 1.0}, {"h": 3})


def _optimizer(model: Classifier, optimizer: str = "adamw") -> torch.optim.Optimizer:
    train = TrainConfig(lr=0.01, backbone_lr_scale=0.1, weight_decay=0.05, optimizer=optimizer)
    return build_optimizer(model, train)


def test_lr_find_writes_the_plot_and_csv_and_suggests_a_rate_in_range(folder_tree, tmp_path):
    config = load_config(overrides=[f"data.images={folder_tree}", *FAST])
    out = tmp_path / "fresh" / "lr"
    result = lr_find(config, out, start_lr=1e-5, end_lr=1.0, num_iter=20, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["lr_find.csv", "lr_find.png"]  # not a run
    assert result.plot_path.read_bytes().startswith(b"\x89PNG")
    with result.csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["lr", "loss", "smoothed_loss"]
    # ~30 training images in batches of 4 is 7 batches: the 20 steps cycled the loader.
    assert len(rows) == len(result.lrs) == len(result.losses) == len(result.smoothed)
    assert len(rows) == 20 if result.stopped is None else 2 <= len(rows) < 20
    lrs = np.array([float(row["lr"]) for row in rows])
    assert lrs[0] == pytest.approx(1e-5)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], (1.0 / 1e-5) ** (1 / 19), rtol=1e-9)
    assert isinstance(result.suggestion, float) and math.isfinite(result.suggestion)
    assert 1e-5 <= result.suggestion <= 1.0
    assert config.heads == {}  # the caller's config is not filled in by the data source


def test_range_test_restores_the_model_and_optimizer_and_scales_groups_together():
    model, objective = _model(), _objective()
    optimizer = _optimizer(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    group_lrs = [g["lr"] for g in optimizer.param_groups]
    seen: list[dict[str, float]] = []
    optimizer.register_step_pre_hook(
        lambda opt, *_: seen.append({g["name"]: g["lr"] for g in opt.param_groups})
    )
    loader = DataLoader(Colours(24), batch_size=8, shuffle=True)
    result = range_test(
        model, loader, objective, optimizer, CPU, start_lr=1e-4, end_lr=1.0, num_iter=12,
        progress=False,
    )  # fmt: skip
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics too
    assert [g["lr"] for g in optimizer.param_groups] == group_lrs
    assert not optimizer.state  # AdamW's moments from the sweep are gone
    assert len(seen) == len(result.lrs)
    for lr, lrs in zip(result.lrs, seen, strict=True):
        assert lrs["heads"] == pytest.approx(lr)  # the reported rate is train.lr
        assert lrs["backbone"] == pytest.approx(0.1 * lr)  # backbone_lr_scale kept
    assert result.lrs[0] <= result.suggestion <= result.lrs[-1]


def test_a_huge_end_lr_stops_early_on_divergence():
    model = _model()
    loader = DataLoader(Colours(24), batch_size=8)
    result = range_test(
        model, loader, _objective(), _optimizer(model, "sgd"), CPU, start_lr=1e-3, end_lr=1e8,
        num_iter=40, progress=False,
    )  # fmt: skip
    assert result.stopped is not None and result.stopped.startswith("diverged")
    assert 1 <= len(result.lrs) < 40
    assert all(math.isfinite(x) for x in result.losses + result.smoothed)
    assert 1e-3 <= result.suggestion <= 1e8 and math.isfinite(result.suggestion)


def test_a_nan_loss_ends_the_sweep_before_its_step_and_the_model_is_restored():
    model, objective = _model(), _objective()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def poisoned(logits, targets):
        calls.append(1)
        total, parts = objective(logits, targets)
        return (total * math.nan if len(calls) > 5 else total), parts

    loader = DataLoader(Colours(24), batch_size=8)
    result = range_test(
        model, loader, poisoned, _optimizer(model), CPU, num_iter=20, progress=False
    )
    assert result.stopped.startswith("diverged: loss not finite")
    assert len(result.lrs) == len(result.losses) == 5
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_bad_bounds_and_an_empty_loader_are_errors(tmp_path):
    with pytest.raises(ValueError, match="start_lr < end_lr"):  # before any data work
        lr_find(load_config(), tmp_path, start_lr=1.0, end_lr=0.1, progress=False)
    model = _model()
    empty = DataLoader(Colours(0), batch_size=4)
    with pytest.raises(ValueError, match="no training batches"):
        range_test(model, empty, _objective(), _optimizer(model), CPU, progress=False)
    loader = DataLoader(Colours(8), batch_size=4)
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        range_test(model, loader, _objective(), _optimizer(model), CPU, start_lr=1, end_lr=0.1)
    with pytest.raises(ValueError, match="num_iter"):
        range_test(model, loader, _objective(), _optimizer(model), CPU, num_iter=1)


def test_suggestion_is_where_the_loss_falls_fastest():
    lrs = np.logspace(-6, 0, 61).tolist()
    smoothed = [2 - math.tanh(2 * (math.log10(lr) + 3)) for lr in lrs]  # steepest at 1e-3
    assert suggest(lrs, smoothed) == pytest.approx(1e-3, rel=0.3)
    assert suggest([1e-4], [1.0]) == 1e-4
