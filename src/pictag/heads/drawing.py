"""Drawing an image-level decision beside the image (``pictag predict --show``): the head's
name and kind, then its best scores with the decided labels in bold green.

Kinds whose decisions live on the image (boxes, masks) draw onto the image's axes instead;
the image-level kinds share this one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SHOW_SCORES = 8  # scores listed per head
LINE = 0.24  # inches per text line
DECIDED = {"color": "#1b5e20", "weight": "bold"}
OTHER = {"color": "#555555"}


def text_lines(scores: Mapping[str, float]) -> int:
    """Lines of text :func:`draw_scores` writes for a head (title, scores, a gap)."""
    return 2 + min(len(scores), SHOW_SCORES)


def draw_scores(
    fig: Any,
    image_axes: Any,
    title: str,
    labels: Sequence[str],
    scores: Mapping[str, float],
    top: float,
    **places: Any,
) -> float:
    """Write the head's title and its best scores on the right of ``fig`` from ``top`` inches
    down; return where the next head starts.

    Args:
        fig: A matplotlib figure, laid out in inches (its height in ``fig.get_figheight()``).
        image_axes: The image's axes (unused: an image-level decision is written beside it).
        title: ``name (kind)``.
        labels: The decided labels.
        scores: Label -> probability, best first.
        top: Inches from the bottom of the figure where the title goes.
        **places: What kinds that locate things draw on the image (``objects``, ``mask``);
            nothing here.
    """
    del image_axes, places
    height = fig.get_figheight()
    fig.text(0.52, top / height, title, fontsize=10, weight="bold")
    y = top - LINE
    for label, score in list(scores.items())[:SHOW_SCORES]:
        style = DECIDED if label in labels else OTHER
        fig.text(0.54, y / height, label, fontsize=9, **style)
        fig.text(0.97, y / height, f"{score:.3f}", fontsize=9, ha="right", **style)
        y -= LINE
    return y - LINE
