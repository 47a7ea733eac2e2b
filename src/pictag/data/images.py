"""The one place pictag opens image files.

Every image -- grey, palette, transparent, CMYK, 16-bit, float, EXIF-rotated -- comes out of
`load_rgb` as upright 8-bit RGB, and every file that cannot be used raises `ImageError` naming the
file, the kind of problem and a fix, instead of a bare Pillow traceback halfway through an epoch.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default limit

ImageSource = str | os.PathLike | BinaryIO

_WHITE = (255, 255, 255)
_HEAD_BYTES = 64
# Signatures of formats we expect to meet: a file that starts like one but fails to open was cut
# short (an interrupted download), which deserves a different fix than "not an image at all".
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
_HTML_STARTS = (b"<!doctype", b"<html")
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


class ImageError(ValueError):
    """An image file that cannot be used; str() names the file and says what to do.

    Attributes:
        path: The file's path (or the name of the file-like object).
        reason: Short machine-readable kind: 'missing', 'empty', 'not_an_image', 'html',
            'truncated', 'too_large' or 'unreadable'.
    """

    def __init__(self, message: str, path: str = "", reason: str = "unreadable") -> None:
        # Defaults keep `ImageError(message)` valid, as pickling (DataLoader workers) needs.
        super().__init__(message)
        self.path = path
        self.reason = reason


def probe_image(path: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Check a file fully decodes (and is not over the pixel limit).

    Args:
        path: Image path or binary file-like object.
        max_pixels: Largest allowed width * height, checked from the header before decoding.

    Returns:
        (width, height) after EXIF orientation, i.e. the size `load_rgb` would return.

    Raises:
        ImageError: The file is missing, empty, not an image, truncated or too large.
    """
    with _decoded(path, max_pixels, min_size=None) as (im, _):
        width, height = im.size
        # Orientations 5-8 include a 90-degree turn, which swaps the sides.
        if _orientation(im) in (5, 6, 7, 8):
            width, height = height, width
        return width, height


def load_rgb(
    path_or_file: ImageSource,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: int | None = None,
) -> Image.Image:
    """:func:`load_rgb_sized` without the size."""
    return load_rgb_sized(path_or_file, max_pixels, min_size)[0]


def load_rgb_sized(
    path_or_file: ImageSource,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: int | None = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """Open any image as correctly oriented 8-bit RGB.

    Args:
        path_or_file: Image path or binary file-like object (e.g. an uploaded file).
        max_pixels: Largest allowed width * height, checked from the header before decoding.
        min_size: If given and the file is a JPEG, decode at a reduced size (powers of two) whose
            shorter side is still at least `min_size`; much faster for large photos.

    Returns:
        An RGB image (transparent areas composited over white) and the upright file's full
        ``(width, height)``, which a reduced-size decode does not show (boxes are given in it).

    Raises:
        ImageError: The file is missing, empty, not an image, truncated or too large.
    """
    if min_size is not None and min_size < 1:
        raise ValueError(f"min_size must be a positive number of pixels, got {min_size}")
    with _decoded(path_or_file, max_pixels, min_size) as (im, name):
        full = im.info.get(_FULL_SIZE, im.size)
        im = _upright(im)
        if im.size[0] != im.size[1] and (im.size[0] > im.size[1]) != (full[0] > full[1]):
            full = (full[1], full[0])  # EXIF turned the image a quarter
        try:
            return _to_rgb(im), (int(full[0]), int(full[1]))
        except ValueError as err:  # modes Pillow cannot convert, e.g. LAB TIFFs
            raise ImageError(
                f"{name} has pixel mode {im.mode!r} that cannot be converted to RGB ({err}); "
                "re-save it as an RGB JPEG or PNG, or remove the row",
                name,
                "unreadable",
            ) from err


@contextmanager
def _decoded(
    source: ImageSource, max_pixels: int, min_size: int | None
) -> Iterator[tuple[Image.Image, str]]:
    """Yield the opened, fully decoded image and its name; the file is closed afterwards."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    name, fp, head = _sniff(source)
    # PIL warns (or raises) against its global limit; ours is checked below from the header, so
    # silence the warning here instead of mutating Image.MAX_IMAGE_PIXELS for everyone.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(fp)
        except Image.DecompressionBombError as err:
            raise _pil_bomb_error(name, err) from err
        except UnidentifiedImageError as err:
            if head.startswith(_MAGIC):
                raise _truncated_error(name, err) from err
            raise ImageError(
                # Never the file's bytes: a label file could point at a secret.
                f"{name} is not an image Pillow can read; convert it to JPEG or PNG, or "
                "remove the row",
                name,
                "not_an_image",
            ) from err
        except _DECODE_ERRORS as err:
            raise _truncated_error(name, err) from err
        with im:
            _check_pixels(im, name, max_pixels)
            if min_size is not None and im.format == "JPEG":
                # A square request keeps both sides >= min_size, so it holds whichever way EXIF
                # later turns the image.
                im.info[_FULL_SIZE] = im.size
                im.draft("RGB", (min_size, min_size))
            try:
                im.load()
            except Image.DecompressionBombError as err:  # GIF/ICO frames are checked on load
                raise _pil_bomb_error(name, err) from err
            except _DECODE_ERRORS as err:
                raise _truncated_error(name, err) from err
            yield im, name


def _sniff(source: ImageSource) -> tuple[str, str | BinaryIO, bytes]:
    """Return (name, what to hand to Image.open, first bytes), rejecting missing/empty/HTML."""
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        head = _read_head(name)
        fp: str | BinaryIO = name
    else:
        name = getattr(source, "name", None)
        name = name if isinstance(name, str) else "<in-memory image>"
        fp = source if _seekable(source) else io.BytesIO(source.read())
        start = fp.tell()
        head = fp.read(_HEAD_BYTES)
        fp.seek(start)
    if not head:
        raise ImageError(
            f"{name} is empty (0 bytes); re-download or re-export it, or remove the row",
            name,
            "empty",
        )
    if head.lstrip(b"\xef\xbb\xbf \t\r\n\f\v").lower().startswith(_HTML_STARTS):
        raise ImageError(
            f"{name} is an HTML page saved with an image extension (a failed download?); "
            "re-download it or remove the row",
            name,
            "html",
        )
    return name, fp, head


def _read_head(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_HEAD_BYTES)
    except FileNotFoundError as err:
        raise ImageError(
            f"{path} does not exist; fix the path or remove the row", path, "missing"
        ) from err
    except OSError as err:  # a directory, no permission, a broken network mount
        raise ImageError(
            f"{path} cannot be read ({err.strerror or err}); check it is a regular file you may "
            "read, or remove the row",
            path,
            "unreadable",
        ) from err


def _seekable(fileobj: BinaryIO) -> bool:
    seekable = getattr(fileobj, "seekable", None)
    return bool(seekable and seekable())


def _check_pixels(im: Image.Image, name: str, max_pixels: int) -> None:
    width, height = im.size
    if width * height > max_pixels:
        raise ImageError(
            f"{name} is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (a guard against decompression bombs); downscale the file, raise "
            "max_pixels if you trust it, or remove the row",
            name,
            "too_large",
        )


def _pil_bomb_error(name: str, err: Exception) -> ImageError:
    return ImageError(
        f"{name} has more pixels than Pillow will open ({err}); downscale the file or remove "
        "the row",
        name,
        "too_large",
    )


def _truncated_error(name: str, err: Exception) -> ImageError:
    return ImageError(
        f"{name} is truncated or corrupt (decoding failed: {err}); re-download or re-save it, "
        "or remove the row",
        name,
        "truncated",
    )


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except (*_DECODE_ERRORS, TypeError):  # unparsable EXIF: treat as upright
        return 1


_FULL_SIZE = "pictag_full_size"  # info key: the size before a reduced-size JPEG decode


def _upright(im: Image.Image) -> Image.Image:
    if _orientation(im) == 1:
        return im
    try:
        return ImageOps.exif_transpose(im)
    except (*_DECODE_ERRORS, TypeError):  # a corrupt EXIF block should not lose the photo
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping or dropping alpha to black."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        # Pillow's convert() clips these to 0..255, turning most 16-bit images white.
        return Image.fromarray(_grey_to_uint8(np.asarray(im), im.mode)).convert("RGB")
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*_WHITE, 255)), rgba).convert(
            "RGB"
        )
    return im.convert("RGB")


def _has_alpha(im: Image.Image) -> bool:
    # The same test as Pillow's Image.has_transparency_data (added in Pillow 10.1).
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def _grey_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale one-channel 16-bit, 32-bit integer or float pixels linearly to 0..255."""
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "F" and low >= 0 and high <= 1:
        low, high = 0.0, 1.0  # the usual convention for float images
    elif mode == "F" and low >= 0 and high <= 255:
        low, high = 0.0, 255.0  # Pillow's own convention for 'F'
    elif mode != "F" and low >= 0 and high <= 65535:
        low, high = 0.0, 65535.0  # 16-bit data, whether Pillow calls it 'I;16' or 'I'
    # Anything else has no known full scale: stretch its own range.
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip(np.rint((values - low) * scale), 0, 255).astype(np.uint8)
