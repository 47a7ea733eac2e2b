"""A tiny trained multi-output run (multiclass ``colour`` + multilabel ``tags``, with a test
split), trained once per test module."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pictag.config import load_config
from pictag.export import export_run
from pictag.training.trainer import train

COLOURS = ("red", "green", "blue")
TAGS = {0: "warm", 1: "natural leafy", 2: "cool"}
N_IMAGES = 48
FAST = [
    "model.backbone=small_cnn",
    "model.pretrained=none",
    "model.image_size=16",
    "train.batch_size=8",
    "train.lr=0.01",
    # The evaluation tests want a model that has learnt a little, not a saturated one (with
    # scores of exactly 1.0 no threshold would decide "nothing"): the old backbone rate.
    "train.backbone_lr_scale=0.1",
    "train.warmup_epochs=0",
    "train.augment=none",
    "train.epochs=2",
    "data.val_fraction=0.25",
    "data.test_fraction=0.25",
]


def write_colour_image(path: Path, label: int, seed: int, size: int = 20) -> None:
    """A noisy image whose dominant channel is its class; not mirror-symmetric."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    pixels[..., label] += 180
    pixels[:, : size // 3] //= 2  # a darker left side, so a flip changes the image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_data(root: Path, extra_rows: tuple[str, ...] = ()) -> Path:
    """``root/images/*.png`` and ``root/labels.csv`` (some colours missing)."""
    rows = ["image,colour,tags"]
    for i in range(N_IMAGES):
        label = i % 3
        write_colour_image(root / "images" / f"{i:03d}.png", label, seed=i)
        colour = "" if i % 13 == 5 else COLOURS[label]
        rows.append(f"images/{i:03d}.png,{colour},{TAGS[label]}")
    rows.extend(extra_rows)
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return labels


def train_tiny_run(root: Path) -> Path:
    labels = write_data(root / "data")
    overrides = [
        f"data.labels={labels}",
        "heads.colour.kind=multiclass",
        "heads.tags.kind=multilabel",
        *FAST,
    ]
    train(load_config(overrides=overrides), root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder; its data is in ``run.parent / 'data'``. Copy it before changing it."""
    return train_tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def exported_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run with an up-to-date ``model.onnx``."""
    root = tmp_path_factory.mktemp("exported")
    shutil.copytree(tiny_run.parent, root, dirs_exist_ok=True)
    export_run(root / "run")
    return root / "run"
