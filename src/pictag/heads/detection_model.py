"""The network side of a detection head, built from torchvision's FCOS parts.

The head reads the backbone's last three feature maps (strides 8, 16, 32) through a feature
pyramid (torchvision ``FeaturePyramidNetwork`` with P6/P7), runs torchvision's ``FCOSHead`` on
every level and returns one packed tensor per image, ``[A, 9 + C]``: the anchor
``(x1, y1, x2, y2)``, the box regression (4), the centerness logit (1) and the class logits
(C), for all ``A`` anchor points. Anchors are in coordinates normalised by the input's width
and height, as the targets are (see :mod:`pictag.heads.boxes`); FCOS's box coder, matching and
losses are ratios of sizes, so they read the same in any unit.

A packed tensor keeps the head's output one tensor like every other kind's, so the training
loop, DDP, validation and the ONNX export need nothing special. The loss (FCOS's centre
sampling, focal loss, GIoU and centerness) and the decoding come from torchvision; nothing here
matches boxes or suppresses them by hand.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import (
    FCOS,
    FCOSClassificationHead,
    FCOSHead,
    FCOSRegressionHead,
)
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FeaturePyramidNetwork, batched_nms
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from pictag.heads.boxes import MISSING

ANCHOR_SIZES = ((8,), (16,), (32,), (64,), (128,))  # one anchor point per cell, P3..P7 (FCOS)
# FPN and tower channels, and convolutions per branch (torchvision: 256 and 4). At 64 and 2 the
# head cost 1.7 s forward for 16 images of 224 px on 2 AMD EPYC cores, more than half the
# backbone's; at 32 and 1 an epoch on cached maps takes ~2 s for 250 images, and raccoon's
# validation mAP@.5 after 10 such epochs was 0.83 against 0.85 (64, 2).
PYRAMID_WIDTH = 32
TOWER_CONVS = 1
NORM_GROUPS = 8
CANDIDATES = 1000  # (box, class) candidates kept per image before NMS, as FCOS keeps
MIN_SCORE = 0.05  # candidates below this are never kept (COCO evaluation's usual floor)
CENTER_SAMPLING = 1.5  # FCOS's centre-sampling radius, in anchor sizes


class DetectionModule(nn.Module):
    """Feature pyramid + FCOS head: feature maps -> packed per-anchor outputs ``[B, A, 9 + C]``.

    Args:
        channels: Channels of the backbone's last feature maps, finest first; the module reads
            the last ``levels`` (strides 8, 16 and 32).
        num_classes: Object classes.
    """

    levels = 3

    def __init__(self, channels: list[int], num_classes: int) -> None:
        super().__init__()
        channels = list(channels)[-self.levels :]
        width = PYRAMID_WIDTH
        self.fpn = FeaturePyramidNetwork(
            list(channels), width, extra_blocks=LastLevelP6P7(width, width)
        )
        self.head = FCOSHead(width, 1, num_classes, num_convs=TOWER_CONVS)
        # torchvision's GroupNorm(32) would put one channel in a group at width 32, which fails
        # on a 1x1 map (P7 of a small input) in a batch of one: groups of 4 channels instead.
        norm = partial(nn.GroupNorm, NORM_GROUPS)
        self.head.classification_head = FCOSClassificationHead(
            width, 1, num_classes, TOWER_CONVS, norm_layer=norm
        )
        self.head.regression_head = FCOSRegressionHead(width, 1, TOWER_CONVS, norm_layer=norm)
        self.anchors = AnchorGenerator(ANCHOR_SIZES, ((1.0,),) * len(ANCHOR_SIZES))

    def forward(self, maps: list[Tensor], image_size: tuple[int, int]) -> Tensor:
        """Packed outputs of a batch whose input images are ``image_size`` ``(H, W)``."""
        pyramid = list(self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps))).values())
        out = self.head(pyramid)
        batch = maps[0].shape[0]
        # Every image has the same anchors: make one set (the generator reads only the size,
        # dtype and device of the images) and share it, which keeps the ONNX batch dynamic.
        images = ImageList(maps[0].new_empty((1, 0, *image_size)), [image_size])
        anchors = self.anchors(images, pyramid)[0]
        height, width = image_size
        anchors = anchors / anchors.new_tensor([width, height, width, height])
        anchors = anchors.to(out["cls_logits"].dtype).expand(batch, -1, -1)
        return torch.cat(
            [anchors, out["bbox_regression"], out["bbox_ctrness"], out["cls_logits"]], dim=2
        )


def unpack(outputs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Anchors ``[B, A, 4]`` and FCOS's head outputs from packed outputs."""
    outputs = outputs.float()
    head_outputs = {
        "bbox_regression": outputs[..., 4:8],
        "bbox_ctrness": outputs[..., 8:9],
        "cls_logits": outputs[..., 9:],
    }
    return outputs[..., :4], head_outputs


def _fcos(num_classes: int) -> FCOS:
    """An FCOS whose matching and losses pictag calls (its tiny head is never run): the
    centre-sampling matcher lives on the model, not on the head."""
    stub = nn.Identity()
    stub.out_channels = 1  # FCOS checks its backbone says how many channels it gives
    head = FCOSHead(1, 1, num_classes, num_convs=0)
    return FCOS(stub, num_classes, head=head, center_sampling_radius=CENTER_SAMPLING)


class DetectionLoss:
    """FCOS's loss (focal classification + GIoU + centerness, each over foreground anchors)
    on packed outputs and target arrays ``[B, MAX_OBJECTS, 5]``; images whose boxes are
    unknown are left out."""

    def __init__(self, num_classes: int) -> None:
        self.fcos = _fcos(num_classes)

    def __call__(self, outputs: Tensor, targets: Tensor) -> Tensor:
        known = targets[:, 0, 0] != MISSING
        if not bool(known.any()):
            return outputs.sum() * 0.0  # keeps the graph (DDP) with nothing to learn
        anchors, head_outputs = unpack(outputs[known])
        rows = targets[known].float()
        wanted = [
            {"boxes": row[row[:, 0] >= 0, 1:], "labels": row[row[:, 0] >= 0, 0].long()}
            for row in rows
        ]
        per_level = level_sizes(anchors[0])
        losses = self.fcos.compute_loss(wanted, head_outputs, list(anchors), per_level)
        return sum(losses.values())


def level_sizes(anchors: Tensor) -> list[int]:
    """Anchors per pyramid level, from their sizes (a level doubles the size of the one
    before, so rounding the normalised widths tells them apart)."""
    widths = ((anchors[:, 2] - anchors[:, 0]) * 1e4).round()
    return torch.unique_consecutive(widths, return_counts=True)[1].tolist()


def decode(outputs: Tensor) -> Tensor:
    """Every anchor's box and class scores, ``[B, A, 4 + C]``: normalised ``(x1, y1, x2, y2)``
    then FCOS's score ``sqrt(sigmoid(class) * sigmoid(centerness))`` per class.

    Dense and in anchor order, so an exported model's output compares element by element
    with PyTorch's (a top-k would reorder near-equal scores); NMS and the thresholds come
    after, in ``decide``.
    """
    anchors, head = unpack(outputs)
    boxes = _fcos_coder().decode(head["bbox_regression"], anchors).clamp(0.0, 1.0)
    scores = torch.sqrt(head["cls_logits"].sigmoid() * head["bbox_ctrness"].sigmoid())
    return torch.cat([boxes, scores], dim=2)


def _fcos_coder():
    from torchvision.models.detection._utils import BoxLinearCoder

    return BoxLinearCoder(normalize_by_size=True)


def detections(dense: Tensor, iou: float, max_boxes: int) -> Tensor:
    """One image's boxes after torchvision's per-class NMS, ``[M, 6]`` rows of
    ``(x1, y1, x2, y2, score, class)``, best first, ``M <= max_boxes``.

    As FCOS does: (anchor, class) pairs scoring at least ``MIN_SCORE``, the best
    ``CANDIDATES`` of them, then NMS.
    """
    boxes, scores = dense[:, :4], dense[:, 4:]
    anchor, label = torch.nonzero(scores >= MIN_SCORE, as_tuple=True)
    score = scores[anchor, label]
    if len(score) > CANDIDATES:
        score, top = score.topk(CANDIDATES)
        anchor, label = anchor[top], label[top]
    kept = batched_nms(boxes[anchor], score, label, iou)[:max_boxes]
    rows = [boxes[anchor[kept]], score[kept, None], label[kept, None].to(score.dtype)]
    return torch.cat(rows, dim=1)
