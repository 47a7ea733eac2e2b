"""A segmentation run exported to ONNX: a consumer with only onnxruntime, numpy and PIL,
following the file's own metadata, decides the class map that `pictag predict` gives, at the
image's own size; and pictag's ONNX Runtime and OpenVINO backends decide what eager PyTorch
decides."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pictag.cli import main

SIZE = 64
# Larger than the network input and not square, as photos are: the consumer resizes the whole
# image down to 64x64 and the class map back up to 96x72.
WIDTH, HEIGHT = 96, 72
N_IMAGES = 24
COMPARED = 8  # images compared pixel by pixel
ARGS = [
    "--set", "heads.seg.kind=segmentation",
    "--set", "heads.seg.labels=[background, red, blue]",
    "--set", "model.backbone=test_efficientnet",
    "--set", "model.pretrained=none",
    "--set", f"model.image_size={SIZE}",
    "--set", "train.epochs=2",
    "--set", "train.lr=0.003",
    "--set", "train.batch_size=8",
    "--set", "train.budget=off",
]  # fmt: skip
# Pixels on which two ways of computing the same decision may differ. Both take each pixel's
# most probable class; where two classes meet, their probabilities cross, and a pixel there can
# be a near tie that a grey level of resampling (Pillow's one bicubic resize against pictag's
# decode-then-resize) or float rounding (another runtime) tips either way. So a few pixels may
# differ, and only at the edges between the classes pictag decided.
MIN_EQUAL = 0.995


def _write(root: Path) -> tuple[Path, Path]:
    """``root/images`` with a red (class 1) and/or a blue (class 2) rectangle on grey, and
    ``root/masks`` with their class-index masks."""
    rng = np.random.default_rng(0)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for i in range(N_IMAGES):
        pixels = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
        classes = np.zeros((HEIGHT, WIDTH), np.uint8)
        present = [rng.random() < 0.8, rng.random() < 0.8]
        present[int(rng.integers(2))] |= not any(present)
        for cls, colour, left, shown in ((1, (230, 30, 30), 0, present[0]),
                                         (2, (30, 30, 230), 48, present[1])):  # fmt: skip
            if shown:
                w, h = int(rng.integers(16, 40)), int(rng.integers(16, 40))
                x, y = left + int(rng.integers(0, 48 - w)), int(rng.integers(0, HEIGHT - h))
                pixels[y : y + h, x : x + w] = colour
                classes[y : y + h, x : x + w] = cls
        Image.fromarray(pixels).save(images / f"{i:03d}.png")
        Image.fromarray(classes, "L").save(masks / f"{i:03d}.png")
    return images, masks


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """A trained and exported segmentation run, and the images to compare on."""
    root = tmp_path_factory.mktemp("segmentation")
    images, masks = _write(root)
    run = root / "run"
    train = ["train", "--images", str(images), "--out", str(run), *ARGS]
    assert main([*train, "--set", f"heads.seg.masks={masks}"]) == 0
    assert main(["export", str(run)]) == 0
    return sorted(images.glob("*.png"))[:COMPARED], run


def _bilinear(probs: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[C, h, w]`` resized to ``[C, height, width]``: bilinear between pixel centres, edges
    clamped (what most libraries call half-pixel or ``align_corners=False``)."""

    def axis(size: int, source: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        where = np.maximum((np.arange(size) + 0.5) * source / size - 0.5, 0.0)
        low = np.minimum(np.floor(where).astype(np.int64), source - 1)
        return low, np.minimum(low + 1, source - 1), (where - low).astype(np.float32)

    top, bottom, down = axis(height, probs.shape[1])
    left, right, across = axis(width, probs.shape[2])
    rows = probs[:, top] * (1 - down)[:, None] + probs[:, bottom] * down[:, None]
    return rows[:, :, left] * (1 - across) + rows[:, :, right] * across


def _consume(onnx_path: Path, image_path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """The class map of one image at its own size, from model.onnx with onnxruntime, numpy
    and PIL only, as its metadata says; also the raw output and the head's metadata."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["pictag"])
    pre, head = meta["preprocess"], meta["heads"][0]
    picture = Image.open(image_path).convert("RGB")
    width, height = picture.size
    h, w = pre["resize_to"]  # the whole image, aspect ratio not kept
    resized = picture.resize((w, h), Image.Resampling.BICUBIC)
    array = (np.asarray(resized, np.float32) / 255 - pre["mean"]) / pre["std"]
    feed = {meta["input"]["name"]: array.transpose(2, 0, 1)[None].astype(np.float32)}
    (probs,) = session.run([head["output"]], feed)
    # The head's `decision`: resize the probabilities to the image (bilinear), then argmax.
    return _bilinear(probs[0], height, width).argmax(axis=0), probs[0], head


def _png(entry: dict) -> np.ndarray:
    """The class indices of a prediction's ``mask.png``."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["mask"]["png"]))))


def _edges(classes: np.ndarray) -> np.ndarray:
    """Pixels with a pixel of another class among their 8 neighbours."""
    padded = np.pad(classes, 1, mode="edge")
    edge = np.zeros(classes.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            shifted = padded[dy : dy + classes.shape[0], dx : dx + classes.shape[1]]
            edge |= shifted != classes
    return edge


def _assert_same_decisions(ours: list[np.ndarray], theirs: list[np.ndarray], what: str) -> None:
    """Nearly every pixel equal, and those that differ on the edges of ``ours``' classes."""
    equal = total = 0
    for mine, other in zip(ours, theirs, strict=True):
        assert mine.shape == other.shape, what
        differ = mine != other
        assert not (differ & ~_edges(mine)).any(), f"{what}: a pixel away from any edge differs"
        equal += int((~differ).sum())
        total += differ.size
    assert equal / total >= MIN_EQUAL, f"{what}: {equal / total:.4f} of the pixels equal"


def test_the_export_says_how_to_decide_a_mask(exported_run):
    images, run = exported_run
    classes, probs, head = _consume(run / "model.onnx", images[0])
    assert head["kind"] == "segmentation" and head["labels"] == ["background", "red", "blue"]
    assert head["activation"] == "softmax" and "bilinear" in head["decision"]
    assert probs.shape == (3, SIZE, SIZE)  # [C, H, W] at the network input
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)  # softmax over classes
    assert classes.shape == (HEIGHT, WIDTH)


def test_an_onnx_consumer_gets_the_masks_pictag_predicts(exported_run, capsys):
    images, run = exported_run
    capsys.readouterr()
    assert main(["predict", str(run), *map(str, images), "--format", "json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert [Path(p["source"]).name for p in predicted] == [p.name for p in images]
    ours = [_png(p["heads"]["seg"]) for p in predicted]
    assert all(mask.shape == (HEIGHT, WIDTH) for mask in ours)  # the image's own size
    theirs = [_consume(run / "model.onnx", image)[0] for image in images]
    _assert_same_decisions(ours, theirs, "consumer")
    assert len({int(c) for mask in ours for c in np.unique(mask)}) > 1  # not one flat class


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino-fp32"])
def test_exported_backends_decide_the_masks_eager_pytorch_does(exported_run, backend):
    """openvino-fp32, not openvino: on CPUs with native bf16, `openvino` computes in bf16,
    whose rounding may tip more than the near ties at the edges."""
    from pictag.evaluation.predictor import Predictor

    images, run = exported_run
    eager = Predictor.from_run(run, "cpu", backend="torch")
    exported = Predictor.from_run(run, "cpu", backend=backend)
    assert (eager.backend, exported.backend) == ("torch", backend.removesuffix("-fp32"))
    ours = [eager.predict(image)[0].heads["seg"].to_dict() for image in images]
    theirs = [exported.predict(image)[0].heads["seg"].to_dict() for image in images]
    _assert_same_decisions([_png(o) for o in ours], [_png(t) for t in theirs], backend)
    for mine, other in zip(ours, theirs, strict=True):
        assert mine["scores"] == pytest.approx(other["scores"], abs=0.01)
