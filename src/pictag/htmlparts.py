"""Small HTML builders shared by the report page and the head kinds' report sections.

Every string that comes from the data (label and head names, paths) is HTML-escaped here;
undefined numbers print as "–".
"""

from __future__ import annotations

import base64
import math
from html import escape
from typing import Any

DASH = "–"


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
