"""Grad-CAM: heat map, overlay PNG, label choice, errors, a known answer and the CLI."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pictag.cli import main
from pictag.data.images import ImageError
from pictag.data.schema import Head
from pictag.data.transforms import Preprocess
from pictag.evaluation.predictor import Predictor
from pictag.models.classifier import Classifier
from pictag.serving.explain import explain, grad_cam, overlay_png

COLOURS = ("red", "green", "blue")
SIZE = 16  # network input side of the tiny run (tests/serving/conftest.py: tiny_run)


@pytest.fixture(scope="module")
def predictor(tiny_run: Path) -> Predictor:
    return Predictor.from_run(tiny_run, "cpu")


@pytest.fixture(scope="module")
def image_path(tiny_run: Path) -> Path:
    """A new 30x24 image, so the centre crop and resize really happen."""
    path = tiny_run.parent / "query.png"
    pixels = np.random.default_rng(99).integers(0, 60, (24, 30, 3), dtype=np.uint8)
    pixels[..., 1] += 180
    Image.fromarray(pixels).save(path)
    return path


def test_heatmap_is_input_sized_in_unit_range(predictor: Predictor, image_path: Path) -> None:
    heat, png = grad_cam(predictor, image_path, "colour")
    assert heat.shape == (SIZE, SIZE)
    assert heat.dtype == np.float32
    assert heat.min() >= 0.0
    assert heat.max() == pytest.approx(1.0)  # normalised to its peak
    assert heat.std() > 0  # a map, not a constant
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_png_decodes_with_caption(predictor: Predictor, image_path: Path) -> None:
    result = explain(predictor, image_path, "colour", "green")
    picture = Image.open(io.BytesIO(result.png))
    assert picture.format == "PNG"
    assert picture.width >= 100 and picture.height > picture.width  # caption strip on top
    assert picture.text["Description"] == f"colour: green ({result.probability:.1%})"
    assert result.image.shape == (SIZE, SIZE, 3)
    assert result.image.dtype == np.uint8


def test_long_captions_wrap_into_a_taller_strip() -> None:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    heat = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    short = Image.open(io.BytesIO(overlay_png(image, heat, "h: a (50.0%)")))
    caption = "h: " + "seashore, coast, seacoast, sea-coast, " * 3 + "($5 note) (50.0%)"
    long = Image.open(io.BytesIO(overlay_png(image, heat, caption)))
    assert long.width == short.width
    assert long.height > short.height
    assert long.text["Description"] == caption


@pytest.mark.parametrize("head", ["colour", "tags"])
def test_default_label_is_the_most_probable(
    predictor: Predictor, image_path: Path, head: str
) -> None:
    scores = predictor.predict(image_path)[0].heads[head].scores
    best = max(scores, key=scores.__getitem__)
    result = explain(predictor, image_path, head)
    assert result.label == best
    assert result.probability == pytest.approx(scores[best], abs=1e-5)


def test_each_label_can_be_explained(predictor: Predictor, image_path: Path) -> None:
    for head, labels in (("tags", ("warm", "leafy", "natural", "cool")), ("colour", COLOURS)):
        scores = predictor.predict(image_path)[0].heads[head].scores
        maps = {}
        for label in labels:
            result = explain(predictor, image_path, head, label)
            assert result.label == label
            assert result.probability == pytest.approx(scores[label], abs=1e-5)
            maps[label] = result.heatmap
    # the gradients of different labels weigh the channels differently
    assert not np.allclose(maps["red"], maps["blue"])


def test_image_inputs_agree(predictor: Predictor, image_path: Path, tiny_run: Path) -> None:
    from_path, _ = grad_cam(predictor, image_path, "colour", "red")
    from_bytes, _ = grad_cam(predictor, image_path.read_bytes(), "colour", "red")
    with Image.open(image_path) as opened:
        from_pil, _ = grad_cam(predictor, opened.copy(), "colour", "red")
    from_run_dir, _ = grad_cam(tiny_run, image_path, "colour", "red")
    np.testing.assert_allclose(from_bytes, from_path, atol=1e-6)
    np.testing.assert_allclose(from_pil, from_path, atol=1e-6)
    np.testing.assert_allclose(from_run_dir, from_path, atol=1e-5)


def test_unknown_head_or_label_names_the_valid_ones(predictor: Predictor, image_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'shape'.*colour, tags"):
        grad_cam(predictor, image_path, "shape")
    with pytest.raises(ValueError, match=r"no label 'purple'.*blue, green, red"):
        grad_cam(predictor, image_path, "colour", "purple")


def test_bad_image_raises_image_error(predictor: Predictor) -> None:
    with pytest.raises(ImageError):
        grad_cam(predictor, b"not an image at all", "colour")


def test_backbone_without_feature_map_is_refused(image_path: Path) -> None:
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    backbone.num_features = 4
    pre = Preprocess((3, 8, 8), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0)
    model = Classifier(backbone, {"colour": 3})
    predictor = Predictor(model, {"colour": Head("colour", "multiclass", COLOURS)}, pre)
    with pytest.raises(ValueError, match="forward_features"):
        grad_cam(predictor, image_path, "colour")


class HalvesBackbone(nn.Module):
    """Channel 0 sees only the left half of the image, channel 1 only the right half."""

    num_features = 2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        energy = nn.functional.avg_pool2d(x.abs().mean(1, keepdim=True), 4) + 0.1  # [B,1,8,8]
        left = torch.zeros_like(energy)
        left[..., : energy.shape[-1] // 2] = 1.0
        return torch.cat([energy * left, energy * (1 - left)], dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def halves_predictor(sign: float) -> Predictor:
    """Head ``side``: logit 'left' = sign * mean of channel 0, 'right' = sign * channel 1."""
    model = Classifier(HalvesBackbone(), {"side": 2})
    with torch.no_grad():
        linear = model.heads["side"][-1]
        linear.weight.copy_(sign * torch.eye(2))
        linear.bias.zero_()
    pre = Preprocess((3, 32, 32), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0)
    return Predictor(model, {"side": Head("side", "multiclass", ("left", "right"))}, pre)


def noise_image(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_heat_lies_where_the_evidence_is() -> None:
    """A hand-made model whose 'left' logit depends only on the image's left half (and 'right'
    on the right half): Grad-CAM must put each label's heat on its own half."""
    predictor = halves_predictor(1.0)
    left, _ = grad_cam(predictor, noise_image(), "side", "left")
    right, _ = grad_cam(predictor, noise_image(), "side", "right")
    assert left[:, :16].sum() / left.sum() > 0.95
    assert right[:, 16:].sum() / right.sum() > 0.95


def test_no_positive_evidence_gives_a_zero_map() -> None:
    # Every feature lowers the label's logit, so the ReLU leaves nothing: zeros, not NaN.
    heat, png = grad_cam(halves_predictor(-1.0), noise_image(), "side", "left")
    assert np.array_equal(heat, np.zeros((32, 32), dtype=np.float32))
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_cli_writes_the_png(
    tiny_run: Path, image_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "maps" / "green.png"
    args = ["explain", str(tiny_run), str(image_path), "--head", "colour", "--label", "green"]
    assert main([*args, "--out", str(out), "--device", "cpu"]) == 0
    assert Image.open(out).text["Description"].startswith("colour: green (")
    assert str(out) in capsys.readouterr().out


def test_cli_default_output_and_errors(
    tiny_run: Path,
    image_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["explain", str(tiny_run), str(image_path), "--device", "cpu"]
    assert main([*args, "--head", "tags", "--label", "leafy"]) == 0
    assert (tmp_path / "query.gradcam-tags-leafy.png").is_file()
    assert main([*args, "--head", "shape"]) == 2
    assert "unknown head 'shape'" in capsys.readouterr().err
