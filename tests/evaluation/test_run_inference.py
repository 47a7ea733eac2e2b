"""Evaluation inference runs the backbone in ONNX Runtime when an agreeing export is at hand
(a linear probe leaves one) or when enough images make a new export pay; results match eager."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import pictag.evaluation.run_inference as run_inference
from pictag.config import load_config
from pictag.data.images import ImageError
from pictag.data.pipeline import prepare_data
from pictag.run import load_run
from pictag.training.trainer import train

from .conftest import FAST, write_data


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("probe")
    labels = write_data(root / "data")
    overrides = [
        f"data.labels={labels}",
        "heads.colour.kind=multiclass",
        "heads.tags.kind=multilabel",
        *FAST,
    ]
    config = load_config(overrides=[*overrides, "train.mode=linear-probe"])
    train(config, root / "run", progress=False)
    return root / "run"


def _samples(run_dir: Path):
    run = load_run(run_dir)
    return run, prepare_data(run.config, progress=False).splits["test"]


def test_a_probe_runs_export_is_reused_and_gives_eagers_probabilities(probe_run):
    run, samples = _samples(probe_run)
    assert list((probe_run / "features").glob("backbone_*.onnx"))
    assert run_inference._onnx_model(run, len(samples), probe_run) is not None
    fast, targets = run_inference.infer(run, samples, run_dir=probe_run)
    eager, eager_targets = run_inference.infer(run, samples)
    np.testing.assert_allclose(fast["colour"], eager["colour"], atol=1e-4)
    np.testing.assert_array_equal(targets["colour"], eager_targets["colour"])


def test_a_stale_export_is_replaced_only_when_enough_images_pay_for_it(
    probe_run, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    shutil.copytree(probe_run, run_dir)
    run, samples = _samples(run_dir)
    for param in run.model.backbone.parameters():  # as a fine-tune would leave it
        param.data.add_(0.05)
    assert run_inference._onnx_model(run, len(samples), run_dir) is None  # few images: eager
    monkeypatch.setattr(run_inference, "EXPORT_FROM_IMAGES", 1)
    assert run_inference._onnx_model(run, len(samples), run_dir) is not None  # re-exported
    fast, _ = run_inference.infer(run, samples, run_dir=run_dir)
    eager, _ = run_inference.infer(run, samples)
    np.testing.assert_allclose(fast["colour"], eager["colour"], atol=1e-4)


def test_eval_batches_equal_the_eval_loaders_bit_for_bit(probe_run):
    run, samples = _samples(probe_run)
    run.config.train.batch_size = 5  # several batches and a short last one
    assert len(samples) % 5
    threaded = list(run_inference.eval_batches(run, samples))
    loaded = list(run_inference.eval_loader(run, samples))
    assert len(threaded) == len(loaded) == -(-len(samples) // 5)
    for (images, targets), (expected, expected_targets) in zip(threaded, loaded, strict=True):
        assert images.dtype == torch.float32 and torch.equal(images, expected)
        assert targets.keys() == expected_targets.keys()
        for name, value in targets.items():
            assert torch.equal(value, expected_targets[name])


def test_eval_batches_stop_on_an_unreadable_image_naming_it(probe_run, tmp_path):
    run, samples = _samples(probe_run)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    samples = [*samples[:5], dataclasses.replace(samples[5], path=broken), *samples[6:]]
    with pytest.raises(ImageError, match=r"broken\.png"):
        list(run_inference.eval_batches(run, samples))
