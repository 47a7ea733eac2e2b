"""Tests for pictag.data.images: every bad-file kind and every pixel mode, on tiny files."""

import io
import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pictag.data.images import DEFAULT_MAX_PIXELS, ImageError, load_rgb, probe_image


def _save(im: Image.Image, path: Path, **kwargs) -> Path:
    im.save(path, **kwargs)
    return path


def _noise_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A valid 1x1 PNG whose header claims width x height (a decompression bomb in miniature)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    # Bytes 16..28 are IHDR's width, height and flags; 29..32 its CRC over 'IHDR' + data.
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def _pixels(im: Image.Image) -> np.ndarray:
    assert im.mode == "RGB"
    return np.asarray(im).astype(int)


def _stored_mode(path: Path) -> str:
    with Image.open(path) as im:
        return im.mode


def _has_transparency_info(path: Path) -> bool:
    with Image.open(path) as im:
        return "transparency" in im.info


def _assert_reason(path: Path, reason: str, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_rgb(path, **kwargs)
    assert info.value.reason == reason
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    return info.value


# --- files that cannot be used --------------------------------------------------------------


def test_missing_file(tmp_path):
    _assert_reason(tmp_path / "nope.jpg", "missing")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _assert_reason(path, "empty")


@pytest.mark.parametrize(
    "text", [b"<!DOCTYPE html><html><body>404</body></html>", b" \r\n\t<HTML lang='en'>"]
)
def test_html_page_saved_as_jpg(tmp_path, text):
    path = tmp_path / "photo.jpg"
    path.write_bytes(text)
    error = _assert_reason(path, "html")
    assert "HTML page" in str(error) and "re-download" in str(error)


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"root:x:0:0:secret notes, not pixels\n" * 4)
    error = _assert_reason(path, "not_an_image")
    assert "root:x" not in str(error)  # a file's content is never printed


def test_directory_is_unreadable(tmp_path):
    path = tmp_path / "folder.jpg"
    path.mkdir()
    _assert_reason(path, "unreadable")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path, fmt):
    path = _save(_noise_rgb(64, 64), tmp_path / f"cut.{fmt.lower()}", format=fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _assert_reason(path, "truncated")
    with pytest.raises(ImageError, match="truncated"):
        probe_image(path)


def test_jpeg_cut_inside_its_header_is_truncated_not_unknown(tmp_path):
    path = _save(_noise_rgb(16, 16), tmp_path / "cut.jpg")
    path.write_bytes(path.read_bytes()[:20])
    _assert_reason(path, "truncated")


def test_too_large_for_our_limit(tmp_path):
    path = _save(Image.new("RGB", (40, 30)), tmp_path / "big.png")
    error = _assert_reason(path, "too_large", max_pixels=1000)
    assert "40x30" in str(error)
    with pytest.raises(ImageError, match="max_pixels"):
        probe_image(path, max_pixels=1000)


@pytest.mark.filterwarnings("error")
def test_bomb_over_pil_warning_limit_is_refused_from_header_without_warning(tmp_path):
    limit_before = Image.MAX_IMAGE_PIXELS
    # 100 MP is over PIL's warning limit but under its error limit; decoding the 1x1 payload
    # would fail as 'truncated', so 'too_large' proves the check ran on the header first.
    path = _png_claiming_size(tmp_path / "bomb.png", 10_000, 10_000)
    _assert_reason(path, "too_large")
    assert Image.MAX_IMAGE_PIXELS == limit_before == DEFAULT_MAX_PIXELS


@pytest.mark.filterwarnings("error")
def test_bomb_over_pil_error_limit_is_our_error(tmp_path):
    path = _png_claiming_size(tmp_path / "bomb.png", 20_000, 10_000)
    _assert_reason(path, "too_large", max_pixels=10**12)


def test_error_survives_pickling_for_dataloader_workers(tmp_path):
    error = _assert_reason(tmp_path / "gone.jpg", "missing")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


# --- every mode comes out as 8-bit RGB -------------------------------------------------------


def test_grey_l(tmp_path):
    path = _save(Image.new("L", (3, 2), 77), tmp_path / "grey.png")
    im = load_rgb(path)
    assert im.size == (3, 2)
    assert (_pixels(im) == 77).all()


def test_bilevel_1(tmp_path):
    im = Image.new("1", (2, 1), 0)
    im.putpixel((1, 0), 1)
    pixels = _pixels(load_rgb(_save(im, tmp_path / "bw.png")))
    assert pixels[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_palette_without_transparency(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([10, 20, 30, 200, 100, 50])
    im.putpixel((1, 0), 1)
    path = _save(im, tmp_path / "pal.png")
    assert _stored_mode(path) == "P"
    assert _pixels(load_rgb(path))[0].tolist() == [[10, 20, 30], [200, 100, 50]]


@pytest.mark.parametrize("suffix", ["png", "gif"])
def test_palette_with_transparency_is_white(tmp_path, suffix):
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 0, 255, 0, 0])
    im.putpixel((1, 0), 1)
    path = _save(im, tmp_path / f"pal.{suffix}", transparency=0)
    assert _has_transparency_info(path)
    assert _pixels(load_rgb(path))[0].tolist() == [[255, 255, 255], [255, 0, 0]]


def test_rgba_composites_over_white(tmp_path):
    im = Image.new("RGBA", (3, 1))
    im.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    pixels = _pixels(load_rgb(_save(im, tmp_path / "rgba.png")))[0]
    assert pixels[0].tolist() == [255, 255, 255]  # transparent -> white, not red or black
    assert pixels[1].tolist() == [0, 0, 255]
    assert np.abs(pixels[2] - 127).max() <= 1  # half-transparent black -> mid grey


def test_la_composites_over_white(tmp_path):
    im = Image.new("LA", (2, 1))
    im.putdata([(0, 0), (0, 255)])
    path = _save(im, tmp_path / "la.png")
    assert _stored_mode(path) == "LA"
    assert _pixels(load_rgb(path))[0].tolist() == [[255, 255, 255], [0, 0, 0]]


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), tmp_path / "cyan.jpg")
    assert _stored_mode(path) == "CMYK"
    pixels = _pixels(load_rgb(path))
    assert np.abs(pixels - [0, 255, 255]).max() <= 10


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert _stored_mode(path).startswith("I")
    im = load_rgb(path)
    assert im.size == (4, 1)
    assert _pixels(im)[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (_pixels(im)[0] == _pixels(im)[0, :, :1]).all()  # grey stays grey


def test_32_bit_integer_tiff_in_16_bit_range(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.int32)
    path = _save(Image.fromarray(values), tmp_path / "int.tif")
    assert _stored_mode(path) == "I"
    assert _pixels(load_rgb(path))[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.0, 0.5, 1.0], [0, 128, 255]), ([0.0, 100.0, 255.0], [0, 100, 255])],
)
def test_float_f_mode(tmp_path, values, expected):
    path = _save(Image.fromarray(np.array([values], dtype=np.float32)), tmp_path / "float.tif")
    assert _stored_mode(path) == "F"
    assert _pixels(load_rgb(path))[0, :, 1].tolist() == expected


def _exif_rotated_jpeg(path: Path, width: int, height: int, orientation: int) -> Path:
    """A grey JPEG with a red block in its stored top-left corner and an orientation tag."""
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    pixels[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(Image.fromarray(pixels), path, exif=exif, quality=95)


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    path = _exif_rotated_jpeg(tmp_path / "turned.jpg", 40, 24, orientation=6)
    im = load_rgb(path)
    assert im.size == (24, 40)
    assert probe_image(path) == (24, 40)
    pixels = _pixels(im)
    # A clockwise quarter turn moves the stored top-left corner to the top-right.
    assert np.abs(pixels[3, 20] - [255, 0, 0]).max() < 40
    assert np.abs(pixels[3, 3] - [128, 128, 128]).max() < 40


# --- reduced-size JPEG decoding, file-likes, probing -----------------------------------------


def _gradient_jpeg(path: Path, width: int, height: int, orientation: int = 1) -> Path:
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    pixels = np.repeat(np.broadcast_to(ramp, (height, width))[..., None], 3, axis=2)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(Image.fromarray(pixels), path, exif=exif)


@pytest.mark.parametrize("orientation", [1, 6])
def test_min_size_decodes_large_jpeg_smaller(tmp_path, orientation):
    path = _gradient_jpeg(tmp_path / "photo.jpg", 2000, 1500, orientation)
    im = load_rgb(path, min_size=256)
    assert 256 <= min(im.size) < 1500
    # The aspect ratio survives, turned by EXIF when asked.
    assert (im.width > im.height) == (orientation == 1)
    assert probe_image(path) == ((2000, 1500) if orientation == 1 else (1500, 2000))


def test_min_size_never_upscales_or_changes_png(tmp_path):
    small = _gradient_jpeg(tmp_path / "small.jpg", 300, 200)
    assert load_rgb(small, min_size=256).size == (300, 200)
    png = _save(Image.new("RGB", (600, 600)), tmp_path / "big.png")
    assert load_rgb(png, min_size=64).size == (600, 600)


def test_file_like_input(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGBA", (5, 4), (0, 255, 0, 255)).save(buffer, "PNG")
    buffer.seek(0)
    im = load_rgb(buffer)
    assert im.size == (5, 4)
    assert (_pixels(im) == [0, 255, 0]).all()
    buffer.seek(0)
    assert probe_image(buffer) == (5, 4)


def test_non_seekable_stream(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (2, 2), 9).save(buffer, "PNG")

    class Stream(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, target) -> int:
            chunk = self._data.read(len(target))
            target[: len(chunk)] = chunk
            return len(chunk)

    stream = Stream(buffer.getvalue())
    assert not stream.seekable()
    assert (_pixels(load_rgb(stream)) == 9).all()


@pytest.mark.parametrize(("data", "reason"), [(b"", "empty"), (b"<html>oops", "html")])
def test_bad_file_like_is_named(data, reason):
    with pytest.raises(ImageError) as info:
        load_rgb(io.BytesIO(data))
    assert info.value.reason == reason
    assert "<in-memory image>" in str(info.value)


def test_open_file_object_is_named_by_its_path(tmp_path):
    path = tmp_path / "page.jpg"
    path.write_bytes(b"<!doctype html>")
    with open(path, "rb") as handle, pytest.raises(ImageError) as info:
        load_rgb(handle)
    assert info.value.reason == "html" and str(path) in str(info.value)


def test_invalid_arguments(tmp_path):
    path = _save(Image.new("RGB", (4, 4)), tmp_path / "ok.png")
    with pytest.raises(ValueError, match="min_size"):
        load_rgb(path, min_size=0)
    with pytest.raises(ValueError, match="max_pixels"):
        probe_image(path, max_pixels=0)
