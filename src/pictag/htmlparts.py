"""Small HTML builders shared by the report page and the head kinds' report sections.

Every string that comes from the data (label and head names, paths) is HTML-escaped here;
undefined numbers print as "–".
"""

from __future__ import annotations

import base64
import io
import math
from html import escape
from typing import Any

from PIL import Image

DASH = "–"
THUMB_PX = 160
SMALL_PX = 96  # a thumbnail narrower than this (32 px CIFAR, 28 px MNIST) is shown enlarged


def table(header: list[str], rows: list[list[Any]], scroll: bool = False) -> str:
    """An HTML table with escaped cells; ``scroll`` caps its height."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    html = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f"<div class=scroll>{html}</div>" if scroll else html


def figure(png: bytes | None, alt: str) -> str:
    """An inline ``<figure>`` of PNG bytes, or nothing when there is no picture."""
    return f'<figure><img src="{data_uri(png)}" alt="{escape(alt)}"></figure>' if png else ""


def data_uri(data: bytes) -> str:
    """A base64 ``data:`` URI for PNG, JPEG, WebP or GIF bytes."""
    mime = "image/png"
    if data[:3] == b"\xff\xd8\xff":
        mime = "image/jpeg"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    elif data[:3] == b"GIF":
        mime = "image/gif"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def fmt(value: Any) -> str:
    """Escaped text of a cell: 3 decimals for floats, "–" for null and NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    if isinstance(value, float):
        return f"{value:.3f}"
    return escape(str(value))


def image_tag(data: bytes, path: str) -> str:
    """The ``<img>`` of a thumbnail. One under ``SMALL_PX`` a side is too small to see a mistake
    in at its own size: it is shown enlarged by a whole factor (to at least ``SMALL_PX``, up to
    ``THUMB_PX``), its pixels kept square and sharp rather than blurred."""
    attrs = ""
    size = _size(data)
    if size and 0 < max(size) < SMALL_PX:
        longest = max(size)
        factor = max(math.ceil(SMALL_PX / longest), THUMB_PX // longest)
        attrs = f' class=px width="{size[0] * factor}" height="{size[1] * factor}"'
    return f'<img src="{data_uri(data)}" alt="{escape(path)}"{attrs}>'


def _size(data: bytes) -> tuple[int, int] | None:
    """Width and height of image bytes (read from the header only), None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError):
        return None


def thumbnail(path: str) -> bytes | None:
    """A JPEG of at most ``THUMB_PX`` pixels a side, or None if the file cannot be read."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a fraction of full size
            small = image.convert("RGB")
            small.thumbnail((THUMB_PX, THUMB_PX))
            buffer = io.BytesIO()
            # A small image is shown enlarged: full-resolution colour (no 2x2 chroma blocks)
            # and a higher quality keep JPEG artefacts from being enlarged with it.
            tiny = max(small.size) < SMALL_PX
            options = {"quality": 95, "subsampling": 0} if tiny else {"quality": 85}
            small.save(buffer, format="JPEG", **options)
            return buffer.getvalue()
    except (OSError, ValueError):
        return None
