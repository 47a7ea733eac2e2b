"""`pictag audit` on a small run with planted problems: relabelled images are the top label
issues with their true class suggested, a resized copy across splits is a near-duplicate, and a
blank frame among coloured images is an outlier."""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pictag
from pictag.auditing import audit_run
from pictag.cli import main

COLOURS = ("red", "green", "blue")
FAST = [
    "model.backbone=small_cnn",
    "model.image_size=16",
    "train.epochs=2",
    "train.batch_size=8",
    "train.lr=0.01",
    "train.warmup_epochs=0",
    "train.augment=none",
]


def _image(path: Path, value: int, size: int = 48) -> Image.Image:
    rng = np.random.default_rng([value, zlib.crc32(path.name.encode())])
    pixels = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    pixels[..., value] += 200
    image = Image.fromarray(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return image


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, list[str], dict[str, str]]:
    """images/ + labels.csv: 3 colour classes of 20, 4 rows relabelled, one resized copy."""
    rows, wrong = [], {}
    for i in range(60):
        value = i % 3
        name = f"{i:03d}.png"
        image = _image(tmp_path / "images" / name, value)
        label = COLOURS[value]
        if i in (3, 16, 29, 44):  # planted: the label names another colour
            label = COLOURS[(value + 1) % 3]
            wrong[name] = COLOURS[value]
        rows.append([name, label])
        if i == 10:  # a near-duplicate: the same picture at another size
            image.resize((64, 64)).save(tmp_path / "images" / "010_copy.png")
            rows.append(["010_copy.png", label])
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        csv.writer(handle).writerows([["image", "colour"], *rows])
    return labels, [name for name, _ in rows], wrong


def test_audit_finds_the_planted_label_errors_and_writes_its_files(planted, tmp_path) -> None:
    labels, _, wrong = planted
    config = {"data": {"images": [str(tmp_path / "images")], "labels": str(labels)},
              "heads": {"colour": "multiclass"}}  # fmt: skip
    pictag.train(config, tmp_path / "run", overrides=FAST, progress=False)
    audit = pictag.audit(tmp_path / "run", folds=4, fix_csv=True, progress=False)
    top = audit["label_issues"][: len(wrong)]
    found = {Path(item["image"]).name: item["suggested"] for item in top}
    assert found == wrong  # each planted row, with its true colour suggested
    assert all(item["head"] == "colour" and 0 <= item["score"] <= 1 for item in top)
    saved = json.loads((tmp_path / "run" / "audit.json").read_text())
    assert set(saved) >= {"label_issues", "near_duplicates", "outliers"}
    assert saved["label_issues"] == audit["label_issues"]
    page = (tmp_path / "run" / "audit.html").read_text()
    assert "Possible label errors" in page and "data:image/jpeg;base64," in page
    # --fix-csv: the label file's rows, with the suggestion beside each flagged row only.
    with Path(audit["fix_csv"]).open() as handle:
        fixed = list(csv.DictReader(handle))
    assert [row["image"] for row in fixed] == [row[0] for row in csv.reader(labels.open())][1:]
    flagged = {row["image"]: row["audit_colour"] for row in fixed if row["audit_colour"]}
    assert {name: flagged[name] for name in wrong} == wrong
    assert labels.read_text().splitlines()[0] == "image,colour"  # the original is untouched
    # The evaluation report counts the findings and links to the audit page.
    report = pictag.evaluate(tmp_path / "run", progress=False)
    assert report["audit"]["label_issues"] == len(audit["label_issues"])
    assert 'href="audit.html"' in (tmp_path / "run" / "report.html").read_text()


def test_audit_cli_reports_near_duplicates_across_splits(planted, tmp_path, capsys) -> None:
    labels, _, _ = planted
    args = ["train", "--images", str(tmp_path / "images"), "--labels", str(labels),
            "--head", "colour:multiclass", "--out", str(tmp_path / "run")]  # fmt: skip
    # The copy and its original in different splits: a leak the audit must name.
    split = tmp_path / "split.csv"
    names = [p.name for p in sorted((tmp_path / "images").iterdir())]
    split.write_text("image,split\n" + "".join(
        f"images/{n},{'test' if n == '010_copy.png' else 'val' if i % 5 == 0 else 'train'}\n"
        for i, n in enumerate(names)))  # fmt: skip
    settings = [*FAST, f"data.split_file={split}"]
    assert main(args + [x for item in settings for x in ("--set", item)]) == 0
    assert main(["audit", str(tmp_path / "run"), "--folds", "3"]) == 0
    printed = capsys.readouterr().out
    audit = json.loads((tmp_path / "run" / "audit.json").read_text())
    pair = next(p for p in audit["near_duplicates"] if "010_copy.png" in p["a"] + p["b"])
    assert {Path(pair["a"]).name, Path(pair["b"]).name} == {"010.png", "010_copy.png"}
    assert "test" in pair["splits"] and len(set(pair["splits"])) == 2  # a leak into test
    assert len(audit["near_duplicates"]) <= 3, audit["near_duplicates"]  # distinct images are not
    assert "across splits" in printed and "audit.html" in printed


def test_a_blank_frame_among_coloured_images_is_the_top_outlier(planted, tmp_path) -> None:
    labels, _, _ = planted
    Image.new("RGB", (48, 48), (128, 128, 128)).save(tmp_path / "images" / "blank.png")
    with labels.open("a") as handle:
        handle.write("blank.png,red\n")
    config = {"data": {"images": [str(tmp_path / "images")], "labels": str(labels)},
              "heads": {"colour": "multiclass"}}  # fmt: skip
    pictag.train(config, tmp_path / "run", overrides=FAST, progress=False)
    audit = audit_run(tmp_path / "run", folds=3, progress=False)
    assert Path(audit["outliers"][0]["image"]).name == "blank.png"
    assert audit["outliers"][0]["score"] < audit["outliers"][-1]["score"]


def test_pretrained_features_add_pairs_the_hashes_miss_and_say_how_found(tmp_path) -> None:
    from pictag.auditing.run_audit import MIN_COSINE, near_duplicates
    from pictag.data.schema import Sample

    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for value, path in enumerate(paths):
        _image(path, value)  # three different pictures: no two hashes agree
    samples = [Sample(path, {}) for path in paths]
    split_of = {paths[0]: "train", paths[1]: "test", paths[2]: "train"}
    features = np.eye(3, 8)
    features[1] = features[0] + 0.01  # 0 and 1 look alike to the backbone (a crop, say)
    assert near_duplicates(samples, split_of, 10**8) == []
    (pair,) = near_duplicates(samples, split_of, 10**8, features)
    assert (pair["a"], pair["b"], pair["method"]) == (str(paths[0]), str(paths[1]), "embedding")
    assert pair["distance"] <= 1 - MIN_COSINE and pair["splits"] == ["train", "test"]
