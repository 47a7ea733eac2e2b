"""Tests for near-duplicate detection: hashes, pair search, check-data warnings, split leaks."""

import io
import logging
from pathlib import Path

import imagehash
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from pictag.config import DataConfig, HeadConfig, load_config
from pictag.data import near_duplicates as nd
from pictag.data.leakage import LEAK_FIX, find_leaks, warn_leaks
from pictag.data.near_duplicates import (
    DEFAULT_MAX_DISTANCE,
    NearDuplicate,
    embedding_pairs,
    file_hashes,
    image_hashes,
    near_duplicate_pairs,
)
from pictag.data.pipeline import prepare_data
from pictag.data.schema import Sample
from pictag.data.sources import SourceResult
from pictag.data.validate import check_data, format_report


def _photo(seed: int, size: tuple[int, int] = (256, 192)) -> Image.Image:
    """A photo-like scene, different for every seed: a lit background, a few blurred shapes and
    sensor grain. (Pure noise is no stand-in: its hash bits sit near the median and flip.)"""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    top, bottom = rng.integers(0, 256, (2, 3))
    slope = y[..., None] * rng.uniform(0.5, 1.5) + x[..., None] * rng.uniform(-0.5, 0.5)
    image = Image.fromarray(np.clip(top + (bottom - top) * slope, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        (x0, x1), (y0, y1) = sorted(rng.integers(0, width, 2)), sorted(rng.integers(0, height, 2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1 + 4, y1 + 4), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1)), dtype=np.float32)
    grain = rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8))


def _save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


COPIES = {  # the transforms benchmarks/near_duplicates.py measured the threshold on
    "resize_50": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "jpeg_60": lambda im: Image.open(_jpeg(im, quality=60)),
    "shift_1px": lambda im: im.crop((1, 1, im.width, im.height)),
    "mirror": ImageOps.mirror,
}


def _jpeg(image: Image.Image, quality: int) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return buffer


# --- hashes and pairs ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_hashes_are_imagehash_phash_of_the_image_and_its_mirror(seed):
    def reference(image):
        return [int(str(imagehash.phash(im)), 16) for im in (image, ImageOps.mirror(image))]

    small = _photo(seed, (120, 90))  # under 128 px: no box reduction first, the same bits
    assert list(image_hashes(small)) == reference(small)
    large = _photo(seed)
    for ours, theirs in zip(image_hashes(large), reference(large), strict=True):
        assert (ours ^ theirs).bit_count() <= 2


@pytest.mark.parametrize("transform", COPIES)
def test_a_copy_is_found_and_distinct_photos_are_not(tmp_path, transform):
    originals = [_save(_photo(seed), tmp_path / f"photo{seed}.png") for seed in range(12)]
    copy = _save(COPIES[transform](_photo(3)), tmp_path / "copy.png")
    paths = [*originals, copy]
    hashes = [file_hashes(p) for p in paths]
    pairs = near_duplicate_pairs(paths, hashes)
    assert [(p.a, p.b) for p in pairs] == [(originals[3], copy)]
    assert pairs[0].distance <= DEFAULT_MAX_DISTANCE
    assert pairs[0].flipped == (transform == "mirror")


@pytest.mark.parametrize("numpy_popcount", [True, False], ids=["bitwise_count", "byte_table"])
def test_pair_search_in_chunks_equals_brute_force(monkeypatch, numpy_popcount):
    if not numpy_popcount:  # numpy < 2.0 has no bitwise_count
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=(40, 2), dtype=np.int64).astype(np.uint64)
    hashes[7, 0] = hashes[3, 0] ^ np.uint64(0b101)  # 2 bits from image 3
    hashes[20, 0] = hashes[11, 1] ^ np.uint64(1 << 40)  # 1 bit from the mirror of image 11
    monkeypatch.setattr(nd, "_CHUNK_ELEMENTS", 50)  # chunks of one row
    paths = [f"{i}.jpg" for i in range(40)]
    found = {(int(p.a.stem), int(p.b.stem)): (p.distance, p.flipped) for p in
             near_duplicate_pairs(paths, hashes, max_distance=24)}  # fmt: skip
    expected = {}
    for i in range(40):
        for j in range(i + 1, 40):
            direct = bin(int(hashes[i, 0] ^ hashes[j, 0])).count("1")
            mirrored = bin(int(hashes[i, 1] ^ hashes[j, 0])).count("1")
            if min(direct, mirrored) <= 24:
                expected[(i, j)] = (min(direct, mirrored), mirrored < direct)
    assert found == expected
    assert found[(3, 7)] == (2, False) and found[(11, 20)] == (1, True)


def test_no_images_no_pairs():
    assert near_duplicate_pairs([], np.zeros((0, 2), np.uint64)) == []
    assert embedding_pairs([], np.zeros((0, 8)), 0.9) == []


def test_groups_pair_only_the_first_of_byte_identical_files():
    hashes = np.array([5, 5, 5, 1 << 60], dtype=np.uint64)
    pairs = near_duplicate_pairs(["a", "b", "c", "d"], hashes, 2, groups=["x", "x", "y", "z"])
    assert [(str(p.a), str(p.b), p.distance) for p in pairs] == [("a", "c", 0)]


def test_images_smaller_than_the_hash_input_are_not_hashed(tmp_path):
    assert file_hashes(_save(_photo(0, (28, 28)), tmp_path / "digit.png")) is None
    assert file_hashes(_save(_photo(0, (32, 40)), tmp_path / "small.png")) is not None


@pytest.mark.parametrize("as_tensor", [False, True])
def test_embedding_pairs_report_cosine_distance(as_tensor):
    features = np.eye(4, 8, dtype=np.float32)
    features[3] = features[1] + 0.01 * features[2]  # nearly image 1
    features = torch.from_numpy(features).requires_grad_() if as_tensor else features
    (pair,) = embedding_pairs(["a", "b", "c", "d"], features, min_cosine=0.99)
    assert (str(pair.a), str(pair.b), pair.flipped) == ("b", "d", False)
    assert pair.distance == pytest.approx(1 - 1 / np.sqrt(1.0001), abs=1e-6)


# --- check-data -------------------------------------------------------------------------------


def _source(samples: list[Sample]) -> SourceResult:
    return SourceResult(samples, {"animal": HeadConfig()}, [], "CSV labels.csv (test)", "csv")


def _check(samples: list[Sample]):
    return check_data(_source(samples), DataConfig(min_per_label=1), workers=2, progress=False)


def test_check_data_warns_once_per_near_duplicate_and_not_for_identical_copies(tmp_path):
    a = _save(_photo(1), tmp_path / "a.png")
    b = _save(COPIES["resize_50"](_photo(1)), tmp_path / "b.png")
    c = tmp_path / "c.png"
    c.write_bytes(a.read_bytes())  # byte-identical: the exact-duplicate check's to report
    d = _save(_photo(2), tmp_path / "d.png")
    labels = ["cat", "cat", "cat", "dog"]
    samples = [
        Sample(path, {"animal": label}, where=f"labels.csv:{row}")
        for row, (path, label) in enumerate(zip([a, b, c, d], labels, strict=True), start=2)
    ]
    report = _check(samples)
    assert [(p.kind, p.severity, p.where) for p in report.problems] == [
        ("duplicate_image", "warning", "labels.csv:4"),
        ("near_duplicate", "warning", "labels.csv:3"),
    ]
    near = report.problems[1]
    assert near.path == b and str(a) in near.message and "labels.csv:2" in near.message
    assert "data.split_file" in near.fix
    assert "near_duplicate: 1 warning" in format_report(report)
    assert report.kept() == samples
    assert {(p.a, p.b, p.identical) for p in report.near_duplicates} == {
        (a, b, False),
        (a, c, True),
    }
    assert _check(samples[:1] + samples[3:]).problems == []  # without the copies, no warning


def test_check_data_names_the_source_splits_of_a_near_duplicate(tmp_path):
    a = Sample(_save(_photo(1), tmp_path / "a.png"), {"animal": "cat"}, "train", "a.png")
    b = Sample(_save(ImageOps.mirror(_photo(1)), tmp_path / "b.png"), {"animal": "cat"}, "test")
    c = Sample(_save(_photo(2), tmp_path / "c.png"), {"animal": "dog"}, "train", "c.png")
    (problem,) = _check([a, b, c]).problems
    assert "mirrored" in problem.message and "in train and test" in problem.message


def test_hashing_can_be_switched_off(tmp_path):
    a = Sample(_save(_photo(1), tmp_path / "a.png"), {"animal": "cat"})
    b = Sample(_save(_photo(1), tmp_path / "b.jpg", quality=60), {"animal": "cat"})
    c = Sample(_save(_photo(2), tmp_path / "c.png"), {"animal": "dog"})
    source, data = _source([a, b, c]), DataConfig(min_per_label=1)
    assert len(check_data(source, data, progress=False).near_duplicates) == 1
    report = check_data(source, data, progress=False, near_duplicates=None)
    assert report.problems == [] and report.near_duplicates == []


# --- leaks across splits -----------------------------------------------------------------------


def test_a_pair_split_across_train_and_test_is_a_leak(caplog):
    a, b, c = (Sample(Path(f"/data/{n}.jpg"), {}) for n in "abc")
    pairs = [NearDuplicate(a.path, b.path, 2), NearDuplicate(a.path, c.path, 0, identical=True)]
    splits = {"train": [a, c], "val": [], "test": [b]}
    with caplog.at_level(logging.WARNING, logger="pictag.data.leakage"):
        (leak,) = warn_leaks(pairs, splits)
    assert (leak.pair, leak.splits_a, leak.splits_b) == (pairs[0], ("train",), ("test",))
    assert "/data/a.jpg (train) and /data/b.jpg (test)" in caplog.text
    assert LEAK_FIX in caplog.text
    assert find_leaks(pairs, {"train": [a, b, c]}) == []
    (twice,) = find_leaks([], {"train": [a], "test": [a]})  # one file listed in two splits
    assert str(twice) == "/data/a.jpg is listed in test and train"


def test_prepare_data_warns_about_a_copy_in_train_and_test(tmp_path, caplog):
    seed = 100
    for split, count in (("train", 6), ("test", 2)):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                seed += 1
                _save(_photo(seed), folder / f"{i}.png")
    original = _save(_photo(1), tmp_path / "train" / "cat" / "0.png")
    copy = _save(_photo(1).resize((128, 96)), tmp_path / "test" / "cat" / "copy.jpg", quality=60)
    config = load_config(None, [f"data.images=[{tmp_path}]"])
    with caplog.at_level(logging.WARNING, logger="pictag.data.leakage"):
        data = prepare_data(config, progress=False)
    split_of = {s.path: name for name, samples in data.splits.items() for s in samples}
    assert split_of[copy] == "test" and split_of[original] in ("train", "val")
    (line,) = [line for line in caplog.text.splitlines() if str(copy) in line]
    assert f"{original} ({split_of[original]})" in line and f"{copy} (test)" in line
    assert LEAK_FIX in caplog.text
    assert caplog.text.count("(test)") == 1  # the other images are distinct
