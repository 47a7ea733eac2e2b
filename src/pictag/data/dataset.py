"""Samples -> ``(image, {head: target})`` items, which the default DataLoader collate batches into
``images [B, 3, H, W]`` and ``{head: [B] class indices or [B, L] multi-hot rows}``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from pictag.data.cache import ImageCache
from pictag.data.images import DEFAULT_MAX_PIXELS
from pictag.data.schema import Head, Sample
from pictag.data.transforms import Preprocess, Transform, decode_image
from pictag.heads import get_kind


class ImageDataset(Dataset):
    """Images of a sample list, transformed, with one target per head.

    Targets are encoded once here, so a label the heads cannot encode fails at construction,
    not in a worker halfway through an epoch.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        heads: dict[str, Head],
        pre: Preprocess,
        transform: Transform,
        cache: ImageCache | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        targets: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Build the dataset.

        Args:
            samples: Images and raw labels.
            heads: Head name -> head; every head gets a target for every sample.
            pre: Preprocessing; images are decoded to its base size.
            transform: Base-size uint8 image -> float ``[3, H, W]`` (a train or eval preset).
            cache: Decoded images of ``samples``, in the same order; None decodes on each access.
            max_pixels: Largest allowed width * height of a file.
            targets: The stacked targets of another dataset of the same samples and heads, to
                share rather than encode again (masks are read from their files).

        Raises:
            ValueError: The cache does not match the samples or the preprocessing.
            LabelError: A raw label is unknown to its head.
        """
        if cache is not None and len(cache) != len(samples):
            raise ValueError(
                f"cache holds {len(cache)} images but there are {len(samples)} samples"
            )
        if cache is not None and cache.base_size != pre.base_size:
            raise ValueError(
                f"cache images have base size {cache.base_size}, the preprocessing needs "
                f"{pre.base_size}; rebuild the cache"
            )
        self.samples = list(samples)
        self.heads = heads
        self.pre = pre
        self.transform = transform
        self.cache = cache
        self.max_pixels = max_pixels
        if targets is not None and (
            set(targets) != set(heads) or any(len(t) != len(self.samples) for t in targets.values())
        ):
            raise ValueError("shared targets must hold every head, one row per sample")
        self.targets = targets or {
            name: _targets(name, head, self.samples) for name, head in heads.items()
        }
        # Heads whose targets are places in the image move them with the image's transform.
        kinds = {name: get_kind(head.kind) for name, head in heads.items()}
        self.spatial = {name: kind for name, kind in kinds.items() if kind.spatial}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Float image ``[3, H, W]`` and ``{head: int64 scalar or float32 [L] vector}``."""
        if self.cache is not None:
            image = self.cache[index]
        else:
            image = decode_image(self.samples[index].path, self.pre, self.max_pixels)
        targets = {name: t[index] for name, t in self.targets.items()}
        if not self.spatial:
            return self.transform(image), targets
        size = (int(image.shape[-2]), int(image.shape[-1]))
        places = {n: k.wrap_target(targets[n], size) for n, k in self.spatial.items()}
        moved, places = self.transform(tv_tensors.Image(image), places)
        size = (int(moved.shape[-2]), int(moved.shape[-1]))
        targets.update({n: k.unwrap_target(places[n], size) for n, k in self.spatial.items()})
        return moved.as_subclass(torch.Tensor), targets


def _targets(name: str, head: Head, samples: list[Sample]) -> torch.Tensor:
    """Stacked targets of one head: ``[N]`` int64 (-100 missing) or ``[N, L]`` float32 (-1)."""
    rows = [head.target(s.labels.get(name)) for s in samples]
    if not rows:
        empty = head.target(None)  # for the dtype and the row shape
        return torch.from_numpy(np.empty((0, *empty.shape), dtype=empty.dtype))
    return torch.from_numpy(np.stack(rows))
