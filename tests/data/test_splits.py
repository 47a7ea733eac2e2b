import random
from collections import Counter
from pathlib import Path

import pytest

from pictag.config import DataConfig
from pictag.data.schema import Head, Sample, resolve_head
from pictag.data.splits import (
    SPLITS,
    SplitError,
    assign_splits,
    load_split_file,
    save_splits,
    split_summary,
)

# Stratified splits put round(share * split size) images of each class/tag in a split, so on
# 150-image splits a share is off by under one image (0.7 points). Two points leaves room for
# that while still failing a random split, whose share of a 20 % tag in 150 images has a standard
# deviation of 3.3 points.
TOLERANCE = 0.02


def multiclass_samples(counts: dict[str, int], root: str = "/data") -> list[Sample]:
    labels = [label for label, n in counts.items() for _ in range(n)]
    random.Random(0).shuffle(labels)
    return [Sample(Path(f"{root}/{i:05d}.jpg"), {"kind": c}) for i, c in enumerate(labels)]


def heads_for(samples: list[Sample], **kinds: str) -> dict[str, Head]:
    return {
        name: resolve_head(name, kind, [s.labels.get(name) for s in samples])
        for name, kind in kinds.items()
    }


def paths(splits: dict[str, list[Sample]]) -> dict[str, list[str]]:
    return {name: sorted(str(s.path) for s in splits[name]) for name in SPLITS}


def share(samples: list[Sample], head: str, label: str) -> float:
    def has(value: object) -> bool:
        return value == label or (isinstance(value, tuple) and label in value)

    return sum(has(s.labels.get(head)) for s in samples) / len(samples)


def test_multiclass_split_keeps_skewed_class_shares():
    samples = multiclass_samples({"common": 900, "uncommon": 90, "rare": 10})
    heads = heads_for(samples, kind="multiclass")
    splits = assign_splits(samples, heads, DataConfig(val_fraction=0.15, test_fraction=0.15))
    assert {k: len(v) for k, v in splits.items()} == {"train": 700, "val": 150, "test": 150}
    for label in ("common", "uncommon", "rare"):
        overall = share(samples, "kind", label)
        for name in ("val", "test"):
            assert share(splits[name], "kind", label) == pytest.approx(overall, abs=TOLERANCE)
    assert all(s.split == name for name in SPLITS for s in splits[name])
    assert sorted(s.path for v in splits.values() for s in v) == sorted(s.path for s in samples)


def multilabel_samples(n: int = 1000) -> list[Sample]:
    rng = random.Random(1)
    prevalence = {"sky": 0.5, "tree": 0.2, "car": 0.05, "boat": 0.02}
    out = []
    for i in range(n):
        tags = tuple(t for t, p in prevalence.items() if rng.random() < p)
        brand = rng.choices(["acme", "bolt", "crux"], weights=[80, 15, 5])[0]
        out.append(Sample(Path(f"/data/{i:05d}.jpg"), {"tags": tags, "brand": brand}))
    return out


def test_multilabel_split_keeps_tag_prevalence():
    samples = multilabel_samples()
    heads = heads_for(samples, tags="multilabel")
    splits = assign_splits(samples, heads, DataConfig(val_fraction=0.15, test_fraction=0.15))
    for name in ("val", "test"):
        assert len(splits[name]) == pytest.approx(150, abs=3)  # iterative: sizes are near-exact
        for tag in heads["tags"].labels:
            overall = share(samples, "tags", tag)
            assert share(splits[name], "tags", tag) == pytest.approx(overall, abs=TOLERANCE)


def test_several_heads_stratify_every_head_even_with_missing_targets():
    samples = multilabel_samples()
    samples = [
        Sample(s.path, {**s.labels, "brand": None}) if i % 10 == 0 else s
        for i, s in enumerate(samples)
    ]
    heads = heads_for(samples, tags="multilabel", brand="multiclass")
    splits = assign_splits(samples, heads, DataConfig(val_fraction=0.15, test_fraction=0.15))
    for tag in heads["tags"].labels:
        assert share(splits["val"], "tags", tag) == pytest.approx(
            share(samples, "tags", tag), abs=TOLERANCE
        )
    for brand in heads["brand"].labels:
        assert share(splits["val"], "brand", brand) == pytest.approx(
            share(samples, "brand", brand), abs=TOLERANCE
        )


def test_single_tag_multilabel_head_splits():
    samples = [
        Sample(Path(f"/d/{i}.jpg"), {"cat": ("cat",) if i % 4 == 0 else ()}) for i in range(200)
    ]
    heads = heads_for(samples, cat="multilabel")
    splits = assign_splits(samples, heads, DataConfig(val_fraction=0.2))
    assert len(splits["val"]) == pytest.approx(40, abs=2)
    assert share(splits["val"], "cat", "cat") == pytest.approx(0.25, abs=TOLERANCE)


def test_split_is_deterministic_per_seed_and_ignores_listing_order():
    samples = multiclass_samples({"a": 60, "b": 40})
    heads = heads_for(samples, kind="multiclass")
    first = paths(assign_splits(samples, heads, DataConfig(seed=3)))
    shuffled = samples[:]
    random.Random(5).shuffle(shuffled)
    assert paths(assign_splits(shuffled, heads, DataConfig(seed=3))) == first
    assert paths(assign_splits(samples, heads, DataConfig(seed=4)))["val"] != first["val"]


def test_source_splits_are_kept_and_the_rest_split_automatically():
    samples = multiclass_samples({"a": 50, "b": 50})
    given = {0: "train", 1: "valid", 2: "TEST", 3: "Validation"}
    samples = [Sample(s.path, s.labels, given.get(i)) for i, s in enumerate(samples)]
    heads = heads_for(samples, kind="multiclass")
    splits = assign_splits(samples, heads, DataConfig(val_fraction=0.2, test_fraction=0.1))
    found = {s.path: name for name in SPLITS for s in splits[name]}
    assert [found[samples[i].path] for i in range(4)] == ["train", "val", "test", "val"]
    # the 96 unsplit images: 19 val (0.2 * 96, rounded) and 10 test, next to the given ones
    assert (len(splits["val"]), len(splits["test"])) == (2 + 19, 1 + 10)


def test_official_train_and_test_get_val_carved_from_train_only():
    train = multiclass_samples({"a": 70, "b": 30}, root="/data/train")
    test = multiclass_samples({"a": 20, "b": 10}, root="/data/test")
    samples = [Sample(s.path, s.labels, "train") for s in train]
    samples += [Sample(s.path, s.labels, "test") for s in test]
    heads = heads_for(samples, kind="multiclass")
    splits = assign_splits(samples, heads, DataConfig(val_fraction=0.2, test_fraction=0.3))
    assert paths(splits)["test"] == sorted(str(s.path) for s in test)
    assert len(splits["val"]) == 20
    assert all(str(s.path).startswith("/data/train/") for s in splits["val"])
    assert Counter(s.labels["kind"] for s in splits["val"]) == {"a": 14, "b": 6}


def test_all_three_given_are_left_as_they_are():
    samples = multiclass_samples({"a": 12})
    samples = [Sample(s.path, s.labels, SPLITS[i % 3]) for i, s in enumerate(samples)]
    splits = assign_splits(samples, heads_for(samples, kind="multiclass"), DataConfig())
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "val": 4, "test": 4}


def test_unknown_source_split_and_no_train_are_errors():
    bad = [Sample(Path("/d/1.jpg"), {}, "trainig", where="labels.csv:7")]
    with pytest.raises(SplitError, match=r"labels.csv:7.*'trainig'"):
        assign_splits(bad, {}, DataConfig())
    only_test = [Sample(Path(f"/d/{i}.jpg"), {}, "test") for i in range(3)]
    with pytest.raises(SplitError, match="no training images"):
        assign_splits(only_test, {}, DataConfig())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_dataset_keeps_train_and_warns_about_empty_val(n):
    samples = [Sample(Path(f"/d/{i}.jpg"), {"kind": f"c{i}"}) for i in range(n)]
    heads = heads_for(samples, kind="multiclass")
    with pytest.warns(UserWarning, match="validation split is empty"):
        splits = assign_splits(samples, heads, DataConfig(val_fraction=0.15, test_fraction=0.15))
    assert len(splits["train"]) == n
    assert not splits["val"] and not splits["test"]


def test_singleton_classes_do_not_crash_and_stay_in_train():
    samples = multiclass_samples({"a": 10, "b": 9, "lonely": 1, "alone": 1})
    heads = heads_for(samples, kind="multiclass")
    splits = assign_splits(samples, heads, DataConfig(val_fraction=0.2))
    train_labels = {s.labels["kind"] for s in splits["train"]}
    assert {"lonely", "alone"} <= train_labels
    assert {s.labels["kind"] for s in splits["val"]} == {"a", "b"}
    assert len(splits["val"]) == 4


def test_split_file_round_trip(tmp_path):
    samples = [Sample(tmp_path / s.path.name, s.labels) for s in multilabel_samples(200)]
    heads = heads_for(samples, tags="multilabel", brand="multiclass")
    splits = assign_splits(samples, heads, DataConfig(val_fraction=0.2, test_fraction=0.1))
    split_file = tmp_path / "runs" / "splits.csv"
    save_splits(splits, split_file)
    assert split_file.read_text().splitlines()[0] == "image,split"
    assert [p.name for p in split_file.parent.iterdir()] == ["splits.csv"]  # no temp file left
    # A different seed and a source split must not matter: the file decides.
    relabelled = [Sample(s.path, s.labels, "test") for s in samples]
    again = assign_splits(relabelled, heads, DataConfig(split_file=str(split_file), seed=9))
    assert paths(again) == paths(splits)


def test_split_file_paths_relative_to_its_folder_and_any_case(tmp_path):
    (tmp_path / "lists").mkdir()
    split_file = tmp_path / "lists" / "split.csv"
    split_file.write_text("../img/a.jpg,Train\n\n../img/b.jpg,VALIDATION\n../img/c.jpg,test\n")
    samples = [Sample(tmp_path / "img" / f"{n}.jpg", {}) for n in "abc"]
    splits = assign_splits(samples, {}, DataConfig(split_file=str(split_file)))
    assert {k: [s.path.name for s in v] for k, v in splits.items()} == {
        "train": ["a.jpg"],
        "val": ["b.jpg"],
        "test": ["c.jpg"],
    }


def test_split_file_missing_images_are_named(tmp_path):
    split_file = tmp_path / "split.csv"
    split_file.write_text("image,split\n/d/0.jpg,train\n")
    samples = [Sample(Path(f"/d/{i}.jpg"), {}) for i in range(8)]
    with pytest.raises(SplitError, match=r"7 of 8 images are not listed.*/d/1\.jpg"):
        assign_splits(samples, {}, DataConfig(split_file=str(split_file)))


def test_bad_split_file_rows_are_named_with_line_numbers(tmp_path):
    split_file = tmp_path / "split.csv"
    split_file.write_text(
        "image,split\na.jpg,train\nb.jpg,trian\nc.jpg\na.jpg,test\n,val\nd.jpg,val\n"
    )
    with pytest.raises(SplitError) as info:
        load_split_file(split_file)
    message = str(info.value)
    assert f"{split_file}:3: unknown split 'trian'" in message
    assert f"{split_file}:4: expected two columns" in message
    assert f"{split_file}:5: a.jpg is listed as test, but as train on line 2" in message
    assert f"{split_file}:6: the image cell is empty" in message
    assert ":7" not in message
    with pytest.raises(SplitError, match="split file not found"):
        load_split_file(tmp_path / "nope.csv")


def test_load_split_file_header_in_any_column_order(tmp_path):
    split_file = tmp_path / "split.csv"
    split_file.write_text("split,note,path\nval,x,a.jpg\ntrain,y,b.jpg\n")
    assert load_split_file(split_file) == {"a.jpg": "val", "b.jpg": "train"}


class ExplodingPath:
    def __str__(self) -> str:
        raise RuntimeError("disk full")


def test_save_splits_is_atomic(tmp_path):
    split_file = tmp_path / "splits.csv"
    split_file.write_text("image,split\nold.jpg,train\n")
    broken = {"train": [Sample(Path("new.jpg"), {}), Sample(ExplodingPath(), {})]}  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        save_splits(broken, split_file)
    assert split_file.read_text() == "image,split\nold.jpg,train\n"
    assert [p.name for p in tmp_path.iterdir()] == ["splits.csv"]


def test_split_summary_counts_labels_per_split():
    samples = [
        Sample(Path("/d/1.jpg"), {"kind": "a"}, "train"),
        Sample(Path("/d/2.jpg"), {"kind": "a"}, "train"),
        Sample(Path("/d/3.jpg"), {"kind": "b"}, "val"),
        Sample(Path("/d/4.jpg"), {"kind": None}, "test"),
    ]
    heads = heads_for(samples, kind="multiclass")
    splits = assign_splits(samples, heads, DataConfig())
    lines = split_summary(splits, heads).splitlines()
    assert lines[0] == "images train 2  val 1  test 1"
    assert lines[3].split() == ["a", "2", "0", "0"]
    assert lines[4].split() == ["b", "0", "1", "0"]
    assert lines[5].split() == ["(missing)", "0", "0", "1"]
