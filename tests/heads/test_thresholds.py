"""Threshold tuning: each mode picks what it promises on the tuning data."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from pictag.heads.thresholds import tune_thresholds


def tuning_data(seed: int, n: int = 200, num_labels: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, num_labels)) < np.linspace(0.05, 0.7, num_labels)).astype(float)
    # Signal strength differs per label, so optimal thresholds differ too.
    signal = np.linspace(0.1, 0.5, num_labels)
    probs = np.clip(signal * truth + (1 - signal) * rng.random((n, num_labels)) ** 1.5, 0, 1)
    return probs, truth


def scores_at(metric: Callable, truth: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    return metric(truth, probs >= threshold, zero_division=0)


def every_threshold(truth: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """Brute force: precision, recall and F1 at every distinct score (0/0 counts 0)."""
    candidates = np.unique(probs)
    chosen = probs[None, :] >= candidates[:, None]
    tp = (chosen & (truth[None, :] == 1)).sum(axis=1)
    predicted, positives = chosen.sum(axis=1), truth.sum()
    precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
    recall = tp / positives
    total = precision + recall
    f1 = np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)
    return {"threshold": candidates, "precision": precision, "recall": recall, "f1": f1}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_thresholds_beat_half_and_every_other_threshold(seed: int) -> None:
    probs, truth = tuning_data(seed)
    thresholds = tune_thresholds(probs, truth, by="f1")
    assert len(thresholds) == probs.shape[1]
    for label, threshold in enumerate(thresholds):
        t, p = truth[:, label], probs[:, label]
        tuned = scores_at(f1_score, t, p, threshold)
        assert tuned >= scores_at(f1_score, t, p, 0.5)
        assert tuned == pytest.approx(every_threshold(t, p)["f1"].max())
    assert len(set(thresholds)) > 1  # really tuned, not one value for all


def test_precision_target_reached_with_best_recall() -> None:
    probs, truth = tuning_data(3)
    thresholds = tune_thresholds(probs, truth, by="precision", target=0.8)
    reached = 0
    for label, threshold in enumerate(thresholds):
        t, p = truth[:, label], probs[:, label]
        curve = every_threshold(t, p)
        enough = curve["precision"] >= 0.8
        if enough.any():
            reached += 1
            assert scores_at(precision_score, t, p, threshold) >= 0.8
            best_recall = curve["recall"][enough].max()
            assert scores_at(recall_score, t, p, threshold) == pytest.approx(best_recall)
        else:  # out of reach: the closest, i.e. the highest precision there is
            best = curve["precision"].max()
            assert scores_at(precision_score, t, p, threshold) == pytest.approx(best)
    assert 2 <= reached < len(thresholds)  # both branches exercised


def test_unreachable_precision_gives_the_highest() -> None:
    truth = np.array([[1.0], [0.0], [1.0], [0.0]])
    probs = np.array([[0.9], [0.95], [0.3], [0.2]])  # the top score is a negative
    (threshold,) = tune_thresholds(probs, truth, by="precision", target=0.9)
    assert threshold == pytest.approx(0.3)  # precision 2/3, the best on offer, with recall 1


def test_recall_target_reached_with_best_precision() -> None:
    probs, truth = tuning_data(4)
    thresholds = tune_thresholds(probs, truth, by="recall", target=0.9)
    for label, threshold in enumerate(thresholds):
        t, p = truth[:, label], probs[:, label]
        curve = every_threshold(t, p)
        assert scores_at(recall_score, t, p, threshold) >= 0.9
        best_precision = curve["precision"][curve["recall"] >= 0.9].max()
        assert scores_at(precision_score, t, p, threshold) == pytest.approx(best_precision)


def test_labels_without_positives_or_negatives_keep_half() -> None:
    probs, truth = tuning_data(5, num_labels=4)
    truth[:, 1], truth[:, 2] = 0.0, 1.0
    for by in ("f1", "precision", "recall"):
        thresholds = tune_thresholds(probs, truth, by=by, target=0.7)
        assert thresholds[1] == thresholds[2] == 0.5
        assert thresholds[3] != 0.5


def test_missing_entries_are_ignored() -> None:
    probs, truth = tuning_data(6, num_labels=3)
    rng = np.random.default_rng(60)
    missing = rng.random(truth.shape) < 0.3
    targets = np.where(missing, -1.0, truth)
    tuned = tune_thresholds(probs, targets, by="f1")
    for label in range(3):
        known = ~missing[:, label]
        alone = tune_thresholds(probs[known, label : label + 1], truth[known, label : label + 1])
        assert tuned[label] == alone[0]
    assert tuned != tune_thresholds(probs, truth, by="f1")


def test_fixed_and_bad_options() -> None:
    probs, truth = tuning_data(7, num_labels=3)
    assert tune_thresholds(probs, truth, by="fixed", target=0.3) == [0.3, 0.3, 0.3]
    with pytest.raises(ValueError, match="threshold_by"):
        tune_thresholds(probs, truth, by="accuracy")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tune_thresholds(probs, truth, by="precision", target=1.5)
    with pytest.raises(ValueError, match="differ"):
        tune_thresholds(probs, truth[:, :2])
