"""Near-duplicate images: the same picture resized, re-compressed, shifted or mirrored.

Byte-identical copies are found by `pictag check-data` from file digests; a copy that was
re-saved or resized has other bytes but the same perceptual hash, give or take a few bits. Such
a pair split between train and test inflates the test score. Two finders, one result type:

- `near_duplicate_pairs`: 64-bit DCT perceptual hashes (``imagehash.phash``, computed here
  faster) compared by Hamming distance, each image also against the hash of its mirror image, so a
  flipped copy is found too (what `check-data` uses: no model needed);
- `embedding_pairs`: cosine similarity of backbone features (what ``pictag audit`` uses).

Both compare all pairs in row chunks, so 10,000 images take seconds and tens of MB.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pictag.data.images import DEFAULT_MAX_PIXELS, ImageError, ImageSource, load_rgb, probe_image

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "NearDuplicate",
    "embedding_pairs",
    "file_hashes",
    "hash_files",
    "hashable",
    "image_hashes",
    "near_duplicate_pairs",
    "probe_and_hash",
]

# Measured by benchmarks/near_duplicates.py (results/near_duplicates.json), 600 photos planted
# as copies: within 2 bits are 99.8 % of 50 % resizes, 99.7 % of JPEG-60 re-saves, 100 % of
# mirror images, 92.5 % of 1-px shifts (99.5 % within 4). Pairs of *distinct* images within 2
# bits: none among 5,000 aligned faces, 1,500 scenes and 12,000 CIFAR images (the 35 pairs found
# there are real copies, checked by eye), while 4 bits adds 16 face pairs, mostly different
# people. The hashes set 32 of 64 bits (above / below the median): distances are even.
DEFAULT_MAX_DISTANCE = 2
HASH_BITS = 64
_HASH_SIDE = 32  # imagehash.phash shrinks to 32x32 (hash_size 8 * highfreq_factor 4)
# Images smaller than the hash's own input are blown up to it, and distinct ones then collide:
# 2,735 pairs of different MNIST digits (28x28) within 2 bits. They are not hashed.
MIN_SIDE = _HASH_SIDE
# Box-reduce large images by an integer factor to >= 2x the hash input before the LANCZOS
# resize (Pillow's reducing_gap): a LANCZOS resize straight from megapixels costs more than the
# decode did, and the hash sees only 32x32 pixels.
_REDUCING_GAP = 2.0
_CHUNK_ELEMENTS = 1 << 21  # pair-matrix entries per chunk: ~16 MB per uint64 temporary
_HASH_FREQUENCIES = 8  # the 8x8 lowest DCT frequencies make the 64 bits
_frequency = np.arange(_HASH_FREQUENCIES)[:, None]
# Rows of scipy.fftpack.dct (type II, unnormalised) for the frequencies kept: two small matrix
# products give what imagehash.phash computes with two full DCTs.
_DCT = 2 * np.cos(np.pi * _frequency * (2 * np.arange(_HASH_SIDE)[None, :] + 1) / (2 * _HASH_SIDE))
# Mirroring an image negates its odd horizontal frequencies (cos(pi k (2(N-1-n)+1) / 2N) =
# (-1)^k cos(pi k (2n+1) / 2N)), so the mirror's hash needs no second transform.
_MIRROR_SIGNS = np.where(_frequency.T % 2, -1.0, 1.0)
_MIDDLE = HASH_BITS // 2 - 1


@dataclass(frozen=True)
class NearDuplicate:
    """Two files that show (nearly) the same picture.

    Attributes:
        a: The first file (earlier in the input order).
        b: The second file.
        distance: How far apart: Hamming distance in bits of the 64-bit hashes (an int) for
            `near_duplicate_pairs`, ``1 - cosine`` for `embedding_pairs`; 0 is identical.
        flipped: ``b`` matched the mirror image of ``a`` rather than ``a`` itself.
        identical: The two files have the same bytes. The finders here never return such
            pairs; `pictag.data.leakage` adds them so that the split check sees every copy.
    """

    a: Path
    b: Path
    distance: float
    flipped: bool = False
    identical: bool = False


def hashable(size: tuple[int, int]) -> bool:
    """Whether an image of this (width, height) is large enough for its hash to mean much."""
    return min(size) >= MIN_SIDE


def image_hashes(image: Image.Image) -> tuple[int, int]:
    """The 64-bit perceptual hash of an image and that of its mirror image, as integers.

    ``imagehash.phash`` of the image and of ``ImageOps.mirror(image)`` (bits in row-major
    order, first bit most significant, as ``str(hash)`` writes them in hex) in under half the
    time: one 8x32 DCT per axis instead of imagehash's full transforms and objects, and the
    mirror's coefficients follow from the image's. Bit for bit equal for images under 128 px
    a side; larger ones are box-reduced first, which moves 2 bits on some images.
    """
    grey = image.convert("L")
    small = grey.resize((_HASH_SIDE,) * 2, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)
    low = _DCT @ np.asarray(small, dtype=np.float64) @ _DCT.T
    both = np.stack([low, low * _MIRROR_SIGNS]).reshape(2, -1)
    # The median of 64 values as np.median takes it (the mean of the middle two), without its
    # overhead, which cost more than the transform.
    middle = np.sort(both, axis=1)[:, _MIDDLE : _MIDDLE + 2]
    bits = both > ((middle[:, 0] + middle[:, 1]) / 2)[:, None]
    direct, mirror = np.packbits(bits, axis=1).view(">u8")[:, 0].tolist()
    return direct, mirror


def file_hashes(
    source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int] | None:
    """`image_hashes` of an image file, decoded as pictag decodes it (upright RGB).

    Returns:
        The hashes, or None for an image too small to hash (see `hashable`).

    Raises:
        ImageError: The file cannot be used (see `pictag.data.images.load_rgb`).
    """
    image = load_rgb(source, max_pixels)
    return image_hashes(image) if hashable(image.size) else None


def probe_and_hash(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """`pictag.data.images.probe_image`'s verdict and size, plus `file_hashes`, from one decode.

    What `check-data` calls: the probe drops the pixels of its full decode, and decoding again
    for the hash would cost as much once more on small images.

    Raises:
        ImageError: Exactly when `probe_image` would.
    """
    try:
        image = load_rgb(path, max_pixels)
    except ImageError:
        # The probe's error, or none for a file that decodes but cannot become RGB (a LAB
        # TIFF): the check's verdict must not depend on hashing.
        return probe_image(path, max_pixels), None
    return image.size, image_hashes(image) if hashable(image.size) else None


def hash_files(
    paths: Sequence[str | Path], max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 4
) -> tuple[list[Path], np.ndarray]:
    """Hash many files in threads, leaving out those that do not decode or are too small.

    Files that fail are only left out: `pictag.data.validate.check_data` reports them.

    Returns:
        The files that were hashed, and their hashes as a uint64 array [N, 2] (hash, mirror).
    """
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(partial(_try_hash, max_pixels=max_pixels), paths))
    kept = [(Path(p), h) for p, h in zip(paths, results, strict=True) if h is not None]
    hashes = np.array([h for _, h in kept], dtype=np.uint64).reshape(-1, 2)
    return [p for p, _ in kept], hashes


def near_duplicate_pairs(
    paths: Sequence[str | Path],
    hashes: Any,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    *,
    groups: Sequence[Hashable] | None = None,
) -> list[NearDuplicate]:
    """Every pair of images whose perceptual hashes differ in at most ``max_distance`` bits.

    Args:
        paths: One file per hash.
        hashes: [N] or [N, 2] unsigned 64-bit hashes; a second column holds the hash of each
            mirrored image, and a pair also matches when one image's mirror hash is close to
            the other's hash (``flipped``).
        max_distance: Largest Hamming distance (bits out of 64) reported.
        groups: Optional key per image (e.g. a digest of its bytes): only the first image of
            each group takes part, so byte-identical copies -- reported by the exact-duplicate
            check -- are neither paired with each other nor reported once per copy.

    Returns:
        The pairs, closest first; ``a`` comes before ``b`` in ``paths``.
    """
    if not 0 <= max_distance <= HASH_BITS:
        raise ValueError(f"max_distance must be 0..{HASH_BITS} bits, got {max_distance}")
    if not len(paths):
        return []
    table = np.asarray(hashes, dtype=np.uint64).reshape(len(paths), -1)
    index = np.array(_representatives(len(paths), groups))
    direct, mirror = table[index, 0], table[index, -1]
    found = []
    for start, stop in _row_blocks(len(index)):
        later = direct[None, start + 1 :]  # each row's partners: the images after it
        distance = _popcount(direct[start:stop, None] ^ later)
        # One direction (the earlier image's mirror vs the later image) is enough: a mirror's
        # mirror is the image itself, and the hash's 32x32 shrink commutes with the flip.
        to_mirror = _popcount(mirror[start:stop, None] ^ later)
        close = (distance <= max_distance) | (to_mirror <= max_distance)
        i, j = _above_diagonal(close)
        near, flip = distance[i, j], to_mirror[i, j]
        a, b = index[start + i].tolist(), index[start + 1 + j].tolist()
        best, flipped = np.minimum(near, flip).tolist(), (flip < near).tolist()
        found += list(zip(best, a, b, flipped, strict=True))
    found.sort()
    return [NearDuplicate(Path(paths[a]), Path(paths[b]), d, f) for d, a, b, f in found]


def embedding_pairs(
    paths: Sequence[str | Path],
    features: Any,
    min_cosine: float,
    *,
    groups: Sequence[Hashable] | None = None,
) -> list[NearDuplicate]:
    """Every pair of images whose feature vectors have cosine similarity >= ``min_cosine``.

    Args:
        paths: One file per feature row.
        features: [N, F] features (a numpy array or a torch tensor, on any device).
        min_cosine: Smallest cosine similarity reported, e.g. 0.95.
        groups: As in `near_duplicate_pairs`.

    Returns:
        The pairs, most similar first, with ``distance = 1 - cosine``; ``a`` comes before ``b``.
    """
    if not len(paths):
        return []
    if hasattr(features, "detach"):  # a torch tensor: leave autograd and the GPU behind
        features = features.detach().float().cpu().numpy()
    vectors = np.asarray(features, dtype=np.float32).reshape(len(paths), -1)
    index = np.array(_representatives(len(paths), groups))
    vectors = vectors[index]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)  # an all-zero row stays at cosine 0
    found = []
    for start, stop in _row_blocks(len(index)):
        cosine = vectors[start:stop] @ vectors[start + 1 :].T
        i, j = _above_diagonal(cosine >= min_cosine)
        distance = (1.0 - cosine[i, j].astype(np.float64)).tolist()
        a, b = index[start + i].tolist(), index[start + 1 + j].tolist()
        found += list(zip(distance, a, b, strict=True))
    found.sort()
    # Rounding can put a self-similar pair a hair below zero.
    return [NearDuplicate(Path(paths[a]), Path(paths[b]), max(0.0, d)) for d, a, b in found]


def _try_hash(path: str | Path, max_pixels: int) -> tuple[int, int] | None:
    try:
        return file_hashes(path, max_pixels)
    except Exception:  # ImageError, or Pillow crashing on one file: the check says why
        return None


def _representatives(count: int, groups: Sequence[Hashable] | None) -> list[int]:
    """Indices of the first image of each group (all images without groups)."""
    if groups is None:
        return list(range(count))
    if len(groups) != count:
        raise ValueError(f"groups has {len(groups)} entries for {count} images")
    first: dict[Hashable, int] = {}
    for i, key in enumerate(groups):
        first.setdefault(key, i)
    return sorted(first.values())


def _row_blocks(count: int) -> Iterator[tuple[int, int]]:
    """Blocks of rows [start, stop) of the count x count pair matrix, each small enough to
    compare with all later images at once (`_CHUNK_ELEMENTS`)."""
    step = max(1, _CHUNK_ELEMENTS // max(1, count))
    for start in range(0, count, step):
        yield start, min(count, start + step)


def _above_diagonal(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the True entries of a block whose row r is image start + r and whose
    column c is image start + 1 + c, keeping only pairs of a row with a later image."""
    rows = close.shape[0]
    square = min(rows, close.shape[1])  # only these columns can hold images <= the row's
    close[:, :square] &= np.triu(np.ones((rows, square), dtype=bool))
    return np.nonzero(close)


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64, as uint8."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0: one instruction per value
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return _BYTE_BITS[as_bytes].sum(axis=-1, dtype=np.uint8)


_BYTE_BITS = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)
