"""Images out of a request, and a clear 4xx for each way a request or an image can be wrong.

``/predict`` takes images as multipart parts named ``files`` or as a JSON object ``{"images":
[base64, ...]}``; ``/explain`` takes one multipart part named ``file``. Each image keeps a name
for messages (``files[1] (cat.jpg)``, ``images[0]``) so a client knows which one to fix.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass

from PIL import Image
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from pictag.data.images import ImageError, probe_image
from pictag.serving.errors import InputError

FILES_FIELD = "files"  # /predict multipart: one part per image
FILE_FIELD = "file"  # /explain multipart: the image
FORMATS = "JPEG, PNG, WebP, GIF, BMP or TIFF"
_NAME_CHARS = 120  # client file names are echoed back; keep them short
_DATA_URL = "base64,"
# Decoding scales the shorter side to the model's base size, so a 1x100000 strip (a 400-byte
# PNG) would become a multi-gigabyte tensor: refuse strips before they are decoded.
MAX_ASPECT = 50

# ImageError.reason -> (status, code, what to say after the image's name).
_REASONS = {
    "empty": (422, "empty_image", "is empty (0 bytes)"),
    "not_an_image": (415, "not_an_image", f"is not an image; send a {FORMATS} file"),
    "html": (415, "not_an_image", "is an HTML page, not an image"),
    "truncated": (422, "truncated_image", "is truncated or corrupt; send the complete file"),
    "unreadable": (422, "unreadable_image", f"cannot be decoded; re-save it as {FORMATS}"),
}


@dataclass
class Upload:
    """One image from a request.

    Attributes:
        name: Where it came from, for messages: ``files[0] (cat.jpg)`` or ``images[2]``.
        source: What predictions call it: the client's file name, or ``images[2]``.
        data: The encoded image.
    """

    name: str
    source: str
    data: bytes

    def file(self) -> io.BytesIO:
        """The bytes as a named file, so that the predictor's messages name this image."""
        buffer = io.BytesIO(self.data)
        buffer.name = self.source
        return buffer


async def read_images(request: Request, max_images: int) -> list[Upload]:
    """The images of a ``/predict`` request (multipart ``files`` or JSON ``images``)."""
    kind = _content_kind(request)
    if kind == "multipart":
        form = await request.form()
        _only_fields(form, {FILES_FIELD}, FILES_FIELD)
        uploads = [await _upload(FILES_FIELD, i, value) for i, value in enumerate(_values(form))]
    elif kind == "json":
        uploads = _from_json(await request.body())
    elif kind == "none":
        uploads = []
    else:
        raise InputError(
            415,
            "unsupported_content_type",
            _how_to_send(f"content type {_content_type(request) or '(none)'!r} is not accepted"),
        )
    if not uploads:
        raise InputError(400, "empty_request", _how_to_send("the request has no images"))
    if len(uploads) > max_images:
        raise InputError(
            413,
            "too_many_images",
            f"the request has {len(uploads)} images, over the limit of {max_images} per "
            "request; split it into several requests",
        )
    return uploads


async def read_explain_form(request: Request) -> tuple[Upload, str, str | None]:
    """``(image, head, label or None)`` of an ``/explain`` request."""
    if _content_kind(request) != "multipart":
        raise InputError(
            415 if _content_type(request) else 400,
            "unsupported_content_type",
            f"content type {_content_type(request) or '(none)'!r} is not accepted; send "
            "multipart/form-data with the image in field 'file', the field 'head' and, "
            "optionally, 'label'",
        )
    form = await request.form()
    _only_fields(form, {FILE_FIELD, "head", "label"}, FILE_FIELD)
    files = form.getlist(FILE_FIELD)
    if len(files) != 1:
        raise InputError(
            422, "wrong_field", f"send exactly one image in field 'file', got {len(files)}"
        )
    upload = await _upload(FILE_FIELD, None, files[0])
    head = _text_field(form, "head", required=True)
    return upload, head or "", _text_field(form, "label", required=False)


def check_header(upload: Upload, max_pixels: int) -> None:
    """Refuse an image whose header says it is too big, or that is no image at all, before it
    is decoded (the pixel count is in the header; decoding is what costs memory and time)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload.data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as err:
        raise _too_many_pixels(upload, max_pixels, str(err)) from err
    except Exception as err:  # any decoder error means "not usable", say why
        raise diagnose(upload, max_pixels) from err
    if width * height > max_pixels:
        raise _too_many_pixels(upload, max_pixels, f"it is {width}x{height}")
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        raise InputError(
            422,
            "too_elongated",
            f"{upload.name} is {width}x{height}, longer than {MAX_ASPECT}:1; crop it closer to "
            "the subject",
        )


def diagnose(upload: Upload, max_pixels: int, fallback: str = "") -> InputError:
    """The 4xx for an image that failed to decode (``fallback``: the decoder's own message)."""
    problem = decode_problem(upload, max_pixels)
    if problem is not None:
        return problem
    status, code, text = _REASONS["unreadable"]
    return InputError(
        status, code, f"{upload.name} {text}" + (f" ({fallback})" if fallback else "")
    )


def decode_problem(upload: Upload, max_pixels: int) -> InputError | None:
    """Decode the image fully to learn why it cannot be used; None when it can."""
    try:
        probe_image(io.BytesIO(upload.data), max_pixels)
    except ImageError as err:
        if err.reason == "too_large":
            return _too_many_pixels(upload, max_pixels, "")
        status, code, text = _REASONS.get(err.reason, _REASONS["unreadable"])
        return InputError(status, code, f"{upload.name} {text}")
    except Exception:  # a Pillow plugin bug on hostile bytes is still bad input
        status, code, text = _REASONS["unreadable"]
        return InputError(status, code, f"{upload.name} {text}")
    return None


def _too_many_pixels(upload: Upload, max_pixels: int, why: str) -> InputError:
    why = f" ({why})" if why else ""
    return InputError(
        413,
        "too_many_pixels",
        f"{upload.name} has more than {max_pixels:,} pixels{why}; downscale it and send it again",
    )


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _content_kind(request: Request) -> str:
    """``multipart``, ``json``, ``none`` for an empty body, or ``other``."""
    content_type = _content_type(request)
    if content_type == "multipart/form-data":
        return "multipart"
    if content_type == "application/json" or content_type.endswith("+json"):
        return "json"
    if not content_type and request.headers.get("content-length", "0") == "0":
        return "none"
    return "other"


def _how_to_send(problem: str) -> str:
    return (
        f"{problem}; send images as multipart/form-data parts named '{FILES_FIELD}', or as JSON "
        '{"images": ["<base64>", ...]}'
    )


def _only_fields(form: FormData, allowed: set[str], image_field: str) -> None:
    unknown = sorted({key for key in form if key not in allowed})
    if unknown:
        raise InputError(
            422,
            "wrong_field",
            f"unexpected multipart field(s) {', '.join(map(repr, unknown))}; the image goes in "
            f"field '{image_field}' (fields accepted: {', '.join(sorted(allowed))})",
        )


def _values(form: FormData) -> list[UploadFile | str]:
    return [value for key, value in form.multi_items() if key == FILES_FIELD]


async def _upload(field: str, index: int | None, value: UploadFile | str) -> Upload:
    where = field if index is None else f"{field}[{index}]"
    if not isinstance(value, UploadFile):
        raise InputError(
            422,
            "not_a_file",
            f"{where} is a text field, not a file; send the image as a file part "
            "(curl: -F 'files=@photo.jpg')",
        )
    filename = (value.filename or "")[:_NAME_CHARS]
    data = await value.read()
    return Upload(f"{where} ({filename!r})" if filename else where, filename or where, data)


def _text_field(form: FormData, name: str, required: bool) -> str | None:
    values = form.getlist(name)
    if not values:
        if required:
            raise InputError(422, "missing_field", f"field {name!r} is missing")
        return None
    if len(values) > 1 or not isinstance(values[0], str):
        raise InputError(422, "wrong_field", f"field {name!r} must be one text value")
    return values[0]


def _from_json(body: bytes) -> list[Upload]:
    if not body:
        return []
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(400, "bad_json", f"the body is not valid JSON: {err}") from err
    except RecursionError as err:  # json's parser recurses once per nesting level
        raise InputError(
            400, "bad_json", 'the JSON body is nested too deeply; send {"images": [...]}'
        ) from err
    if not isinstance(document, dict) or "images" not in document:
        raise InputError(422, "missing_field", _how_to_send("the JSON body has no 'images' field"))
    unknown = sorted(set(document) - {"images"})
    if unknown:
        raise InputError(
            422,
            "wrong_field",
            f"unexpected JSON field(s) {', '.join(map(repr, unknown))}; only 'images' is read "
            "(options such as top_k are query parameters)",
        )
    images = document["images"]
    if not isinstance(images, list):
        raise InputError(422, "wrong_field", "'images' must be a list of base64 strings")
    return [_decode_base64(i, item) for i, item in enumerate(images)]


def _decode_base64(index: int, item: object) -> Upload:
    where = f"images[{index}]"
    if not isinstance(item, str):
        raise InputError(
            422, "wrong_field", f"{where} is a {type(item).__name__}, not a base64 string"
        )
    # Accept what common encoders produce: data URLs, wrapped lines, URL-safe letters.
    text = item.split(_DATA_URL, 1)[1] if item.startswith("data:") and _DATA_URL in item else item
    text = "".join(text.split()).replace("-", "+").replace("_", "/")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise InputError(
            422, "bad_base64", f"{where} is not valid base64 ({err}); encode the file's bytes"
        ) from err
    return Upload(where, where, data)
