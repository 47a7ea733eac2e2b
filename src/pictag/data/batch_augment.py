"""Whole-batch augmentation of base-size uint8 images (airbench's way): one random resized crop
and flip per image, done for the whole batch with one ``grid_sample``, then one float conversion
and normalisation per batch.

The per-sample presets of :mod:`pictag.data.transforms` run a chain of Python-level torchvision
calls for every image; for a tiny network at 32 px that work costs more than the training step.
This module reproduces the ``light`` preset (``RandomResizedCrop`` with ``CROP_SCALE`` and
torchvision's aspect ratios, then ``RandomHorizontalFlip``) in distribution, not bit for bit:

* Crop boxes are drawn exactly as ``RandomResizedCrop.get_params`` draws them (ten tries at an
  area and a log-uniform aspect ratio, integer boxes, a centre-crop fallback), for all images
  at once.
* The crop is resized by sampling at its output pixel centres (``grid_sample``,
  ``align_corners=False``), mapped and clamped to the box as ``resize`` maps them on a cut-out
  crop; the flip reverses the sampling positions, so it costs nothing and mirrors exactly.
  There is no antialiasing filter and no rounding back to uint8: on a square set a crop is at
  most ``1 / crop_pct`` (about 1.14) times the output, where aliasing is negligible; on sets
  of one wider shape (all 4:3, say) it can reach about 1.5 times.

``augment: none`` is the eval preset itself applied to the batch, so it matches the per-sample
path exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as nnf

from pictag.config import TrainConfig
from pictag.data.transforms import (
    CROP_SCALE,
    DEFAULT_HFLIP,
    Preprocess,
    Transform,
    crop_scale,
    eval_transform,
)

CROP_RATIO = (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop default, which `light` uses
CROP_ATTEMPTS = 10  # tries before the centre-crop fallback, as torchvision
# grid_sample's modes for Preprocess.interpolation; grid_sample's nearest rounds the source
# coordinate, which is what nearest-exact does.
GRID_MODES = {
    "nearest": "nearest",
    "nearest-exact": "nearest",
    "bilinear": "bilinear",
    "bicubic": "bicubic",
}


@dataclass(frozen=True)
class BatchAugment:
    """A training preset for uint8 ``[B, 3, h, w]`` batches of one image size.

    Attributes:
        pre: The preprocessing (output size, normalisation, interpolation).
        crop: Random resized crop (``light``); False is the eval preset (``none``).
        hflip: Probability of a horizontal mirror (only with ``crop``).
        scale: Range of the crop's share of the image area.
        ratio: Range of the crop's width / height.
    """

    pre: Preprocess
    crop: bool = True
    hflip: float = DEFAULT_HFLIP
    scale: tuple[float, float] = CROP_SCALE
    ratio: tuple[float, float] = CROP_RATIO

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch; random draws come from ``generator`` (a CPU one), so a batch
        depends only on the generator's state, whatever device ``images`` is on.

        Args:
            images: uint8 ``[B, 3, h, w]`` base-size images.
            generator: The source of the crop boxes and flips.

        Returns:
            Float ``[B, 3, H, W]``, normalised, on the device of ``images``.
        """
        if not self.crop:
            return self._eval(images)
        batch, _, height, width = images.shape
        boxes = random_resized_boxes(batch, height, width, self.scale, self.ratio, generator)
        flips = torch.rand(batch, generator=generator) < self.hflip
        out = crop_resize(images, boxes, self.pre.size, flips, self.pre.interpolation)
        return normalize(out, self.pre)

    @cached_property
    def _eval(self) -> Transform:
        # The per-sample eval preset works on a [B, 3, h, w] batch as well (its crop and
        # normalisation act on the last three dimensions), so `none` matches it exactly.
        return eval_transform(self.pre)


def batch_augment_for(pre: Preprocess, train: TrainConfig) -> tuple[BatchAugment | None, str]:
    """The batch preset matching ``train``'s augmentation, or None and why it cannot be done.

    ``none`` and ``light`` are done exactly or in distribution; RandAugment, TrivialAugment,
    rotation and colour jitter stay with the per-sample presets.
    """
    if pre.whole:
        return None, "boxes move with each image's own crop and flip"
    if train.augment not in ("none", "light"):
        return None, f"train.augment={train.augment} is per-sample"
    if train.augment == "none":
        return BatchAugment(pre, crop=False, hflip=0.0), "augment none"
    if train.rotate > 0 or train.color_jitter > 0:
        return None, "train.rotate/color_jitter are per-sample"
    hflip = DEFAULT_HFLIP if train.hflip is None else train.hflip  # as train_transform
    scale = crop_scale(train)
    how = f"light: crop {scale[0]:g}-1 of the area + flip p={hflip:g}"
    return BatchAugment(pre, crop=True, hflip=hflip, scale=scale), how


def random_resized_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Crop boxes as ``RandomResizedCrop.get_params`` draws them, for ``n`` images at once.

    Returns:
        int64 ``[n, 4]`` rows of ``(top, left, crop_height, crop_width)``, inside the image.
    """
    shape = (n, CROP_ATTEMPTS)
    area = (
        height
        * width
        * torch.empty(shape, dtype=torch.float64).uniform_(*scale, generator=generator)
    )
    log_ratio = torch.empty(shape, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_ratio)
    # torch.round rounds halves to even, as Python's round in torchvision does.
    w = torch.round(torch.sqrt(area * aspect)).long()
    h = torch.round(torch.sqrt(area / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(dim=1, keepdim=True)  # argmax returns the first fitting try
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    found = fits.any(dim=1)
    fallback_h, fallback_w = _fallback_crop(height, width, ratio)
    h = torch.where(found, h, torch.full_like(h, fallback_h))
    w = torch.where(found, w, torch.full_like(w, fallback_w))
    # A uniform integer in [0, room]; float64 so u * (room + 1) never rounds up to room + 1.
    u = torch.rand((2, n), dtype=torch.float64, generator=generator)
    top = torch.floor(u[0] * (height - h + 1)).long().clamp(max=height - h)
    left = torch.floor(u[1] * (width - w + 1)).long().clamp(max=width - w)
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def crop_resize(
    images: torch.Tensor,
    boxes: torch.Tensor,
    size: tuple[int, int],
    flips: torch.Tensor,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Each image's box resized to ``size`` (mirrored where ``flips``), in one ``grid_sample``.

    Args:
        images: ``[B, C, h, w]``, uint8 or float.
        boxes: ``[B, 4]`` rows of ``(top, left, crop_height, crop_width)`` in pixels.
        size: Output ``(H, W)``.
        flips: bool ``[B]``; True mirrors that image left to right.
        interpolation: A ``Preprocess.interpolation`` name.

    Returns:
        float32 ``[B, C, H, W]`` in the input's value range (0-255 for uint8).
    """
    device = images.device
    batch, _, height, width = images.shape
    out_h, out_w = size
    boxes = boxes.to(device=device, dtype=torch.float32)
    flips = flips.to(device)
    # Output pixel centres as a share of the crop; a mirror reads them in reverse order, the
    # very same positions, so a flipped crop is the exact mirror of the unflipped one.
    across = (torch.arange(out_w, device=device, dtype=torch.float32) + 0.5) / out_w
    down = (torch.arange(out_h, device=device, dtype=torch.float32) + 0.5) / out_h
    across = torch.where(flips[:, None], across.flip(0), across)
    # Pixel edges sit at integers. Positions within half a pixel of the box's edge are moved to
    # its outermost pixel centres, as resize clamps them on a cut-out crop, so that bilinear
    # never blends in a pixel outside the box (bicubic's outer taps still reach one pixel out).
    x = _inside(boxes[:, 1:2] + boxes[:, 3:4] * across, boxes[:, 1:2], boxes[:, 3:4])  # [B, W]
    y = _inside(boxes[:, 0:1] + boxes[:, 2:3] * down, boxes[:, 0:1], boxes[:, 2:3])  # [B, H]
    # grid_sample (align_corners=False) maps pixel edges [0, width] to [-1, 1].
    x, y = x * (2 / width) - 1, y * (2 / height) - 1
    grid = torch.stack(
        [x[:, None, :].expand(batch, out_h, out_w), y[:, :, None].expand(batch, out_h, out_w)],
        dim=-1,
    )
    mode = GRID_MODES[interpolation]
    out = nnf.grid_sample(
        images.float(), grid, mode=mode, padding_mode="border", align_corners=False
    )
    if mode == "bicubic":
        out = out.clamp_(0, 255)  # cubic overshoot, which resize clamps on uint8 too
    return out


def normalize(images: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """0-255 float ``[B, 3, H, W]`` -> normalised as ``transforms._finish`` does, in place."""
    mean = torch.tensor(pre.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=images.device).view(1, 3, 1, 1)
    return images.mul_(1 / 255).sub_(mean).div_(std)


def _inside(position: torch.Tensor, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """``position`` clamped to the centres of the first and last pixel of ``[start, start +
    length)``."""
    return torch.minimum(torch.maximum(position, start + 0.5), start + length - 0.5)


def _fallback_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's centre-crop fallback when no try fits: the whole image, or its middle at
    the nearest allowed aspect ratio."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return round(width / min(ratio)), width
    if in_ratio > max(ratio):
        return height, round(height * max(ratio))
    return height, width
