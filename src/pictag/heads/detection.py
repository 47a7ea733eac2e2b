"""The ``detection`` head kind: boxes with classes, FCOS on a feature pyramid of the backbone.

A raw label is an :class:`~pictag.heads.boxes.Objects` (image size + boxes in pixels), read from
VOC, COCO, YOLO or a box CSV; a target is ``[MAX_OBJECTS, 5]`` normalised rows (see
:mod:`pictag.heads.boxes`). The network and loss are torchvision's FCOS parts
(:mod:`~pictag.heads.detection_model`), decisions are per-class NMS and thresholds
(:mod:`~pictag.heads.detection_decide`), metrics the official COCO evaluation
(:mod:`~pictag.heads.detection_metrics`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pictag.heads import boxes
from pictag.heads import detection_decide as decide_
from pictag.heads.boxes import Objects
from pictag.heads.kinds import HeadKind, LossFn, LossOptions, check_loss_name
from pictag.heads.labeltext import LabelError

if TYPE_CHECKING:
    from torch import Tensor

LOSSES = ("default",)
METRIC_NAMES = ("map", "map50", "map75", "ar100", "precision", "recall", "f1")


def parse(text: str, separator: str | None) -> Any:
    """A detection head has no label in a table cell: its boxes come from annotations."""
    raise LabelError(
        "a detection head reads boxes from Pascal VOC, COCO, YOLO or a box CSV "
        "(data.format: voc | coco | yolo | boxcsv), not from a label cell"
    )


def normalize(head: Any, raw: Any) -> Objects:
    """The objects with their class names renamed."""
    if not isinstance(raw, Objects):
        raise LabelError(f"head {head.name!r}: a detection label must be boxes, got {raw!r}")
    if not head.rename:
        return raw
    renamed = tuple((head.rename.get(b[0], b[0]), *b[1:]) for b in raw.boxes)
    return replace(raw, boxes=renamed)


def to_target(encoded: Any, num_labels: int) -> np.ndarray:
    """``[MAX_OBJECTS, 5]`` rows; all ``MISSING`` when the boxes are unknown."""
    del num_labels
    if encoded is None:
        return boxes.empty_target(missing=True)
    objects, classes = encoded
    return boxes.to_target(objects, list(classes))


def count_labels(targets: np.ndarray, num_labels: int) -> np.ndarray:
    """Boxes per class."""
    targets = np.asarray(targets)
    classes = targets[..., 0][boxes.present(targets)].astype(np.int64)
    return np.bincount(classes, minlength=num_labels).astype(np.int64)


def count_known(targets: np.ndarray) -> int:
    """Images whose boxes are known."""
    return int(boxes.known(np.asarray(targets)).sum())


def sample_weights(targets: np.ndarray, num_labels: int) -> np.ndarray:
    """``1 / count`` of the rarest class on each image; images with no box get ``1 / N``."""
    targets = np.asarray(targets)
    counts = np.maximum(count_labels(targets, num_labels), 1).astype(np.float64)
    weights = np.full(len(targets), 1.0 / max(len(targets), 1))
    for row, target in enumerate(targets):
        present = target[boxes.present(target), 0].astype(np.int64)
        if len(present):
            weights[row] = (1.0 / counts[present]).max()
    return weights


def make_loss(
    options: LossOptions, counts: np.ndarray | None = None, n_samples: Any = None
) -> LossFn:
    """FCOS's loss; ``counts`` (boxes per class) gives the number of classes."""
    del n_samples
    check_loss_name(options, "detection", LOSSES)
    if options.label_smoothing or options.balance:
        raise ValueError("label_smoothing and balance do not apply to detection heads")
    if counts is None:
        raise ValueError("a detection loss needs the box counts per class")
    from pictag.heads.detection_model import DetectionLoss

    return DetectionLoss(len(counts))


def activate(outputs: Tensor) -> Tensor:
    """Packed outputs -> every anchor's box and class scores ``[B, A, 4 + C]``."""
    from pictag.heads.detection_model import decode

    return decode(outputs)


def mix_targets(targets_a: Tensor, targets_b: Tensor, lam: Any, num_labels: int) -> Tensor:
    raise ValueError("MixUp and CutMix do not apply to detection heads: set train.mixup=0")


def tune(probs: np.ndarray, targets: np.ndarray, head: Any, cfg: Any) -> dict[str, Any]:
    """Per-class score thresholds with the best F1 at IoU 0.5 on validation, after NMS."""
    from pictag.heads.detection_tune import tune_thresholds

    params = decide_.default_params(head, cfg)
    if getattr(cfg, "threshold_by", "f1") == "fixed":
        return params
    dets = decide_.after_nms(probs, params)
    params["thresholds"] = [float(t) for t in tune_thresholds(dets, targets, head.num_labels)]
    return params


def metrics(probs: np.ndarray, targets: np.ndarray, params: dict) -> dict[str, float]:
    """COCO mAP@[.5:.95], mAP@.5, mAP@.75, AR@100, and precision/recall/F1 at the thresholds."""
    from pictag.heads.detection_metrics import detection_metrics

    thresholds = params["thresholds"]
    labels = [str(i) for i in range(len(thresholds))]
    found = detection_metrics(decide_.after_nms(probs, params), targets, labels, thresholds)
    return {name: float(found[name]) for name in METRIC_NAMES}


def section(probs: np.ndarray, targets: np.ndarray, labels: list[str], params: dict) -> dict:
    from pictag.heads import detection_report

    return detection_report.section(decide_.after_nms(probs, params), targets, labels, params)


def html(name: str, section_: dict) -> str:
    from pictag.heads import detection_report

    return detection_report.html(name, section_)


def report_text(name: str, section_: dict) -> str:
    from pictag.heads import detection_report

    return detection_report.report_text(name, section_)


def label_issues(head: Any, probs: np.ndarray, targets: np.ndarray) -> list[dict[str, Any]]:
    raise ValueError(f"head {head.name!r}: pictag audit does not check boxes yet")


def plan_note(head: Any, cfg: Any) -> str:
    classes = f"{head.num_labels} object class" + ("" if head.num_labels == 1 else "es")
    return (
        f"{head.name}: FCOS on a feature pyramid of the backbone, {classes}; per-class score "
        "thresholds tuned on val (best F1 at IoU 0.5)"
    )


def make_module(channels: list[int], num_labels: int) -> Any:
    from pictag.heads.detection_model import DetectionModule

    return DetectionModule(channels, num_labels)


def wrap_target(target: Tensor, size: tuple[int, int]) -> dict[str, Any]:
    """Boxes in the pixels of an image of ``size`` ``(h, w)``, as v2 transforms move them."""
    import torch
    from torchvision import tv_tensors

    height, width = size
    rows = target[target[:, 0] >= 0]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return {
        "boxes": tv_tensors.BoundingBoxes(rows[:, 1:] * scale, format="XYXY", canvas_size=size),
        "labels": rows[:, 0].long(),
        "missing": bool(target[0, 0] == boxes.MISSING),
    }


def unwrap_target(structure: dict[str, Any], size: tuple[int, int]) -> Tensor:
    """The target of transformed boxes: clamped to the image, tiny ones dropped
    (torchvision's ``SanitizeBoundingBoxes``), normalised by the new ``(h, w)``."""
    import torch
    from torchvision.transforms import v2

    target = torch.from_numpy(boxes.empty_target(structure["missing"]))
    if structure["missing"]:
        return target
    clamped = v2.functional.clamp_bounding_boxes(structure["boxes"])
    clean = v2.SanitizeBoundingBoxes()({"boxes": clamped, "labels": structure["labels"]})
    height, width = size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    count = len(clean["labels"])
    target[:count, 0] = clean["labels"].float()
    target[:count, 1:] = clean["boxes"].as_subclass(torch.Tensor).float() / scale
    return target


def draw(fig: Any, image_axes: Any, title: str, labels: Any, scores: Any, top: float, **places):
    from pictag.heads.detection_draw import draw_objects

    return draw_objects(fig, image_axes, title, labels, scores, top, places.get("objects"))


DETECTION = HeadKind(
    name="detection",
    tags=False,
    exclusive=False,
    options=frozenset(),
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
    primary_metric="map",
    lower_is_better=frozenset(),
    summary_metrics=("map", "map50", "recall"),
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
    text_lines=lambda scores: 3,  # title, box count, gap
    draw=draw,
    from_objects=lambda objects: objects,
    spatial=True,
    make_module=make_module,
    wrap_target=wrap_target,
    unwrap_target=unwrap_target,
    predict_entry=decide_.predict_entry,
    places=decide_.places,
)
