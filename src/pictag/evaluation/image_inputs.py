"""The kinds of image input :class:`~pictag.evaluation.predictor.Predictor` accepts -- paths,
PIL images, encoded bytes, binary files -- their names in predictions, and how each reaches
``decode_image``."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import BinaryIO

from PIL import Image, ImageOps

from pictag.data.images import ImageError, ImageSource

ImageInput = str | os.PathLike | Image.Image | bytes | bytearray | BinaryIO


def as_source(image: ImageInput, name: str) -> ImageSource:
    """What ``decode_image`` reads: paths and files as they are, bytes in a buffer, a PIL image
    saved to one (see :func:`_pil_file`).

    Raises:
        ImageError: A PIL image in a mode that cannot be saved.
    """
    if isinstance(image, Image.Image):
        return _pil_file(image, name)
    if isinstance(image, (bytes, bytearray)):
        return io.BytesIO(image)
    return image


def as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image or a list or tuple of them, as a list."""
    # str and bytes are sequences too, but each is one image.
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]  # type: ignore[list-item]


def source_name(index: int, image: ImageInput) -> str:
    """The file path, or a name such as ``<bytes[2]>`` for in-memory input.

    Raises:
        TypeError: ``image`` is none of the accepted kinds.
    """
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, Image.Image):
        return getattr(image, "filename", "") or f"<PIL image[{index}]>"
    if isinstance(image, (bytes, bytearray)):
        return f"<bytes[{index}]>"
    name = getattr(image, "name", None)
    if isinstance(name, str):
        return name
    if hasattr(image, "read"):
        return f"<file[{index}]>"
    raise TypeError(
        f"item {index}: expected a path, PIL image, bytes or a binary file, "
        f"got {type(image).__name__}"
    )


def _pil_file(image: Image.Image, name: str) -> io.BytesIO:
    """An in-memory image as an uncompressed TIFF, so it takes the same ``load_rgb`` path as a
    file (EXIF rotation, transparency over white, 16-bit and float modes scaled, size limits)."""
    # EXIF orientation would be lost on saving: apply it now, as load_rgb does for files.
    upright = ImageOps.exif_transpose(image) or image
    buffer = io.BytesIO()
    try:
        upright.save(buffer, format="TIFF")
    except (OSError, ValueError, KeyError) as err:  # a mode TIFF cannot hold
        raise ImageError(
            f"{name}: a PIL image in mode {image.mode!r} cannot be used ({err}); convert it "
            "with image.convert('RGB')",
            name,
            "unreadable",
        ) from err
    buffer.seek(0)
    return buffer
