"""What a prediction is: one image's :class:`Prediction`, a :class:`HeadPrediction` per head,
and their JSON-ready forms (the CLI's ``--format json``, the server's answers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pictag.data.schema import Head
from pictag.heads import Params, get_kind


@dataclass
class HeadPrediction:
    """One head's output for one image.

    Attributes:
        kind: The head's kind (``multiclass``, ``multilabel``, ``detection``, ...).
        labels: The decision, most probable first: the labels the head's kind chose (the top
            class, or a binary head's class by its threshold, or the tags over their
            thresholds).
        scores: Label -> probability, high to low (only the best ``top_k`` when it is given).
        objects: Kinds that locate things: ``{label, score, box: [x1, y1, x2, y2]}`` per
            decided object, in the original image's pixels, best first; None otherwise.
        mask: Segmentation: ``{png, classes}``, the class of each of the original image's
            pixels as a base64 palette PNG whose values index ``classes``; None otherwise.
    """

    kind: str
    labels: list[str]
    scores: dict[str, float]
    objects: list[dict[str, Any]] | None = None
    mask: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind, "labels": list(self.labels), "scores": dict(self.scores)}
        if self.objects is not None:
            data["objects"] = [dict(item) for item in self.objects]
        if self.mask is not None:
            data["mask"] = dict(self.mask)
        return data


@dataclass
class Prediction:
    """Everything predicted for one image.

    Attributes:
        source: The file path, or a name such as ``<bytes[2]>`` for in-memory input.
        heads: Head name -> its prediction; empty when the image could not be read.
        error: Why the image could not be read (names the file and a fix), else None.
    """

    source: str
    heads: dict[str, HeadPrediction] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "source": self.source,
            "heads": {name: head.to_dict() for name, head in self.heads.items()},
            "error": self.error,
        }


def head_prediction(
    head: Head,
    probs: np.ndarray,
    params: Params,
    top_k: int | None = None,
    at_least_one: bool = False,
    size: tuple[int, int] | None = None,
) -> HeadPrediction:
    """One head's prediction for one image, decided by its kind.

    Args:
        head: The head (kind and label names).
        probs: The image's probabilities (or the head's raw output, for kinds that locate).
        params: The head's decision parameters (thresholds).
        top_k: Keep only the best ``top_k`` scores (a tag head decides exactly those labels).
        at_least_one: Tag heads: take the most probable label when none passes its threshold.
        size: The image's upright ``(width, height)``, which boxes and masks are given in
            (None: in fractions of the image, as if it were 1x1).
    """
    kind = get_kind(head.kind)
    if kind.predict_entry is not None:
        entry = kind.predict_entry(head, probs, params, size or (1, 1))
        return HeadPrediction(kind=head.kind, **entry)
    options = {**params, "top_k": top_k, "at_least_one": at_least_one}
    decided = kind.decide(probs[None, :], options)[0]
    order = np.argsort(-probs, kind="stable")
    shown = order if top_k is None else order[:top_k]
    return HeadPrediction(
        kind=head.kind,
        labels=[head.labels[i] for i in order if decided[i]],
        scores={head.labels[i]: float(probs[i]) for i in shown},
    )
