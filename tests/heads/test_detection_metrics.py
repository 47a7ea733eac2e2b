"""Golden tests of the detection metrics: pycocotools run independently here (its usual
``loadRes`` path, in each image's real pixels) and a plain greedy IoU matcher written here."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pictag.heads.boxes import MISSING
from pictag.heads.detection_metrics import coco_evaluate, detection_metrics, pr_curves
from pictag.heads.detection_tune import tune_thresholds

LABELS = ["cat", "dog"]
SIZES = [(640, 480), (300, 500), (1024, 768), (800, 800)]  # real image sizes, (width, height)


def stack(rows_per_image: list[list[tuple]], width: int, pad: float = -1.0) -> np.ndarray:
    """Rows per image as one padded ``[N, max rows, width]`` array."""
    size = max(1, max(len(rows) for rows in rows_per_image))
    out = np.zeros((len(rows_per_image), size, width))
    out[..., 0 if width == 5 else 5] = pad
    for i, rows in enumerate(rows_per_image):
        for j, row in enumerate(rows):
            out[i, j] = row
    return out


def hand_case() -> tuple[np.ndarray, np.ndarray]:
    """3 images, 2 classes: a perfect detection, a shifted one (IoU ~0.63), false positives and
    a missed box."""
    targets = [
        [(0, 0.1, 0.1, 0.4, 0.4), (1, 0.5, 0.5, 0.9, 0.9)],
        [(0, 0.2, 0.2, 0.6, 0.6), (1, 0.1, 0.5, 0.3, 0.9)],  # the dog is missed
        [(1, 0.3, 0.3, 0.5, 0.5)],
    ]
    dets = [
        [(0.1, 0.1, 0.4, 0.4, 0.9, 0), (0.59, 0.5, 0.99, 0.9, 0.8, 1)],  # perfect, shifted
        [(0.7, 0.7, 0.95, 0.95, 0.7, 0)],  # a false positive; the true cat is missed
        [(0.3, 0.3, 0.5, 0.5, 0.6, 1), (0.05, 0.05, 0.2, 0.2, 0.3, 0)],
    ]
    return stack(dets, 6), stack(targets, 5)


def reference_coco(dets: np.ndarray, targets: np.ndarray, num_classes: int) -> COCOeval:
    """pycocotools as its README uses it: a ground-truth dataset and ``loadRes`` results, in
    each image's own pixels (not our square)."""
    images, truth, results = [], [], []
    for i in range(len(targets)):
        if (targets[i, :, 0] == MISSING).all():
            continue
        width, height = SIZES[i % len(SIZES)]
        images.append({"id": i, "width": width, "height": height})
        scale = np.array([width, height, width, height])
        for cls, *corners in targets[i][targets[i, :, 0] >= 0]:
            x1, y1, x2, y2 = np.array(corners) * scale
            box = [x1, y1, x2 - x1, y2 - y1]
            truth.append({"id": len(truth) + 1, "image_id": i, "category_id": int(cls),
                          "bbox": box, "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
        for *corners, score, cls in dets[i][dets[i, :, 5] >= 0]:
            x1, y1, x2, y2 = np.array(corners) * scale
            results.append({"image_id": i, "category_id": int(cls), "score": float(score),
                            "bbox": [x1, y1, x2 - x1, y2 - y1]})  # fmt: skip
    categories = [{"id": c, "name": str(c)} for c in range(num_classes)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": truth, "categories": categories}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def greedy_counts(dets, targets, cls, threshold, min_iou=0.5) -> tuple[int, int, int]:
    """True positives, kept detections and boxes of one class: per image, detections by
    descending score each take the unmatched box of highest IoU >= ``min_iou``."""
    tp = kept = n_true = 0
    for d, t in zip(dets, targets, strict=True):
        if (t[:, 0] == MISSING).all():
            continue
        boxes = t[t[:, 0] == cls][:, 1:]
        mine = d[(d[:, 5] == cls) & (d[:, 4] >= threshold)]
        mine = mine[np.argsort(-mine[:, 4], kind="stable")]
        free = np.ones(len(boxes), dtype=bool)
        for det in mine:
            overlaps = [iou(det[:4], box) if free[j] else -1.0 for j, box in enumerate(boxes)]
            if overlaps and max(overlaps) >= min_iou:
                free[int(np.argmax(overlaps))] = False
                tp += 1
        kept += len(mine)
        n_true += len(boxes)
    return tp, kept, n_true


def random_case(seed: int, n: int = 25, num_classes: int = 3):
    rng = np.random.default_rng(seed)
    targets, dets = [], []
    for _ in range(n):
        truth, found = [], []
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 0.7, 2)
            w, h = rng.uniform(0.05, 0.3, 2)
            cls = int(rng.integers(num_classes))
            truth.append((cls, x, y, x + w, y + h))
            if rng.random() < 0.8:  # a detection near the box, good or poor
                jx, jy = rng.normal(0, 0.25 * w), rng.normal(0, 0.25 * h)
                found.append((x + jx, y + jy, x + jx + w, y + jy + h, rng.random(), cls))
        for _ in range(rng.integers(0, 3)):  # false positives anywhere
            x, y = rng.uniform(0, 0.8, 2)
            found.append((x, y, x + 0.15, y + 0.15, rng.random(), int(rng.integers(num_classes))))
        targets.append(truth)
        dets.append(found)
    return stack(dets, 6), stack(targets, 5)


def test_map_equals_coco_golden() -> None:
    dets, targets = hand_case()
    ours = detection_metrics(dets, targets, LABELS, [0.5, 0.5])
    reference = reference_coco(dets, targets, 2)
    assert ours["map"] == pytest.approx(reference.stats[0])
    assert ours["map50"] == pytest.approx(reference.stats[1])
    assert ours["map75"] == pytest.approx(reference.stats[2])
    assert ours["ar100"] == pytest.approx(reference.stats[8])
    precision = reference.eval["precision"][:, :, :, 0, -1]
    for k, name in enumerate(LABELS):
        assert ours[f"ap/{name}"] == pytest.approx(precision[:, :, k].mean())
        assert ours[f"ap50/{name}"] == pytest.approx(precision[0, :, k].mean())
    assert 0 < ours["map"] < ours["map50"] < 1


def test_random_case_equals_coco_golden() -> None:
    dets, targets = random_case(3)
    ours = detection_metrics(dets, targets, ["a", "b", "c"], [0.5] * 3)
    reference = reference_coco(dets, targets, 3)
    assert [ours[k] for k in ("map", "map50", "map75", "ar100")] == pytest.approx(
        [reference.stats[i] for i in (0, 1, 2, 8)]
    )
    curves = pr_curves(coco_evaluate(dets, targets, 3), ["a", "b", "c"])
    assert np.mean(curves["b"]["precision"]) == pytest.approx(ours["ap50/b"])
    assert len(curves["b"]["recall"]) == 101


def test_perfect_prediction_gives_map_one() -> None:
    _, targets = hand_case()
    dets = np.concatenate([targets[..., 1:], np.ones_like(targets[..., :1]), targets[..., :1]], -1)
    ours = detection_metrics(dets, targets, LABELS, [0.5, 0.5])
    assert ours["map"] == pytest.approx(1.0)
    assert ours["precision"] == ours["recall"] == ours["f1"] == 1.0


def test_no_detections_gives_zero() -> None:
    _, targets = hand_case()
    dets = np.full((3, 4, 6), -1.0)
    ours = detection_metrics(dets, targets, LABELS, [0.5, 0.5])
    assert ours["map"] == ours["map50"] == ours["ap/cat"] == 0.0
    assert ours["recall"] == 0.0 and ours["f1"] == 0.0
    assert math.isnan(ours["precision"])  # nothing kept: 0/0


def test_class_without_truth_is_nan_and_left_out() -> None:
    dets, targets = hand_case()
    ours = detection_metrics(dets, targets, [*LABELS, "bird"], [0.5] * 3)
    assert math.isnan(ours["ap/bird"]) and math.isnan(ours["ap50/bird"])
    assert ours["map"] == pytest.approx(reference_coco(dets, targets, 3).stats[0])
    assert ours["map"] == pytest.approx(detection_metrics(dets, targets, LABELS, [0.5] * 2)["map"])


def test_no_known_image_gives_nan() -> None:
    dets, _ = hand_case()
    targets = np.full((3, 2, 5), MISSING)
    ours = detection_metrics(dets, targets, LABELS, [0.5, 0.5])
    assert all(math.isnan(v) for v in ours.values())
    assert tune_thresholds(dets, targets, 2) == [0.5, 0.5]


def test_missing_targets_image_is_left_out() -> None:
    dets, targets = hand_case()
    extra_dets = np.array([[[0.1, 0.1, 0.3, 0.3, 0.95, 0], [0, 0, 0, 0, 0, -1]]])
    extra_targets = np.full((1, targets.shape[1], 5), MISSING)
    with_missing = detection_metrics(
        np.concatenate([extra_dets, dets]), np.concatenate([extra_targets, targets]), LABELS,
        [0.5, 0.5],
    )  # fmt: skip
    without = detection_metrics(dets, targets, LABELS, [0.5, 0.5])
    assert with_missing == pytest.approx(without, nan_ok=True)


def test_thresholds_honoured() -> None:
    dets, targets = hand_case()
    high = detection_metrics(dets, targets, LABELS, [0.75, 0.75])
    # kept: the perfect cat (0.9) and the shifted dog (0.8, IoU 0.63): both true; 5 boxes
    assert (high["precision"], high["recall"], high["f1"]) == pytest.approx((1.0, 0.4, 4 / 7))
    low = detection_metrics(dets, targets, LABELS, [0.0, 0.0])
    assert (low["precision"], low["recall"]) == pytest.approx((0.6, 0.6))
    mixed = detection_metrics(dets, targets, LABELS, [0.95, 0.0])  # no cat kept, every dog
    assert (mixed["precision"], mixed["recall"]) == pytest.approx((1.0, 0.4))


def test_precision_recall_match_greedy_matcher() -> None:
    dets, targets = random_case(5)
    thresholds = [0.2, 0.5, 0.7]
    ours = detection_metrics(dets, targets, ["a", "b", "c"], thresholds)
    tp, kept, n_true = np.sum([greedy_counts(dets, targets, c, t)
                               for c, t in enumerate(thresholds)], axis=0)  # fmt: skip
    assert ours["precision"] == pytest.approx(tp / kept)
    assert ours["recall"] == pytest.approx(tp / n_true)
    assert ours["f1"] == pytest.approx(2 * tp / (kept + n_true))


@pytest.mark.parametrize("seed", [0, 1])
def test_tune_thresholds_is_brute_force_best_f1(seed: int) -> None:
    dets, targets = random_case(seed)
    tuned = tune_thresholds(dets, targets, 3)
    for cls in range(3):
        scores = np.unique(dets[..., 4][dets[..., 5] == cls])
        f1 = {}
        for t in scores:
            tp, kept, n_true = greedy_counts(dets, targets, cls, t)
            f1[float(t)] = 2 * tp / (kept + n_true)
        best = max(f1.values())
        assert best > 0
        assert f1[tuned[cls]] == pytest.approx(best)
        # among equally good thresholds the highest (fewest detections) is chosen
        assert tuned[cls] == max(t for t, v in f1.items() if v == pytest.approx(best))


def test_tune_defaults_without_truth_or_detections() -> None:
    dets, targets = hand_case()
    dets[..., 5][dets[..., 5] == 1] = -1  # no dog detection
    tuned = tune_thresholds(dets, targets, 3)  # and no bird box
    assert tuned[1] == tuned[2] == 0.5
    assert tuned[0] == pytest.approx(0.9)  # the perfect cat alone: F1 2/3 beats 1/2 and 2/5
