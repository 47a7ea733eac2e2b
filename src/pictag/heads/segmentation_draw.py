"""Colours of segmentation classes, and drawing a decided mask on the image (``pictag predict
--show``): the classes overlaid half-transparent, their shares beside the image.

Class 0 (usually the background) is left transparent so the photo shows through; the other
classes take a fixed palette, the same in the PNGs, the report and the server's page.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pictag.heads.drawing import LINE

COLORS = (
    (230, 25, 75), (60, 180, 75), (67, 99, 216), (245, 130, 49), (145, 30, 180),
    (66, 212, 244), (240, 50, 230), (191, 239, 69), (255, 225, 25), (70, 153, 144),
)  # fmt: skip
ALPHA = 140  # of 255: the overlay's opacity
SHOWN_SHARES = 6


def colour(index: int) -> tuple[int, int, int]:
    """The RGB colour of class ``index`` (class 0 is drawn grey where it is drawn at all)."""
    return (128, 128, 128) if index == 0 else COLORS[(index - 1) % len(COLORS)]


def palette(num_classes: int) -> list[int]:
    """A PNG palette (flat RGB) for class indices ``0..num_classes-1``."""
    return [v for i in range(num_classes) for v in colour(i)]


def colour_mask(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """RGBA ``[h, w, 4]`` of a class map: class 0 and ignored pixels transparent."""
    table = np.zeros((256, 4), dtype=np.uint8)
    for index in range(1, min(num_classes, 255)):
        table[index] = (*colour(index), ALPHA)
    return table[np.asarray(classes, dtype=np.uint8)]


def decode_png(text: str) -> np.ndarray:
    """A base64 class-index PNG (a prediction's ``mask.png``) as a uint8 array."""
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return np.asarray(image, dtype=np.uint8)


def draw_mask(
    fig: Any,
    image_axes: Any,
    title: str,
    labels: Sequence[str],
    scores: Mapping[str, float],
    top: float,
    mask: Mapping[str, Any] | None = None,
) -> float:
    """Overlay the decided classes on ``image_axes`` (whose data coordinates are the original
    image's pixels) and list the shares beside the image; return where the next head starts."""
    classes = list(mask.get("classes", [])) if mask else []
    if mask and mask.get("png"):
        pixels = decode_png(mask["png"])
        height, width = pixels.shape
        image_axes.imshow(colour_mask(pixels, len(classes)), extent=(0, width, height, 0))
    height = fig.get_figheight()
    fig.text(0.52, top / height, title, fontsize=10, weight="bold")
    for row, (label, share) in enumerate(list(scores.items())[:SHOWN_SHARES], start=1):
        index = classes.index(label) if label in classes else 0
        rgb = tuple(v / 255 for v in colour(index))
        fig.text(0.54, (top - row * LINE) / height, f"■ {label} {share:.1%}", color=rgb,
                 fontsize=9)  # fmt: skip
    return top - (2 + min(len(scores), SHOWN_SHARES)) * LINE
