"""``--resume`` continues what was interrupted, from the first fine-tune epoch on, and leaves a
run that ended by itself (an early stop, a budget's stop) as it is."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

import pictag.training.budget as budget_module
import pictag.training.epochs as epochs_module
from pictag.cli import main
from pictag.config import Config, load_config
from pictag.run import read_run_info
from pictag.training.trainer import train

from .test_budget import SETTINGS as BUDGET_SETTINGS

# test_budget's tiny runs, with a probe (small_cnn's random features) to fine-tune from.
SETTINGS = [
    *(setting for setting in BUDGET_SETTINGS if not setting.startswith("train.epochs=")),
    "train.mode=probe-then-fine-tune",
]


def _epochs(run) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _config(folder, *extra):
    return load_config(overrides=[f"data.images={folder}", *SETTINGS, *extra])


def test_a_run_that_stopped_early_is_left_as_it_is(folder_tree, tmp_path, monkeypatch, caplog):
    # Epochs that cannot beat the probe: the budget's patience of 3 ends the run after epoch 3.
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: 1e6)
    monkeypatch.setattr(epochs_module, "train_one_epoch", lambda *a, **k: {"loss": 1.0})
    run = tmp_path / "run"
    train(_config(folder_tree, "train.budget=60s", "train.epochs=6"), run, progress=False)
    assert _epochs(run) == [0, 1, 2, 3]
    files = {name: (run / name).read_bytes() for name in ("metrics.jsonl", "model.safetensors")}
    before = read_run_info(run).checkpoint_id
    with caplog.at_level(logging.INFO, logger="pictag"):
        result = train(Config(), run, progress=False, resume=True)
    assert "nothing to resume: the run ended after epoch 3 (early stop" in caplog.text
    assert _epochs(run) == [0, 1, 2, 3]  # before: epoch 4 was trained, and then 5, ...
    assert read_run_info(run).checkpoint_id == before  # model.onnx and the report stay valid
    assert {name: (run / name).read_bytes() for name in files} == files
    assert result.best_epoch == 0


def test_a_budget_stopped_run_is_left_as_it_is(folder_tree, tmp_path, monkeypatch, caplog):
    # The deadline cuts epoch 1 of the 5 planned: the run ends there.
    monkeypatch.setattr(budget_module, "measure_speed", lambda *a, **k: 1e6)
    monkeypatch.setattr(epochs_module, "validation_deadline", lambda *a: lambda n, s: True)
    run = tmp_path / "run"
    train(_config(folder_tree, "train.budget=60s", "train.epochs=5"), run, progress=False)
    assert _epochs(run) == [0, 1]
    with caplog.at_level(logging.INFO, logger="pictag"):
        train(Config(), run, progress=False, resume=True)
    assert "the run ended after epoch 1 (budget: epoch 1 was stopped" in caplog.text
    assert _epochs(run) == [0, 1]


def test_a_run_interrupted_in_its_first_epoch_resumes_from_the_probe(
    folder_tree, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    real = epochs_module.train_one_epoch
    calls = []

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C in the first fine-tune epoch, after the probe
        return real(*args, **kwargs)

    monkeypatch.setattr(epochs_module, "train_one_epoch", interrupted_once)
    settings = [*SETTINGS, "train.budget=off", "train.epochs=2"]
    sets = [item for setting in settings for item in ("--set", setting)]
    assert main(["train", "--images", str(folder_tree), "--out", str(run), *sets]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; continue with: pictag train --resume {run}" in err
    assert main(["train", "--images", str(folder_tree), "--out", str(run), *sets]) == 2
    assert f"continue it with `pictag train --resume {run}`" in capsys.readouterr().err
    # Resumed on a machine without the GPU the run stored: the message says where it is.
    stored = json.loads((run / "config.resolved.json").read_text())
    stored["config"]["train"]["device"] = "cuda"
    (run / "config.resolved.json").write_text(json.dumps(stored))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and f"the run stored it in {run / 'config.resolved.json'}" in err
    stored["config"]["train"]["device"] = "cpu"
    (run / "config.resolved.json").write_text(json.dumps(stored))
    assert main(["train", "--resume", str(run)]) == 0  # before: "nothing to resume"
    assert _epochs(run) == [0, 1, 2]
    shutil.rmtree(run / "last")  # to save space, say: a model, but nothing to resume
    assert main(["train", "--resume", str(run)]) == 2
    assert "it holds a model but no resumable state" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--set", "train.epochs=5"], "--set"),
        (["job.yaml"], "config"),
        (["--budget", "5m"], "--budget"),
        (["--out", "elsewhere"], "--out"),
    ],
)
def test_resume_refuses_settings_it_would_drop(tmp_path, capsys, extra, named):
    run = tmp_path / "run"
    assert main(["train", "--resume", str(run), *extra]) == 2
    err = capsys.readouterr().err
    assert f"so {named} would not be applied" in err and "start a new run with --out" in err


def test_resume_of_a_folder_that_does_not_exist_says_so(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert f"nothing to resume: {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
