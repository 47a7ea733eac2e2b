"""Tests for pictag.data.transforms: Preprocess, decode_image and the train/eval presets."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pictag.config import TrainConfig
from pictag.data.transforms import (
    AUGMENTS,
    Preprocess,
    decode_image,
    eval_transform,
    normalized_batch,
    normalizer,
    train_transform,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# A small network input keeps the tests fast: base size round(32 / 0.8) = 40.
SMALL = Preprocess((3, 32, 32), MEAN, STD, crop_pct=0.8)


def _noise(height: int, width: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))


def _ramp(height: int, width: int) -> torch.Tensor:
    """Dark on the left, bright on the right: a flip shows as a reversed ramp."""
    row = torch.linspace(0, 255, width).round().to(torch.uint8)
    return row.expand(3, height, width).contiguous()


def _save(path: Path, width: int, height: int, fmt: str = "PNG") -> Path:
    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, fmt)
    return path


def test_preprocess_round_trips_through_json_and_gives_base_size() -> None:
    pre = Preprocess((3, 224, 224), MEAN, STD, "bilinear", 0.875)
    again = Preprocess.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again == pre
    assert pre.base_size == 256
    assert Preprocess((3, 200, 300), MEAN, STD, crop_pct=1.0).base_size == 300
    # Lists (from JSON or timm) become tuples so instances compare and hash.
    from_lists = Preprocess([3, 224, 224], list(MEAN), list(STD))
    assert from_lists == Preprocess((3, 224, 224), MEAN, STD)
    assert from_lists.input_size == (3, 224, 224) and isinstance(hash(from_lists), int)
    defaults = Preprocess.from_dict({"input_size": [3, 8, 8], "mean": MEAN, "std": STD})
    assert (defaults.interpolation, defaults.crop_pct) == ("bicubic", 0.875)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_size": (224, 224)},
        {"std": (0.2, 0.0, 0.2)},
        {"interpolation": "lanczos"},
        {"crop_pct": 0.0},
        {"crop_pct": 1.2},
    ],
)
def test_preprocess_rejects_bad_values(kwargs: dict) -> None:
    args = {"input_size": (3, 8, 8), "mean": MEAN, "std": STD, **kwargs}
    with pytest.raises(ValueError):
        Preprocess(**args)


def test_preprocess_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="size"):
        Preprocess.from_dict({**SMALL.to_dict(), "size": 3})


@pytest.mark.parametrize(
    ("width", "height", "shape"), [(400, 300, (3, 256, 341)), (300, 400, (3, 341, 256))]
)
def test_decode_image_resizes_shorter_side_keeping_aspect(
    tmp_path: Path, width: int, height: int, shape: tuple
) -> None:
    pre = Preprocess((3, 224, 224), MEAN, STD)  # base 256
    image = decode_image(_save(tmp_path / "a.png", width, height), pre)
    assert image.dtype == torch.uint8
    assert tuple(image.shape) == shape


def test_decode_image_reads_big_jpegs_and_file_objects(tmp_path: Path) -> None:
    # 1200x900: draft decoding halves it to 600x450, which still covers the base size of 40.
    path = _save(tmp_path / "big.jpg", 1200, 900, "JPEG")
    from_path = decode_image(path, SMALL)
    assert tuple(from_path.shape) == (3, 40, 53)
    from_file = decode_image(io.BytesIO(path.read_bytes()), SMALL)
    assert torch.equal(from_path, from_file)


def test_train_transform_gives_normalised_float_and_is_random() -> None:
    transform = train_transform(SMALL, TrainConfig(augment="light"))
    image = _noise(40, 60)
    torch.manual_seed(0)
    first, second = transform(image), transform(image)
    assert first.dtype == torch.float32 and tuple(first.shape) == (3, 32, 32)
    assert not torch.equal(first, second)
    assert image.dtype == torch.uint8  # the input (possibly a cached image) is left alone


@pytest.mark.parametrize("augment", AUGMENTS)
def test_every_augment_option_runs_with_rotation_and_jitter(augment: str) -> None:
    config = TrainConfig(augment=augment, hflip=0.5, rotate=15.0, color_jitter=0.3)
    out = train_transform(SMALL, config)(_noise(40, 48))
    assert out.dtype == torch.float32 and tuple(out.shape) == (3, 32, 32)
    assert torch.isfinite(out).all()


def test_augment_none_is_the_eval_preset() -> None:
    image = _noise(40, 52)
    out = train_transform(SMALL, TrainConfig(augment="none"))(image)
    assert torch.equal(out, eval_transform(SMALL)(image))


def test_unknown_augment_is_an_error() -> None:
    with pytest.raises(ValueError, match="augment"):
        train_transform(SMALL, TrainConfig(augment="heavy"))


def test_eval_transform_is_a_deterministic_centre_crop_and_normalise() -> None:
    image = _noise(40, 52)  # base-size image: shorter side 40
    transform = eval_transform(SMALL)
    out = transform(image)
    assert torch.equal(out, transform(image))
    crop = image[:, 4:36, 10:42].float() / 255
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(out, (crop - mean) / std)


@pytest.mark.parametrize("pre", [SMALL, Preprocess((3, 32, 32), (0.5,) * 3, (0.5,) * 3)])
def test_normalized_batch_equals_the_normalizer_of_the_stack_bit_for_bit(pre) -> None:
    # Every uint8 value in every channel, and centre crops: views that are not contiguous.
    every_value = torch.arange(256, dtype=torch.uint8).repeat(3, 4).view(3, 32, 32)
    crops = [eval_crop_view(_noise(40, 52, seed)) for seed in range(3)]
    images = [every_value, *crops]
    batch = normalized_batch(images, pre)
    expected = normalizer(pre)(torch.stack(images))
    assert batch.dtype == torch.float32 and torch.equal(batch, expected)
    # A stacked uint8 batch's rows go the same way.
    assert torch.equal(normalized_batch(torch.stack(images), pre), expected)


def test_normalized_batch_goes_the_torch_way_for_what_numpy_would_get_wrong() -> None:
    wide = torch.full((3, 32, 32), 60000, dtype=torch.uint16)  # not scaled by 1/255
    expected = normalizer(SMALL)(torch.stack([wide]))
    assert torch.equal(normalized_batch([wide], SMALL), expected)
    grey, rgb = _noise(32, 32)[:1], _noise(32, 32)
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        normalized_batch([rgb, grey], SMALL)  # not a grey image copied into three channels
    with pytest.raises(RuntimeError, match="non-empty"):
        normalized_batch([], SMALL)
    empty = torch.zeros((0, 3, 32, 32), dtype=torch.uint8)
    assert normalized_batch(empty, SMALL).shape == (0, 3, 32, 32)


def eval_crop_view(image: torch.Tensor) -> torch.Tensor:
    view = image[:, 4:36, 10:42]
    assert not view.is_contiguous()
    return view


def test_eval_transform_resizes_images_not_at_base_size() -> None:
    out = eval_transform(SMALL)(_noise(80, 120))
    assert tuple(out.shape) == (3, 32, 32)


def _flipped(out: torch.Tensor) -> bool:
    return bool(out[..., 0].mean() > out[..., -1].mean())


def test_hflip_zero_never_flips_and_one_always_flips() -> None:
    image = _ramp(40, 56)
    torch.manual_seed(0)
    never = train_transform(SMALL, TrainConfig(augment="light", hflip=0.0))
    always = train_transform(SMALL, TrainConfig(augment="light", hflip=1.0))
    assert not any(_flipped(never(image)) for _ in range(20))
    assert all(_flipped(always(image)) for _ in range(20))


def test_absurdly_elongated_images_are_refused_before_upscaling(tmp_path):
    from PIL import Image

    from pictag.data.images import ImageError
    from pictag.data.transforms import Preprocess, decode_image

    path = tmp_path / "strip.png"
    Image.new("RGB", (100_000, 1)).save(path)
    pre = Preprocess((3, 224, 224), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ImageError, match=r"strip\.png.*50:1") as info:
        decode_image(path, pre)
    assert info.value.reason == "too_elongated"
    Image.new("RGB", (400, 20)).save(tmp_path / "wide.png")  # 20:1 is still fine
    assert decode_image(tmp_path / "wide.png", pre).shape[-2] == pre.base_size


def test_hflip_default_is_off_for_digits_and_letters_and_on_for_other_labels() -> None:
    from pictag.data.transforms import hflip_for

    digits = [str(i) for i in range(10)]
    assert hflip_for({"digit": digits}) == (
        0.0, "head 'digit' has single-character labels (digits or letters)"
    )  # fmt: skip
    assert hflip_for({"animal": ["cat", "dog", "fox"], "letter": list("abc")})[0] == 0.0
    # A 0/1 binary head is no digit reader; labels such as years are not single characters.
    assert hflip_for({"sea": ["0", "1"], "year": ["2010", "2011", "2012"]}) == (0.5, None)
    assert hflip_for({"animal": ["cat", "dog", "fox"]}) == (0.5, None)
    # A segmentation head of digit classes: its background class is no reason to mirror.
    assert hflip_for({"digit_mask": ["background", *digits]})[0] == 0.0


def test_prepare_data_resolves_hflip_from_the_labels_unless_set(tmp_path) -> None:
    from pictag.config import load_config
    from pictag.data.pipeline import prepare_data

    for label in "012":
        (tmp_path / label).mkdir()
        for i in range(3):
            color = (i * 40, int(label) * 40, 0)  # distinct bytes: duplicates are errors
            Image.new("RGB", (8, 8), color).save(tmp_path / label / f"{i}.png")
    config = load_config(None, [f"data.images=[{tmp_path}]"])
    assert config.train.hflip is None
    prepare_data(config, progress=False)
    assert config.train.hflip == 0.0
    config = load_config(None, [f"data.images=[{tmp_path}]", "train.hflip=0.5"])
    prepare_data(config, progress=False)
    assert config.train.hflip == 0.5


def test_a_rotation_fills_a_masks_new_corners_with_ignore_not_a_class() -> None:
    from torchvision import tv_tensors

    from pictag.config import TrainConfig
    from pictag.data.transforms import Preprocess, train_transform
    from pictag.heads.masks import IGNORE

    pre = Preprocess((3, 32, 32), (0.5,) * 3, (0.5,) * 3, whole=True)
    transform = train_transform(pre, TrainConfig(rotate=45, hflip=0.0))
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.full((3, 40, 40), 200, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.ones((40, 40), dtype=torch.uint8))  # class 1 everywhere
    for _ in range(5):
        _, moved = transform(image, mask)
        values = set(torch.unique(moved).tolist())
        assert 0 not in values  # before the fix: the turned-in corners became class 0
        assert values <= {1, IGNORE}
