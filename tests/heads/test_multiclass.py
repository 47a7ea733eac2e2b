"""The multiclass kind's activation, decoding, MixUp targets, metrics and counts."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, recall_score, top_k_accuracy_score

from pictag.config import HeadConfig
from pictag.heads import MISSING_CLASS, MULTICLASS, resolve_head
from pictag.heads.multiclass import METRIC_NAMES


def test_activate_is_softmax_in_float32() -> None:
    logits = torch.randn(4, 3, dtype=torch.bfloat16)
    probs = MULTICLASS.activate(logits)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    assert torch.equal(probs.argmax(1), logits.float().argmax(1))


def test_decide_argmax_one_class_per_row() -> None:
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.4, 0.4, 0.2]])
    decided = MULTICLASS.decide(probs, {})
    np.testing.assert_array_equal(decided.argmax(1), [1, 0, 0])  # tie: lower index
    assert decided.dtype == bool and (decided.sum(1) == 1).all()


def _binary_head(positive: str | None = None, by: str = "f1", target: float = 0.5):
    head = resolve_head("sick", "multiclass", ["no", "yes"])
    return head, HeadConfig(positive=positive, threshold_by=by, threshold_target=target)


def test_binary_head_names_its_positive_class_and_threshold() -> None:
    head, cfg = _binary_head()
    assert MULTICLASS.default_params(head, cfg) == {"positive": 1, "threshold": 0.5}
    head, cfg = _binary_head(positive="no", by="fixed", target=0.3)
    params = MULTICLASS.default_params(head, cfg)
    assert params == {"positive": 0, "threshold": 0.3}
    probs = np.array([[0.35, 0.65], [0.25, 0.75]])
    # P(no) = 0.35 >= 0.3 -> "no", though "yes" is more probable; 0.25 < 0.3 -> "yes".
    np.testing.assert_array_equal(MULTICLASS.decide(probs, params).argmax(1), [0, 1])
    with pytest.raises(ValueError, match=r"heads.sick.positive: 'maybe'"):
        MULTICLASS.default_params(head, HeadConfig(positive="maybe"))
    three = resolve_head("c", "multiclass", ["a", "b", "c"])
    assert MULTICLASS.default_params(three, HeadConfig()) == {}


@pytest.mark.parametrize(
    ("labels", "positive"),
    [(["0", "1"], "1"), (["abnormal", "normal"], "abnormal"), (["cat", "not_cat"], "cat"),
     (["false", "true"], "true"), (["defect", "ok"], "defect"), (["female", "male"], "male")],
)  # fmt: skip
def test_the_positive_class_is_the_one_that_does_not_read_as_negative(labels, positive) -> None:
    head = resolve_head("h", "multiclass", labels)
    params = MULTICLASS.default_params(head, HeadConfig())
    assert labels[params["positive"]] == positive


def test_training_says_which_class_pictag_took_as_positive() -> None:
    head = resolve_head("sex", "multiclass", ["female", "male"])
    assert MULTICLASS.plan_note(head, HeadConfig()) == (
        "heads.sex: positive class 'male' (the second label); thresholds, recall and "
        "precision speak of it; set heads.sex.positive=female to change"
    )
    ok = resolve_head("part", "multiclass", ["defect", "ok"])
    assert "positive class 'defect' (the other reads as negative)" in MULTICLASS.plan_note(
        ok, HeadConfig()
    )
    assert MULTICLASS.plan_note(head, HeadConfig(positive="female")) is None  # chosen by the user
    assert MULTICLASS.plan_note(resolve_head("c", "multiclass", ["a", "b", "c"]), None) is None


def test_binary_threshold_tuned_for_recall_reaches_it() -> None:
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 2, 400)
    score = np.clip(0.35 * targets + rng.random(400) * 0.65, 0, 1)
    probs = np.stack([1 - score, score], axis=1)
    targets[:10] = MISSING_CLASS
    head, cfg = _binary_head(by="recall", target=0.9)
    params = MULTICLASS.tune(probs, targets, head, cfg)
    assert params["positive"] == 1 and params["threshold"] < 0.5
    chosen = MULTICLASS.decide(probs, params).argmax(1)
    known = targets >= 0
    recall = recall_score(targets[known], chosen[known])
    assert recall >= 0.9
    at_half = recall_score(targets[known], probs[known].argmax(1))
    assert at_half < 0.9  # the tuning made the difference


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
    result = MULTICLASS.metrics(probs, targets, {})
    keep = targets != MISSING_CLASS
    truth, scores = targets[keep], probs[keep]
    predicted = scores.argmax(1)
    assert num_classes - 1 not in predicted and num_classes - 1 in truth
    assert result["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert result["f1_macro"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    if num_classes > 5:
        expected = top_k_accuracy_score(truth, scores, k=5, labels=range(num_classes))
        assert result["top5_accuracy"] == pytest.approx(expected)
    else:
        assert math.isnan(result["top5_accuracy"])  # 5 or fewer classes: 1 by construction
    assert all(type(value) is float for value in result.values())
    assert tuple(result) == METRIC_NAMES and MULTICLASS.primary_metric in result


def test_metrics_are_nan_without_known_rows() -> None:
    result = MULTICLASS.metrics(np.full((4, 7), 1 / 7), np.full(4, MISSING_CLASS), {})
    assert tuple(result) == METRIC_NAMES
    assert all(math.isnan(value) for value in result.values())


def test_metrics_top5_uses_all_classes_when_targets_cover_few() -> None:
    scores = np.linspace(0.2, 0.05, 7)  # class 0 ranks first, class 6 last
    probs = np.tile(scores / scores.sum(), (3, 1))
    result = MULTICLASS.metrics(probs, np.array([0, 1, 6]), {})
    assert result["top5_accuracy"] == pytest.approx(2 / 3)
    assert result["accuracy"] == pytest.approx(1 / 3)


def test_count_labels_skips_missing() -> None:
    counts = MULTICLASS.count_labels(np.array([0, 2, 2, MISSING_CLASS, 2]), 4)
    np.testing.assert_array_equal(counts, [1, 0, 3, 0])
    with pytest.raises(ValueError, match="out of range"):
        MULTICLASS.count_labels(np.array([0, 4]), 4)
