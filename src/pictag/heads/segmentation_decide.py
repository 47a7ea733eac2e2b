"""Decisions of a segmentation head: the most probable class of each pixel; and what one
image's decision is in label names, pixel shares and a class-index PNG.

A head's activated outputs are ``[N, C, H, W]`` class probabilities at the network's input size
(the whole image resized); a decision is a uint8 class map ``[N, H, W]``.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from pictag.heads import masks
from pictag.heads.kinds import Params
from pictag.heads.masks import IGNORE

RIGHT_IOU = 0.5  # an image's decision counts as right when its mean IoU reaches this
MIN_SHARE = 0.001  # classes on less of the image are not listed among its labels
THUMB_SIDE = 96  # side of the mask pictures in the report's mistakes
# Pixels up to which a prediction's probabilities are resized to the file's size; above it they
# are resized to a copy of this many pixels (4x a 512x512 network output on each side).
SMOOTH_PIXELS = 2048 * 2048


def default_params(head: Any, cfg: Any) -> Params:
    """The decision rule; there is nothing to tune."""
    del head, cfg
    return {"rule": "argmax"}


def decide(probs: np.ndarray, params: Params) -> np.ndarray:
    """The class map ``[N, H, W]`` (uint8) of probabilities ``[N, C, H, W]``."""
    del params
    return np.asarray(probs).argmax(axis=1).astype(np.uint8)


def aligned(decided: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decisions resized (nearest) to the targets' size when they differ."""
    targets = np.asarray(targets)
    if decided.shape[-2:] != targets.shape[-2:]:
        size = targets.shape[-2:]
        decided = np.stack([masks.resize_nearest(d, size) for d in decided])
    return decided, targets


def image_loss(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per image, the share of known pixels decided wrong (0 for an image with none known)."""
    decided, targets = aligned(decide(probs, {}), targets)
    known = targets != IGNORE
    wrong = (decided != targets) & known
    count = known.reshape(len(known), -1).sum(axis=1)
    return wrong.reshape(len(wrong), -1).sum(axis=1) / np.maximum(count, 1)


def judge(decided: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images with a known pixel, and whether their mean IoU reaches ``RIGHT_IOU``."""
    from pictag.heads.segmentation_metrics import image_iou

    decided, targets = aligned(decided, targets)
    classes = int(max(decided.max(initial=0), targets[targets != IGNORE].max(initial=0))) + 1
    iou = image_iou(decided, targets, classes)
    return masks.known(targets), np.nan_to_num(iou, nan=0.0) >= RIGHT_IOU


def shares(head: Any, decided: np.ndarray) -> dict[str, float]:
    """Label -> share of the image's known pixels, largest first (ignored pixels left out)."""
    counts = masks.pixel_counts(decided, head.num_labels)
    total = max(int(counts.sum()), 1)
    order = np.argsort(-counts, kind="stable")
    return {head.labels[i]: round(counts[i] / total, 6) for i in order if counts[i] > 0}


def describe(
    head: Any, probs_row: np.ndarray, target_row: np.ndarray, decided_row: np.ndarray
) -> tuple[list[str], list[str], dict[str, float]]:
    """The classes on the true and the decided mask (largest first), and the decided shares."""
    del probs_row
    decided_row, target_row = (a[0] for a in aligned(decided_row[None], target_row[None]))
    true = [label for label, share in shares(head, target_row).items() if share >= MIN_SHARE]
    found = shares(head, decided_row)
    return true, [label for label, share in found.items() if share >= MIN_SHARE], found


def places(head: Any, target: np.ndarray, decided: np.ndarray) -> dict[str, Any]:
    """The true and decided masks of one image as small coloured PNG data URIs."""
    from pictag.heads.segmentation_draw import colour_mask

    def uri(classes: np.ndarray) -> str:
        small = masks.resize_nearest(classes, (THUMB_SIDE, THUMB_SIDE))
        data = png_bytes(colour_mask(small, head.num_labels), "RGBA")
        return "data:image/png;base64," + base64.b64encode(data).decode("ascii")

    return {"true_mask": uri(np.asarray(target)), "pred_mask": uri(np.asarray(decided))}


def full_size_classes(probs_row: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The class map of one image at its own ``(width, height)``: probabilities resized
    bilinearly, then the most probable class (smoother edges than resizing the classes).

    Above ``SMOOTH_PIXELS`` the probabilities are resized to a smaller copy of that shape and
    its classes then enlarged (nearest): a 24 MP photo's 21 class planes would take 2 GB.
    """
    import torch
    from torch.nn import functional as F

    width, height = size
    shrink = min(1.0, (SMOOTH_PIXELS / max(width * height, 1)) ** 0.5)
    smooth = (max(1, round(height * shrink)), max(1, round(width * shrink)))
    probs = torch.from_numpy(np.ascontiguousarray(probs_row, dtype=np.float32))[None]
    resized = F.interpolate(probs, size=smooth, mode="bilinear", align_corners=False)
    classes = resized[0].argmax(dim=0).to(torch.uint8).numpy()
    return classes if smooth == (height, width) else masks.resize_nearest(classes, (height, width))


def png_bytes(pixels: np.ndarray, mode: str, palette: list[int] | None = None) -> bytes:
    """A PNG of ``pixels`` (``L``/``P`` class indices or ``RGBA``)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels), mode="L" if mode == "P" else mode)
    if mode == "P":
        image = image.convert("P")
        image.putpalette(palette or [])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def predict_entry(
    head: Any, probs_row: np.ndarray, params: Params, size: tuple[int, int]
) -> dict[str, Any]:
    """One image's prediction: the class of each of its own pixels as a palette PNG (the
    values are class indices; the palette only makes it viewable), and the classes' shares."""
    from pictag.heads.segmentation_draw import palette

    del params
    classes = full_size_classes(probs_row, size)
    found = shares(head, classes)
    png = png_bytes(classes, "P", palette(head.num_labels))
    labels = [label for label, share in found.items() if share >= MIN_SHARE]
    return {
        "labels": labels,
        "scores": found,
        "mask": {"png": base64.b64encode(png).decode("ascii"), "classes": list(head.labels)},
    }


def export_meta(head: Any, params: Params) -> dict[str, Any]:
    """How an exported model's consumer turns the head's output into a mask."""
    del head, params
    return {
        "activation": "softmax",
        "output_layout": "[C, H, W] per image: each class's probability at every pixel of the "
        "network input (the whole image resized to H x W)",
        "decision": "resize the probabilities to the original image's size (bilinear), then "
        "each pixel takes its most probable class",
    }
