"""The linear probe's fit: L2 strength chosen on validation features, flip features, refit."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from torch import nn

from pictag.config import ConfigError, load_config
from pictag.run import read_val_outputs
from pictag.training.probe_fit import WEIGHT_DECAYS, choose_weight_decays, fit_head
from pictag.training.trainer import train


def _blobs(n: int, seed: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes in 20 dimensions, two of them informative."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 20, generator=g) * noise
    x[:, 0] += (y == 1).float() * 2
    x[:, 1] += (y == 2).float() * 2
    return x, y


def _val_loss_of_fresh_fit(train, val, wd: float) -> float:
    torch.manual_seed(0)
    head = nn.Linear(20, 3)
    fit_head(head, train[0], train[1], nn.functional.cross_entropy, wd)
    with torch.no_grad():
        return float(nn.functional.cross_entropy(head(val[0]), val[1]))


@pytest.mark.parametrize(("n_train", "noise"), [(24, 3.0), (600, 0.5)])
def test_the_chosen_strength_is_the_grid_value_with_the_lowest_validation_loss(n_train, noise):
    train, val = _blobs(n_train, 0, noise), _blobs(300, 1, noise)
    head = nn.Linear(20, 3)
    loss = {"c": nn.functional.cross_entropy}
    chosen = choose_weight_decays(
        {"c": head}, (train[0], {"c": train[1]}), (val[0], {"c": val[1]}), loss
    )["c"]
    by_wd = {wd: _val_loss_of_fresh_fit(train, val, wd) for wd in WEIGHT_DECAYS}
    assert chosen == min(by_wd, key=by_wd.get)
    # The head is left with the chosen fit (convex: warm starts reach the same optimum).
    with torch.no_grad():
        left = float(nn.functional.cross_entropy(head(val[0]), val[1]))
    assert left == pytest.approx(by_wd[chosen], abs=2e-3)


def test_few_noisy_images_get_a_stronger_l2_than_many_clean_ones():
    loss = {"c": nn.functional.cross_entropy}

    def chosen(n_train: int, noise: float) -> float:
        train, val = _blobs(n_train, 0, noise), _blobs(300, 1, noise)
        pair = ((train[0], {"c": train[1]}), (val[0], {"c": val[1]}))
        return choose_weight_decays({"c": nn.Linear(20, 3)}, *pair, loss)["c"]

    assert chosen(24, 3.0) > chosen(600, 0.5)


FAST = [
    "model.backbone=small_cnn",
    "model.pretrained=none",
    "model.image_size=16",
    "train.batch_size=4",
    "train.mode=linear-probe",
    "train.augment=none",
    "data.val_fraction=0.3",
]


def _config(images, *extra):
    return load_config(overrides=[f"data.images={images}", *FAST, *extra])


def test_refit_keeps_the_train_only_validation_and_fits_on_train_plus_val(folder_tree, tmp_path):
    plain = tmp_path / "plain"
    train(_config(folder_tree), plain, progress=False)
    refit = tmp_path / "refit"
    train(_config(folder_tree, "train.refit=true"), refit, progress=False)
    meta, plain_meta = (json.loads((r / "pictag.json").read_text()) for r in (refit, plain))
    # Validation metrics and the outputs thresholds are tuned on: those of the train-only fit.
    defined = [{k: v for k, v in m["metrics"].items() if v == v} for m in (meta, plain_meta)]
    assert defined[0] == pytest.approx(defined[1], abs=1e-6) and len(defined[0]) > 5
    assert read_val_outputs(refit)[0]["label"] == pytest.approx(
        read_val_outputs(plain)[0]["label"], abs=1e-6
    )
    weights = [safetensors.torch.load_file(r / "model.safetensors") for r in (refit, plain)]
    head_keys = [k for k in weights[0] if k.startswith("heads.")]
    assert head_keys and not all(torch.equal(weights[0][k], weights[1][k]) for k in head_keys)
    backbone_keys = [k for k in weights[0] if k.startswith("backbone.")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in backbone_keys)


def test_probe_flip_adds_the_mirror_images_features(folder_tree, tmp_path):
    run = tmp_path / "run"
    train(_config(folder_tree, "train.probe_flip=true"), run, progress=False)
    plain = safetensors.torch.load_file(run / "features" / "train.safetensors")
    flipped = safetensors.torch.load_file(run / "features" / "train_flip.safetensors")
    assert plain["features"].shape == flipped["features"].shape
    assert not torch.allclose(plain["features"], flipped["features"])
    assert torch.equal(plain["target/label"], flipped["target/label"])


def test_refit_is_refused_outside_linear_probe(folder_tree):
    with pytest.raises(ConfigError, match=r"train\.refit"):
        _config(folder_tree, "train.refit=true", "train.mode=probe-then-fine-tune")


def test_the_path_stops_once_the_validation_loss_has_risen_twice(monkeypatch):
    from pictag.training import probe_fit

    train, val = _blobs(24, 0, 3.0), _blobs(300, 1, 3.0)  # few noisy images: a middle optimum
    by_wd = {wd: _val_loss_of_fresh_fit(train, val, wd) for wd in WEIGHT_DECAYS}
    path = sorted(WEIGHT_DECAYS, reverse=True)
    best = path.index(min(by_wd, key=by_wd.get))
    assert best + probe_fit.PATH_PATIENCE < len(path) - 1  # the test needs weaker ones to skip
    tried = []
    real_fit = probe_fit.fit_head

    def fit(head, features, target, loss_fn, weight_decay, *rest):
        tried.append(weight_decay)
        return real_fit(head, features, target, loss_fn, weight_decay, *rest)

    monkeypatch.setattr(probe_fit, "fit_head", fit)
    chosen = choose_weight_decays(
        {"c": nn.Linear(20, 3)},
        (train[0], {"c": train[1]}),
        (val[0], {"c": val[1]}),
        {"c": nn.functional.cross_entropy},
    )["c"]
    assert chosen == path[best]
    assert tried == path[: best + 1 + probe_fit.PATH_PATIENCE]
