"""Golden tests of the segmentation metrics: one pixel confusion count against scikit-learn on
the pixels that are not ``IGNORE``.

Conventions pinned here: IoU and Dice of a class neither true nor predicted are nan and left out
of the means; precision of a class never predicted and recall of a class never true are nan; an
image without a known pixel has image IoU nan.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from pictag.heads.masks import IGNORE
from pictag.heads.segmentation_metrics import (
    confusion,
    image_iou,
    scores,
    segmentation_metrics,
)

C = 4
CLASSES = np.arange(C)


def masks(num_classes: int = C, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decisions and targets ``[6, 17, 13]``: predictions right about half the time, about 20%
    of the targets ``IGNORE``."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, num_classes, (6, 17, 13)).astype(np.uint8)
    guess = rng.integers(0, num_classes, targets.shape)
    decided = np.where(rng.random(targets.shape) < 0.5, targets, guess).astype(np.int64)
    targets[rng.random(targets.shape) < 0.2] = IGNORE
    return decided, targets


def known_pixels(decided: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted classes of the pixels that count, flat."""
    known = targets != IGNORE
    return targets[known].astype(np.int64), decided[known]


def test_confusion_is_sklearns_on_known_pixels() -> None:
    decided, targets = masks()
    truth, predicted = known_pixels(decided, targets)
    found = confusion(decided, targets, C)
    assert found.dtype == np.int64 and found.shape == (C, C)
    np.testing.assert_array_equal(found, skm.confusion_matrix(truth, predicted, labels=CLASSES))
    assert found.sum() == (targets != IGNORE).sum() < targets.size  # ignored pixels left out


def test_scores_match_sklearn() -> None:
    decided, targets = masks()
    truth, predicted = known_pixels(decided, targets)
    found = scores(confusion(decided, targets, C))
    iou = skm.jaccard_score(truth, predicted, labels=CLASSES, average=None)
    np.testing.assert_allclose(found["iou"], iou)
    assert found["miou"] == pytest.approx(iou.mean())
    f1 = skm.f1_score(truth, predicted, labels=CLASSES, average=None)
    np.testing.assert_allclose(found["dice"], f1)
    assert found["mdice"] == pytest.approx(f1.mean())
    np.testing.assert_allclose(
        found["precision"], skm.precision_score(truth, predicted, labels=CLASSES, average=None)
    )
    recall = skm.recall_score(truth, predicted, labels=CLASSES, average=None)
    np.testing.assert_allclose(found["recall"], recall)
    assert found["mean_accuracy"] == pytest.approx(recall.mean())
    assert found["pixel_accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    assert 0.3 < found["miou"] < 0.6  # half right by construction: not a trivial 0 or 1


def test_segmentation_metrics_are_the_means() -> None:
    decided, targets = masks(seed=3)
    truth, predicted = known_pixels(decided, targets)
    found = segmentation_metrics(decided, targets, C)
    assert list(found) == ["miou", "dice", "pixel_accuracy", "mean_accuracy"]
    assert all(isinstance(v, float) for v in found.values())
    assert found["miou"] == pytest.approx(
        skm.jaccard_score(truth, predicted, labels=CLASSES, average="macro")
    )
    assert found["dice"] == pytest.approx(
        skm.f1_score(truth, predicted, labels=CLASSES, average="macro")
    )
    assert found["pixel_accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    assert found["mean_accuracy"] == pytest.approx(skm.balanced_accuracy_score(truth, predicted))


def test_absent_class_is_nan_and_left_out_of_the_means() -> None:
    decided, targets = masks()  # classes 0..3 only
    truth, predicted = known_pixels(decided, targets)
    found = scores(confusion(decided, targets, C + 1))
    assert math.isnan(found["iou"][C]) and math.isnan(found["dice"][C])
    assert math.isnan(found["precision"][C]) and math.isnan(found["recall"][C])
    assert found["miou"] == pytest.approx(
        skm.jaccard_score(truth, predicted, labels=CLASSES, average="macro")
    )
    assert found["mean_accuracy"] == pytest.approx(np.mean(found["recall"][:C]))


def test_class_only_predicted_or_only_true() -> None:
    targets = np.array([[[0, 0], [1, IGNORE]]], dtype=np.uint8)
    decided = np.array([[[0, 2], [2, 1]]])  # 2 never true; 1 predicted on an ignored pixel
    found = scores(confusion(decided, targets, 3))
    np.testing.assert_allclose(found["iou"], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(found["precision"], [1.0, math.nan, 0.0])
    np.testing.assert_allclose(found["recall"], [0.5, 0.0, math.nan])
    assert found["pixel_accuracy"] == pytest.approx(1 / 3)
    assert found["mean_accuracy"] == pytest.approx(0.25)


def test_perfect_prediction_scores_one() -> None:
    _, targets = masks()
    decided = np.where(targets == IGNORE, 0, targets)  # anything at the ignored pixels
    found = scores(confusion(decided, targets, C))
    for key in ("iou", "dice", "precision", "recall"):
        np.testing.assert_array_equal(found[key], np.ones(C))
    assert segmentation_metrics(decided, targets, C) == dict.fromkeys(
        ("miou", "dice", "pixel_accuracy", "mean_accuracy"), 1.0
    )
    np.testing.assert_array_equal(image_iou(decided, targets, C), np.ones(len(targets)))


def test_no_known_pixel_is_nan() -> None:
    targets = np.full((2, 3, 3), IGNORE, dtype=np.uint8)
    found = segmentation_metrics(np.zeros((2, 3, 3), dtype=np.int64), targets, C)
    assert all(math.isnan(v) for v in found.values())


def test_image_iou_per_image_against_sklearn() -> None:
    decided, targets = masks(seed=5)
    targets[2] = IGNORE  # an image without a known pixel
    targets[4, :, :] = np.where(targets[4] == IGNORE, IGNORE, 1)  # one true class only
    found = image_iou(decided, targets, C)
    assert found.shape == (len(targets),)
    assert math.isnan(found[2])
    for i in (0, 1, 3, 4, 5):
        truth, predicted = known_pixels(decided[i], targets[i])
        present = np.union1d(truth, predicted)  # classes in the target or the prediction
        expected = skm.jaccard_score(truth, predicted, labels=present, average="macro")
        assert found[i] == pytest.approx(expected)


def test_mismatched_shapes_or_classes_raise() -> None:
    decided, targets = masks()
    with pytest.raises(ValueError, match="shape"):
        confusion(decided[:, :, :-1], targets, C)
    with pytest.raises(ValueError, match="shape"):
        image_iou(decided[:, :-1], targets, C)
    with pytest.raises(ValueError, match="target class"):
        confusion(decided, np.where(targets == 0, C, targets), C)
    with pytest.raises(ValueError, match="decided class"):
        segmentation_metrics(decided + 1, targets, C)
