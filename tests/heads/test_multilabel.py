"""The multilabel kind's activation, decoding, MixUp targets, metrics and counts."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, hamming_loss

from pictag.heads import MISSING_TAG, MULTILABEL
from pictag.heads.multilabel import METRIC_NAMES
from pictag.heads.multilabel_report import average_precisions

PROBS = np.array(
    [
        [0.9, 0.2, 0.6],
        [0.1, 0.3, 0.2],
        [0.5, 0.7, 0.4],
    ]
)


def test_activate_is_sigmoid_in_float32() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 5.0]], dtype=torch.float16)
    probs = MULTILABEL.activate(logits)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, torch.sigmoid(logits.float()))


def test_decide_with_default_and_per_label_thresholds() -> None:
    expected = [[True, False, True], [False, False, False], [True, True, False]]
    np.testing.assert_array_equal(MULTILABEL.decide(PROBS, {}), expected)  # >= 0.5 is on
    per_label = MULTILABEL.decide(PROBS, {"thresholds": [0.95, 0.25, 0.1]})
    np.testing.assert_array_equal(
        per_label, [[False, False, True], [False, True, True], [False, True, True]]
    )
    with pytest.raises(ValueError, match="2 thresholds for 3 labels"):
        MULTILABEL.decide(PROBS, {"thresholds": [0.5, 0.5]})


def test_decide_top_k_ignores_thresholds() -> None:
    chosen = MULTILABEL.decide(PROBS, {"thresholds": [0.99] * 3, "top_k": 2})
    np.testing.assert_array_equal(
        chosen, [[True, False, True], [False, True, True], [True, True, False]]
    )
    assert MULTILABEL.decide(PROBS, {"top_k": 5}).all()
    with pytest.raises(ValueError, match="top_k"):
        MULTILABEL.decide(PROBS, {"top_k": 0})


def test_decide_at_least_one_turns_on_the_best_label_of_empty_rows() -> None:
    chosen = MULTILABEL.decide(PROBS, {"at_least_one": True})
    np.testing.assert_array_equal(chosen[1], [False, True, False])  # was empty
    np.testing.assert_array_equal(chosen[[0, 2]], MULTILABEL.decide(PROBS, {})[[0, 2]])


def test_mix_targets_missing_where_either_side_is() -> None:
    targets_a = torch.tensor([[1.0, 0.0, MISSING_TAG], [1.0, 1.0, 0.0]])
    targets_b = torch.tensor([[0.0, 0.0, 1.0], [MISSING_TAG, 0.0, 1.0]])
    mixed = MULTILABEL.mix_targets(targets_a, targets_b, 0.6, 3)
    expected = torch.tensor([[0.6, 0.0, -1.0], [-1.0, 0.6, 0.4]])
    torch.testing.assert_close(mixed, expected)
    per_row = MULTILABEL.mix_targets(targets_a, targets_b, torch.tensor([0.0, 1.0]), 3)
    torch.testing.assert_close(per_row, torch.tensor([[0.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        MULTILABEL.mix_targets(targets_a, targets_b, 0.5, 4)


def _random_problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((50, 5)) < 0.4).astype(np.float32)
    probs = np.clip(0.5 * targets + rng.random((50, 5)) * 0.6, 0, 1)
    targets[:, 3] = 0.0  # a label with no positive: left out of mAP
    probs[:, 3] = rng.random(50) * 0.4  # and never predicted
    targets[rng.random((50, 5)) < 0.1] = MISSING_TAG  # scattered missing entries
    targets[0] = MISSING_TAG  # a whole missing row
    return probs, targets


def test_metrics_match_sklearn() -> None:
    probs, targets = _random_problem()
    result = MULTILABEL.metrics(probs, targets, {})
    precisions = []
    for label in (0, 1, 2, 4):
        known = targets[:, label] >= 0
        precisions.append(average_precision_score(targets[known, label], probs[known, label]))
    assert result["mAP"] == pytest.approx(np.mean(precisions))
    assert math.isnan(average_precisions(probs, targets)[3])
    known, predicted = targets >= 0, probs >= 0.5
    # Micro F1 pools every known entry; each label's F1 uses its own known entries.
    assert result["f1_micro"] == pytest.approx(f1_score(targets[known], predicted[known]))
    per_label = [f1_score(targets[known[:, i], i], predicted[known[:, i], i]) for i in (0, 1, 2, 4)]
    assert not (predicted[:, 3] & known[:, 3]).any()  # label 3: no positive, no prediction
    assert result["f1_macro"] == pytest.approx(np.mean(per_label))
    complete = known.all(1)
    assert 0 < complete.sum() < 49
    truth = targets[complete]
    assert result["hamming_loss"] == pytest.approx(hamming_loss(truth, predicted[complete]))
    assert all(type(value) is float for value in result.values())
    assert tuple(result) == METRIC_NAMES and MULTILABEL.primary_metric in result


def test_metrics_use_the_thresholds_of_params() -> None:
    probs, targets = _random_problem()
    low = MULTILABEL.metrics(probs, targets, {"thresholds": [0.1] * 5})
    high = MULTILABEL.metrics(probs, targets, {"thresholds": [0.9] * 5})
    assert low["mAP"] == high["mAP"]  # threshold-free
    assert low["cardinality_pred"] > high["cardinality_pred"]


def test_metrics_use_probabilities_not_decisions_for_map() -> None:
    targets = np.array([[1.0], [0.0], [1.0], [0.0]])
    ranked = MULTILABEL.metrics(np.array([[0.4], [0.1], [0.3], [0.2]]), targets, {})
    assert ranked["mAP"] == pytest.approx(1.0)  # all below 0.5, yet perfectly ranked
    assert ranked["f1_micro"] == 0.0  # while thresholded decisions find nothing
    assert ranked["f1_macro"] == 0.0 and ranked["hamming_loss"] == 0.5


def test_metrics_are_nan_when_undefined() -> None:
    missing = MULTILABEL.metrics(np.full((3, 2), 0.5), np.full((3, 2), MISSING_TAG), {})
    assert tuple(missing) == METRIC_NAMES
    assert all(math.isnan(value) for value in missing.values())
    all_negative = MULTILABEL.metrics(np.full((3, 2), 0.2), np.zeros((3, 2)), {})
    assert math.isnan(all_negative["mAP"]) and math.isnan(all_negative["f1_macro"])
    assert all_negative["hamming_loss"] == 0.0


def test_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="differ"):
        MULTILABEL.metrics(np.zeros((3, 2)), np.zeros((3, 3)), {})


def test_count_labels_skips_missing() -> None:
    targets = np.array([[1, 0, MISSING_TAG], [1, MISSING_TAG, MISSING_TAG], [0, 1, 1]])
    np.testing.assert_array_equal(MULTILABEL.count_labels(targets, 3), [2, 1, 1])
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        MULTILABEL.count_labels(targets, 4)
