"""The ``segmentation`` head kind: a class for every pixel, from an FPN decoder on the backbone.

A raw label is a :class:`~pictag.heads.masks.MaskLabel` (a mask file with its value table, or
COCO polygons); a target is a uint8 ``[MASK_SIDE, MASK_SIDE]`` class map with ``IGNORE`` for
pixels that count for nothing (see :mod:`pictag.heads.masks`). The network is smp's FPN decoder
(:mod:`~pictag.heads.segmentation_model`); the decision is the most probable class of each
pixel; metrics come from one confusion count (:mod:`~pictag.heads.segmentation_metrics`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pictag.heads import masks
from pictag.heads import segmentation_decide as decide_
from pictag.heads.kinds import HeadKind, LossFn, LossOptions, check_loss_name
from pictag.heads.labeltext import LabelError
from pictag.heads.masks import MaskLabel

if TYPE_CHECKING:
    from torch import Tensor

LOSSES = ("default",)
OPTIONS = frozenset({"masks", "mask_values", "mask_colors"})
METRIC_NAMES = ("miou", "dice", "pixel_accuracy", "mean_accuracy")


def parse(text: str, separator: str | None) -> Any:
    """A segmentation head has no label in a table cell: its masks are files or polygons."""
    raise LabelError(
        "a segmentation head reads masks from a folder (heads.NAME.masks) or COCO polygons "
        "(data.format: coco), not from a label cell"
    )


def normalize(head: Any, raw: Any) -> MaskLabel:
    """The mask with its class names renamed."""
    if not isinstance(raw, MaskLabel):
        raise LabelError(f"head {head.name!r}: a segmentation label must be a mask, got {raw!r}")
    return raw.renamed(dict(head.rename))


def to_target(encoded: Any, num_labels: int) -> np.ndarray:
    """The class map ``[MASK_SIDE, MASK_SIDE]``; all ``IGNORE`` when the mask is unknown."""
    if encoded is None:
        return masks.to_target(None, {})
    label, indices = encoded
    if num_labels > masks.MAX_CLASSES:
        raise ValueError(f"a segmentation head holds at most {masks.MAX_CLASSES} classes")
    return masks.to_target(label, dict(zip(label.classes, indices, strict=True)))


def count_labels(targets: np.ndarray, num_labels: int) -> np.ndarray:
    """Pixels per class, ignored pixels left out."""
    return masks.pixel_counts(targets, num_labels)


def count_known(targets: np.ndarray) -> int:
    """Images with at least one known pixel."""
    return int(masks.known(targets).sum())


def sample_weights(targets: np.ndarray, num_labels: int) -> np.ndarray:
    """``1 / images`` of the rarest class on each image (by images it appears on)."""
    present = masks.presence(targets, num_labels)
    images = np.maximum(present.sum(axis=0), 1).astype(np.float64)
    weights = np.where(present, 1.0 / images, 0.0).max(axis=1)
    return np.where(weights > 0, weights, 1.0 / max(len(targets), 1))


def make_loss(
    options: LossOptions, counts: np.ndarray | None = None, n_samples: Any = None
) -> LossFn:
    """Cross-entropy + Dice, ignored pixels skipped; ``balance`` weights classes by pixels."""
    del n_samples
    check_loss_name(options, "segmentation", LOSSES)
    if options.label_smoothing:
        raise ValueError("label_smoothing does not apply to segmentation heads")
    if counts is None:
        raise ValueError("a segmentation loss needs the pixel counts per class")
    import torch

    from pictag.heads.segmentation_model import SegmentationLoss, class_weights

    weights = class_weights(torch.as_tensor(counts)) if options.balance else None
    return SegmentationLoss(len(counts), weights)


def activate(outputs: Tensor) -> Tensor:
    """Logits ``[B, C, H, W]`` -> class probabilities of every pixel."""
    return outputs.float().softmax(dim=1)


def mix_targets(targets_a: Tensor, targets_b: Tensor, lam: Any, num_labels: int) -> Tensor:
    raise ValueError("MixUp and CutMix do not apply to segmentation heads: set train.mixup=0")


def tune(probs: np.ndarray, targets: np.ndarray, head: Any, cfg: Any) -> dict[str, Any]:
    """Nothing to tune: each pixel takes its most probable class."""
    del probs, targets
    return decide_.default_params(head, cfg)


def metrics(probs: np.ndarray, targets: np.ndarray, params: dict) -> dict[str, float]:
    """mIoU, mean Dice, pixel accuracy and mean class accuracy, from one confusion count."""
    from pictag.heads.segmentation_metrics import segmentation_metrics

    decided, targets = decide_.aligned(decide_.decide(probs, params), targets)
    found = segmentation_metrics(decided, targets, np.asarray(probs).shape[1])
    return {name: float(found[name]) for name in METRIC_NAMES}


def section(probs: np.ndarray, targets: np.ndarray, labels: list[str], params: dict) -> dict:
    from pictag.heads import segmentation_report

    decided, targets = decide_.aligned(decide_.decide(probs, params), targets)
    return segmentation_report.section(decided, targets, labels, params)


def html(name: str, section_: dict) -> str:
    from pictag.heads import segmentation_report

    return segmentation_report.html(name, section_)


def report_text(name: str, section_: dict) -> str:
    from pictag.heads import segmentation_report

    return segmentation_report.report_text(name, section_)


def label_issues(head: Any, probs: np.ndarray, targets: np.ndarray) -> list[dict[str, Any]]:
    raise ValueError(f"head {head.name!r}: pictag audit does not check masks yet")


def plan_note(head: Any, cfg: Any) -> str:
    return (
        f"{head.name}: FPN decoder on the backbone's last four feature maps, "
        f"{head.num_labels} classes ({', '.join(head.labels[:6])}"
        f"{', ...' if head.num_labels > 6 else ''}); cross-entropy + Dice, each pixel its most "
        "probable class"
    )


def make_module(channels: list[int], num_labels: int) -> Any:
    from pictag.heads.segmentation_model import SegmentationModule

    return SegmentationModule(channels, num_labels)


def wrap_target(target: Tensor, size: tuple[int, int]) -> Any:
    """The class map at the image's ``(h, w)``, as a ``tv_tensors.Mask`` that v2 transforms
    move with the image (nearest neighbour)."""
    import torch
    from torchvision import tv_tensors

    resized = masks.resize_nearest(np.asarray(target), size)
    return tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(resized)))


def unwrap_target(structure: Any, size: tuple[int, int]) -> Tensor:
    """The transformed class map as a plain uint8 tensor ``(h, w)``."""
    import torch

    del size
    return structure.as_subclass(torch.Tensor).to(torch.uint8)


def from_objects(objects: Any) -> MaskLabel | None:
    """COCO polygons or RLE of an image's objects, painted over the background (the first of
    its classes); None (no mask for this head) when the source gives no shapes (VOC, YOLO and
    box CSV files). A box-only object's box is painted ``ignore``."""
    if objects.shapes is None:
        return None
    named = (name for name, _ in objects.shapes if name != masks.IGNORE_NAME)
    classes = (masks.BACKGROUND, *dict.fromkeys(named))
    return MaskLabel(objects.size, shapes=tuple(objects.shapes), classes=classes)


def draw(fig: Any, image_axes: Any, title: str, labels: Any, scores: Any, top: float, **places):
    from pictag.heads.segmentation_draw import draw_mask

    return draw_mask(fig, image_axes, title, labels, scores, top, places.get("mask"))


SEGMENTATION = HeadKind(
    name="segmentation",
    tags=False,
    exclusive=False,
    options=OPTIONS,
    losses=LOSSES,
    parse=parse,
    normalize=normalize,
    to_target=to_target,
    count_labels=count_labels,
    count_known=count_known,
    sample_weights=sample_weights,
    make_loss=make_loss,
    activate=activate,
    mix_targets=mix_targets,
    default_params=decide_.default_params,
    tune=tune,
    decide=decide_.decide,
    metric_names=METRIC_NAMES,
    primary_metric="miou",
    lower_is_better=frozenset(),
    summary_metrics=("miou", "dice", "pixel_accuracy"),
    metrics=metrics,
    section=section,
    image_loss=decide_.image_loss,
    label_issues=label_issues,
    judge=decide_.judge,
    describe=decide_.describe,
    html=html,
    report_text=report_text,
    plan_note=plan_note,
    export_meta=decide_.export_meta,
    text_lines=lambda scores: 2 + min(len(scores), 6),  # title, shares, a gap
    draw=draw,
    from_objects=from_objects,
    spatial=True,
    make_module=make_module,
    wrap_target=wrap_target,
    unwrap_target=unwrap_target,
    predict_entry=decide_.predict_entry,
    places=decide_.places,
)
