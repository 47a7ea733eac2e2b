"""The network side of a segmentation head: segmentation-models-pytorch's FPN decoder on the
backbone's last four feature maps, and cross-entropy + Dice with the ignore index.

The decoder (Kirillov et al.'s panoptic FPN semantic branch, as smp builds it) merges strides
4-32 into one stride-4 map; a 1x1 convolution gives class logits, upsampled bilinearly to the
input's size, so the head's output is ``[B, C, H, W]`` like its targets. The widths are small
for CPUs: the decoder's convolutions run at a quarter of the input's resolution.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pictag.heads.masks import IGNORE

# smp's defaults are 256 and 128; at 64 and 32 the decoder costs less than the Lite0 backbone's
# forward pass at 224 px, and GroupNorm(32) still has one channel a group at most.
PYRAMID_CHANNELS = 64
SEGMENTATION_CHANNELS = 32
DROPOUT = 0.1
DICE_WEIGHT = 1.0  # the Dice term beside cross-entropy (Dice lifts small, rare classes)


class SegmentationModule(nn.Module):
    """FPN decoder + 1x1 classifier: four feature maps -> logits ``[B, C, H, W]``.

    Args:
        channels: Channels of the backbone's last feature maps, finest first; the module reads
            the last ``levels`` (strides 4, 8, 16 and 32).
        num_classes: Classes, background included.
    """

    levels = 4

    def __init__(self, channels: list[int], num_classes: int) -> None:
        super().__init__()
        from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder

        channels = list(channels)[-self.levels :]
        self.decoder = FPNDecoder(
            encoder_channels=channels,
            encoder_depth=3,  # the four maps given are all it reads
            pyramid_channels=PYRAMID_CHANNELS,
            segmentation_channels=SEGMENTATION_CHANNELS,
            dropout=DROPOUT,
        )
        self.classify = nn.Conv2d(SEGMENTATION_CHANNELS, num_classes, kernel_size=1)

    def forward(self, maps: list[Tensor], image_size: tuple[int, int]) -> Tensor:
        """Class logits at the input's size ``image_size`` ``(H, W)``."""
        logits = self.classify(self.decoder(list(maps)))
        return F.interpolate(logits, size=image_size, mode="bilinear", align_corners=False)


class SegmentationLoss(nn.Module):
    """Cross-entropy (with optional class weights) plus Dice, both skipping ``IGNORE`` pixels;
    zero when a batch has no known pixel.

    Args:
        num_classes: Classes.
        class_weights: Per-class cross-entropy weights, or None.
    """

    def __init__(self, num_classes: int, class_weights: Tensor | None = None) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss

        self.num_classes = num_classes
        self.register_buffer("weights", class_weights, persistent=False)
        self.dice = DiceLoss("multiclass", from_logits=True, ignore_index=IGNORE)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        targets = targets.long()
        if logits.shape[-2:] != targets.shape[-2:]:
            logits = F.interpolate(
                logits, size=targets.shape[-2:], mode="bilinear", align_corners=False
            )
        if not (targets != IGNORE).any():
            return logits.sum() * 0.0  # keeps the graph (DDP) without a NaN mean of nothing
        weights = None if self.weights is None else self.weights.to(logits.dtype)
        ce = F.cross_entropy(logits, targets, weight=weights, ignore_index=IGNORE)
        return ce + DICE_WEIGHT * self.dice(logits, targets)


def class_weights(pixels: torch.Tensor) -> torch.Tensor:
    """``balance``: weights ``n / (C * count)`` from pixels per class, clipped to [0.1, 10] so a
    class of a few pixels cannot swamp the loss; a class with no pixels gets the largest."""
    pixels = pixels.double()
    weights = pixels.sum() / (len(pixels) * pixels.clamp(min=1))
    return weights.clamp(0.1, 10.0).float()
