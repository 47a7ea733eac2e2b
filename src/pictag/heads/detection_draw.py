"""Drawing a detection head's decision on the image (``pictag predict --show``): each box
with its class and score, and the head's title with its box count beside the image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pictag.heads.drawing import LINE

COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6")


def text_lines(scores: Mapping[str, float]) -> int:
    """Lines beside the image: the title and the box count, then a gap."""
    return 3


def draw_objects(
    fig: Any,
    image_axes: Any,
    title: str,
    labels: Sequence[str],
    scores: Mapping[str, float],
    top: float,
    objects: Sequence[Mapping[str, Any]] | None = None,
) -> float:
    """Draw each object's box and ``label score`` on ``image_axes`` (whose data coordinates are
    the original image's pixels) and the head's title beside the image; return where the next
    head starts."""
    objects = list(objects or [])
    palette = {label: COLORS[i % len(COLORS)] for i, label in enumerate(dict.fromkeys(labels))}
    for item in objects:
        x1, y1, x2, y2 = item["box"]
        color = palette.get(item["label"], COLORS[0])
        # A closed line rather than a patch: the kinds draw on axes they are given and import
        # no plotting library themselves.
        image_axes.plot([x1, x2, x2, x1, x1], [y1, y1, y2, y2, y1], color=color, linewidth=2)
        image_axes.text(
            x1, y1, f"{item['label']} {item['score']:.2f}", color="white", fontsize=7,
            va="bottom", bbox={"facecolor": color, "edgecolor": "none", "pad": 1},
        )  # fmt: skip
    height = fig.get_figheight()
    fig.text(0.52, top / height, title, fontsize=10, weight="bold")
    found = ", ".join(f"{label} {score:.2f}" for label, score in list(scores.items())[:4])
    line = f"{len(objects)} boxes" + (f": {found}" if found else "")
    fig.text(0.54, (top - LINE) / height, line, fontsize=9)
    return top - 3 * LINE
