"""The real entry points end to end on the CPU with a tiny model: CLI, Python API, every task
kind, the probe modes, and the run folder's contents."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch

from pictag.cli import main
from pictag.config import load_config
from pictag.run import load_run
from pictag.training.trainer import train

FAST = [
    "model.backbone=small_cnn",
    "model.pretrained=none",
    "model.image_size=16",
    "train.batch_size=4",
    "train.lr=0.01",
    "train.warmup_epochs=0",
    "train.augment=none",
]


def test_cli_trains_a_folder_tree_and_writes_the_run(folder_tree, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    args = ["train", "--images", str(folder_tree), "--out", str(out), "--set", "train.epochs=2"]
    with caplog.at_level(logging.INFO):
        assert main(args + [x for item in FAST for x in ("--set", item)]) == 0
    assert re.search(r"^best: epoch [12] of 2, score [01]\.\d{4} -> ", capsys.readouterr().out)
    # The first lines name the model, its input size, mode and epochs, the data and the device;
    # each epoch line labels which loss is which.
    logged = [record.getMessage() for record in caplog.records]
    plan = next(i for i, line in enumerate(logged) if line.startswith("model: "))
    assert re.match(r"model: \S+, from scratch, \d+ px, fine-tune, 2 epochs, batch 4", logged[plan])
    assert (
        logged[plan + 1].startswith("data: train ")
        and "label (multiclass, 3 labels)" in (logged[plan + 1])
    )
    assert logged[plan + 2].startswith("device: cpu, fp32")
    epoch_lines = [line for line in logged if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    assert re.match(
        r"epoch 1/2 \(\d+ s, \d+ img/s\): train loss \d\.\d{4} \| val loss ", epoch_lines[0]
    )
    for name in ("model.safetensors", "pictag.json", "metrics.jsonl", "metrics.csv", "splits.csv"):
        assert (out / name).is_file(), name
    assert (out / "last" / "done.json").is_file()
    meta = json.loads((out / "pictag.json").read_text())
    assert meta["heads"] == [
        {
            "name": "label",
            "kind": "multiclass",
            "labels": ["blue", "green", "red"],
            "rename": {},
            "bins": [],
            "folded": [],
            "other_label": "other",
        }
    ]
    assert meta["preprocess"]["input_size"] == [3, 16, 16]
    assert meta["metrics"]["label/accuracy"] >= 0.0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["train/loss"] < history[0]["train/loss"] * 1.5
    run = load_run(out)
    logits = run.model(torch.zeros(2, 3, 16, 16))
    assert logits["label"].shape == (2, 3)


def test_python_api_multi_output_with_missing_labels_learns(multi_csv, tmp_path):
    config = load_config(
        overrides=[
            f"data.labels={multi_csv}",
            "heads.colour.kind=multiclass",
            "heads.tags.kind=multilabel",
            "train.epochs=8",
            "train.ema=0.9",
            "train.accumulate=2",
            "train.mixup=0.2",
            "train.clip_grad=5.0",
            "data.val_fraction=0.25",
            *FAST,
        ]
    )
    result = train(config, tmp_path / "run", progress=False)
    assert set(result.metrics) >= {"colour/accuracy", "tags/mAP", "score", "loss"}
    # Colour is trivially learnable from the pixels: the model must get well above chance.
    assert result.metrics["colour/accuracy"] > 0.6
    assert result.metrics["tags/mAP"] > 0.6
    run = load_run(tmp_path / "run")
    assert run.heads["tags"].labels == ("cool", "leafy", "natural", "warm")
    # Thresholds were tuned on the validation split at the end of training and stored.
    thresholds = run.params["tags"]["thresholds"]
    assert set(run.params) == {"colour", "tags"} and len(thresholds) == 4
    assert all(0.0 <= t <= 1.0 for t in thresholds)
    assert thresholds != [0.5] * 4
    assert run.params["colour"] == {}  # three classes: argmax
    # Tuned in memory from the chosen epoch's saved validation outputs, not a re-run.
    assert (tmp_path / "run" / "val_outputs.safetensors").is_file()


@pytest.mark.parametrize("mode", ["linear-probe", "probe-then-fine-tune"])
def test_probe_modes(folder_tree, tmp_path, mode):
    config = load_config(
        overrides=[f"data.images={folder_tree}", f"train.mode={mode}", "train.epochs=1", *FAST]
    )
    result = train(config, tmp_path / "run", progress=False)
    assert result.metrics["label/accuracy"] > 0.5
    assert (tmp_path / "run" / "features" / "train.safetensors").is_file()
    meta = json.loads((tmp_path / "run" / "pictag.json").read_text())
    assert meta["mode"] == mode


def test_strict_policy_stops_before_training_on_a_broken_image(folder_tree, tmp_path, capsys):
    (folder_tree / "red" / "broken.png").write_bytes(b"")
    args = ["train", "--images", str(folder_tree), "--out", str(tmp_path / "run")]
    assert main(args + [x for item in FAST for x in ("--set", item)]) == 1
    err = capsys.readouterr().err
    assert "red/broken.png" in err and "empty" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_top_level_api_takes_a_yaml_path_and_early_stopping_stops(folder_tree, tmp_path):
    import pictag

    job = tmp_path / "job.yaml"
    lines = [
        f"data: {{images: {folder_tree}}}",
        "model: {backbone: small_cnn, pretrained: none, image_size: 16}",
        "train: {epochs: 6, lr: 1.0e-12, patience: 2, batch_size: 8, augment: none}",
    ]
    job.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = load_config(job)
    result = pictag.train(config, tmp_path / "run", progress=False)
    # lr 0 never improves on epoch 1: patience 2 stops after epoch 3 instead of 6.
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.best_epoch == 1
    result = pictag.train(str(job), tmp_path / "run2", progress=False)
    assert result.history[0]["epoch"] == 1
