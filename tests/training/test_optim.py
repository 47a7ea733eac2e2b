import itertools

import pytest
import torch
from torch import nn

from pictag.config import TrainConfig, load_config
from pictag.models.classifier import Classifier
from pictag.training.optim import (
    build_optimizer,
    build_scheduler,
    freeze_batchnorm,
    param_groups,
    set_backbone_trainable,
)


def _model():
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    backbone.num_features = 4
    return Classifier(backbone, {"h": 3})


def test_backbone_gets_scaled_lr_and_norms_no_decay():
    train = TrainConfig(lr=0.01, backbone_lr_scale=0.1, weight_decay=0.05)
    groups = {g["name"]: g for g in param_groups(_model(), train)}
    assert groups["backbone"]["lr"] == pytest.approx(0.001)
    assert groups["heads"]["lr"] == pytest.approx(0.01)
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim <= 1 for p in groups["heads_no_decay"]["params"])
    assert isinstance(build_optimizer(_model(), train), torch.optim.AdamW)
    sgd = load_config(overrides=["train.optimizer=sgd"]).train
    assert isinstance(build_optimizer(_model(), sgd), torch.optim.SGD)


def test_sgd_takes_its_own_weight_decay_and_nesterov_only_when_asked():
    # Issue 15, case 3: SGD used to keep AdamW's weight decay of 0.05 and be always Nesterov.
    sgd = load_config(overrides=["train.optimizer=sgd"]).train
    optimizer = build_optimizer(_model(), sgd)
    assert optimizer.defaults["nesterov"] is False
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(5e-4)
    asked = load_config(overrides=["train.optimizer=sgd", "train.nesterov=true"]).train
    assert build_optimizer(_model(), asked).defaults["nesterov"] is True
    with pytest.raises(ValueError, match="resolve_defaults"):
        param_groups(_model(), TrainConfig())


def test_warmup_then_cosine_to_one_percent():
    model = _model()
    train = TrainConfig(lr=1.0, backbone_lr_scale=1.0, weight_decay=0.0, epochs=10, warmup_epochs=1)
    optimizer = build_optimizer(model, train)
    scheduler = build_scheduler(optimizer, train, steps_per_epoch=10)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] < 0.2 and lrs[9] < 1.0  # warming up
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[-1] < 0.05 and lrs[-1] >= 0.01  # cosine ends at 1% of the peak
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_onecycle_and_constant():
    model = _model()
    train = TrainConfig(schedule="onecycle", epochs=2, lr=0.1, backbone_lr_scale=1, weight_decay=0)
    optimizer = build_optimizer(model, train)
    assert isinstance(build_scheduler(optimizer, train, 5), torch.optim.lr_scheduler.OneCycleLR)
    train = TrainConfig(
        schedule="constant", epochs=2, warmup_epochs=0, lr=0.1, backbone_lr_scale=1, weight_decay=0
    )
    optimizer = build_optimizer(model, train)
    scheduler = build_scheduler(optimizer, train, 5)
    for _ in range(9):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[-1]["lr"] == pytest.approx(0.1)


def test_freezing_backbone_and_batchnorm():
    model = _model()
    set_backbone_trainable(model, False)
    assert not any(p.requires_grad for p in model.backbone_parameters())
    assert all(p.requires_grad for p in model.head_parameters())
    model.train()
    freeze_batchnorm(model)
    assert not model.backbone[1].training
    assert model.backbone[0].training
