"""Image preprocessing: decode once to a uint8 base-size tensor, then train or eval presets.

The pipeline is ``decode_image`` (file -> uint8 ``[3, h, w]`` whose shorter side is
``Preprocess.base_size``), which the decode-once cache stores, followed by a preset that works on
uint8 tensors and ends in a float, normalised ``[3, H, W]``. As in torchvision's classification
references there is one preset for training and one for evaluation; both end in the same
``_finish`` steps so their scaling and normalisation cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from pictag.config import TrainConfig
from pictag.data.images import DEFAULT_MAX_PIXELS, ImageError, ImageSource, load_rgb_sized
from pictag.heads.masks import BACKGROUND, IGNORE

Transform = Callable[[torch.Tensor], torch.Tensor]

# Filters torchvision can apply to tensors (PIL-only ones such as lanczos would fail mid-epoch).
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")
AUGMENTS = ("none", "light", "randaugment", "trivialaugment")
# torchvision's default crop scale (0.08, 1) suits long from-scratch ImageNet schedules. pictag
# mostly fine-tunes pretrained backbones for a few epochs on small sets, where an 8% crop often
# cuts away the object or a tag in a corner and so trains on a wrong label; a quarter of the
# image at least keeps the labels true while still varying scale and position.
MAX_ASPECT = 50  # longer side at most this many times the shorter one
CROP_SCALE = (0.25, 1.0)
# Boxes move with the crop, but a crop through an object leaves a box on a part of it (or drops
# it): for heads that locate things crops stay large and close to the image's shape.
WHOLE_CROP_SCALE = (0.6, 1.0)
WHOLE_CROP_RATIO = (0.8, 1.25)


@dataclass(frozen=True)
class Preprocess:
    """The preprocessing that travels with a model (into ``pictag.json`` and ONNX metadata).

    Attributes:
        input_size: ``(3, H, W)`` of the network input.
        mean: Per-channel mean subtracted from images scaled to [0, 1].
        std: Per-channel divisor applied after the mean.
        interpolation: torchvision interpolation mode name, lower case.
        crop_pct: Share of the base image that the evaluation centre crop keeps.
        whole: The whole image is resized to ``(H, W)``, aspect ratio not kept, with no crop:
            heads that locate things (boxes) must see all of the image they are scored on.
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    whole: bool = False

    def __post_init__(self) -> None:
        # Callers pass lists read from JSON or timm configs; store hashable, comparable tuples.
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "interpolation", str(self.interpolation).lower())
        object.__setattr__(self, "crop_pct", 1.0 if self.whole else float(self.crop_pct))
        object.__setattr__(self, "whole", bool(self.whole))
        if len(self.input_size) != 3 or self.input_size[0] != 3 or min(self.input_size) < 1:
            raise ValueError(f"input_size must be (3, H, W), got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values, std > 0; got {self.mean}, {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                f"got {self.interpolation!r}"
            )
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the network input."""
        return self.input_size[1], self.input_size[2]

    @property
    def base_size(self) -> int:
        """Shorter side that images are decoded and resized to, before any crop."""
        return round(max(self.size) / self.crop_pct)

    @property
    def mode(self) -> InterpolationMode:
        """The interpolation as a torchvision enum."""
        return InterpolationMode(self.interpolation)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            **({"whole": True} if self.whole else {}),  # runs before it had no key
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`; missing ``interpolation``/``crop_pct`` take the defaults."""
        known = {"input_size", "mean", "std", "interpolation", "crop_pct", "whole"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {sorted(unknown)}")
        return cls(**data)


def decode_image(
    path_or_file: ImageSource, pre: Preprocess, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """:func:`decode_image_sized` without the size."""
    return decode_image_sized(path_or_file, pre, max_pixels)[0]


def decode_image_sized(
    path_or_file: ImageSource, pre: Preprocess, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode an image to uint8 ``[3, h, w]`` whose shorter side is ``pre.base_size``.

    JPEGs are decoded at a reduced size when that still covers ``base_size`` (much faster for
    big photos); the aspect ratio is kept so training crops can range over the whole image.
    The file's upright ``(width, height)`` comes with it: boxes are reported in its pixels.

    Raises:
        ImageError: The file is missing, not an image, truncated or too large.
    """
    base = pre.base_size
    picture, full_size = load_rgb_sized(path_or_file, max_pixels=max_pixels, min_size=base)
    image = F.pil_to_tensor(picture)
    short, long = sorted(image.shape[-2:])
    if long > MAX_ASPECT * short:
        # Scaling the shorter side up to the base size would blow a 100000x1 strip up to
        # billions of pixels: refuse it, as the pixel limit refuses a decompression bomb.
        name = getattr(path_or_file, "name", path_or_file)
        raise ImageError(
            f"{name}: a {image.shape[-1]}x{image.shape[-2]} image is more than {MAX_ASPECT}:1; "
            "crop it to the part that matters or remove it",
            str(name),
            "too_elongated",
        )
    # Antialias: downscaling photos several-fold without it aliases fine texture.
    return F.resize(image, base, interpolation=pre.mode, antialias=True), full_size


DEFAULT_HFLIP = 0.5  # photos: a mirrored cat is a cat


def hflip_for(labels: dict[str, list[str]]) -> tuple[float, str | None]:
    """``train.hflip``'s default for heads with these label names, and why when it is 0.

    A head of three or more labels that are all single characters (``0``-``9``, ``A``-``Z``)
    reads digits or letters, which a mirror changes (a flipped 2 is no 2); a segmentation head's
    ``background`` class does not count.
    """
    for name, names in labels.items():
        names = [label for label in names if label != BACKGROUND]
        if len(names) >= 3 and all(len(label.strip()) == 1 for label in names):
            return 0.0, f"head {name!r} has single-character labels (digits or letters)"
    return DEFAULT_HFLIP, None


def crop_scale(train: TrainConfig) -> tuple[float, float]:
    """The range of ``light``'s random crop, as shares of the image's area."""
    return (CROP_SCALE[0] if train.crop_scale is None else train.crop_scale, 1.0)


def train_transform(pre: Preprocess, train: TrainConfig) -> Transform:
    """The training preset for a base-size uint8 image; ``augment: none`` is the eval preset.

    ``light`` is a random resized crop and flip; ``randaugment``/``trivialaugment`` add those
    policies. ``rotate`` and ``color_jitter`` apply to every preset but ``none`` when set.
    """
    if train.augment not in AUGMENTS:
        raise ValueError(f"train.augment must be one of {', '.join(AUGMENTS)}: {train.augment!r}")
    if train.augment == "none":
        return eval_transform(pre)
    scale, ratio = (
        (WHOLE_CROP_SCALE, WHOLE_CROP_RATIO) if pre.whole else (crop_scale(train), (3 / 4, 4 / 3))
    )
    steps: list[Transform] = [
        v2.RandomResizedCrop(
            pre.size, scale=scale, ratio=ratio, interpolation=pre.mode, antialias=True
        )
    ]
    hflip = DEFAULT_HFLIP if train.hflip is None else train.hflip  # None: not yet resolved
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if train.rotate > 0:
        # Corners turned in from outside are black in the image and ignored in a mask.
        fill = {tv_tensors.Mask: IGNORE, "others": 0}
        steps.append(
            v2.RandomRotation(train.rotate, interpolation=InterpolationMode.BILINEAR, fill=fill)
        )
    if train.color_jitter > 0:
        strength = train.color_jitter
        steps.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
    if train.augment == "randaugment":
        steps.append(v2.RandAugment(interpolation=InterpolationMode.BILINEAR))
    elif train.augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide(interpolation=InterpolationMode.BILINEAR))
    return _finish(steps, pre)


def eval_transform(pre: Preprocess) -> Transform:
    """The evaluation preset: centre crop ``(H, W)`` of the base-size image, then normalise.

    The ``Resize`` to ``base_size`` does nothing to an image from :func:`decode_image` (torchvision
    returns it untouched when the size already matches), so eval never resizes twice; it only
    guards callers that pass a tensor of another size. With ``pre.whole`` the whole image is
    resized to ``(H, W)`` instead.
    """
    return v2.Compose([eval_crop(pre), normalizer(pre)])


def eval_crop(pre: Preprocess) -> Transform:
    """The uint8 part of :func:`eval_transform`: what it does before :func:`normalizer`."""
    if pre.whole:
        return v2.Resize(pre.size, interpolation=pre.mode, antialias=True)
    return v2.Compose(
        [v2.Resize(pre.base_size, interpolation=pre.mode, antialias=True), v2.CenterCrop(pre.size)]
    )


def normalizer(pre: Preprocess) -> Transform:
    """uint8 -> float in [0, 1] -> normalised, of one image ``[3, H, W]`` or a batch
    ``[B, 3, H, W]`` alike (the same element-wise operations: a batch normalised at once equals
    its images normalised one by one, bit for bit)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)])


def normalized_batch(
    images: torch.Tensor | Sequence[torch.Tensor], pre: Preprocess
) -> torch.Tensor:
    """Stack uint8 images ``[3, H, W]`` (a list, or a batch's rows) into a float batch normalised
    as :func:`normalizer` normalises ``torch.stack(images)``, bit for bit, in numpy on the calling
    thread: torch splits each operation on a tensor this size over all its intra-op threads,
    which a prediction's model calls need (Lite0 at 224 px: 0.26 core-ms an image here against
    0.7-1.4 for stack and :func:`normalizer`). Anything else (no images, other dtypes or
    devices, shapes that differ) goes the torch way, with its errors."""
    if not _numpy_ready(images):
        stacked = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        return normalizer(pre)(stacked)
    mean = np.asarray(pre.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(pre.std, np.float32).reshape(-1, 1, 1)
    scale = np.float32(1.0 / 255)  # what ToDtype(scale=True) multiplies uint8 by, in float32
    out = np.empty((len(images), *images[0].shape), np.float32)
    for row, image in zip(out, images, strict=True):
        # Image by image: each stays in the cache for its three passes.
        np.multiply(image.numpy(), scale, out=row)
        row -= mean
        row /= std
    return torch.from_numpy(out)


def _numpy_ready(images: torch.Tensor | Sequence[torch.Tensor]) -> bool:
    """Non-empty, every image a CPU uint8 ``[C, H, W]`` of the first one's shape."""
    if len(images) == 0:
        return False
    shape = images[0].shape
    return all(
        image.dtype == torch.uint8
        and image.device.type == "cpu"
        and image.ndim == 3
        and image.shape == shape
        for image in images
    )


def _finish(steps: list[Transform], pre: Preprocess) -> Transform:
    """The steps every preset ends with: uint8 -> float in [0, 1] -> normalised."""
    return v2.Compose([*steps, normalizer(pre)])
