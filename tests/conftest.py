"""Shared fixtures: tiny image datasets written to tmp_path."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_image(path: Path, value: int, size: int = 24) -> None:
    """A small RGB image whose colour encodes its class, so a tiny model can learn it."""
    # crc32, not hash(): str hashes change from process to process, and `% 1000` made two
    # names of one class collide about every other run (identical images, a data error).
    rng = np.random.default_rng([value, zlib.crc32(path.name.encode())])
    base = np.zeros((size, size, 3), dtype=np.uint8)
    base[..., value % 3] = 200
    noise = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(base + noise).save(path)


@pytest.fixture
def folder_tree(tmp_path: Path) -> Path:
    """root/<class>/*.png with three classes of 12 images."""
    root = tmp_path / "tree"
    for label, name in enumerate(("red", "green", "blue")):
        for i in range(12):
            write_image(root / name / f"{i:02d}.png", label)
    return root


@pytest.fixture
def multi_csv(tmp_path: Path) -> Path:
    """images/ + labels.csv with a multiclass head, a tag list head and a few missing cells."""
    rows = ["image,colour,tags"]
    for i in range(36):
        label = i % 3
        write_image(tmp_path / "images" / f"{i:03d}.png", label)
        tags = {0: "warm", 1: "natural leafy", 2: "cool"}[label]
        colour = "" if i % 11 == 5 else ("red", "green", "blue")[label]
        rows.append(f"images/{i:03d}.png,{colour},{tags}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path / "labels.csv"


def write_voc(root: Path, n: int, seed: int = 0) -> Path:
    """Images of 96x72 px with a red and/or a blue rectangle, and their VOC XML files."""
    rng = np.random.default_rng(seed)
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i in range(n):
        pixels = np.full((72, 96, 3), 40, np.uint8)
        objects = []
        for name, colour in (("red", (230, 30, 30)), ("blue", (30, 30, 230))):
            if rng.random() < 0.7 or not objects:
                w, h = int(rng.integers(20, 40)), int(rng.integers(16, 30))
                x, y = int(rng.integers(0, 96 - w)), int(rng.integers(0, 72 - h))
                pixels[y : y + h, x : x + w] = colour
                objects.append((name, x, y, x + w, y + h))
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{i:03d}.png")
        parts = [f"<annotation><filename>{i:03d}.png</filename>"]
        parts.append("<size><width>96</width><height>72</height><depth>3</depth></size>")
        for name, x1, y1, x2, y2 in objects:
            box = f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
            parts.append(f"<object><name>{name}</name><bndbox>{box}</bndbox></object>")
        (root / "Annotations" / f"{i:03d}.xml").write_text("".join(parts) + "</annotation>")
    return root


@pytest.fixture(scope="session")
def make_voc():
    """``make_voc(root, n, seed=0)``: a Pascal VOC folder of coloured rectangles and their boxes."""
    return write_voc
