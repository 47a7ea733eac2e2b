"""DataLoaders for training: the decode-once image cache, seeded per-epoch shuffling that a
resumed run reproduces, class-balanced sampling, and sharding under torchrun.

Training batches are made whole (:class:`~pictag.training.batch_loader.BatchLoader`: index the
packed uint8 cache, crop, flip and normalise the batch at once) when the cache holds every
training image in one tensor and the augmentation is one the batch preset does (``none``, or
``light`` without rotation or colour jitter); otherwise each image is augmented on its own in
the ``DataLoader``. For a tiny network at 32 px the per-sample Python work costs more than the
step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader, Sampler

from pictag.config import Config
from pictag.data.batch_augment import batch_augment_for
from pictag.data.cache import ImageCache, estimate_cache_bytes
from pictag.data.dataset import ImageDataset
from pictag.data.pipeline import PreparedData
from pictag.data.schema import Head, Sample
from pictag.data.transforms import Preprocess, eval_transform, train_transform
from pictag.evaluation.inference import CPU_BATCH
from pictag.heads import get_kind
from pictag.training.batch_loader import BatchLoader
from pictag.training.runtime import Runtime

log = logging.getLogger(__name__)
CACHE_BUDGET_BYTES = 6 * 2**30  # 'auto' keeps images in memory below this


class EpochSampler(Sampler[int]):
    """Shuffled (or class-balanced) indices from a generator seeded with ``seed + epoch``, sharded
    across ranks, so a run resumed at epoch N sees exactly the order it would have seen.

    With a ``limit`` an epoch is that many images, a new random draw each epoch (the first
    ``limit`` of the epoch's order): a time budget that has room for part of an epoch only.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        runtime: Runtime,
        weights: np.ndarray | None = None,
        limit: int = 0,
    ) -> None:
        self.size, self.seed, self.runtime, self.weights = size, seed, runtime, weights
        self.epoch, self.limit = 0, limit

    @property
    def images(self) -> int:
        """Images an epoch draws (all ranks together, before padding)."""
        return min(self.limit, self.size) if self.limit > 0 else self.size

    @property
    def per_rank(self) -> int:
        return -(-self.images // self.runtime.world_size)  # ceil: every rank takes the same steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng(self.seed * 100_003 + self.epoch)
        total = self.per_rank * self.runtime.world_size
        if self.weights is None:
            order = rng.permutation(self.size)[: self.images]
            order = np.concatenate([order, order[: total - len(order)]])  # pad to shard evenly
        else:
            order = rng.choice(self.size, size=total, replace=True, p=self.weights)
        return iter(order[self.runtime.rank :: self.runtime.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


@dataclass
class Loaders:
    train: DataLoader | BatchLoader
    train_plain: DataLoader  # training images with the eval transform (linear-probe features)
    val: DataLoader
    sampler: EpochSampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


def make_loaders(
    data: PreparedData, pre: Preprocess, config: Config, runtime: Runtime, progress: bool = True
) -> Loaders:
    """Build the train/val loaders; under torchrun each rank gets its shard."""
    train_cfg = config.train
    train_samples = data.splits["train"]
    val_samples = data.splits.get("val") or []
    if not val_samples:
        log.warning(
            "no validation images: validating on the training set (metrics will be optimistic)"
        )
        val_samples = train_samples
    val_shard = val_samples[runtime.rank :: runtime.world_size]
    train_cache = _cache(train_samples, pre, train_cfg.cache, train_cfg.workers, progress)
    val_cache = _cache(val_shard, pre, train_cfg.cache, train_cfg.workers, progress)
    heads = data.heads
    train_set = ImageDataset(
        train_samples, heads, pre, train_transform(pre, train_cfg), train_cache
    )
    plain_set = ImageDataset(
        train_samples, heads, pre, eval_transform(pre), train_cache, targets=train_set.targets
    )
    val_set = ImageDataset(val_shard, heads, pre, eval_transform(pre), val_cache)
    weights = _balance_weights(train_samples, heads) if train_cfg.balanced_sampling else None
    sampler = EpochSampler(
        len(train_set), train_cfg.seed, runtime, weights, limit=train_cfg.epoch_images
    )
    common = {
        "batch_size": train_cfg.batch_size,
        "num_workers": train_cfg.workers,
        "pin_memory": runtime.device.type == "cuda",
        "persistent_workers": False,
    }
    # A rank's epoch is len(sampler) images: drop the last partial batch only when that leaves
    # at least one full batch.
    drop_last = len(sampler) > train_cfg.batch_size
    augment, how = batch_augment_for(pre, train_cfg)
    packed = train_cache.packed if train_cache is not None else None
    train: DataLoader | BatchLoader
    if augment is not None and packed is not None:
        train = BatchLoader(
            packed, train_set.targets, sampler, train_cfg.batch_size, augment,
            drop_last=drop_last, seed=train_cfg.seed, rank=runtime.rank, device=runtime.device,
        )  # fmt: skip
        log.info("training batches: whole-batch augmentation of the image cache (%s)", how)
    else:
        why = how if augment is None else _no_pack_reason(train_cache)
        log.info("training batches: per-sample augmentation (%s)", why)
        train = DataLoader(train_set, sampler=sampler, drop_last=drop_last, **common)
    # The forward-only passes (validation, the probe's features) run smaller batches on a CPU.
    forward = {**common, "batch_size": forward_batch_size(train_cfg.batch_size, runtime)}
    return Loaders(
        train=train,
        train_plain=DataLoader(plain_set, shuffle=False, **forward),
        val=DataLoader(val_set, shuffle=False, **forward),
        sampler=sampler,
    )


def forward_batch_size(batch_size: int, runtime: Runtime) -> int:
    """Images per batch of a forward-only pass: ``train.batch_size``, at most
    :data:`~pictag.evaluation.inference.CPU_BATCH` on a CPU."""
    return min(batch_size, CPU_BATCH) if runtime.device.type == "cpu" else batch_size


def _cache(
    samples: list[Sample], pre: Preprocess, mode: str, workers: int, progress: bool
) -> ImageCache | None:
    if mode == "off":
        return None
    size = estimate_cache_bytes(len(samples), pre)
    if mode == "auto" and size > CACHE_BUDGET_BYTES:
        log.info("image cache off: %.1f GiB would exceed the budget", size / 2**30)
        return None
    return ImageCache.build(
        [s.path for s in samples], pre, workers=max(2, workers), progress=progress
    )


def _no_pack_reason(cache: ImageCache | None) -> str:
    if cache is None:
        return "no image cache: train.cache is off or the images exceed its budget"
    return "the cached images differ in size"


def _balance_weights(samples: list[Sample], heads: dict[str, Head]) -> np.ndarray:
    """Sampling probability per image, inversely proportional to the frequency of its label in
    the first head, as the head's kind weighs it (a class; a tag list: its rarest tag)."""
    name, head = next(iter(heads.items()))
    targets = np.stack([head.target(s.labels.get(name)) for s in samples])
    weights = get_kind(head.kind).sample_weights(targets, head.num_labels).astype(np.float64)
    return weights / weights.sum() if weights.sum() > 0 else np.full(len(samples), 1 / len(samples))
