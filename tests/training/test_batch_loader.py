"""Tests for pictag.training.batch_loader and the rule in make_loaders that picks it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pictag.config import Config, load_config
from pictag.data.batch_augment import BatchAugment
from pictag.data.cache import ImageCache
from pictag.data.dataset import ImageDataset
from pictag.data.pipeline import PreparedData
from pictag.data.schema import Sample, resolve_head
from pictag.data.transforms import Preprocess, eval_transform
from pictag.evaluation.inference import CPU_BATCH
from pictag.training.batch_loader import BatchLoader
from pictag.training.loaders import EpochSampler, forward_batch_size, make_loaders
from pictag.training.runtime import Runtime
from pictag.training.trainer import train

PRE = Preprocess((3, 8, 8), (0.5,) * 3, (0.25,) * 3, "bilinear", 0.8)  # base size 10
N = 23


def _rt(rank: int = 0, world: int = 1) -> Runtime:
    return Runtime(torch.device("cpu"), None, rank, world, rank)


def _images(n: int = N) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 10, 13), dtype=torch.uint8, generator=generator)


def _loader(
    sampler: EpochSampler,
    augment: BatchAugment | None = None,
    batch_size: int = 4,
    drop_last: bool = True,
    rank: int = 0,
) -> BatchLoader:
    """A loader whose one head's target is the image's index, to read the order back."""
    images = _images(sampler.size)
    targets = {"index": torch.arange(sampler.size)}
    augment = augment or BatchAugment(PRE, hflip=0.5)
    return BatchLoader(
        images, targets, sampler, batch_size, augment, drop_last=drop_last, seed=7, rank=rank
    )


def _indices(loader: BatchLoader) -> list[int]:
    return [i for _, targets in loader for i in targets["index"].tolist()]


def test_augment_none_gives_the_per_sample_eval_batches_exactly():
    images = _images()
    samples = [Sample(Path(f"{i}.png"), {"c": str(i % 3)}) for i in range(N)]
    heads = {"c": resolve_head("c", "multiclass", [s.labels["c"] for s in samples])}
    cache = ImageCache(list(images), PRE.base_size)
    dataset = ImageDataset(samples, heads, PRE, eval_transform(PRE), cache)
    sampler = EpochSampler(N, seed=1, runtime=_rt())
    batch = BatchLoader(
        images, dataset.targets, sampler, 5, BatchAugment(PRE, crop=False), drop_last=True, seed=1
    )
    reference = DataLoader(dataset, batch_size=5, sampler=sampler, drop_last=True)
    assert len(batch) == len(reference) == 4
    pairs = list(zip(batch, reference, strict=True))
    for (ours, our_targets), (theirs, their_targets) in pairs:
        assert torch.equal(ours, theirs)
        assert torch.equal(our_targets["c"], their_targets["c"])


def test_order_is_the_epoch_samplers():
    sampler = EpochSampler(N, seed=3, runtime=_rt())
    loader = _loader(sampler, drop_last=False)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        assert _indices(loader) == list(sampler)


@pytest.mark.parametrize(
    ("batch_size", "drop_last"), [(4, True), (4, False), (23, True), (30, False)]
)
def test_length_and_batches_follow_the_dataloaders_drop_last_rule(batch_size, drop_last):
    sampler = EpochSampler(N, seed=0, runtime=_rt())
    loader = _loader(sampler, batch_size=batch_size, drop_last=drop_last)
    reference = DataLoader(range(N), batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    assert len(loader) == len(reference)
    sizes = [images.shape[0] for images, _ in loader]
    assert sizes == [len(b) for b in reference]
    assert all(images.shape[1:] == (3, 8, 8) for images, _ in loader)


def test_same_seed_and_epoch_give_the_same_batches_and_others_differ():
    sampler = EpochSampler(N, seed=0, runtime=_rt())
    first = [images for images, _ in _loader(sampler)]
    again = [images for images, _ in _loader(sampler)]  # a new loader: a resumed run
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    sampler.set_epoch(1)
    later = [images for images, _ in _loader(sampler)]
    assert not any(torch.equal(a, b) for a, b in zip(first, later, strict=True))
    # The same order with another epoch's crops also differs: the crops follow the epoch too.
    loader = _loader(EpochSampler(N, seed=0, runtime=_rt()))
    order = torch.as_tensor(list(loader.sampler)[:4])
    assert torch.equal(loader.batch(order, loader.generator(0))[0], first[0])
    assert not torch.equal(loader.batch(order, loader.generator(1))[0], first[0])


def test_ranks_take_their_shards_and_augment_differently():
    loaders = [_loader(EpochSampler(N, seed=2, runtime=_rt(r, 2)), rank=r) for r in range(2)]
    shards = [_indices(loader) for loader in loaders]
    assert len(loaders[0]) == len(loaders[1]) == 3  # 12 images a rank, batches of 4
    assert len(set(shards[0]) | set(shards[1])) >= 2 * 12 - 1  # padded by at most one image
    assert shards == [list(loader.sampler)[:12] for loader in loaders]
    index = torch.tensor([0, 1, 2, 3])
    a, b = (loader.batch(index, loader.generator(0))[0] for loader in loaders)
    assert not torch.equal(a, b)


def test_balanced_sampling_reaches_the_loader():
    weights = np.full(N, 0.1 / (N - 3))
    weights[:3] = 0.3  # three rare images drawn 90 % of the time
    sampler = EpochSampler(N, seed=0, runtime=_rt(), weights=weights)
    drawn = np.array(_indices(_loader(sampler, drop_last=False)))
    assert len(drawn) == N and (drawn < 3).mean() > 0.6


def test_batches_never_change_the_cache():
    sampler = EpochSampler(N, seed=0, runtime=_rt())
    loader = _loader(sampler, augment=BatchAugment(PRE, crop=False))
    before = loader.images.clone()
    for images, _ in loader:
        images.zero_()
    assert torch.equal(loader.images, before)


# make_loaders: which path, and a short training run on it.


def _write_tree(root: Path, size: tuple[int, int] | None = None) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(18):
        label = ("red", "green", "blue")[i % 3]
        shape = size or (20 + i % 2 * 4, 24)  # two shapes: no packed cache
        pixels = rng.integers(0, 60, (*shape, 3), dtype=np.uint8)
        pixels[..., i % 3] += 180
        path = root / label / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        samples.append(Sample(path, {"label": label}))
    return samples


def _prepared(samples: list[Sample]) -> PreparedData:
    head = resolve_head("label", "multiclass", [s.labels["label"] for s in samples])
    splits = {"train": samples, "val": samples[:6]}
    return PreparedData({"label": head}, splits, None)  # type: ignore[arg-type]


def _config(**train) -> Config:
    values = {f"train.{k}": v for k, v in {"batch_size": 4, "cache": "memory", **train}.items()}
    return load_config(values=values)


@pytest.mark.parametrize(
    ("train_cfg", "square", "batch"),
    [
        ({}, True, True),
        ({"augment": "none"}, True, True),
        ({"augment": "randaugment"}, True, False),
        ({"rotate": 10.0}, True, False),
        ({"cache": "off"}, True, False),
        ({}, False, False),  # images of two shapes
    ],
)
def test_make_loaders_uses_the_batch_path_only_where_it_can(
    tmp_path, caplog, train_cfg, square, batch
):
    samples = _write_tree(tmp_path, (16, 16) if square else None)
    with caplog.at_level(logging.INFO, logger="pictag.training.loaders"):
        loaders = make_loaders(_prepared(samples), PRE, _config(**train_cfg), _rt(), False)
    assert isinstance(loaders.train, BatchLoader) == batch
    assert isinstance(loaders.train_plain, DataLoader) and isinstance(loaders.val, DataLoader)
    messages = [r.getMessage() for r in caplog.records if "training batches" in r.getMessage()]
    assert len(messages) == 1
    assert ("whole-batch" in messages[0]) == batch
    images, targets = next(iter(loaders.train))
    assert images.shape == (4, 3, 8, 8) and targets["label"].shape == (4,)
    loaders.set_epoch(1)  # the trainer's way to the next epoch reaches the batch loader too
    assert loaders.train.sampler.epoch == 1


def test_forward_only_passes_take_batches_of_at_most_8_on_a_cpu(tmp_path):
    samples = _write_tree(tmp_path, (16, 16))
    loaders = make_loaders(_prepared(samples), PRE, _config(batch_size=12), _rt(), False)
    assert loaders.train.batch_size == 12  # training keeps train.batch_size
    assert loaders.val.batch_size == loaders.train_plain.batch_size == CPU_BATCH == 8
    small = make_loaders(_prepared(samples), PRE, _config(batch_size=4), _rt(), False)
    assert small.val.batch_size == small.train_plain.batch_size == 4
    gpu = Runtime(torch.device("cuda"), None, 0, 1, 0)
    assert forward_batch_size(32, gpu) == 32  # a GPU needs its large batches


def test_a_short_training_run_uses_the_batch_path(tmp_path, caplog):
    _write_tree(tmp_path / "tree", (20, 20))
    config = load_config(
        overrides=[
            f"data.images=[{tmp_path / 'tree'}]",
            "model.backbone=small_cnn",
            "model.pretrained=none",
            "model.image_size=16",
            "train.batch_size=4",
            "train.epochs=2",
            "train.warmup_epochs=0",
            "train.augment=light",
            "train.cache=memory",
            "train.device=cpu",
        ]
    )
    with caplog.at_level(logging.INFO):
        result = train(config, tmp_path / "run", progress=False)
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("training batches: whole-batch") for m in logged)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert all(h["train/images_per_s"] > 0 for h in result.history)
