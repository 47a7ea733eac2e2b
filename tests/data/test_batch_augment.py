"""Tests for pictag.data.batch_augment: the whole-batch crop/flip/normalise preset."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2

from pictag.config import TrainConfig
from pictag.data.batch_augment import (
    CROP_RATIO,
    BatchAugment,
    batch_augment_for,
    crop_resize,
    random_resized_boxes,
)
from pictag.data.transforms import CROP_SCALE, Preprocess, eval_transform, train_transform

PRE = Preprocess((3, 12, 16), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), "bilinear", 0.8)


def _images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=generator)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(20, 25), (25, 20), (20, 20)])
def test_augment_none_is_exactly_the_eval_preset(shape):
    images = _images(5, *shape)  # shorter side 20 = PRE.base_size
    expected = torch.stack([eval_transform(PRE)(image.clone()) for image in images])
    got = BatchAugment(PRE, crop=False)(images, _gen())
    assert got.dtype == torch.float32 and got.shape == (5, 3, 12, 16)
    assert torch.equal(got, expected)


def test_boxes_stay_inside_the_image_with_the_asked_area_and_aspect():
    height, width = 30, 41
    boxes = random_resized_boxes(5000, height, width, CROP_SCALE, CROP_RATIO, _gen())
    top, left, h, w = boxes.T
    assert boxes.dtype == torch.int64
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    # Integer rounding moves the area and the aspect a little past the asked ranges.
    share = (h * w).double() / (height * width)
    assert share.min() > CROP_SCALE[0] * 0.85 and share.max() <= 1
    aspect = w.double() / h
    assert aspect.min() > CROP_RATIO[0] * 0.85 and aspect.max() < CROP_RATIO[1] * 1.15
    # Every position is reachable: crops start at both edges.
    assert top.min() == 0 and left.min() == 0 and (left + w).max() == width


def test_boxes_follow_torchvisions_distribution():
    height, width, n = 32, 48, 6000
    ours = random_resized_boxes(n, height, width, CROP_SCALE, CROP_RATIO, _gen(1)).double()
    torch.manual_seed(1)
    image = torch.zeros(3, height, width)
    theirs = torch.tensor(
        [
            v2.RandomResizedCrop.get_params(image, list(CROP_SCALE), list(CROP_RATIO))
            for _ in range(n)
        ]
    ).double()
    for column, name in enumerate(("top", "left", "height", "width")):
        a, b = ours[:, column], theirs[:, column]
        spread = math.sqrt((a.var() + b.var()) / n)  # standard error of the difference
        assert abs(a.mean() - b.mean()) < 5 * spread, name
        assert abs(a.std() - b.std()) < 0.1 * b.std(), name


def test_boxes_fall_back_to_torchvisions_centre_crop_when_no_try_fits():
    # A 4 x 200 strip: no crop of 90-100 % of its area fits at an aspect of at most 4:3.
    boxes = random_resized_boxes(3, 4, 200, (0.9, 1.0), CROP_RATIO, _gen())
    expected = v2.RandomResizedCrop.get_params(torch.zeros(3, 4, 200), [0.9, 1.0], list(CROP_RATIO))
    assert boxes.tolist() == [list(expected)] * 3


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_a_crop_of_the_output_size_is_exactly_that_part_of_the_image(mode):
    images = _images(2, 20, 24)
    boxes = torch.tensor([[0, 0, 12, 16], [5, 7, 12, 16]])
    out = crop_resize(images, boxes, (12, 16), torch.tensor([False, False]), mode)
    expected = torch.stack([images[0, :, 0:12, 0:16], images[1, :, 5:17, 7:23]]).float()
    assert torch.allclose(out, expected, atol=1e-3)


def test_crops_read_only_inside_their_box():
    # Left half black, right half white: a box in the right half must come out white, though
    # a crop smaller than the output puts sampling points within half a pixel of its edge.
    images = torch.zeros(1, 3, 20, 40, dtype=torch.uint8)
    images[..., 20:] = 255
    for mode in ("bilinear", "nearest"):
        out = crop_resize(
            images, torch.tensor([[3, 20, 9, 13]]), (16, 16), torch.tensor([True]), mode
        )
        assert (out > 254.99).all(), mode  # float rounding of the grid, no black pixel
    # Bicubic's outer taps reach one pixel past the box (real pixels, never padding).
    out = crop_resize(
        images, torch.tensor([[3, 21, 9, 13]]), (16, 16), torch.tensor([True]), "bicubic"
    )
    assert (out > 254.99).all()
    # And the box really is where it is read: a box across the edge sees both halves.
    out = crop_resize(images, torch.tensor([[0, 14, 20, 12]]), (16, 16), torch.tensor([False]))
    assert out[..., 0].max() == 0 and out[..., -1].min() == 255


def test_flip_mirrors_the_crop_exactly():
    images = _images(3, 20, 24)
    boxes = torch.tensor([[1, 2, 15, 18], [0, 0, 20, 24], [4, 3, 9, 11]])
    plain = crop_resize(images, boxes, (12, 16), torch.tensor([False] * 3))
    flipped = crop_resize(images, boxes, (12, 16), torch.tensor([True, False, True]))
    assert torch.equal(flipped[0], plain[0].flip(-1))
    assert torch.equal(flipped[1], plain[1])
    assert torch.equal(flipped[2], plain[2].flip(-1))
    assert not torch.equal(flipped[0], plain[0])


def test_light_batches_depend_only_on_the_generator():
    images = _images(8, 20, 20)
    augment = BatchAugment(PRE, hflip=0.5)
    first = augment(images, _gen(3))
    assert first.shape == (8, 3, 12, 16) and first.dtype == torch.float32
    assert torch.equal(augment(images, _gen(3)), first)
    assert not torch.equal(augment(images, _gen(4)), first)
    # Normalised as the per-sample presets: (x / 255 - mean) / std stays within its bounds.
    low = (0 - torch.tensor(PRE.mean)) / torch.tensor(PRE.std)
    high = (1 - torch.tensor(PRE.mean)) / torch.tensor(PRE.std)
    per_channel = first.transpose(0, 1).reshape(3, -1)
    assert (per_channel.min(1).values >= low - 1e-5).all()
    assert (per_channel.max(1).values <= high + 1e-5).all()


def test_hflip_probability_is_honoured():
    # A left-to-right ramp: a mirrored crop falls from left to right.
    ramp = torch.arange(40, dtype=torch.uint8).repeat(400, 3, 20, 1) * 6
    pre = Preprocess((3, 8, 8), (0.0,) * 3, (1.0,) * 3, "bilinear", 1.0)
    never = BatchAugment(pre, hflip=0.0)(ramp, _gen())
    half = BatchAugment(pre, hflip=0.5)(ramp, _gen())
    falling = lambda x: (x[:, 0, :, 0] > x[:, 0, :, -1]).all(1).float().mean()  # noqa: E731
    assert falling(never) == 0
    assert 0.4 < falling(half) < 0.6


def test_batch_augment_for_takes_only_what_it_can_do():
    assert batch_augment_for(PRE, TrainConfig(augment="none"))[0] == BatchAugment(
        PRE, crop=False, hflip=0.0
    )
    light, _ = batch_augment_for(PRE, TrainConfig(augment="light"))
    assert light == BatchAugment(PRE, crop=True, hflip=0.5)  # hflip None -> the default
    assert batch_augment_for(PRE, TrainConfig(augment="light", hflip=0.0))[0].hflip == 0.0
    for other in (
        TrainConfig(augment="randaugment"),
        TrainConfig(augment="trivialaugment"),
        TrainConfig(augment="light", rotate=10),
        TrainConfig(augment="light", color_jitter=0.2),
    ):
        augment, why = batch_augment_for(PRE, other)
        assert augment is None and why


def test_crop_scale_sets_the_smallest_crop_of_both_light_presets():
    config = TrainConfig(augment="light", crop_scale=0.6)
    batch, how = batch_augment_for(PRE, config)
    assert batch.scale == (0.6, 1.0) and "crop 0.6-1" in how
    per_sample = next(
        step for step in train_transform(PRE, config).transforms if hasattr(step, "scale")
    )
    assert tuple(per_sample.scale) == (0.6, 1.0)
    boxes = random_resized_boxes(2000, 64, 64, batch.scale, CROP_RATIO, _gen())
    assert (boxes[:, 2] * boxes[:, 3]).min() >= 0.6 * 64 * 64 * 0.9  # integer rounding
    assert batch_augment_for(PRE, TrainConfig(augment="light"))[0].scale == CROP_SCALE
