"""Golden tests: every report metric against scikit-learn (or, for ECE, a direct computation).

Conventions pinned here: AP/ROC-AUC of a label or class lacking a positive or a negative is nan
and left out of mAP / macro AUC; a 0/0 precision or recall counts 0 (``zero_division=0``);
macro averages skip labels/classes with neither a positive nor a prediction; missing targets are
skipped (multiclass rows, multilabel entries; row-wise metrics use complete rows only).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from pictag.evaluation.metrics import all_heads_correct
from pictag.heads import Head, get_kind
from pictag.heads.multiclass_report import expected_calibration_error


def head_report(kind, probs, targets, labels, thresholds=None, params=None) -> dict:
    """The kind's report section; ``thresholds`` are a multilabel head's per-label ones."""
    if params is None:
        params = {} if thresholds is None else {"thresholds": thresholds}
    return get_kind(kind).section(probs, targets, list(labels), params)


NAMES = [f"l{i}" for i in range(8)]


def multilabel_data(seed: int, n: int = 120, num_labels: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Targets with a different rate per label and probabilities that lean towards them."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, num_labels)) < np.linspace(0.15, 0.6, num_labels)).astype(float)
    probs = np.clip(0.35 * truth + 0.65 * rng.random((n, num_labels)), 0.0, 1.0)
    return probs, truth


def multiclass_data(seed: int, n: int = 150, num_classes: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % num_classes
    rng.shuffle(truth)
    logits = rng.normal(size=(n, num_classes)) + 1.5 * np.eye(num_classes)[truth]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, truth


def per_label(section: dict, key: str) -> np.ndarray:
    return np.array([row[key] for row in section["per_label"]], dtype=float)


def assert_plain(value: object) -> None:
    """Only JSON types, no numpy scalars, so report.json can be written as it is."""
    if isinstance(value, dict):
        assert all(type(k) is str for k in value)
        for item in value.values():
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert type(value) in (str, int, float, bool), type(value)


def check_decision_metrics(got: dict, truth: np.ndarray, decided: np.ndarray) -> None:
    """Compare threshold metrics with scikit-learn's multilabel path (all entries known)."""
    for average in ("micro", "macro", "samples"):
        expected = skm.precision_recall_fscore_support(
            truth, decided, average=average, zero_division=0
        )
        if average != "samples":
            assert got[f"precision_{average}"] == pytest.approx(expected[0])
            assert got[f"recall_{average}"] == pytest.approx(expected[1])
        assert got[f"f1_{average}"] == pytest.approx(expected[2])
    assert got["hamming_loss"] == pytest.approx(skm.hamming_loss(truth, decided))
    assert got["subset_accuracy"] == pytest.approx(skm.accuracy_score(truth, decided))
    assert got["cardinality_pred"] == pytest.approx(decided.sum(axis=1).mean())


def test_multilabel_matches_sklearn() -> None:
    probs, truth = multilabel_data(0)
    thresholds = [0.3, 0.4, 0.5, 0.55, 0.6, 0.45]
    section = head_report("multilabel", probs, truth, NAMES[:6], thresholds)
    assert_plain(section)
    got = section["metrics"]
    assert got["mAP"] == pytest.approx(skm.average_precision_score(truth, probs))
    assert got["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(truth, probs))
    np.testing.assert_allclose(
        per_label(section, "ap"), skm.average_precision_score(truth, probs, average=None)
    )
    np.testing.assert_allclose(
        per_label(section, "roc_auc"), skm.roc_auc_score(truth, probs, average=None)
    )
    decided = (probs >= np.array(thresholds)).astype(int)
    check_decision_metrics(got, truth, decided)
    assert got["cardinality_true"] == pytest.approx(truth.sum(axis=1).mean())
    check_decision_metrics(section["metrics_at_0.5"], truth, (probs >= 0.5).astype(int))
    assert "mAP" not in section["metrics_at_0.5"]
    p, r, f, support = skm.precision_recall_fscore_support(
        truth, decided, average=None, zero_division=0
    )
    for key, expected in (("precision", p), ("recall", r), ("f1", f), ("support", support)):
        np.testing.assert_allclose(per_label(section, key), expected)
    confusions = skm.multilabel_confusion_matrix(truth, decided)
    assert [row["confusion"] for row in section["per_label"]] == confusions.tolist()
    assert section["thresholds"] == thresholds and section["n"] == len(probs)
    precision, recall, _ = skm.precision_recall_curve(truth[:, 2], probs[:, 2])
    assert section["per_label"][2]["pr_curve"] == {
        "precision": precision.tolist(),
        "recall": recall.tolist(),
    }


def test_label_without_positives_and_always_positive() -> None:
    probs, truth = multilabel_data(1)
    truth[:, 0], truth[:, 1] = 0.0, 1.0
    probs[:, 0] = np.minimum(probs[:, 0], 0.45)  # label 0: no positive and never predicted
    section = head_report("multilabel", probs, truth, NAMES[:6])
    for key in ("ap", "roc_auc"):
        assert all(math.isnan(v) for v in per_label(section, key)[:2])
    rest = slice(2, None)
    assert section["metrics"]["mAP"] == pytest.approx(
        skm.average_precision_score(truth[:, rest], probs[:, rest])
    )
    assert section["metrics"]["roc_auc_macro"] == pytest.approx(
        skm.roc_auc_score(truth[:, rest], probs[:, rest])
    )
    # Macro averages leave out label 0 (no positive, no prediction) instead of counting it 0.
    decided = (probs >= 0.5).astype(int)
    present = np.arange(1, 6)
    for name in ("precision", "recall", "f1"):
        expected = skm.precision_recall_fscore_support(
            truth, decided, average="macro", labels=present, zero_division=0
        )[("precision", "recall", "f1").index(name)]
        assert section["metrics"][f"{name}_macro"] == pytest.approx(expected)
    assert section["metrics"]["f1_macro"] > skm.f1_score(
        truth, decided, average="macro", zero_division=0
    )
    assert section["per_label"][0]["pr_curve"] == {"precision": [], "recall": []}
    assert section["per_label"][0]["confusion"] == [[len(probs), 0], [0, 0]]


def test_never_predicted_label_has_precision_zero() -> None:
    probs, truth = multilabel_data(2)
    probs[:, 3] *= 0.4  # below 0.5 everywhere, though label 3 has positives
    section = head_report("multilabel", probs, truth, NAMES[:6])
    row = section["per_label"][3]
    assert row["support"] > 0
    assert (row["precision"], row["recall"], row["f1"]) == (0.0, 0.0, 0.0)
    assert row["precision"] == skm.precision_score(truth[:, 3], probs[:, 3] >= 0.5, zero_division=0)
    check_decision_metrics(section["metrics"], truth, (probs >= 0.5).astype(int))


def test_multilabel_missing_entries_are_skipped() -> None:
    probs, truth = multilabel_data(3, n=150)
    rng = np.random.default_rng(303)  # not the data seed: its draws made the targets
    targets = np.where(rng.random(truth.shape) < 0.15, -1.0, truth)
    targets[7] = -1.0  # a row with no known entry at all
    section = head_report("multilabel", probs, targets, NAMES[:6])
    known = targets >= 0
    decided = probs >= 0.5
    assert section["n"] == len(probs) - 1
    for label, row in enumerate(section["per_label"]):
        t, p, d = (
            truth[known[:, label], label],
            probs[known[:, label], label],
            decided[known[:, label], label],
        )
        assert row["ap"] == pytest.approx(skm.average_precision_score(t, p))
        assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(t, p))
        assert row["f1"] == pytest.approx(skm.f1_score(t, d, zero_division=0))
        assert row["confusion"] == skm.confusion_matrix(t, d, labels=[0, 1]).tolist()
        assert row["support"] == int(t.sum())
    got = section["metrics"]
    pooled = skm.precision_recall_fscore_support(
        truth[known], decided[known], average="binary", zero_division=0
    )
    assert (got["precision_micro"], got["recall_micro"], got["f1_micro"]) == pytest.approx(
        pooled[:3]
    )
    assert got["f1_macro"] == pytest.approx(per_label(section, "f1").mean())
    assert got["mAP"] == pytest.approx(per_label(section, "ap").mean())
    complete = known.all(axis=1)
    rows_true, rows_pred = truth[complete].astype(int), decided[complete].astype(int)
    assert got["hamming_loss"] == pytest.approx(skm.hamming_loss(rows_true, rows_pred))
    assert got["subset_accuracy"] == pytest.approx(skm.accuracy_score(rows_true, rows_pred))
    assert got["f1_samples"] == pytest.approx(
        skm.f1_score(rows_true, rows_pred, average="samples", zero_division=0)
    )
    assert got["cardinality_true"] == pytest.approx(rows_true.sum(axis=1).mean())
    targets[:, 0] = -1.0  # a label never known: no score, rather than 0/0 = 0
    row = head_report("multilabel", probs, targets, NAMES[:6])["per_label"][0]
    assert row["support"] == 0 and math.isnan(row["f1"]) and math.isnan(row["precision"])
    nothing = head_report("multilabel", probs, np.full(probs.shape, -1.0), NAMES[:6])
    assert nothing["n"] == 0 and all(math.isnan(v) for v in nothing["metrics"].values())


def test_one_label_head_is_scored_as_binary() -> None:
    probs, truth = multilabel_data(4, num_labels=1)
    section = head_report("multilabel", probs, truth, ["sea"])
    t, d = truth[:, 0].astype(int), (probs[:, 0] >= 0.5).astype(int)
    got = section["metrics"]
    assert got["f1_micro"] == got["f1_macro"] == pytest.approx(skm.f1_score(t, d))
    assert got["subset_accuracy"] == pytest.approx(skm.accuracy_score(t, d))
    assert got["hamming_loss"] == pytest.approx(skm.hamming_loss(t, d))
    assert got["f1_samples"] == pytest.approx((t & d).mean())  # a row scores 1 only if t = d = 1
    assert section["per_label"][0]["confusion"] == skm.confusion_matrix(t, d).tolist()


def test_threshold_free_metrics_use_probabilities() -> None:
    probs, truth = multilabel_data(5)
    base = head_report("multilabel", probs, truth, NAMES[:6])
    squashed = head_report("multilabel", probs**3, truth, NAMES[:6])  # same ranking per label
    for key in ("ap", "roc_auc"):
        np.testing.assert_allclose(per_label(base, key), per_label(squashed, key))
    from_decisions = skm.average_precision_score(truth, probs >= 0.5, average=None)
    assert not np.allclose(per_label(base, "ap"), from_decisions)
    scores, classes = multiclass_data(5)
    section = head_report("multiclass", scores, classes, NAMES[:6])
    one_hot = np.eye(6)[scores.argmax(axis=1)]
    auc_from_decisions = skm.roc_auc_score(classes, one_hot, multi_class="ovr")
    assert section["metrics"]["roc_auc_ovr"] != pytest.approx(auc_from_decisions)
    assert section["metrics"]["roc_auc_ovr"] == pytest.approx(
        head_report("multiclass", scores**2, classes, NAMES[:6])["metrics"]["roc_auc_ovr"]
    )


def test_multiclass_matches_sklearn() -> None:
    probs, truth = multiclass_data(6)
    section = head_report("multiclass", probs, truth, NAMES[:6])
    assert_plain(section)
    got, predicted = section["metrics"], probs.argmax(axis=1)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    assert got["top5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(truth, probs, k=5))
    assert "binary" not in section
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(truth, predicted, average=average)
        assert [got[f"{m}_{average}"] for m in ("precision", "recall", "f1")] == pytest.approx(
            [p, r, f]
        )
    assert got["roc_auc_ovr"] == pytest.approx(
        skm.roc_auc_score(truth, probs, multi_class="ovr", average="macro")
    )
    p, r, f, support = skm.precision_recall_fscore_support(truth, predicted, average=None)
    for key, expected in (("precision", p), ("recall", r), ("f1", f), ("support", support)):
        np.testing.assert_allclose(per_label(section, key), expected)
    aucs = [skm.roc_auc_score(truth == c, probs[:, c]) for c in range(6)]
    np.testing.assert_allclose(per_label(section, "roc_auc"), aucs)
    assert section["confusion"] == skm.confusion_matrix(truth, predicted).tolist()
    assert section["n"] == len(truth)
    small = head_report("multiclass", *multiclass_data(6, num_classes=4), NAMES[:4])
    assert math.isnan(small["metrics"]["top5_accuracy"])  # 4 classes: 1 by construction


def test_class_never_predicted_and_class_absent() -> None:
    probs, truth = multiclass_data(7, num_classes=5)
    probs[:, 1] *= 0.01  # class 1 occurs but is never predicted
    truth[truth == 4] = 0
    probs[:, 4] *= 0.01  # class 4 neither occurs nor is predicted
    section = head_report("multiclass", probs, truth, NAMES[:5])
    predicted = probs.argmax(axis=1)
    rows = section["per_label"]
    assert (
        rows[1]["precision"]
        == 0.0
        == skm.precision_score(truth, predicted, labels=[1], average=None, zero_division=0)[0]
    )
    assert rows[4]["support"] == 0 and math.isnan(rows[4]["roc_auc"])
    assert section["metrics"]["f1_macro"] == pytest.approx(
        skm.f1_score(truth, predicted, average="macro", zero_division=0)
    )  # over classes 0-3: the absent class 4 is left out, as scikit-learn does
    assert section["metrics"]["roc_auc_ovr"] == pytest.approx(
        np.mean([skm.roc_auc_score(truth == c, probs[:, c]) for c in range(4)])
    )


def test_multiclass_missing_rows_are_skipped() -> None:
    probs, truth = multiclass_data(8)
    targets = truth.copy()
    targets[::4] = -100
    keep = targets >= 0
    assert head_report("multiclass", probs, targets, NAMES[:6]) == head_report(
        "multiclass", probs[keep], truth[keep], NAMES[:6]
    )
    nothing = head_report("multiclass", probs, np.full(len(probs), -100), NAMES[:6])
    assert nothing["n"] == 0 and all(math.isnan(v) for v in nothing["metrics"].values())


def direct_ece(probs: np.ndarray, truth: np.ndarray, bins: int = 15) -> float:
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == truth
    total = 0.0
    for m in range(bins):
        inside = (confidence > m / bins) & (confidence <= (m + 1) / bins)
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            total += gap * inside.mean()
    return total


def test_ece_matches_direct_computation_and_hand_case() -> None:
    probs, truth = multiclass_data(9, n=400)
    section = head_report("multiclass", probs, truth, NAMES[:6])
    assert section["metrics"]["ece"] == pytest.approx(direct_ece(probs, truth))
    # Confidences 0.9 (one right, one wrong) and 0.7 (both right): |0.5-0.9|/2 + |1-0.7|/2.
    hand = np.array([[0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]])
    assert expected_calibration_error(hand, np.array([0, 0, 0, 1])) == pytest.approx(0.35)


def test_binary_head_curves_and_operating_point() -> None:
    rng = np.random.default_rng(10)
    truth = (rng.random(500) < 0.4).astype(int)
    positive = np.clip(0.3 * truth + 0.7 * rng.random(500), 0, 1)
    probs = np.stack([1 - positive, positive], axis=1)
    params = {"positive": 1, "threshold": 0.5}
    section = head_report("multiclass", probs, truth, ["cat", "dog"], params=params)
    binary = section["binary"]
    fpr, tpr, _ = skm.roc_curve(truth, positive)
    assert len(binary["roc"]["fpr"]) <= 200
    assert binary["roc"]["fpr"][0] == fpr[0] and binary["roc"]["tpr"][-1] == tpr[-1]
    assert set(binary["roc"]["fpr"]) <= set(fpr.tolist())
    precision, recall, _ = skm.precision_recall_curve(truth, positive)
    assert len(precision) > 200 and len(binary["pr"]["precision"]) == 200
    assert binary["pr"]["recall"][0] == recall[0] and binary["pr"]["recall"][-1] == recall[-1]
    (tn, fp), (fn, tp) = skm.confusion_matrix(truth, positive >= 0.5)
    point = binary["operating_point"]
    assert point["threshold"] == 0.5
    assert point["tpr"] == point["recall"] == pytest.approx(tp / (tp + fn))
    assert point["fpr"] == pytest.approx(fp / (fp + tn))
    assert point["precision"] == pytest.approx(tp / (tp + fp))
    assert section["metrics"]["roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(truth, positive))
    # A tuned threshold moves the operating point and the decisions the metrics score.
    tuned = head_report(
        "multiclass", probs, truth, ["cat", "dog"], params={**params, "threshold": 0.3}
    )
    decided = (positive >= 0.3).astype(int)
    assert tuned["binary"]["operating_point"]["threshold"] == 0.3
    assert tuned["binary"]["operating_point"]["recall"] == pytest.approx(
        skm.recall_score(truth, decided)
    )
    assert tuned["metrics"]["accuracy"] == pytest.approx(skm.accuracy_score(truth, decided))
    assert tuned["binary"]["positive"] == "dog"


def test_single_image_and_all_correct() -> None:
    one = head_report("multilabel", np.array([[0.9, 0.2]]), np.array([[1.0, 0.0]]), NAMES[:2])
    assert math.isnan(one["metrics"]["mAP"]) and math.isnan(one["metrics"]["roc_auc_macro"])
    assert one["metrics"]["f1_micro"] == 1.0 and one["metrics"]["subset_accuracy"] == 1.0
    single = head_report("multiclass", np.array([[0.2, 0.7, 0.1]]), np.array([1]), NAMES[:3])
    assert single["metrics"]["accuracy"] == 1.0 and math.isnan(single["metrics"]["roc_auc_ovr"])
    assert single["metrics"]["ece"] == pytest.approx(0.3)
    _, truth = multilabel_data(11)
    perfect = head_report("multilabel", truth, truth, NAMES[:6])["metrics"]
    assert (perfect["mAP"], perfect["roc_auc_macro"], perfect["f1_macro"]) == (1.0, 1.0, 1.0)
    assert (perfect["hamming_loss"], perfect["subset_accuracy"]) == (0.0, 1.0)
    classes = np.arange(12) % 3
    exact = head_report("multiclass", np.eye(3)[classes], classes, NAMES[:3])["metrics"]
    assert (exact["accuracy"], exact["f1_macro"], exact["roc_auc_ovr"], exact["ece"]) == (
        1.0,
        1.0,
        1.0,
        0.0,
    )


def test_decisions_and_all_heads_correct() -> None:
    probs = {
        "brand": np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.5, 0.5]]),
        "tags": np.array([[0.9, 0.1], [0.6, 0.2], [0.2, 0.9], [0.4, 0.4]]),
    }
    brand = get_kind("multiclass").decide(probs["brand"], {})
    np.testing.assert_array_equal(brand.argmax(1), [0, 1, 0, 0])
    np.testing.assert_array_equal(
        get_kind("multilabel").decide(probs["tags"], {"thresholds": [0.5, 0.95]}),
        [[True, False], [True, False], [False, False], [False, False]],
    )
    heads = {
        "brand": Head("brand", "multiclass", ("a", "b")),
        "tags": Head("tags", "multilabel", ("x", "y")),
    }
    targets = {
        "brand": np.array([0, 0, -100, -100]),  # image 1: brand wrong
        "tags": np.array([[1, 0], [1, 0], [0, -1], [-1, -1]], dtype=float),
    }

    def share(tag_params: dict, brand_params: dict | None = None) -> float:
        params = {"brand": brand_params or {}, "tags": tag_params}
        return all_heads_correct(heads, probs, targets, params)

    # Image 0 right, image 1 wrong (brand), image 2 right on its known tag, image 3 unknown.
    assert share({"thresholds": [0.5, 0.5]}) == pytest.approx(2 / 3)
    # Tag 0's threshold at 0.95 turns image 0's tag 0 off: it is wrong too.
    assert share({"thresholds": [0.95, 0.5]}) == pytest.approx(1 / 3)
    # A binary brand threshold of 0.75 on "b" makes image 1 "a": right.
    assert share({}, {"positive": 1, "threshold": 0.75}) == pytest.approx(1.0)
    targets["tags"][0, 1] = 1.0  # image 0 now misses tag 1
    assert share({}) == pytest.approx(1 / 3)
    targets = {"brand": np.full(4, -100), "tags": np.full((4, 2), -1.0)}
    assert math.isnan(share({}))


def test_bad_input_is_refused() -> None:
    probs, truth = multiclass_data(12)
    with pytest.raises(ValueError, match="unknown head kind"):
        head_report("regression", probs, truth, NAMES[:6])
    with pytest.raises(ValueError, match="label names"):
        head_report("multilabel", *multilabel_data(12), NAMES[:5])
    with pytest.raises(ValueError, match="thresholds"):
        head_report("multilabel", *multilabel_data(12), NAMES[:6], thresholds=[0.5])
