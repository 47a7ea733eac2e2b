"""Segmentation masks: a folder of mask files matched to images by name (``data.format: masks``).

Each head whose ``masks`` names a folder gets, for every image, a
:class:`~pictag.heads.masks.MaskLabel` from the mask file of the same stem (``a.png``), or of
the stem plus a usual suffix (``a_mask.png``, as PennFudan names them), or None when the image
has none: a missing target for that head only. Every mask is read once here and checked against
its image (size, values no class covers, colour masks without ``mask_colors``); as in the box
sources, a finding is a :class:`~pictag.data.problems.Problem` naming the mask file, never an
exception. An error drops the image; a warning (an empty or one-class mask) keeps it.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from pictag.config import DataConfig, HeadConfig
from pictag.data.mask_files import MASK_SUFFIXES, find_masks, lookup, mask_label, mask_table
from pictag.data.problems import Problem
from pictag.data.schema import Sample
from pictag.data.sources_boxes import image_size
from pictag.data.sources_common import SourceResult, list_images, split_from_folders, split_note
from pictag.heads.masks import ValueRange

SHOWN_NAMES = 5  # file names named in one summary warning
_WORKERS = 8  # mask and header reads wait on the disk and on PNG decoding, not the CPU


def attach_masks(
    samples: list[Sample], heads: dict[str, HeadConfig]
) -> tuple[list[Sample], list[Problem]]:
    """Give each sample the mask label of every head with a ``masks`` folder (None: no mask).

    Images whose mask (or own size) has an error are left out, and so are images that share a
    stem with a mask, which cannot say whose it is. Masks no image claims, and images with no
    mask, are one warning each per head.

    Returns:
        The kept samples (other heads' labels unchanged) and the problems found.

    Raises:
        ValueError: a mask folder is missing, ``mask_values``/``mask_colors`` cannot be read,
            or no mask in a head's folder matches any image.
    """
    masked = {name: cfg for name, cfg in heads.items() if cfg.masks}
    tables = {name: mask_table(name, cfg) for name, cfg in masked.items()}
    problems: list[Problem] = []
    pairs: dict[str, dict[int, Path]] = {}
    for name, cfg in masked.items():
        folder = Path(str(cfg.masks))
        if not folder.is_dir():
            raise ValueError(f"heads.{name}.masks: mask folder not found: {folder}")
        masks, found = find_masks(folder)
        pairs[name], paired = _pair(samples, masks, name, folder)
        problems += found + paired

    def label(index: int) -> tuple[Sample | None, list[Problem]]:
        wanted = {name: pairs[name].get(index) for name in masked}
        return _label_sample(samples[index], wanted, masked, tables)

    shared = {p.path for p in problems if p.kind == "shared_stem"}
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        results = list(pool.map(label, range(len(samples))))
    kept = []
    for sample, found in results:
        problems += found
        if sample is not None and sample.path not in shared:
            kept.append(sample)
    return kept, problems


def _pair(
    samples: list[Sample], masks: dict[str, Path], name: str, folder: Path
) -> tuple[dict[int, Path], list[Problem]]:
    """Sample index -> its mask, and the problems of matching by stem."""
    stems = Counter(sample.path.stem for sample in samples)
    pairs: dict[int, Path] = {}
    problems, missing = [], []
    for index, sample in enumerate(samples):
        mask = lookup(masks, sample.path.stem)
        if mask is None:
            missing.append(sample.path)
        elif stems[sample.path.stem] > 1:
            message = f"{stems[sample.path.stem]} images are named {sample.path.stem!r}"
            fix = "give the images unique names: masks are matched by name alone"
            problems.append(Problem("shared_stem", str(mask), message, fix, path=sample.path))
        else:
            pairs[index] = mask
    if samples and not pairs and not problems:
        raise ValueError(
            f"heads.{name}.masks: no mask in {folder} is named like an image (a.png, or "
            f"a_mask.png with one of {', '.join(MASK_SUFFIXES)})"
        )
    claimed = {lookup(masks, s.path.stem) for s in samples}
    orphans = sorted(set(masks.values()) - claimed)
    if orphans:
        message = f"{len(orphans)} mask(s) match no image: {_names(orphans)}"
        fix = "remove them or add the images"
        problems.append(Problem("orphan_mask", str(folder), message, fix, "warning"))
    if missing:
        message = f"{len(missing)} image(s) have no mask for head {name!r}: {_names(missing)}"
        fix = f"add their masks to {folder}, or keep them without a {name} target"
        problems.append(Problem("missing_mask", str(folder), message, fix, "warning"))
    return pairs, problems


def _names(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:SHOWN_NAMES])
    return shown + (", ..." if len(paths) > SHOWN_NAMES else "")


def _label_sample(
    sample: Sample,
    wanted: dict[str, Path | None],
    heads: dict[str, HeadConfig],
    tables: dict[str, tuple[ValueRange, ...]],
) -> tuple[Sample | None, list[Problem]]:
    """The sample with its mask labels, or None when an error leaves it out."""
    labels: dict[str, Any] = {**sample.labels, **dict.fromkeys(wanted)}
    if not any(wanted.values()):
        return Sample(sample.path, labels, sample.split, sample.where), []
    try:
        size = image_size(sample.path)  # upright, as the masks of a turned JPEG are drawn
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        message = f"cannot read the image's size: {err}"
        fix = "replace the file with a readable JPEG or PNG, or remove it"
        return None, [Problem("unreadable", str(sample.path), message, fix, path=sample.path)]
    problems = []
    for name, mask in wanted.items():
        if mask is not None:
            labels[name], found = mask_label(
                sample.path, size, mask, name, heads[name], tables[name]
            )
            problems += found
    if any(p.severity == "error" for p in problems):
        return None, problems
    return Sample(sample.path, labels, sample.split, sample.where), problems


def read_masks(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read every image under ``data.images`` and each head's masks (``data.format: masks``).

    An image in a ``train``/``val``/``test`` folder gets that split. Files inside a mask folder
    are masks, not images, so the mask folder may sit inside the image root (PennFudan's
    ``PedMasks`` beside ``PNGImages``); it must not hold the root itself.

    Raises:
        ValueError: a head has no ``masks``, an image root is missing or inside a mask folder,
            no images are found, or :func:`attach_masks` cannot read the masks.
    """
    lacking = [name for name, cfg in heads.items() if not cfg.masks] or ["NAME"] * (not heads)
    if lacking:
        raise ValueError(
            f"heads.{lacking[0]}.masks: set the mask folder of each segmentation head "
            "(data.format: masks reads only heads with masks)"
        )
    if not data.images:
        raise ValueError("data.images: give the folder with the images")
    mask_dirs = {name: Path(str(cfg.masks)).resolve() for name, cfg in heads.items()}
    samples = []
    for root in map(Path, data.images):
        if not root.is_dir():
            raise ValueError(f"data.images: folder not found: {root}")
        real = root.resolve()
        for name, folder in mask_dirs.items():
            if folder == real or folder in real.parents:
                raise ValueError(
                    f"heads.{name}.masks: the mask folder {folder} holds the image folder "
                    f"{root}; keep the masks in a folder of their own"
                )
        for path in list_images(root):
            if not any(d in (real / path.relative_to(root)).parents for d in mask_dirs.values()):
                samples.append(Sample(path, {}, split_from_folders(path, root), str(path)))
    if not samples:
        raise ValueError(f"data.images: no images under {', '.join(data.images)}")
    samples, problems = attach_masks(samples, heads)
    # An image with no mask for any head has nothing to learn from here (VOC's JPEGImages
    # holds far more photos than SegmentationClass has masks): left out, said once.
    unlabelled = [s for s in samples if all(v is None for v in s.labels.values())]
    if unlabelled:
        samples = [s for s in samples if any(v is not None for v in s.labels.values())]
        message = f"{len(unlabelled)} image(s) have no mask for any head and are left out: "
        message += _names([s.path for s in unlabelled])
        fix = "add their masks, or ignore this if they are not meant to be used"
        problems.append(Problem("no_mask", data.images[0], message, fix, "warning"))
    roots = ", ".join(Path(p).name or p for p in data.images)
    text = f"masks {roots}: {len(samples):,} images"
    for name in heads:
        have = sum(s.labels.get(name) is not None for s in samples)
        text += f", head {name}: {have:,} masks"
        text += f" ({len(samples) - have:,} missing)" if have < len(samples) else ""
    return SourceResult(samples, dict(heads), problems, text + split_note(samples), "masks")
