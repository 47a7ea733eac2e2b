import numpy as np
import pytest

from pictag.heads import MISSING_CLASS, MISSING_TAG, Head, LabelError, resolve_head
from pictag.heads.labeltext import bin_label, bin_labels, natural_key, split_tags


def test_multiclass_encode_decode_and_missing():
    head = resolve_head("animal", "multiclass", ["dog", "cat", None, " cat ", ""])
    assert head.labels == ("cat", "dog")
    assert head.encode("dog") == 1
    assert head.encode(" cat ") == 0
    assert head.encode(None) is None
    assert head.encode("") is None
    assert head.decode(1) == "dog"
    assert head.target(None).item() == MISSING_CLASS
    assert head.target("cat").dtype == np.int64


def test_multilabel_multi_hot_and_missing():
    head = resolve_head("tags", "multilabel", [("sea", "sunset"), ("trees",), None, ()])
    assert head.labels == ("sea", "sunset", "trees")
    assert head.encode(("trees", "sea")) == (0, 2)
    np.testing.assert_array_equal(head.target(("sunset",)), [0, 1, 0])
    np.testing.assert_array_equal(head.target(()), [0, 0, 0])
    np.testing.assert_array_equal(head.target(None), [MISSING_TAG] * 3)
    assert head.decode((0, 2)) == ("sea", "trees")


def test_min_count_folds_rare_classes_into_other():
    raws = ["bmw"] * 5 + ["audi"] * 4 + ["lada"] + ["trabant"]
    head = resolve_head("brand", "multiclass", raws, min_count=2, other_label="rare")
    assert head.labels == ("audi", "bmw", "rare")
    assert head.encode("lada") == head.encode("trabant") == 2
    assert head.folded == frozenset({"lada", "trabant"})


def test_numeric_bins_with_generated_and_given_names():
    head = resolve_head("year", "multiclass", ["2005", "2012"], bins=[2010])
    assert head.labels == ("<=2009", ">=2010")
    assert head.encode("2009") == 0
    assert head.encode("2010") == 1
    assert head.encode("2010.0") == 1
    ages = resolve_head("age", "multiclass", [], bins=[18, 65], labels=["child", "adult", "senior"])
    assert ages.labels == ("child", "adult", "senior")
    assert [ages.decode(ages.encode(a)) for a in ("3", "18", "64", "90")] == [
        "child",
        "adult",
        "adult",
        "senior",
    ]
    with pytest.raises(LabelError, match="not a number"):
        head.encode("old")


def test_bins_need_ascending_edges_and_matching_names():
    with pytest.raises(ValueError, match="ascending"):
        resolve_head("y", "multiclass", [], bins=[2010, 2000])
    with pytest.raises(ValueError, match="3 labels"):
        resolve_head("y", "multiclass", [], bins=[1, 2], labels=["a", "b"])
    with pytest.raises(ValueError, match="does not apply to multilabel heads"):
        resolve_head("t", "multilabel", [], min_count=3)


def test_bin_names():
    assert bin_labels([13, 20, 60]) == ["<=12", "13-19", "20-59", ">=60"]
    assert bin_labels([1, 2]) == ["<=0", "1", ">=2"]
    assert bin_labels([0.5]) == ["<0.5", ">=0.5"]
    assert bin_label(19.9, [13, 20]) == "13-19"


def test_renames_merge_labels_and_apply_to_tags():
    head = resolve_head("c", "multiclass", ["Dog", "dog", "cat"], rename={"Dog": "dog"})
    assert head.labels == ("cat", "dog")
    assert head.encode("Dog") == head.encode("dog")
    tags = resolve_head("t", "multilabel", [("ocean", "sea")], rename={"ocean": "sea"})
    assert tags.labels == ("sea",)
    assert tags.encode(("ocean", "sea")) == (0,)


def test_explicit_label_list_keeps_order_and_rejects_unknown():
    head = resolve_head("c", "multiclass", ["b", "a"], labels=["b", "a", "z"])
    assert head.labels == ("b", "a", "z")
    with pytest.raises(LabelError, match=r"unknown label\(s\) 'q'.*heads\.c\.labels"):
        head.encode("q")
    tags = resolve_head("t", "multilabel", [], labels=["x", "y"])
    with pytest.raises(LabelError, match="'w'"):
        tags.encode(("x", "w"))


def test_head_round_trips_through_dict():
    head = resolve_head("brand", "multiclass", ["a", "a", "b"], min_count=2, rename={"A": "a"})
    again = Head.from_dict(head.to_dict())
    assert again == head
    assert again.encode("b") == head.encode("b")


def test_head_rejects_bad_kind_and_duplicate_labels():
    with pytest.raises(ValueError, match="kind"):
        Head("h", "regression", ("a",))
    with pytest.raises(ValueError, match="duplicate"):
        Head("h", "multiclass", ("a", "a"))
    with pytest.raises(ValueError, match="no labels"):
        Head("h", "multiclass", ())


def test_split_tags_and_natural_sort():
    assert split_tags("a, b,,c , a", ",") == ("a", "b", "c")
    assert split_tags("  x   y ", None) == ("x", "y")
    assert sorted(["10", "2", "1"], key=natural_key) == ["1", "2", "10"]
