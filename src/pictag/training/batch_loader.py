"""A training loader that makes each batch whole from the packed uint8 image cache: index the
batch's images, augment them together (:mod:`pictag.data.batch_augment`), normalise once.

It stands in for a ``DataLoader`` over the per-sample dataset where the trainer, the lr finder
and the benchmarks use one: ``len()`` is the number of batches (the same ``drop_last`` rule),
iterating yields ``(images [B, 3, H, W], {head: targets})``, and ``sampler`` is the
:class:`~pictag.training.loaders.EpochSampler` whose ``set_epoch`` picks the epoch's order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Protocol

import numpy as np
import torch

from pictag.data.batch_augment import BatchAugment

Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


class EpochOrder(Sized, Protocol):
    """What the loader needs of its sampler (``EpochSampler`` is one): the indices of an epoch,
    and which epoch it is (to seed that epoch's augmentation)."""

    epoch: int

    def __iter__(self) -> Iterator[int]: ...

    def set_epoch(self, epoch: int) -> None: ...


class BatchLoader:
    """Whole batches of augmented images from a packed uint8 ``[N, 3, h, w]`` tensor.

    The crops and flips of an epoch come from a generator seeded with ``(seed, epoch, rank)``,
    so an epoch's batches are the same however often it is run (a resumed run sees what an
    unbroken one saw), ranks augment differently, and the next epoch differs.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: dict[str, torch.Tensor],
        sampler: EpochOrder,
        batch_size: int,
        augment: BatchAugment,
        *,
        drop_last: bool,
        seed: int,
        rank: int = 0,
        device: torch.device | None = None,
    ) -> None:
        """Build the loader.

        Args:
            images: uint8 ``[N, 3, h, w]`` base-size images, in sample order (not copied).
            targets: ``{head: [N] or [N, L] targets}``, in the same order.
            sampler: Yields this rank's image indices of the current epoch.
            batch_size: Images per batch.
            augment: The batch preset.
            drop_last: Leave out the last partial batch.
            seed: The run's seed (``train.seed``).
            rank: This process's rank under torchrun.
            device: Where to augment; a CUDA device takes each uint8 batch (a quarter of the
                float bytes) and augments it there. None or a CPU device augments on the CPU.

        Raises:
            ValueError: ``images`` is not a uint8 ``[N, 3, h, w]`` tensor, or a target has
                another number of rows.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 [N, 3, h, w], got {images.dtype} {images.shape}"
            )
        for name, target in targets.items():
            if len(target) != len(images):
                raise ValueError(
                    f"head {name!r} has {len(target)} targets for {len(images)} images"
                )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.images, self.targets, self.sampler = images, targets, sampler
        self.batch_size, self.augment, self.drop_last = batch_size, augment, drop_last
        self.seed, self.rank = seed, rank
        self.device = device if device is not None and device.type == "cuda" else None

    def __len__(self) -> int:
        """Batches per epoch, as a ``DataLoader`` with this sampler and ``drop_last`` counts."""
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = torch.as_tensor(list(self.sampler), dtype=torch.int64)
        generator = self.generator(self.sampler.epoch)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.batch(index, generator)

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> Batch:
        """The augmented images and targets of the images at ``index`` (int64 ``[B]``)."""
        images = self.images[index]  # a copy: augmentation never touches the cache
        if self.device is not None:
            images = images.pin_memory().to(self.device, non_blocking=True)
        return self.augment(images, generator), {k: v[index] for k, v in self.targets.items()}

    def generator(self, epoch: int) -> torch.Generator:
        """The augmentation's random source for ``epoch`` on this rank."""
        # SeedSequence mixes the three numbers, so (seed, epoch) pairs never share a stream
        # the way seed + epoch would.
        state = np.random.SeedSequence([self.seed, epoch, self.rank]).generate_state(2)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
