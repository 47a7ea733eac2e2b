"""What a prediction is: one image's :class:`Prediction`, a :class:`HeadPrediction` per head,
and their JSON-ready forms (the CLI's ``--format json``, the server's answers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
