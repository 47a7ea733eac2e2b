"""Metrics of a ``detection`` head, from the official COCO evaluator (pycocotools' ``COCOeval``),
as the torchvision detection references compute them rather than a home-made mAP.

Inputs are numpy arrays over ``N`` images:

- ``dets [N, K, 6]``: rows ``(x1, y1, x2, y2, score, class)`` after NMS, corners divided by the
  image's width and height; rows with class < 0 are padding.
- ``targets [N, M, 5]``: rows ``(class, x1, y1, x2, y2)`` in the same frame (:mod:`.boxes`);
  an image whose rows are all ``MISSING`` has unknown boxes and is left out entirely.

Conventions:

- COCO needs pixels, so normalised corners are scaled to a fixed ``PSEUDO_SIZE`` square image.
  IoU does not change under a per-axis scaling, so every match and every AP equals the one in
  the real pixels. Only COCO's small/medium/large area ranges depend on the choice (they refer
  to this square, not the real image); none of the metrics here reads them, the "all" range
  holds every box.
- COCO's own parameters hold: IoU 0.50:0.05:0.95, at most 100 detections per image and class
  (lower-scored ones are not evaluated), crowd and out-of-range ground truth ignored.
- A class without ground truth has AP ``nan`` and is left out of the means, as COCO does;
  no known image at all gives ``nan`` everywhere; no detection gives AP 0.
- Precision, recall and F1 pool all classes (micro): a detection counts when its score is at
  least its class's threshold, and is a true positive when COCO matched it at IoU 0.5. COCO
  matches greedily by descending score, so dropping the detections under a threshold never
  changes the matches of those above it. 0/0 is ``nan``.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pictag.heads.boxes import known as known_images

PSEUDO_SIZE = 1000.0  # pixels a side of the square image normalised boxes are scaled to
DEFAULT_THRESHOLD = 0.5  # score threshold of a class with nothing to tune on
METRIC_ORDER = ("map", "map50", "map75", "ar100", "precision", "recall", "f1")


@dataclass(frozen=True)
class CocoResult:
    """One COCO evaluation: the accumulated ``COCOeval`` (None without a known image)."""

    evaluator: COCOeval | None
    num_classes: int
    n_images: int  # images with known boxes
    n_true: np.ndarray  # ground-truth boxes per class on the known images [C]


@dataclass(frozen=True)
class ClassMatches:
    """One class's evaluated detections at one IoU: scores and whether each matched a box."""

    scores: np.ndarray  # [D], float
    matched: np.ndarray  # [D], bool
    n_true: int  # ground-truth boxes COCO does not ignore


def coco_evaluate(dets: np.ndarray, targets: np.ndarray, num_classes: int) -> CocoResult:
    """Run ``COCOeval(iouType="bbox")`` evaluate and accumulate on the known images.

    Image ``i`` has COCO id ``i + 1`` and class ``c`` category id ``c + 1`` (COCO reads an id of
    0 as "no match"). COCO's prints are silenced.
    """
    dets, targets = checked(dets, targets, num_classes)
    keep = known_images(targets)
    n_true = np.zeros(num_classes, dtype=np.int64)
    truth_rows = targets[keep][targets[keep][..., 0] >= 0]
    np.add.at(n_true, truth_rows[:, 0].astype(np.int64), 1)
    if not keep.any() or num_classes == 0:
        return CocoResult(None, num_classes, int(keep.sum()), n_true)
    images = [{"id": int(i) + 1, "width": PSEUDO_SIZE, "height": PSEUDO_SIZE}
              for i in np.flatnonzero(keep)]  # fmt: skip
    categories = [{"id": c + 1, "name": str(c)} for c in range(num_classes)]
    truth, found = [], []
    for i in np.flatnonzero(keep):
        for cls, x1, y1, x2, y2 in targets[i][targets[i, :, 0] >= 0]:
            truth.append(_annotation(i, cls, (x1, y1, x2, y2), len(truth) + 1))
        for x1, y1, x2, y2, score, cls in dets[i][dets[i, :, 5] >= 0]:
            found.append(_annotation(i, cls, (x1, y1, x2, y2), len(found) + 1, score))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(
            _coco(images, categories, truth), _coco(images, categories, found), iouType="bbox"
        )
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return CocoResult(evaluator, num_classes, len(images), n_true)


def detection_metrics(
    dets: np.ndarray, targets: np.ndarray, labels: list[str], thresholds: list[float]
) -> dict[str, float]:
    """``map`` (AP@[.5:.95]), ``map50``, ``map75``, ``ar100``, then ``precision``, ``recall``
    and ``f1`` at the per-class score ``thresholds`` and IoU 0.5, then ``ap/<label>`` and
    ``ap50/<label>`` per class; ``nan`` where undefined."""
    return metrics_of(coco_evaluate(dets, targets, len(labels)), labels, thresholds)


def metrics_of(result: CocoResult, labels: list[str], thresholds: list[float]) -> dict:
    """:func:`detection_metrics` of an evaluation already run."""
    if len(labels) != result.num_classes or len(thresholds) != result.num_classes:
        given = f"{len(labels)} labels and {len(thresholds)} thresholds"
        raise ValueError(f"{given} for {result.num_classes} classes")
    summary = dict.fromkeys(METRIC_ORDER, math.nan)
    if result.evaluator is not None:
        stats = result.evaluator.stats  # COCO's summary: -1 where no class is defined
        for key, index in (("map", 0), ("map50", 1), ("map75", 2), ("ar100", 8)):
            summary[key] = float(stats[index]) if stats[index] > -1 else math.nan
    tp, kept, _ = counts(class_matches(result), thresholds)
    summary.update(rates(int(tp.sum()), int(kept.sum()), int(result.n_true.sum())))
    ap, ap50 = average_precisions(result)
    for name, value, value50 in zip(labels, ap, ap50, strict=True):
        summary[f"ap/{name}"] = float(value)
        summary[f"ap50/{name}"] = float(value50)
    return summary


def average_precisions(result: CocoResult) -> tuple[np.ndarray, np.ndarray]:
    """AP@[.5:.95] and AP@.5 per class (area "all", 100 detections), as COCO's summary averages
    its precision table: over the entries it defined; ``nan`` for a class without ground truth."""
    ap = np.full(result.num_classes, math.nan)
    ap50 = np.full(result.num_classes, math.nan)
    if result.evaluator is None:
        return ap, ap50
    precision = result.evaluator.eval["precision"][:, :, :, 0, -1]  # [T, R, K]
    for k in range(result.num_classes):
        for out, values in ((ap, precision[:, :, k]), (ap50, precision[0, :, k])):
            defined = values[values > -1]
            out[k] = float(defined.mean()) if defined.size else math.nan
    return ap, ap50


def pr_curves(result: CocoResult, labels: list[str]) -> dict[str, dict[str, list[float]]]:
    """COCO's interpolated precision at its 101 recall points, IoU 0.5, per class:
    ``{label: {"recall": [...], "precision": [...]}}``, empty lists for a class without ground
    truth. Its mean is the class's AP@.5."""
    curves: dict[str, dict[str, list[float]]] = {}
    for k, name in enumerate(labels):
        curves[name] = {"recall": [], "precision": []}
        if result.evaluator is None:
            continue
        precision = result.evaluator.eval["precision"][0, :, k, 0, -1]
        if (precision > -1).all():
            recall = result.evaluator.params.recThrs
            curves[name] = {"recall": recall.tolist(), "precision": precision.tolist()}
    return curves


def class_matches(result: CocoResult, iou: float = 0.5) -> list[ClassMatches]:
    """Per class, COCO's evaluated detections at IoU ``iou`` (one of its thresholds, area
    "all"): their scores and whether each matched, leaving out the ones COCO ignores (matched
    to a crowd box); ``n_true`` counts the boxes it does not ignore."""
    empty = ClassMatches(np.zeros(0), np.zeros(0, dtype=bool), 0)
    if result.evaluator is None:
        return [empty] * result.num_classes
    params = result.evaluator.params
    close = np.flatnonzero(np.isclose(params.iouThrs, iou))
    if not len(close):
        raise ValueError(f"IoU {iou} is not one of COCO's thresholds {params.iouThrs.tolist()}")
    t, n_images, n_areas = int(close[0]), len(params.imgIds), len(params.areaRng)
    found = []
    for k in range(result.num_classes):
        start = k * n_areas * n_images  # evalImgs run over classes, then areas, then images
        scores, matched, n_true = [], [], 0
        for record in result.evaluator.evalImgs[start : start + n_images]:
            if record is None:  # no box and no detection of the class on that image
                continue
            counted = ~record["dtIgnore"][t].astype(bool)
            scores.append(np.asarray(record["dtScores"], dtype=np.float64)[counted])
            matched.append(record["dtMatches"][t][counted] > 0)
            n_true += int((np.asarray(record["gtIgnore"]) == 0).sum())
        if scores:
            found.append(ClassMatches(np.concatenate(scores), np.concatenate(matched), n_true))
        else:
            found.append(empty)
    return found


def counts(
    matches: list[ClassMatches], thresholds: list[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, kept detections and ground-truth boxes per class, counting the
    detections whose score is at least their class's threshold."""
    tp = np.array(
        [int(m.matched[m.scores >= t].sum()) for m, t in zip(matches, thresholds, strict=True)]
    )
    kept = np.array([int((m.scores >= t).sum()) for m, t in zip(matches, thresholds, strict=True)])
    return tp.astype(np.int64), kept.astype(np.int64), np.array([m.n_true for m in matches])


def rates(tp: int, kept: int, n_true: int) -> dict[str, float]:
    """Precision, recall and F1 of ``tp`` true positives among ``kept`` detections and
    ``n_true`` boxes; ``nan`` for 0/0."""
    return {
        "precision": tp / kept if kept else math.nan,
        "recall": tp / n_true if n_true else math.nan,
        "f1": 2 * tp / (kept + n_true) if kept + n_true else math.nan,
    }


def checked(
    dets: np.ndarray, targets: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Detections and targets as float64 arrays, with a message when shapes or classes are off."""
    dets, targets = np.asarray(dets, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if dets.ndim != 3 or dets.shape[-1] != 6:
        raise ValueError(f"detections must be [N, K, 6], got {dets.shape}")
    if targets.ndim != 3 or targets.shape[-1] != 5 or len(targets) != len(dets):
        raise ValueError(f"targets must be [{len(dets)}, M, 5], got {targets.shape}")
    for name, classes in (("detection", dets[..., 5]), ("target", targets[..., 0])):
        if (classes >= num_classes).any():
            raise ValueError(f"a {name} class is >= the {num_classes} classes")
    return dets, targets


def _annotation(
    image: Any, cls: float, corners: tuple, ann_id: int, score: float | None = None
) -> dict:
    """A COCO annotation (a detection when it has a ``score``) of normalised corners, in pixels
    of the ``PSEUDO_SIZE`` square."""
    x1, y1, x2, y2 = (float(v) * PSEUDO_SIZE for v in corners)
    width, height = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
    box = {"id": ann_id, "image_id": int(image) + 1, "category_id": int(cls) + 1, "iscrowd": 0}
    box.update(bbox=[x1, y1, width, height], area=width * height)
    if score is not None:
        box["score"] = float(score)
    return box


def _coco(images: list[dict], categories: list[dict], annotations: list[dict]) -> COCO:
    """An in-memory COCO object (``COCO.loadRes`` rejects an empty result list)."""
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    coco.createIndex()
    return coco
