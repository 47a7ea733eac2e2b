"""Tests for pictag.data.cache: decoded-once images equal direct decoding, in order."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pictag.data.cache import ImageCache, estimate_cache_bytes
from pictag.data.dataset import ImageDataset
from pictag.data.images import ImageError
from pictag.data.schema import Head, Sample
from pictag.data.transforms import Preprocess, decode_image, eval_transform

PRE = Preprocess((3, 16, 16), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_pct=0.8)  # base 20


def _image(path: Path, width: int, height: int, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _mixed(tmp_path: Path) -> list[Path]:
    """Landscape, portrait and square images (PNG and JPEG), so the cache keeps a list."""
    sizes = [(40, 30), (30, 40), (25, 25), (64, 48), (21, 50)]
    paths = [_image(tmp_path / f"{i}.png", w, h, i) for i, (w, h) in enumerate(sizes)]
    return [*paths, _image(tmp_path / "photo.jpg", 120, 90, 9)]


def _assert_same_as_decoding(cache: ImageCache, paths: list[Path]) -> None:
    assert len(cache) == len(paths)
    for i, path in enumerate(paths):
        expected = decode_image(path, PRE)
        assert cache[i].dtype == torch.uint8
        assert torch.equal(cache[i], expected), path


def test_cache_of_mixed_shapes_equals_direct_decoding_in_order(tmp_path: Path) -> None:
    paths = _mixed(tmp_path)
    cache = ImageCache.build(paths, PRE, workers=3, progress=False)
    _assert_same_as_decoding(cache, paths)
    assert cache.nbytes == sum(decode_image(p, PRE).numel() for p in paths)
    assert cache.base_size == PRE.base_size


def test_cache_of_one_shape_is_packed_and_equals_direct_decoding(tmp_path: Path) -> None:
    paths = [_image(tmp_path / f"{i}.png", 32, 24, i) for i in range(4)]
    cache = ImageCache.build(paths, PRE, workers=2, progress=False)
    _assert_same_as_decoding(cache, paths)
    assert cache.nbytes == 4 * 3 * 20 * 26
    assert torch.equal(cache[-1], cache[3])
    with pytest.raises(IndexError):
        cache[4]


def test_changing_a_returned_image_leaves_the_cache_alone(tmp_path: Path) -> None:
    paths = [_image(tmp_path / f"{i}.png", 32, 24, i) for i in range(2)]
    cache = ImageCache.build(paths, PRE, progress=False)
    before = cache[0].clone()
    cache[0].zero_()
    assert torch.equal(cache[0], before)


def test_dataset_with_cache_returns_the_same_eval_items(tmp_path: Path) -> None:
    paths = _mixed(tmp_path)
    head = Head("kind", "multiclass", ("a", "b"))
    samples = [Sample(p, {"kind": "ab"[i % 2]}) for i, p in enumerate(paths)]
    cache = ImageCache.build(paths, PRE, progress=False)
    plain = ImageDataset(samples, {"kind": head}, PRE, eval_transform(PRE))
    cached = ImageDataset(samples, {"kind": head}, PRE, eval_transform(PRE), cache)
    for i in range(len(samples)):
        (image_a, target_a), (image_b, target_b) = plain[i], cached[i]
        assert torch.equal(image_a, image_b)
        assert torch.equal(target_a["kind"], target_b["kind"])


def test_undecodable_file_raises_image_error_naming_it(tmp_path: Path) -> None:
    good = _image(tmp_path / "good.png", 20, 20, 0)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a picture at all")
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        ImageCache.build([good, bad, good], PRE, progress=False)


def test_progress_bar_is_shown_only_when_asked(tmp_path: Path, capsys) -> None:
    paths = [_image(tmp_path / "a.png", 20, 20, 0)]
    ImageCache.build(paths, PRE, progress=False)
    assert "decoding images" not in capsys.readouterr().err
    ImageCache.build(paths, PRE, progress=True)
    assert "decoding images" in capsys.readouterr().err


def test_empty_cache() -> None:
    cache = ImageCache.build([], PRE, progress=False)
    assert len(cache) == 0 and cache.nbytes == 0


def test_estimate_matches_4_3_photos_and_scales_with_count(tmp_path: Path) -> None:
    pre = Preprocess((3, 224, 224), (0.5,) * 3, (0.5,) * 3)  # base 256
    assert estimate_cache_bytes(1, pre) == 3 * 256 * 341
    assert estimate_cache_bytes(0, pre) == 0
    assert estimate_cache_bytes(1000, pre) == 1000 * estimate_cache_bytes(1, pre)
    paths = [_image(tmp_path / f"{i}.png", 400, 300, i) for i in range(2)]
    assert estimate_cache_bytes(2, pre) == ImageCache.build(paths, pre, progress=False).nbytes
