"""train.budget: durations, the epoch plan, the timing that feeds it, and a budgeted run."""

from __future__ import annotations

import json
import logging
import time

import pytest
import torch

import pictag.training.budget as budget_module
import pictag.training.epochs as epochs_module
from pictag.config import ConfigError, load_config
from pictag.config_parse import parse_duration
from pictag.models.backbone import create_backbone
from pictag.models.classifier import Classifier
from pictag.run.files import read_resume_config
from pictag.training.budget import (
    EPOCH_MARGIN,
    Budget,
    measure_speed,
    next_epoch_fits,
    plan_epochs,
    reserve_seconds,
    validation_deadline,
)
from pictag.training.budget_setting import CPU_BUDGET_S, budget_seconds
from pictag.training.loaders import EpochSampler
from pictag.training.loop import Objective
from pictag.training.runtime import Runtime
from pictag.training.trainer import train


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), (90, 90), ("90s", 90), ("5m", 300), ("1.5h", 5400), ("1h30m", 5400)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "0m"])
def test_a_zero_duration_says_so_and_names_off(text):
    with pytest.raises(ValueError, match=r"is no time at all; .*or off for no budget"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["5 minutes", "-3", "m", "", "inf", "5x"])
def test_bad_durations_say_what_a_duration_looks_like(text):
    with pytest.raises(ValueError, match=r"is not a duration; use e\.g\. 90s, 5m"):
        parse_duration(text)


def test_a_deterministic_run_has_no_auto_budget_but_keeps_one_it_is_given():
    assert budget_seconds("auto", torch.device("cpu"), deterministic=True) is None
    assert budget_seconds("2m", torch.device("cpu"), deterministic=True) == 120


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
    assert plan_epochs(1, 5, 100, 30, 10.0, at_least_one=False).epochs == 0
    assert plan_epochs(1, 5, 100, 30, 10.0, at_least_one=True).epochs == 1
    assert plan_epochs(-3, 5, 100, 30, 10.0, at_least_one=False).epochs == 0


def test_when_no_whole_epoch_fits_one_epoch_of_the_images_that_fit_is_planned():
    # 1000 training + 300 validation images at 10/s: a whole epoch takes ~126 s. 80 s leave
    # 80 / margin * 10 - 100 = 595 images for training, above half of the set: 18 whole
    # batches of 32 (the loader drops a last partial one).
    plan = plan_epochs(80, 10, 1000, 300, 10.0, at_least_one=False, batch_size=32)
    assert (plan.epochs, plan.images) == (1, 576)
    assert plan.part(1000) and plan.epoch_s <= 80
    # 50 s leave 334 images, under half: not worth a validation pass after a probe ...
    assert plan_epochs(50, 10, 1000, 300, 10.0, at_least_one=False, batch_size=32).epochs == 0
    # ... but a run from scratch takes the least part worth it: half of the set (in whole
    # batches).
    scratch = plan_epochs(50, 10, 1000, 300, 10.0, at_least_one=True, batch_size=32)
    assert (scratch.epochs, scratch.images) == (1, 480)
    # A whole epoch that fits is planned whole.
    assert plan_epochs(500, 10, 1000, 300, 10.0, at_least_one=False).images == 1000
    assert not plan_epochs(500, 10, 1000, 300, 10.0, at_least_one=False).part(1000)


def test_an_epoch_of_part_of_the_images_draws_them_anew_each_epoch():
    sampler = EpochSampler(100, seed=0, runtime=Runtime(torch.device("cpu")), limit=30)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert len(sampler) == len(first) == len(second) == 30
    assert len(set(first)) == 30 and set(first) != set(second)
    sampler.set_epoch(0)
    assert list(sampler) == first  # a resumed run draws what the unbroken one drew
    sampler.limit = 0
    assert sorted(sampler) == list(range(100))


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


def _epoch_images(monkeypatch) -> list[int]:
    """The images each fine-tune epoch's loader yields, recorded as the run goes."""
    drawn: list[int] = []
    real = epochs_module.train_one_epoch

    def counted(net, loader, *args, **kwargs):
        drawn.append(sum(len(images) for images, _ in loader))
        return real(net, loader, *args, **kwargs)

    monkeypatch.setattr(epochs_module, "train_one_epoch", counted)
    return drawn


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


def test_part_of_an_epoch_is_fine_tuned_when_a_whole_one_does_not_fit(
    folder_tree, tmp_path, monkeypatch, caplog
):
    # ~31 training images; at 0.2 img/s a whole epoch takes ~190 s, and a 150 s budget leaves
    # time for about 16 of them after the reserve.
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: 0.2)
    drawn = _epoch_images(monkeypatch)
    with caplog.at_level(logging.INFO, logger="pictag"):
        _run(folder_tree, tmp_path, None, "train.budget=150s", "train.mode=probe-then-fine-tune")
    run = tmp_path / "run"
    assert _epochs(run) == [0, 1]
    stored = read_resume_config(run).train  # what a resumed run continues
    assert stored.epochs == 1 and 16 <= stored.epoch_images < 31
    assert f"one fine-tune epoch of {stored.epoch_images} of the 31 training" in caplog.text
    # The epoch drew that many images (whole batches of 4), not the whole set's 31.
    assert stored.epoch_images % 4 == 0 and drawn == [stored.epoch_images]


def test_validation_deadline_leaves_time_for_the_validation_pass():
    budget = Budget(100.0, time.perf_counter() - 60)  # 40 s left, 5 s of them the reserve
    stop = validation_deadline(budget, val_images=300)
    # At 30 img/s validation (a third of the work per image) takes ~3.8 s with the margin.
    assert not stop(300, 10.0)
    # At 3 img/s it takes ~38 s: more than the 35 s left after the reserve.
    assert stop(30, 10.0)
    # A run with no probe trains its least part in any case.
    assert not validation_deadline(budget, val_images=300, at_least=64)(30, 10.0)


def test_an_epoch_stopped_by_the_deadline_is_validated_and_ends_the_run(
    folder_tree, tmp_path, monkeypatch, caplog
):
    # The timed steps claim a speed the epoch does not reach: 5 epochs planned, and the
    # deadline (here: already reached) ends the first after its first step.
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: 1e6)
    monkeypatch.setattr(epochs_module, "validation_deadline", lambda *a: lambda n, s: True)
    with caplog.at_level(logging.INFO, logger="pictag"):
        _run(folder_tree, tmp_path, None, "train.budget=60s", "train.mode=probe-then-fine-tune")
    assert "5 of at most 5 epochs fit" in caplog.text
    assert "budget: stopping epoch 1 after 1 of 7 steps" in caplog.text
    assert _epochs(tmp_path / "run") == [0, 1]  # the probe, the cut epoch validated, no more


def test_from_scratch_the_least_part_is_trained_even_past_the_budget(
    folder_tree, tmp_path, monkeypatch, caplog
):
    # The 1 s budget is spent before the plan: a run from scratch (no probe to fall back on)
    # still trains half the set, 4 batches of 4, without being stopped.
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: 1e6)
    drawn = _epoch_images(monkeypatch)
    with caplog.at_level(logging.INFO, logger="pictag"):
        _run(folder_tree, tmp_path, None, "train.budget=1s")
    assert "stopping epoch" not in caplog.text
    assert drawn == [16] and _epochs(tmp_path / "run") == [1]


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


def _no_training(monkeypatch) -> None:
    """Epochs that leave the model as the probe left it: none can beat the probe."""
    monkeypatch.setattr(epochs_module, "train_one_epoch", lambda *a, **k: {"loss": 1.0})


@pytest.mark.parametrize(
    ("extra", "patience", "epochs"),
    [
        ([], 3, [0, 1, 2, 3]),
        # Frozen epochs only refit the probe's heads: the patience starts after them.
        (["train.freeze_epochs=1"], 4, [0, 1, 2, 3, 4]),
    ],
)
def test_a_budget_stops_after_three_epochs_that_do_not_beat_the_probe(
    folder_tree, tmp_path, monkeypatch, caplog, extra, patience, epochs
):
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: 1e6)
    _no_training(monkeypatch)
    with caplog.at_level(logging.INFO, logger="pictag"):
        result = _run(
            folder_tree, tmp_path, None, "train.budget=60s", "train.mode=probe-then-fine-tune",
            *extra,
        )  # fmt: skip
    run = tmp_path / "run"
    assert "5 of at most 5 epochs fit" in caplog.text
    assert f"stops early after {patience} epochs in a row" in caplog.text
    assert f"early stop: no improvement for {patience} epochs" in caplog.text
    assert _epochs(run) == epochs
    assert read_resume_config(run).train.patience == patience  # a resumed run keeps it
    assert result.best_epoch == 0  # the probe's model is kept


def test_a_plan_no_longer_than_the_patience_runs_to_its_end_without_an_early_stop(
    folder_tree, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: 1e6)
    _no_training(monkeypatch)
    with caplog.at_level(logging.INFO, logger="pictag"):
        _run(
            folder_tree, tmp_path, None, "train.budget=60s", "train.mode=probe-then-fine-tune",
            "train.epochs=3",
        )  # fmt: skip
    assert _epochs(tmp_path / "run") == [0, 1, 2, 3]
    assert "stops early" not in caplog.text and "early stop" not in caplog.text


@pytest.mark.parametrize("setting", ["train.patience=0", "train.budget=off"])
def test_patience_set_to_0_or_no_budget_runs_every_epoch(
    folder_tree, tmp_path, monkeypatch, setting
):
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: 1e6)
    _no_training(monkeypatch)
    _run(
        folder_tree, tmp_path, None, "train.budget=60s", "train.mode=probe-then-fine-tune", setting
    )
    assert _epochs(tmp_path / "run") == [0, 1, 2, 3, 4, 5]


def _history(run) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "per_s" not in k} for line in lines]


def test_two_deterministic_runs_agree_though_the_machine_was_busy_for_one(
    folder_tree, tmp_path, monkeypatch, caplog
):
    # The default budget would plan from these timings: all 5 epochs on the quiet machine, part
    # of one epoch on the busy one. A deterministic run plans from no timing at all.
    speeds = iter([1e6, 0.1])
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: next(speeds))
    runs = [tmp_path / "quiet", tmp_path / "busy"]
    for run in runs:
        config = load_config(
            overrides=[f"data.images={folder_tree}", *SETTINGS, "train.deterministic=true"]
        )
        assert config.train.budget == "auto"
        with caplog.at_level(logging.INFO, logger="pictag"):
            train(config, run, progress=False)
    assert _history(runs[0]) == _history(runs[1])
    assert _epochs(runs[0]) == [1, 2, 3, 4, 5]
    assert "budget: none, as train.deterministic asks for the same results" in caplog.text


def test_a_deterministic_run_given_a_budget_warns_that_its_plan_can_differ(
    folder_tree, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: 1e6)
    with caplog.at_level(logging.INFO, logger="pictag"):
        _run(folder_tree, tmp_path, None, "train.deterministic=true", "train.budget=10m")
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("budget: 10m plans from the speed" in r.getMessage() for r in warned)
    assert "train.budget=off and the epochs" in caplog.text
    assert "5 of at most 5 epochs fit" in caplog.text  # the budget still plans the run
