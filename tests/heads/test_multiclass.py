"""The multiclass kind's activation, decoding, MixUp targets, metrics and counts."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score

from pictag.heads import MISSING_CLASS, MULTICLASS


def test_activate_is_softmax_in_float32() -> None:
    logits = torch.randn(4, 3, dtype=torch.bfloat16)
    probs = MULTICLASS.activate(logits)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    assert torch.equal(probs.argmax(1), logits.float().argmax(1))


def test_decode_top_k_best_first() -> None:
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.4, 0.4, 0.2]])
    np.testing.assert_array_equal(MULTICLASS.decode(probs), [[1], [0], [0]])  # tie: lower index
    np.testing.assert_array_equal(MULTICLASS.decode(probs, top_k=2), [[1, 2], [0, 2], [0, 1]])
    assert MULTICLASS.decode(probs, top_k=10).shape == (3, 3)
    assert MULTICLASS.decode(torch.tensor(probs)).dtype == np.int64
    with pytest.raises(ValueError, match="top_k"):
        MULTICLASS.decode(probs, top_k=0)


def test_mix_targets_one_hot_and_missing_rows() -> None:
    targets_a = torch.tensor([0, 2, MISSING_CLASS, 1])
    targets_b = torch.tensor([1, 2, 0, MISSING_CLASS])
    mixed = MULTICLASS.mix_targets(targets_a, targets_b, 0.7, 3)
    expected = torch.tensor(
        [[0.7, 0.3, 0.0], [0.0, 0.0, 1.0], [-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]
    )
    torch.testing.assert_close(mixed, expected)


def test_mix_targets_per_row_lambda_and_soft_inputs() -> None:
    targets_a = torch.tensor([0, 1])
    soft_b = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    mixed = MULTICLASS.mix_targets(targets_a, soft_b, torch.tensor([1.0, 0.25]), 2)
    torch.testing.assert_close(mixed, torch.tensor([[1.0, 0.0], [0.75, 0.25]]))
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        MULTICLASS.mix_targets(targets_a, soft_b, 0.5, 3)


def _random_problem(num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(num_classes), size=60)
    probs[:, -1] *= 0.01  # the last class is never the argmax
    probs /= probs.sum(1, keepdims=True)
    targets = rng.integers(0, num_classes, size=60)
    targets[::7] = MISSING_CLASS
    return probs, targets


@pytest.mark.parametrize("num_classes", [3, 7])
def test_metrics_match_sklearn_on_known_rows(num_classes: int) -> None:
    probs, targets = _random_problem(num_classes)
    result = MULTICLASS.metrics(probs, targets)
    keep = targets != MISSING_CLASS
    truth, scores = targets[keep], probs[keep]
    predicted = scores.argmax(1)
    assert num_classes - 1 not in predicted and num_classes - 1 in truth
    assert result["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert result["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    if num_classes > 5:
        expected = top_k_accuracy_score(truth, scores, k=5, labels=range(num_classes))
        assert result["top5_accuracy"] == pytest.approx(expected)
    else:
        assert "top5_accuracy" not in result
    assert all(type(value) is float for value in result.values())
    assert MULTICLASS.primary_metric in result


def test_metrics_are_nan_without_known_rows() -> None:
    result = MULTICLASS.metrics(np.full((4, 7), 1 / 7), np.full(4, MISSING_CLASS))
    assert set(result) == {"accuracy", "top5_accuracy", "macro_f1"}
    assert all(math.isnan(value) for value in result.values())


def test_metrics_top5_uses_all_classes_when_targets_cover_few() -> None:
    scores = np.linspace(0.2, 0.05, 7)  # class 0 ranks first, class 6 last
    probs = np.tile(scores / scores.sum(), (3, 1))
    result = MULTICLASS.metrics(probs, np.array([0, 1, 6]))
    assert result["top5_accuracy"] == pytest.approx(2 / 3)
    assert result["accuracy"] == pytest.approx(1 / 3)


def test_count_labels_skips_missing() -> None:
    counts = MULTICLASS.count_labels(np.array([0, 2, 2, MISSING_CLASS, 2]), 4)
    np.testing.assert_array_equal(counts, [1, 0, 3, 0])
    with pytest.raises(ValueError, match="out of range"):
        MULTICLASS.count_labels(np.array([0, 4]), 4)
