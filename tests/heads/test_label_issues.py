"""The kinds' ``label_issues`` hook: planted wrong labels are found, named and ranked first;
scores and flags are cleanlab's own; missing targets are skipped with indexes kept."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from pictag.heads import MISSING_CLASS, MISSING_TAG, MULTICLASS, MULTILABEL, Head

ANIMALS = Head("animal", "multiclass", ("cat", "dog", "fox"))
SCENE = Head("scene", "multilabel", ("sky", "tree", "water", "road"))
KEYS = ["index", "given", "suggested", "score", "issue"]


def multiclass_data(seed: int = 0, n: int = 300, planted: int = 15):
    """(probs, given, truth, planted rows): out-of-fold-like probabilities that point to the
    true class (with the spread of softmaxed noisy logits), and ``planted`` given labels
    flipped to another class."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 4.0 * np.eye(3)[truth]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rows = rng.choice(n, planted, replace=False)
    given = truth.copy()
    given[rows] = (truth[rows] + rng.integers(1, 3, planted)) % 3
    return probs, given, truth, rows


def multilabel_data(seed: int = 1, n: int = 300, planted: int = 16):
    """(probs, given, truth, planted rows): sigmoid probabilities that lean to the true tags,
    and one tag flipped (added or dropped) in each of ``planted`` rows."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, 4)) < [0.2, 0.3, 0.4, 0.5]
    probs = 1 / (1 + np.exp(-(rng.normal(size=(n, 4)) + np.where(truth, 4.0, -4.0))))
    rows = rng.choice(n, planted, replace=False)
    given = truth.astype(np.float32)
    cols = rng.integers(0, 4, planted)
    given[rows, cols] = 1 - given[rows, cols]
    return probs, given, truth, rows


def tag_names(row: np.ndarray) -> list[str]:
    return [SCENE.labels[i] for i in np.flatnonzero(row)]


def test_multiclass_planted_flips_come_first_with_the_true_class() -> None:
    probs, given, truth, planted = multiclass_data()
    findings = MULTICLASS.label_issues(ANIMALS, probs, given)
    top = findings[: len(planted)]
    assert len({f["index"] for f in top} & set(planted.tolist())) / len(planted) >= 0.9
    for f in findings:
        assert list(f) == KEYS
        if f["index"] in planted:
            assert f["given"] == ANIMALS.labels[given[f["index"]]]
            assert f["suggested"] == ANIMALS.labels[truth[f["index"]]]
            assert f["issue"] == "wrong class"
    scores = [f["score"] for f in findings]
    assert scores == sorted(scores) and all(0.0 <= s <= 1.0 for s in scores)
    json.dumps(findings)  # plain Python types, ready for a report


def test_multiclass_matches_cleanlab() -> None:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs, given, _, _ = multiclass_data(seed=3)
    findings = MULTICLASS.label_issues(ANIMALS, probs, given)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = find_label_issues(given, probs, n_jobs=1)
    scores = get_label_quality_scores(given, probs, method="self_confidence")
    assert sorted(f["index"] for f in findings) == np.flatnonzero(mask).tolist()
    np.testing.assert_allclose(
        [f["score"] for f in findings], scores[[f["index"] for f in findings]]
    )


def test_multiclass_skips_missing_targets_and_keeps_row_indexes() -> None:
    probs, given, _, _ = multiclass_data()
    dense = MULTICLASS.label_issues(ANIMALS, probs, given)
    # Insert unlabelled rows whose probabilities contradict any label they might have had.
    at = np.array([0, 5, 5, 100, 300])
    probs_gappy = np.insert(probs, at, [0.0, 0.0, 1.0], axis=0)
    given_gappy = np.insert(given, at, MISSING_CLASS)
    original = np.flatnonzero(given_gappy >= 0)  # position of each dense row in the gappy one
    gappy = MULTICLASS.label_issues(ANIMALS, probs_gappy, given_gappy)
    assert [f["index"] for f in gappy] == [int(original[f["index"]]) for f in dense]
    assert [f["score"] for f in gappy] == pytest.approx([f["score"] for f in dense])
    assert all(given_gappy[f["index"]] >= 0 for f in gappy)


def test_multiclass_class_absent_from_labels_and_tiny_data() -> None:
    probs, given, _, _ = multiclass_data(n=120, planted=6)
    two = given < 2  # no image labelled fox, though the model gives it probability
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cleanlab's per-class warnings stay quiet
        findings = MULTICLASS.label_issues(ANIMALS, probs[two], given[two])
        tiny = MULTICLASS.label_issues(ANIMALS, probs[:3], np.array([0, 1, 1]))
    assert all(f["given"] in ("cat", "dog") for f in findings)
    assert isinstance(tiny, list)


def test_multiclass_errors_name_the_head() -> None:
    probs, given, _, _ = multiclass_data(n=30, planted=0)
    with pytest.raises(ValueError, match=r"'animal'.*at least two classes.*\['dog'\]"):
        MULTICLASS.label_issues(ANIMALS, probs, np.full(30, 1))
    with pytest.raises(ValueError, match="at least two classes"):
        MULTICLASS.label_issues(ANIMALS, probs, np.full(30, MISSING_CLASS))
    with pytest.raises(ValueError, match="not logits"):
        MULTICLASS.label_issues(ANIMALS, np.log(probs), given)
    with pytest.raises(ValueError, match=r"\[30, 3\]"):
        MULTICLASS.label_issues(ANIMALS, probs[:, :2], given)
    with pytest.raises(ValueError, match="out of range"):
        MULTICLASS.label_issues(ANIMALS, probs, given + 3)


def test_multilabel_planted_tags_are_found_and_named() -> None:
    probs, given, truth, planted = multilabel_data()
    findings = MULTILABEL.label_issues(SCENE, probs, given)
    found = [f for f in findings if f["index"] in planted]
    assert len(found) == len(findings)  # nothing unplanted is flagged on this clean data
    assert len(found) >= 0.75 * len(planted)
    issues = set()
    for f in findings:
        i = f["index"]
        assert list(f) == KEYS
        assert f["given"] == tag_names(given[i])
        assert f["suggested"] == tag_names(truth[i])
        (tag,) = set(f["given"]) ^ set(f["suggested"])
        issues.add(f["issue"].split()[0])
        assert f["issue"] == f"{'missing' if tag in f['suggested'] else 'extra'} tag {tag}"
    assert issues == {"missing", "extra"}
    scores = [f["score"] for f in findings]
    assert scores == sorted(scores) and all(0.0 <= s <= 1.0 for s in scores)
    json.dumps(findings)


def test_multilabel_names_every_tag_that_differs() -> None:
    probs, given, truth, _ = multilabel_data(seed=2, planted=0)
    row = int(np.flatnonzero(truth[:, 0] & ~truth[:, 1] & truth[:, 2])[0])
    given[row, :3] = [0, 1, 0]  # sky and water left out, tree added
    (finding,) = [f for f in MULTILABEL.label_issues(SCENE, probs, given) if f["index"] == row]
    assert finding["issue"] == "missing tags sky, water; extra tag tree"
    assert finding["suggested"] == tag_names(truth[row])


def test_multilabel_matches_cleanlab() -> None:
    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    probs, given, _, _ = multilabel_data(seed=4)
    lists = [np.flatnonzero(row).tolist() for row in given]
    findings = MULTILABEL.label_issues(SCENE, probs, given)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = find_label_issues(lists, probs, n_jobs=1)
    # The row scores as its worst tags: cleanlab's softmin aggregation (see multilabel_audit).
    scores = get_label_quality_scores(lists, probs, aggregator_kwargs={"method": "softmin"})
    assert sorted(f["index"] for f in findings) == np.flatnonzero(mask).tolist()
    np.testing.assert_allclose(
        [f["score"] for f in findings], scores[[f["index"] for f in findings]]
    )


def test_multilabel_skips_incomplete_rows_and_keeps_row_indexes() -> None:
    probs, given, _, _ = multilabel_data()
    dense = MULTILABEL.label_issues(SCENE, probs, given)
    at = np.array([0, 7, 7, 150, 300])
    probs_gappy = np.insert(probs, at, [1.0, 1.0, 1.0, 1.0], axis=0)
    given_gappy = np.insert(given, at, [0.0, 0.0, 0.0, 0.0], axis=0)
    inserted = at + np.arange(len(at))
    given_gappy[inserted[:-1]] = MISSING_TAG  # unlabelled rows
    given_gappy[inserted[-1], 0] = MISSING_TAG  # a row whose sky is unknown: left out too
    original = np.flatnonzero((given_gappy >= 0).all(axis=1))
    gappy = MULTILABEL.label_issues(SCENE, probs_gappy, given_gappy)
    assert [f["index"] for f in gappy] == [int(original[f["index"]]) for f in dense]
    assert [f["score"] for f in gappy] == pytest.approx([f["score"] for f in dense])


def test_multilabel_tag_given_everywhere_is_not_judged() -> None:
    probs, given, _, _ = multilabel_data()
    given[:, 3] = 1.0  # road on every image: cleanlab alone raises "at least 2 classes"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        findings = MULTILABEL.label_issues(SCENE, probs, given)
    assert findings and all("road" not in f["issue"] for f in findings)
    with pytest.raises(ValueError, match=r"'scene'.*given on some labelled rows"):
        MULTILABEL.label_issues(SCENE, probs, np.ones_like(given))
    with pytest.raises(ValueError, match="soft targets"):
        MULTILABEL.label_issues(SCENE, probs, given * 0.9)


def test_cleanlab_is_imported_on_first_use_only() -> None:
    script = (
        "import sys, numpy as np\n"
        "from pictag.heads import MULTICLASS, Head\n"
        "before = 'cleanlab' in sys.modules\n"
        "head = Head('h', 'multiclass', ('a', 'b'))\n"
        "MULTICLASS.label_issues(head, np.eye(2)[[0, 1, 0, 1]], np.array([0, 1, 0, 1]))\n"
        "print(before, 'cleanlab' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "True"], done.stderr
