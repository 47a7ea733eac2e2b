"""Grad-CAM: which part of an image made a head choose a label.

    heat, png = grad_cam(Predictor.from_run("runs/cars"), "car.jpg", head="brand")

Grad-CAM (Selvaraju et al., 2017) weighs each channel of the backbone's last feature map by the
spatial mean of the gradient of the label's logit with respect to it, sums the channels, keeps the
positive part and scales the result to the network input. It is written here on plain autograd
rather than taken from the ``grad-cam`` package: that package needs OpenCV, ttach and SciPy, ships
only as a source archive, and expects a model with a single tensor output, whereas pictag's model
returns a dict of heads; the method itself is a dozen lines.

The map is computed on the run's eager float32 PyTorch model (the one the Predictor holds), even
when predictions run through ONNX Runtime, since gradients need autograd.
"""

from __future__ import annotations

import io
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageOps
from torch import nn
from torch.nn import functional as nnf
from torchvision.transforms.v2 import functional as F

from pictag.data.transforms import decode_image
from pictag.evaluation.predictor import ImageInput, Predictor
from pictag.heads import get_kind
from pictag.version import __version__

ALPHA = 0.45  # heat map opacity over the image
COLORMAP = "jet"  # the usual Grad-CAM palette: blue = no evidence, red = most evidence
FIGURE_INCHES = 4.0  # longer side of the overlay picture
DPI = 100
CAPTION_LINE = 0.2  # inches per caption line (10 pt text)
CAPTION_PAD = 0.15  # inches above and below the caption
CHARS_PER_INCH = 12  # of 10 pt DejaVu Sans, on average
# PNG modes Pillow can write; other modes (CMYK, float, 32-bit int) are converted to RGB first.
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}


@dataclass
class Explanation:
    """A Grad-CAM explanation of one head's label for one image.

    Attributes:
        head: The head explained.
        label: The label explained.
        probability: The label's probability from the head's activation (softmax or sigmoid).
        heatmap: ``[H, W]`` float32 in [0, 1] at the network input size; 1 is the strongest
            evidence for the label, 0 none.
        image: ``[H, W, 3]`` uint8, the centre-cropped image the network saw.
        png: The heat map over ``image`` with a caption, as PNG bytes.
    """

    head: str
    label: str
    probability: float
    heatmap: np.ndarray
    image: np.ndarray
    png: bytes

    @property
    def caption(self) -> str:
        return caption(self.head, self.label, self.probability)


def caption(head: str, label: str, probability: float) -> str:
    """``head: label (12.3%)``, the overlay's title."""
    return f"{head}: {label} ({probability:.1%})"


def grad_cam(
    predictor: Predictor | str | os.PathLike,
    image: ImageInput,
    head: str,
    label: str | None = None,
) -> tuple[np.ndarray, bytes]:
    """Grad-CAM heat map of one head's label, and a PNG of it over the image.

    Args:
        predictor: A loaded predictor, or a run folder to load one from (on the CPU).
        image: A path, a PIL image, encoded bytes or a binary file object.
        head: The head to explain.
        label: The label to explain; by default the head's most probable one (the predicted
            class of a multiclass head, the highest-scoring tag of a multilabel head).

    Returns:
        The heat map ``[H, W]`` float32 in [0, 1] at the network input size, and PNG bytes of it
        overlaid on the centre-cropped image with a caption naming the head, the label and its
        probability.

    Raises:
        ValueError: An unknown head or label (the message lists the valid ones), or a head
            whose kind locates things (a detection head: its boxes are the explanation).
        ImageError: The image cannot be read.
    """
    result = explain(predictor, image, head, label)
    return result.heatmap, result.png


def explain(
    predictor: Predictor | str | os.PathLike,
    image: ImageInput,
    head: str,
    label: str | None = None,
) -> Explanation:
    """Like :func:`grad_cam`, returning the label, its probability and the image as well."""
    if not isinstance(predictor, Predictor):
        predictor = Predictor.from_run(predictor, "cpu")
    _check_choice(predictor, head, label)
    base = _decode(predictor, image)
    inputs = predictor.transform(base).unsqueeze(0).to(predictor.device)
    heads = predictor.heads
    logits, features = _logits_and_features(predictor.model, inputs, head)
    index = int(logits.argmax()) if label is None else heads[head].labels.index(label)
    probs = get_kind(heads[head].kind).activate(logits.detach().float().cpu()[None])[0]
    (grads,) = torch.autograd.grad(logits[index], features)
    if getattr(predictor.model.backbone, "output_fmt", "NCHW") == "NHWC":  # timm's Swin, ...
        features, grads = features.permute(0, 3, 1, 2), grads.permute(0, 3, 1, 2)
    heatmap = _cam(features.detach(), grads, predictor.preprocess.size)
    shown = F.center_crop(base, list(predictor.preprocess.size)).permute(1, 2, 0).numpy()
    chosen, probability = heads[head].labels[index], float(probs[index])
    png = overlay_png(shown, heatmap, caption(head, chosen, probability))
    return Explanation(head, chosen, probability, heatmap, shown, png)


def _check_choice(predictor: Predictor, head: str, label: str | None) -> None:
    if head not in predictor.heads:
        raise ValueError(f"unknown head {head!r}; this model's heads: {', '.join(predictor.heads)}")
    kind = predictor.heads[head].kind
    if get_kind(kind).spatial:  # its outputs are places already, not one image-level score
        raise ValueError(spatial_refusal(head, kind))
    labels = predictor.heads[head].labels
    if label is not None and label not in labels:
        raise ValueError(f"head {head!r} has no label {label!r}; its labels: {', '.join(labels)}")


def spatial_refusal(head: str, kind: str) -> str:
    """Why Grad-CAM does not explain ``head``, a head of a spatial kind (detection)."""
    return (
        f"Grad-CAM explains image-level heads; {head} is a {kind} head whose boxes show where "
        "it looked"
    )


def _decode(predictor: Predictor, image: ImageInput) -> torch.Tensor:
    """uint8 ``[3, h, w]`` at the run's base size, decoded as the Predictor decodes."""
    if isinstance(image, Image.Image):
        image = _png_file(image)
    elif isinstance(image, (bytes, bytearray)):
        image = io.BytesIO(image)
    return decode_image(image, predictor.preprocess, predictor.max_pixels)


def _png_file(image: Image.Image) -> io.BytesIO:
    # Through a file, an in-memory image gets load_rgb's handling (transparency over white,
    # 16-bit scaling, size limits); EXIF orientation would be lost on saving, so apply it now.
    upright = ImageOps.exif_transpose(image) or image
    if upright.mode not in _PNG_MODES:
        upright = upright.convert("RGB")
    buffer = io.BytesIO()
    upright.save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


def _logits_and_features(
    model: nn.Module, inputs: torch.Tensor, head: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One head's logits ``[C]`` for one image, and the feature map they were computed from."""
    backbone = getattr(model, "backbone", None)
    heads = getattr(model, "heads", None)
    if not (hasattr(backbone, "forward_features") and hasattr(backbone, "forward_head")):
        raise ValueError(
            "Grad-CAM needs a pictag Classifier whose backbone has forward_features and "
            "forward_head (timm models and small_cnn do)"
        )
    # Only the gradient at the feature map is needed: no graph through the backbone.
    with torch.no_grad():
        features = backbone.forward_features(inputs.float())
    if features.ndim != 4:
        raise ValueError(
            f"Grad-CAM needs a spatial feature map; {type(backbone).__name__} "
            f"gives shape {list(features.shape)} (a transformer's tokens?)"
        )
    features = features.float().requires_grad_(True)
    with torch.enable_grad():
        logits = heads[head](backbone.forward_head(features))[0]
    return logits, features


def _cam(features: torch.Tensor, grads: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """ReLU of the gradient-weighted channel sum, upsampled to ``size`` and scaled to [0, 1]."""
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * features).sum(dim=1, keepdim=True))
    cam = nnf.interpolate(cam, size=size, mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    # An all-zero map means no positive evidence anywhere; keep it zero rather than divide by 0.
    return (cam / peak if peak > 0 else cam).clamp(0, 1).cpu().numpy().astype(np.float32)


def overlay_png(image: np.ndarray, heatmap: np.ndarray, caption: str) -> bytes:
    """The heat map in :data:`COLORMAP` at :data:`ALPHA` over ``image``, captioned, as PNG.

    Args:
        image: ``[H, W, 3]`` uint8.
        heatmap: ``[H, W]`` in [0, 1].
        caption: Title above the picture; also stored as the PNG's ``Description`` text.
    """
    height, width = heatmap.shape
    scale = FIGURE_INCHES / max(height, width)
    # Wrap long labels (ImageNet-style synonym lists) rather than let the title run off the edge.
    lines = textwrap.wrap(caption, width=max(20, int(width * scale * CHARS_PER_INCH))) or [""]
    strip = CAPTION_PAD + CAPTION_LINE * len(lines)
    fig = Figure(figsize=(width * scale, height * scale + strip), dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, height * scale / (height * scale + strip)))
    ax.imshow(image, interpolation="bilinear")
    ax.imshow(heatmap, cmap=COLORMAP, alpha=ALPHA, vmin=0.0, vmax=1.0, interpolation="bilinear")
    ax.set_axis_off()
    # matplotlib reads $...$ as mathtext; a label such as "$5 note" must print as written.
    title = "\n".join(lines).replace("$", r"\$")
    fig.suptitle(title, y=1 - CAPTION_PAD / 2 / (height * scale + strip), va="top", fontsize=10)
    buffer = io.BytesIO()
    metadata = {"Description": caption, "Software": f"pictag {__version__}"}
    fig.savefig(buffer, format="png", dpi=DPI, metadata=metadata)
    return buffer.getvalue()


def default_output(image: str | os.PathLike, head: str, label: str) -> Path:
    """``<image stem>.gradcam-<head>-<label>.png`` in the working folder."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{head}-{label}")
    return Path(f"{Path(image).stem}.gradcam-{safe}.png")
