"""The tutorials in examples/ run as written: each YAML (and the Python quick start) trains and
evaluates on a small slice of data in its own format, made here (the real sets are in
../shared/data; benchmarks/examples.py runs them whole). Only the data paths and the size of
the run change; heads, modes, optimizers and checks are the example's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pictag

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = ["model.image_size=32", "train.batch_size=8", "train.warmup_epochs=0"]


def _image(path: Path, value: int, seed: int) -> None:
    rng = np.random.default_rng([value, seed])
    pixels = rng.integers(0, 50, (20, 20, 3), dtype=np.uint8)
    pixels[..., value % 3] += 150
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _folder_tree(root: Path, classes: list[str], per_class: int) -> Path:
    """train/ and test/ trees of class folders, as mnist-png and cifar10-jpg are."""
    for split, count in (("train", per_class), ("test", 3)):
        for value, name in enumerate(classes):
            for i in range(count):
                _image(root / split / name / f"{split}{i}.png", value, len(split) * 1000 + i)
    return root


def _run(example: str, tmp_path: Path, data: list[str], extra: list[str]) -> dict:
    config = pictag.load_config(EXAMPLES / example, data + SMALL + extra)
    pictag.train(config, tmp_path / "run", progress=False)
    return pictag.evaluate(tmp_path / "run", progress=False)


@pytest.mark.parametrize("example", ["mnist.yaml", "cifar10.yaml"])
def test_folder_tree_tutorials(example, tmp_path) -> None:
    root = _folder_tree(tmp_path / "data", ["0", "1", "2"], 10)
    report = _run(example, tmp_path, [f"data.images=[{root}]"], ["train.epochs=1"])
    assert report["split"] == "test" and report["heads"]["label"]["n"] == 9
    saved = json.loads((tmp_path / "run" / "pictag.json").read_text())["config"]["train"]
    assert saved["hflip"] == 0.0  # digit-like labels: no flips, as the MNIST tutorial needs
    if example == "cifar10.yaml":
        assert saved["optimizer"] == "sgd" and saved["weight_decay"] == 5e-4


def test_multilabel_scenes_tutorial_reads_the_csv_as_found(tmp_path) -> None:
    # As miml-scenes ships: a BOM, a Chinese first header, ids without extension, images over
    # train/ and test/, and rows whose image is missing (dropped under policy: skip).
    tags = ["desert", "mountain", "sea", "sunset", "trees"]
    rows = ["\ufeff图片序号," + ",".join(tags)]
    for i in range(40):
        value = i % 3
        folder = "test" if i % 5 == 0 else "train"
        if i < 38:
            _image(tmp_path / folder / f"{i + 1}.jpg", value, i)
        flags = [1 if t == value or (value == 2 and t == 4) else 0 for t in range(5)]
        rows.append(f"{i + 1}," + ",".join(map(str, flags)))
    labels = tmp_path / "train.csv"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    images = f"data.images=[{tmp_path / 'train'},{tmp_path / 'test'}]"
    report = _run("miml-scenes.yaml", tmp_path, [f"data.labels={labels}", images],
                  ["train.epochs=1"])  # fmt: skip
    assert report["split"] == "test" and report["heads"]["tags"]["kind"] == "multilabel"
    assert report["n_images"] == 8  # the images under test/: their folder is their split


@pytest.mark.parametrize("example", ["utkface.yaml", "utkface-gender.yaml"])
def test_face_tutorials_read_labels_from_file_names(example, tmp_path) -> None:
    for i in range(60):
        age, gender, race = (5, 25, 50, 70)[i % 4], i % 2, i % 3
        _image(tmp_path / "faces" / f"{age}_{gender}_{race}_2017{i:04d}.jpg.chip.jpg", gender, i)
    report = _run(example, tmp_path, [f"data.images=[{tmp_path / 'faces'}]"], ["train.epochs=1"])
    assert report["split"] == "test"
    heads = report["heads"]
    if example == "utkface.yaml":  # three heads on one backbone
        assert set(heads) == {"gender", "race", "age"}
        assert heads["age"]["labels"] == ["<=12", "13-19", "20-29", "30-44", "45-59", ">=60"]
    else:  # a binary head with its threshold tuned for 90 % recall of "female"
        assert heads["gender"]["binary"]["positive"] == "female"


def test_python_quick_start_runs_as_written(tmp_path) -> None:
    root = _folder_tree(tmp_path / "data", ["cat", "dog"], 8)
    script = EXAMPLES / "quickstart.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run"), str(root)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test accuracy" in done.stdout and (tmp_path / "run" / "report.html").is_file()


def test_segmentation_tutorial_reads_trimaps_with_an_ignored_border(tmp_path) -> None:
    images, trimaps = tmp_path / "images", tmp_path / "trimaps"
    trimaps.mkdir(parents=True)
    for i in range(24):
        _image(images / f"pet_{i}.jpg", i % 3, i)
        trimap = np.full((20, 20), 2, np.uint8)  # background
        trimap[5:15, 4 + i % 4 : 14 + i % 4] = 3  # the unclassified border band
        trimap[6:14, 5 + i % 4 : 13 + i % 4] = 1  # the pet
        Image.fromarray(trimap).save(trimaps / f"pet_{i}.png")
    (images / "pet_0.mat").write_bytes(b"MATLAB 5.0")  # not an image: passed over
    data = [f"data.images=[{images}]", f"heads.pet.masks={trimaps}"]
    extra = ["train.epochs=1", "model.backbone=test_efficientnet", "model.pretrained=none"]
    report = _run("oxford-pets-segmentation.yaml", tmp_path, data, extra)
    assert report["split"] == "test" and report["heads"]["pet"]["kind"] == "segmentation"
    assert report["heads"]["pet"]["labels"] == ["background", "pet"]
    assert 0 <= report["heads"]["pet"]["metrics"]["miou"] <= 1
