"""The head kinds' per-label tables for the terminal (``pictag evaluate``): the numbers are the
report section's, the label names are shown, and a multiclass head's confusion counts are right."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pictag.evaluation.evaluate import json_ready
from pictag.heads import get_kind
from pictag.heads.multiclass_report import section as multiclass_section
from pictag.heads.multilabel_report import section as multilabel_section

ANIMALS = ["cat", "dog", "bird"]
# True classes and the (argmax) predictions the probabilities below give; the last row has no
# known class and is left out of every count.
TRUTH = [0, 0, 0, 1, 1, 2, 2, 2, 2, -100]
PREDICTED = [0, 0, 1, 1, 1, 2, 2, 0, 2, 1]
CONFUSION = [[2, 1, 0], [0, 2, 0], [1, 0, 3]]  # rows true, columns predicted, by hand


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def _row(text: str, first: str, after: str = "") -> list[str]:
    """The cells of the first line after ``after`` whose first cell is ``first``."""
    lines = text.split(after, 1)[1].splitlines() if after else text.splitlines()
    return next(_cells(line) for line in lines if _cells(line)[0] == first)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@pytest.fixture(scope="module")
def animals() -> dict:
    probs = np.full((len(TRUTH), 3), 0.1)
    probs[np.arange(len(TRUTH)), PREDICTED] = 0.8
    return json_ready(multiclass_section(probs, np.array(TRUTH), ANIMALS, {}))


def test_multiclass_table_holds_the_sections_numbers_per_class(animals):
    text = get_kind("multiclass").report_text("animal", animals)
    assert animals["confusion"] == CONFUSION
    by_hand = {"cat": (2 / 3, 2 / 3, 3), "dog": (2 / 3, 1.0, 2), "bird": (1.0, 3 / 4, 4)}
    for row in animals["per_label"]:
        name = row["label"]
        precision, recall, support = by_hand[name]
        assert row["precision"] == pytest.approx(precision) and row["recall"] == recall
        cells = _row(text, name, "per class")
        expected = [row["precision"], row["recall"], row["f1"]]
        assert cells == [name, *map(_f, expected), str(support)]
    metrics = animals["metrics"]
    assert _row(text, "accuracy") == ["accuracy", _f(7 / 9), "9"]
    weighted = [metrics[f"{m}_weighted"] for m in ("precision", "recall", "f1")]
    assert _row(text, "weighted avg") == ["weighted avg", *map(_f, weighted), "9"]


def test_multiclass_confusion_matrix_has_names_and_counts(animals):
    text = get_kind("multiclass").report_text("animal", animals)
    matrix = text.split("confusion matrix (rows: true class, columns: predicted class)")[1]
    header, *rows = matrix.strip().splitlines()
    assert _cells(header) == ["true \\ predicted", *ANIMALS]
    assert [_cells(row)[0] for row in rows] == ANIMALS
    assert [[int(c) for c in _cells(row)[1:]] for row in rows] == CONFUSION


def _many_classes() -> dict:
    labels = [f"class_{i}" for i in range(20)]
    confusion = np.eye(20, dtype=int) * 10
    confusion[3, 5], confusion[10, 2], confusion[0, 19], confusion[7, 8] = 7, 4, 4, 1
    per_label = [{"label": name, "precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10}
                 for name in labels]  # fmt: skip
    return {"kind": "multiclass", "labels": labels, "n": 216, "metrics": {"accuracy": 0.9},
            "per_label": per_label, "confusion": confusion.tolist()}  # fmt: skip


def test_many_classes_list_the_most_confused_pairs_instead_of_the_matrix():
    text = get_kind("multiclass").report_text("digit", _many_classes())
    assert "true \\ predicted" not in text  # no 20-column matrix
    assert "20 classes, too many for the full confusion matrix" in text
    listed = text.split("most-confused pairs:")[1].strip().splitlines()
    assert _cells(listed[0]) == ["true", "predicted", "images", "share of true"]
    # most first, ties in matrix order; the share is of the true class's images
    assert [_cells(line) for line in listed[1:]] == [
        ["class_3", "class_5", "7", f"{7 / 17:.3f}"],
        ["class_0", "class_19", "4", f"{4 / 14:.3f}"],
        ["class_10", "class_2", "4", f"{4 / 14:.3f}"],
        ["class_7", "class_8", "1", f"{1 / 11:.3f}"],
    ]
    per_class = text.split("digit: per class\n")[1].split("\n\n")[0].splitlines()
    assert [_cells(line)[0] for line in per_class[1:]] == _many_classes()["labels"]


TAGS = ["sea", "sky", "never"]


def test_multilabel_table_holds_ap_thresholds_and_averages():
    rng = np.random.default_rng(0)
    targets = (rng.random((40, 3)) < 0.5).astype(float)
    targets[:, 2] = 0.0  # no positive: AP and ROC-AUC are undefined, not 0
    probs = np.clip(0.6 * targets + 0.5 * rng.random((40, 3)), 0, 1)
    params = {"thresholds": [0.45, 0.6, 0.5]}
    tags = json_ready(multilabel_section(probs, targets, TAGS, params))
    text = get_kind("multilabel").report_text("tags", tags)
    header = _row(text, "tag")
    assert header == ["tag", "precision", "recall", "F1", "AP", "threshold", "support"]
    for row in tags["per_label"]:
        keys = ("precision", "recall", "f1", "ap", "threshold")
        assert _row(text, row["label"]) == [
            row["label"],
            *(_f(row[k]) for k in keys),
            str(row["support"]),
        ]
    assert _row(text, "never")[4] == "-"
    metrics, total = tags["metrics"], str(int(targets.sum()))
    micro = [metrics[f"{m}_micro"] for m in ("precision", "recall", "f1")]
    assert _row(text, "micro avg") == ["micro avg", *map(_f, micro), "-", "-", total]
    assert _row(text, "macro avg")[4] == _f(metrics["mAP"])
    assert _row(text, "samples avg")[3] == _f(metrics["f1_samples"])
