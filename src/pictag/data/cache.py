"""The decode-once image cache: every image decoded and resized to the base size once, kept in
memory as uint8, so epochs after the first cost no JPEG decoding.

A training step on 2 CPU cores runs ~12 img/s at 224 px; decoding 12 MP JPEGs every epoch would
dominate it. Images of one shape (square sets) are packed into one contiguous ``[N, 3, h, w]``
tensor, otherwise kept as a list of tensors; either way DataLoader workers forked after the build
read the same pages copy-on-write instead of each holding a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pictag.data.images import DEFAULT_MAX_PIXELS
from pictag.data.transforms import Preprocess, decode_image

# Camera photos are mostly 4:3; squares take 3/4 of this, 16:9 about 4/3 of it.
_TYPICAL_ASPECT = 4 / 3


class ImageCache:
    """uint8 base-size images of a sample list, decoded once (in a thread pool, tqdm progress)
    and kept in memory.

    Attributes:
        base_size: Shorter side of every stored image (``Preprocess.base_size`` at build time).
    """

    def __init__(self, images: list[torch.Tensor], base_size: int) -> None:
        """Store decoded images; the list is consumed (emptied) while packing, to bound memory.

        Args:
            images: uint8 ``[3, h, w]`` tensors, in sample order.
            base_size: The shorter side they were resized to.
        """
        self.base_size = base_size
        self._length = len(images)
        self._stack: torch.Tensor | None = None
        self._list: list[torch.Tensor] = []
        if images and all(im.shape == images[0].shape for im in images):
            self._stack = _pack(images)
        else:
            self._list = images[:]
            images.clear()

    @classmethod
    def build(
        cls,
        paths: Sequence[Path],
        pre: Preprocess,
        workers: int = 2,
        progress: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> ImageCache:
        """Decode every image once, in a pool of threads (Pillow and torch release the GIL).

        Args:
            paths: Image files, in sample order.
            pre: The preprocessing whose ``base_size`` images are resized to.
            workers: Decoding threads.
            progress: Show a tqdm progress bar.
            max_pixels: Largest allowed width * height of a file.

        Raises:
            ImageError: A file cannot be decoded; the message names it.
        """
        decode = partial(decode_image, pre=pre, max_pixels=max_pixels)
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pictag-decode")
        try:
            results = pool.map(decode, paths)
            bar = tqdm(
                results, total=len(paths), desc="decoding images", unit="img", disable=not progress
            )
            images = list(bar)
        finally:
            # On an error, drop the queued decodes instead of waiting for all of them.
            pool.shutdown(wait=True, cancel_futures=True)
        return cls(images, pre.base_size)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> torch.Tensor:
        """The uint8 ``[3, h, w]`` image; a copy, so a transform can never alter the cache."""
        if not -self._length <= index < self._length:
            raise IndexError(f"image {index} out of range for a cache of {self._length}")
        image = self._stack[index] if self._stack is not None else self._list[index]
        return image.clone()

    @property
    def packed(self) -> torch.Tensor | None:
        """All images as one uint8 ``[N, 3, h, w]`` tensor when they share a shape, else None.

        The tensor itself, not a copy (whole-batch augmentation indexes it, which copies).
        """
        return self._stack

    @property
    def nbytes(self) -> int:
        """Memory held by the pixels."""
        if self._stack is not None:
            return self._stack.nbytes
        return sum(im.nbytes for im in self._list)


def estimate_cache_bytes(n_images: int, pre: Preprocess) -> int:
    """Memory a cache of ``n_images`` would take, assuming 4:3 photos (for ``cache: auto``)."""
    base = pre.base_size
    return n_images * 3 * base * round(base * _TYPICAL_ASPECT)


def _pack(images: list[torch.Tensor]) -> torch.Tensor:
    """Copy same-shape images into one tensor, freeing each as it is copied so that peak memory
    stays near one copy of the set rather than two."""
    stack = torch.empty((len(images), *images[0].shape), dtype=torch.uint8)
    for i in range(len(images)):
        stack[i] = images[i]
        images[i] = None  # type: ignore[call-overload]  # release as we go
    images.clear()
    return stack
