from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pictag.data.dataset import ImageDataset
from pictag.data.schema import Head, Sample
from pictag.data.transforms import eval_transform
from pictag.evaluation.inference import (
    forward_logits,
    predict_logits,
    probabilities,
    resolve_device,
)
from pictag.run import load_run
from pictag.training.runtime import setup_runtime


@pytest.fixture(scope="module")
def loaded(tiny_run):
    run = load_run(tiny_run)
    data = tiny_run.parent / "data"
    samples = [
        Sample(data / "images" / f"{i:03d}.png", {"colour": c, "tags": t})
        for i, c, t in [(0, "red", ("warm",)), (1, "green", ("leafy", "natural")), (2, None, None)]
    ]
    dataset = ImageDataset(samples, run.heads, run.preprocess, eval_transform(run.preprocess))
    return run, dataset


def test_predict_logits_shapes_targets_and_order(loaded):
    run, dataset = loaded
    logits, targets = predict_logits(run.model, DataLoader(dataset, batch_size=2))
    assert logits["colour"].shape == (3, 3) and logits["tags"].shape == (3, 4)
    assert logits["colour"].dtype == np.float32
    # Targets come back stacked in loader order, missing ones as the kinds define them.
    assert targets["colour"].tolist() == [2, 1, -100]  # labels sorted: blue, green, red
    assert targets["tags"].tolist() == [[0, 0, 0, 1], [0, 1, 1, 0], [-1, -1, -1, -1]]
    image, _ = dataset[1]
    with torch.no_grad():
        direct = run.model(image[None])["tags"].numpy()[0]
    np.testing.assert_allclose(logits["tags"][1], direct, rtol=1e-5, atol=1e-6)


def test_tta_averages_the_flipped_image(loaded):
    run, dataset = loaded
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    plain, _ = predict_logits(run.model, DataLoader(images, batch_size=3))
    both, targets = predict_logits(run.model, DataLoader(images, batch_size=3), tta=True)
    assert targets == {}  # bare image batches carry no targets
    with torch.no_grad():
        flipped = run.model(images.flip(-1))["colour"].numpy()
    np.testing.assert_allclose(both["colour"], (plain["colour"] + flipped) / 2, atol=1e-5)
    assert not np.allclose(both["colour"], plain["colour"])  # the images are not symmetric


def test_channels_last_gives_the_same_logits(loaded):
    run, dataset = loaded
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    plain = forward_logits(run.model, images)
    fast = forward_logits(run.model, images, channels_last=True)
    torch.testing.assert_close(fast["tags"], plain["tags"], rtol=1e-4, atol=1e-5)


def test_empty_loader_gives_empty_dicts(loaded):
    run, _ = loaded
    assert predict_logits(run.model, []) == ({}, {})


def test_probabilities_use_each_head_kind():
    logits = {"a": np.array([[2.0, 0.0, -1.0]]), "b": np.array([[0.0, 3.0]])}
    heads = {
        "a": Head("a", "multiclass", ("x", "y", "z")),
        "b": Head("b", "multilabel", ("u", "v")),
    }
    probs = probabilities(heads, logits)
    np.testing.assert_allclose(probs["a"].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs["a"], torch.softmax(torch.tensor(logits["a"]), 1), rtol=1e-6)
    np.testing.assert_allclose(probs["b"], 1 / (1 + np.exp(-logits["b"])), rtol=1e-6)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_a_cuda_device_this_machine_lacks_is_refused_with_what_to_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device cuda: this machine has no CUDA GPU.*or auto"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        setup_runtime("cuda:1")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"has 2 CUDA GPU\(s\).*cuda:0 up to cuda:1"):
        resolve_device("cuda:2")
