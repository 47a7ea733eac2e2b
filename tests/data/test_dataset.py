"""Tests for pictag.data.dataset: items, targets of mixed heads and DataLoader batching."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pictag.data.cache import ImageCache
from pictag.data.dataset import ImageDataset
from pictag.data.schema import Head, LabelError, Sample
from pictag.data.transforms import Preprocess, decode_image, eval_transform

PRE = Preprocess((3, 16, 16), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_pct=0.8)  # base 20
HEADS = {
    "brand": Head("brand", "multiclass", ("a", "b", "c")),
    "tags": Head("tags", "multilabel", ("w", "x", "y", "z")),
}


def _image(path: Path, width: int, height: int, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _samples(tmp_path: Path) -> list[Sample]:
    labels = [
        {"brand": "b", "tags": ("x", "z")},
        {"brand": None, "tags": ("y",)},  # missing class -> -100
        {"brand": "a", "tags": None},  # missing tags -> a row of -1
        {"tags": ()},  # head absent from the row: missing too; empty tag list: all zeros
    ]
    return [
        Sample(_image(tmp_path / f"{i}.png", 30 + 4 * i, 24, seed=i), lab)
        for i, lab in enumerate(labels)
    ]


def _dataset(tmp_path: Path) -> ImageDataset:
    return ImageDataset(_samples(tmp_path), HEADS, PRE, eval_transform(PRE))


def test_item_is_a_float_image_and_one_target_per_head(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    assert len(dataset) == 4
    image, targets = dataset[0]
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, 16, 16)
    assert list(targets) == ["brand", "tags"]
    assert targets["brand"].dtype == torch.int64 and targets["brand"].ndim == 0
    assert targets["brand"].item() == 1
    assert targets["tags"].dtype == torch.float32
    assert targets["tags"].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_default_collate_batches_mixed_heads_with_missing_labels(tmp_path: Path) -> None:
    loader = DataLoader(_dataset(tmp_path), batch_size=4, shuffle=False)
    images, targets = next(iter(loader))
    assert tuple(images.shape) == (4, 3, 16, 16)
    assert targets["brand"].tolist() == [1, -100, 0, -100]
    assert targets["tags"].tolist() == [
        [0.0, 1.0, 0.0, 1.0],
        [0.0, 0.0, 1.0, 0.0],
        [-1.0, -1.0, -1.0, -1.0],
        [0.0, 0.0, 0.0, 0.0],
    ]


def test_item_matches_decoding_and_transforming_by_hand(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    expected = eval_transform(PRE)(decode_image(dataset.samples[2].path, PRE))
    assert torch.equal(dataset[2][0], expected)


def test_unknown_label_fails_when_the_dataset_is_built(tmp_path: Path) -> None:
    samples = [Sample(_image(tmp_path / "a.png", 20, 20, 0), {"brand": "nope", "tags": ()})]
    with pytest.raises(LabelError, match="nope"):
        ImageDataset(samples, HEADS, PRE, eval_transform(PRE))


def test_empty_dataset_has_typed_empty_targets() -> None:
    dataset = ImageDataset([], HEADS, PRE, eval_transform(PRE))
    assert len(dataset) == 0
    assert dataset.targets["brand"].dtype == torch.int64
    assert tuple(dataset.targets["tags"].shape) == (0, 4)


def test_cache_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    samples = _samples(tmp_path)
    cache = ImageCache.build([s.path for s in samples[:2]], PRE, progress=False)
    with pytest.raises(ValueError, match="2 images"):
        ImageDataset(samples, HEADS, PRE, eval_transform(PRE), cache)
    other = Preprocess((3, 24, 24), PRE.mean, PRE.std)
    with pytest.raises(ValueError, match="base size"):
        ImageDataset(samples[:2], HEADS, other, eval_transform(other), cache)


def test_datasets_of_the_same_samples_share_their_targets(tmp_path) -> None:
    from pictag.data.dataset import ImageDataset
    from pictag.data.schema import Head, Sample
    from pictag.data.transforms import Preprocess, eval_transform

    for name in ("a", "b"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{name}.png")
    samples = [Sample(tmp_path / f"{n}.png", {"label": n}) for n in ("a", "b")]
    heads = {"label": Head("label", "multiclass", ("a", "b"))}
    pre = Preprocess((3, 8, 8), (0.5,) * 3, (0.5,) * 3)
    first = ImageDataset(samples, heads, pre, eval_transform(pre))
    second = ImageDataset(samples, heads, pre, eval_transform(pre), targets=first.targets)
    assert second.targets["label"] is first.targets["label"]  # encoded (masks read) once
    with pytest.raises(ValueError, match="one row per sample"):
        ImageDataset(samples[:1], heads, pre, eval_transform(pre), targets=first.targets)
