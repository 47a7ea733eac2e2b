"""Does an exported file compute what the PyTorch model computes?

Two input sets go through both the eager model and the exported file: random normalised batches
(of 1 and 3 images, neither the batch of 2 the export was traced with, so a batch size baked
into the graph shows) and real images -- the run's validation and test images listed in
``RUN_DIR/splits.csv``, through the run's own preprocessing. The report gives the largest
absolute difference of the probabilities per input set and head.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pictag.data.images import ImageError
from pictag.data.transforms import Preprocess, decode_image, eval_transform
from pictag.export.formats import Runner
from pictag.run import SPLITS_FILE, read_splits

RANDOM_BATCHES = (1, 3)
REAL_SPLITS = ("val", "test")

logger = logging.getLogger(__name__)


class ParityError(ValueError):
    """An exported file whose outputs differ from PyTorch's by more than the tolerance."""


@dataclass
class ParityReport:
    """Largest absolute probability difference between an exported file and PyTorch.

    Attributes:
        format: ``onnx`` or ``torchscript``.
        path: The exported file.
        tolerance: The largest difference allowed.
        max_abs_diff: Input set (``random``, ``real``) -> head name -> max ``|exported - eager|``.
        images: Input set -> number of images compared.
        exporter: How the file was made (e.g. ``torch.export`` for ONNX).
    """

    format: str
    path: Path
    tolerance: float
    max_abs_diff: dict[str, dict[str, float]] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    exporter: str = ""

    @property
    def worst(self) -> float:
        """The largest difference over every input set and head."""
        return max(
            (d for by_head in self.max_abs_diff.values() for d in by_head.values()), default=0.0
        )

    @property
    def passed(self) -> bool:
        return self.worst <= self.tolerance

    def summary(self) -> str:
        """A few lines: the file, then the max difference per input set and head."""
        how = f" via {self.exporter}" if self.exporter else ""
        verdict = "ok" if self.passed else "FAILED"
        lines = [f"{self.format} {self.path}{how}: parity {verdict} (tolerance {self.tolerance:g})"]
        for inputs, by_head in self.max_abs_diff.items():
            diffs = ", ".join(f"{head} {diff:.2e}" for head, diff in by_head.items())
            lines.append(f"  {inputs} ({self.images[inputs]} images): max |diff| {diffs}")
        if "real" not in self.max_abs_diff:
            lines.append(
                f"  real images: none found (no readable val/test images in {SPLITS_FILE})"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "format": self.format,
            "path": str(self.path),
            "exporter": self.exporter,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "max_abs_diff": self.max_abs_diff,
            "images": self.images,
        }


def parity_inputs(
    run_dir: Path, preprocess: Preprocess, max_real: int = 16, seed: int = 0
) -> dict[str, list[torch.Tensor]]:
    """Input set name -> batches: ``random`` always, ``real`` when the run's split file lists
    readable validation or test images."""
    generator = torch.Generator().manual_seed(seed)
    sets = {
        "random": [
            torch.randn(n, *preprocess.input_size, generator=generator) for n in RANDOM_BATCHES
        ]
    }
    real = real_images(run_dir, preprocess, max_real)
    if real is not None:
        sets["real"] = [real]
    return sets


def real_images(run_dir: Path, preprocess: Preprocess, limit: int) -> torch.Tensor | None:
    """Up to ``limit`` validation then test images of the run, preprocessed; None if none."""
    if limit < 1:
        return None
    try:
        splits = read_splits(run_dir)
    except (FileNotFoundError, ValueError) as error:
        logger.info("parity on real images skipped: %s", error)
        return None
    transform = eval_transform(preprocess)
    tensors = []
    for image in [image for name in REAL_SPLITS for image in splits[name]]:
        if len(tensors) >= limit:
            break
        try:
            tensors.append(transform(decode_image(image, preprocess)))
        except ImageError:
            continue  # moved or deleted since training: compare on the others
    return torch.stack(tensors) if tensors else None


def check_parity(
    reference: Runner,
    exported: Runner,
    inputs: dict[str, list[torch.Tensor]],
    report: ParityReport,
) -> ParityReport:
    """Fill ``report`` with the max differences between ``reference`` and ``exported``.

    Args:
        reference: The eager PyTorch model.
        exported: The exported file, loaded back.
        inputs: Input set name -> batches (see :func:`parity_inputs`).
        report: Where the differences go; returned.
    """
    for name, batches in inputs.items():
        worst: dict[str, float] = {}
        for batch in batches:
            expected, got = reference(batch), exported(batch)
            for head, values in expected.items():
                diff = _max_abs_diff(values, got.get(head))
                worst[head] = max(worst.get(head, 0.0), diff)
        report.max_abs_diff[name] = worst
        report.images[name] = sum(len(b) for b in batches)
    return report


def _max_abs_diff(expected: np.ndarray, got: np.ndarray | None) -> float:
    if got is None or np.shape(got) != expected.shape:
        return float("inf")  # a missing or misshapen output fails any tolerance
    diff = np.abs(np.asarray(got, dtype=np.float64) - expected)
    return float("inf") if np.isnan(diff).any() else float(diff.max(initial=0.0))
