"""Decisions of a detection head: per-class NMS, a score threshold per class, at most
``max_boxes`` boxes; and what one image's decision is in label names and pixels.

A head's activated outputs are dense, ``[N, A, 4 + C]`` (every anchor's normalised box and
class scores, see :func:`pictag.heads.detection_model.decode`). Detections and decisions are
``[N, max_boxes, 6]`` rows of ``(x1, y1, x2, y2, score, class)``, best first, padded with
class -1 and score 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pictag.heads import boxes
from pictag.heads.kinds import Params, untuned_threshold

NMS_IOU = 0.6  # torchvision FCOS's default
MAX_BOXES = 100  # per image, as COCO evaluation counts
MATCH_IOU = 0.5  # a decided box is right when it overlaps a true box of its class this much


def default_params(head: Any, cfg: Any) -> Params:
    """Untuned decision: one threshold per class, NMS IoU and the box limit."""
    return {
        "thresholds": [untuned_threshold(cfg)] * head.num_labels,
        "nms_iou": NMS_IOU,
        "max_boxes": MAX_BOXES,
    }


def after_nms(probs: np.ndarray, params: Params) -> np.ndarray:
    """Each image's boxes after per-class NMS, at most ``max_boxes``: ``[N, max_boxes, 6]``."""
    import torch  # deferred (see pictag.heads.kinds)

    from pictag.heads.detection_model import detections

    iou = float(params.get("nms_iou", NMS_IOU))
    limit = int(params.get("max_boxes", MAX_BOXES))
    out = np.zeros((len(probs), limit, 6), dtype=np.float32)
    out[..., 5] = -1.0
    for row, dense in enumerate(np.asarray(probs, dtype=np.float32)):
        found = detections(torch.from_numpy(dense), iou, limit).numpy()
        out[row, : len(found)] = found
    return out


def decide(probs: np.ndarray, params: Params) -> np.ndarray:
    """The kept boxes ``[N, max_boxes, 6]``: after NMS, each at least its class's threshold."""
    out = after_nms(probs, params)
    thresholds = np.asarray(params["thresholds"], dtype=np.float32)
    labels = out[..., 5].astype(np.int64)
    below = (labels >= 0) & (out[..., 4] < thresholds[np.clip(labels, 0, None)])
    _clear(out, below)
    return out


def _clear(rows: np.ndarray, mask: np.ndarray) -> None:
    rows[mask, 4] = 0.0
    rows[mask, 5] = -1.0


def errors(decided: np.ndarray, target: np.ndarray) -> int:
    """Mistakes on one image: true boxes no decided box of their class covers at
    ``MATCH_IOU``, plus decided boxes that cover no true box of their class."""
    import torch
    from torchvision.ops import box_iou

    pred = decided[decided[:, 5] >= 0]
    true = target[boxes.present(target)]
    if len(pred) == 0 or len(true) == 0:
        return len(pred) + len(true)
    iou = box_iou(torch.from_numpy(true[:, 1:]), torch.from_numpy(pred[:, :4])).numpy()
    same = true[:, None, 0] == pred[None, :, 5]
    hit = (iou >= MATCH_IOU) & same
    return int((~hit.any(1)).sum() + (~hit.any(0)).sum())


def judge(decided: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images with known boxes, and whether every box was found with nothing extra."""
    known = boxes.known(targets)
    right = np.array(
        [ok and errors(d, t) == 0 for d, t, ok in zip(decided, targets, known, strict=True)]
    )
    return known, right.astype(bool)


def image_loss(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mistakes per image at the untuned decision (0 where the boxes are unknown), to rank
    the worst images."""
    params = {"thresholds": [0.5] * _classes(probs, targets), "nms_iou": NMS_IOU}
    decided = decide(probs, params)
    known = boxes.known(targets)
    return np.array(
        [errors(d, t) if ok else 0 for d, t, ok in zip(decided, targets, known, strict=True)],
        dtype=np.float64,
    )


def _classes(probs: np.ndarray, targets: np.ndarray) -> int:
    return int(probs.shape[-1]) - 4


def describe(
    head: Any, probs: np.ndarray, target: np.ndarray, decided: np.ndarray
) -> tuple[list[str] | None, list[str], list[float]]:
    """True box classes (None when unknown), decided box classes and their scores."""
    del probs
    truth = None
    if target[0, 0] != boxes.MISSING:
        truth = [head.labels[int(c)] for c in target[boxes.present(target), 0]]
    kept = decided[decided[:, 5] >= 0]
    return truth, [head.labels[int(c)] for c in kept[:, 5]], [float(s) for s in kept[:, 4]]


def objects(head: Any, decided_row: np.ndarray, size: tuple[int, int]) -> list[dict[str, Any]]:
    """One image's decided boxes as ``{label, score, box: [x1, y1, x2, y2]}`` in the pixels of
    the original image of ``size`` ``(width, height)``, best first."""
    width, height = size
    kept = decided_row[decided_row[:, 5] >= 0]
    kept = kept[np.argsort(-kept[:, 4], kind="stable")]
    scale = np.array([width, height, width, height], dtype=np.float64)
    return [
        {
            "label": head.labels[int(row[5])],
            "score": round(float(row[4]), 6),
            "box": [round(float(v), 2) for v in row[:4] * scale],
        }
        for row in kept
    ]


def places(head: Any, target: np.ndarray, decided: np.ndarray) -> dict[str, Any]:
    """True and decided boxes of one image, in fractions of its width and height."""
    true = target[boxes.present(target)]
    kept = decided[decided[:, 5] >= 0]
    return {
        "true": [{"label": head.labels[int(r[0])], "box": _rounded(r[1:])} for r in true],
        "pred": [
            {
                "label": head.labels[int(r[5])],
                "score": round(float(r[4]), 4),
                "box": _rounded(r[:4]),
            }
            for r in kept
        ],
    }


def _rounded(box: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in box]


def predict_entry(
    head: Any, probs_row: np.ndarray, params: Params, size: tuple[int, int]
) -> dict[str, Any]:
    """One image's prediction: its boxes, and per class the best decided score."""
    decided = decide(probs_row[None], params)[0]
    found = objects(head, decided, size)
    scores: dict[str, float] = {}
    for item in found:
        scores.setdefault(item["label"], item["score"])
    return {"objects": found, "labels": list(scores), "scores": scores}


def export_meta(head: Any, params: Params) -> dict[str, Any]:
    """How an exported model's consumer turns the head's output into boxes."""
    return {
        "activation": "fcos_boxes",
        "output_layout": "[A, 4 + C] per image, one row per anchor point: x1, y1, x2, y2 "
        "(divided by the input width and height), then the score of each class",
        "decision": "per class, the (anchor, class) pairs scoring >= thresholds[class], "
        "greedy NMS at nms_iou (torchvision.ops.batched_nms), the best max_boxes of all; "
        "multiply each box by the original image's width and height",
        "thresholds": [float(t) for t in params["thresholds"]],
        "nms_iou": float(params.get("nms_iou", NMS_IOU)),
        "max_boxes": int(params.get("max_boxes", MAX_BOXES)),
    }
