"""train.budget: durations, the epoch plan, the timing that feeds it, and a budgeted run."""

from __future__ import annotations

import json
import logging
import time

import pytest
import torch

import pictag.training.budget as budget_module
from pictag.config import ConfigError, load_config
from pictag.config_parse import parse_duration
from pictag.models.backbone import create_backbone
from pictag.models.classifier import Classifier
from pictag.training.budget import (
    CPU_BUDGET_S,
    EPOCH_MARGIN,
    Budget,
    budget_seconds,
    measure_speed,
    next_epoch_fits,
    plan_epochs,
    reserve_seconds,
)
from pictag.training.loop import Objective
from pictag.training.runtime import Runtime
from pictag.training.trainer import train


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), (90, 90), ("90s", 90), ("5m", 300), ("1.5h", 5400), ("1h30m", 5400)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "0", "-3", "m", "", "inf", "5x"])
def test_bad_durations_say_what_a_duration_looks_like(text):
    with pytest.raises(ValueError, match=r"is not a duration; use e\.g\. 90s, 5m"):
        parse_duration(text)


def test_a_bad_budget_is_refused_when_the_config_is_read():
    with pytest.raises(ConfigError, match=r"train\.budget: '5 minutes' is not a duration"):
        load_config(overrides=["train.budget=5 minutes"])


def test_auto_is_a_budget_on_a_cpu_and_none_on_a_gpu():
    assert budget_seconds("auto", torch.device("cpu")) == CPU_BUDGET_S
    assert budget_seconds("auto", torch.device("cuda")) is None
    assert budget_seconds("off", torch.device("cpu")) is None
    assert budget_seconds("2m", torch.device("cuda")) == 120


def test_plan_counts_training_and_validation_and_never_exceeds_the_epochs_asked():
    # 100 training images + 30 validation images at a third of the cost: 11 s an epoch at
    # 10/s, and the margin for checkpoints and noise on top.
    plan = plan_epochs(100, 20, 100, 30, 10.0, at_least_one=False)
    assert (plan.epochs, plan.epoch_s) == (7, pytest.approx(11.0 * EPOCH_MARGIN))
    assert plan_epochs(100, 5, 100, 30, 10.0, at_least_one=False).epochs == 5
    assert plan_epochs(5, 5, 100, 30, 10.0, at_least_one=False).epochs == 0
    assert plan_epochs(5, 5, 100, 30, 10.0, at_least_one=True).epochs == 1
    assert plan_epochs(-3, 5, 100, 30, 10.0, at_least_one=False).epochs == 0


def test_next_epoch_fits_in_what_is_left_after_the_reserve():
    started = time.perf_counter() - 50
    budget = Budget(100.0, started)
    left = 50 - reserve_seconds(100.0)
    assert next_epoch_fits(budget, left - 5)
    assert not next_epoch_fits(budget, left + 5)
    assert next_epoch_fits(Budget(None), 1e9)


def test_measuring_speed_leaves_the_model_exactly_as_it_was():
    torch.manual_seed(0)
    backbone, _ = create_backbone("small_cnn")
    model = Classifier(backbone, {"c": 3})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = torch.nn.functional.cross_entropy
    objective = Objective({}, {"c": loss}, {"c": 1.0}, {"c": 3})
    batches = [(torch.randn(4, 3, 16, 16), {"c": torch.tensor([0, 1, 2, 0])})] * 5
    speed = measure_speed(model, batches, objective, Runtime(torch.device("cpu")), False)
    assert speed > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    assert all(p.grad is None for p in model.parameters())


SETTINGS = [
    "model.backbone=small_cnn",
    "model.pretrained=none",
    "model.image_size=16",
    "train.batch_size=4",
    "train.augment=none",
    "train.epochs=5",
    "train.device=cpu",
]


def _run(images, tmp_path, speed, *extra):
    config = load_config(overrides=[f"data.images={images}", *SETTINGS, *extra])
    return train(config, tmp_path / "run", progress=False)


def _epochs(run) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_budget_plans_the_epochs_that_fit_and_a_resume_keeps_them(
    folder_tree, tmp_path, monkeypatch, caplog
):
    # 36 images, 15 % for validation: ~31 + 5/3 image-costs an epoch; at this speed an epoch
    # takes ~400 s with the margin, so a 1000 s budget fits 2 of the 5 epochs.
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: EPOCH_MARGIN * 33 / 400)
    with caplog.at_level(logging.INFO, logger="pictag"):
        _run(folder_tree, tmp_path, None, "train.budget=1000s")
    run = tmp_path / "run"
    assert _epochs(run) == [1, 2]
    assert "2 of at most 5 epochs fit" in caplog.text
    assert "speed:" not in caplog.text  # the plan has said it: no second estimate
    assert "budget: 17 min: as many of the 5 fine-tune epochs as fit" in caplog.text
    stored = json.loads((run / "pictag.json").read_text())["config"]["train"]
    assert stored["epochs"] == 2  # what a resumed run continues


def test_when_no_epoch_fits_after_the_probe_the_probe_is_the_model(
    folder_tree, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: 1e-4)
    with caplog.at_level(logging.INFO, logger="pictag"):
        _run(folder_tree, tmp_path, None, "train.budget=60s", "train.mode=probe-then-fine-tune")
    assert _epochs(tmp_path / "run") == [0]
    assert "no fine-tune epoch fits" in caplog.text
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_from_scratch_one_epoch_runs_even_when_none_fits(folder_tree, tmp_path, monkeypatch):
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: 1e-4)
    _run(folder_tree, tmp_path, None, "train.budget=60s")
    assert _epochs(tmp_path / "run") == [1]


def test_budget_off_trains_every_epoch_without_timing(folder_tree, tmp_path, monkeypatch, caplog):
    def fail(*args, **kwargs):
        raise AssertionError("no budget: nothing to time")

    monkeypatch.setattr(budget_module, "measure_speed", fail)
    with caplog.at_level(logging.INFO, logger="pictag"):
        _run(folder_tree, tmp_path, None, "train.budget=off", "train.epochs=2")
    assert _epochs(tmp_path / "run") == [1, 2]
    assert "speed:" in caplog.text and "budget:" not in caplog.text
