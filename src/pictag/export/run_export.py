"""``pictag export RUN_DIR``: the run's model as ONNX (and optionally TorchScript), checked.

    result = export_run("runs/cars")                     # runs/cars/model.onnx
    print(result.onnx.summary())                         # max |diff| per head

Each file is written beside its destination, loaded back and compared with the PyTorch model
(:mod:`pictag.export.parity`); only a file within the tolerance is moved into place, with its
model card beside it (``model.onnx`` -> ``model.card.md``, see :mod:`pictag.export.model_card`;
the ONNX file also holds the card's text in its metadata). A file that fails, or a model that
cannot be exported, leaves nothing at the destination (an earlier export and its card there are
removed as well, so nothing looks like the result of this export), and :class:`ParityError`
says by how much it missed.

The card is built before any file is written: a ``report.json`` or ``audit.json`` it cannot
read stops the export with a message saying what to re-run, rather than shipping a card that
hides it. A run never evaluated or audited is no error: its card says so. For an evaluated run
the card predicts the test split again (for its intervals), which adds that split's inference
time to the export. ``RUN_DIR/model.onnx`` is what
:class:`pictag.evaluation.predictor.Predictor` runs on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pictag.export.formats import (
    ExportError,
    ProbabilityModel,
    Runner,
    eager_runner,
    onnx_file_runner,
    torchscript_file_runner,
    write_onnx,
    write_torchscript,
)
from pictag.export.metadata import build_metadata
from pictag.export.model_card import build_model_card, card_path
from pictag.export.parity import ParityError, ParityReport, check_parity, parity_inputs
from pictag.fileio import atomic_write, write_text
from pictag.run import load_run, run_onnx_path

DEFAULT_TOLERANCE = 1e-4  # max |probability difference|; fp32 graphs agree to ~1e-6
MAX_REAL_IMAGES = 16  # validation/test images compared; enough to meet real activations


@dataclass
class ExportResult:
    """The files written and how closely each matches PyTorch.

    Attributes:
        onnx: The ONNX file's parity report (None when not exported).
        torchscript: The TorchScript file's parity report (None when not exported).
        cards: The model cards written, one beside each file.
    """

    onnx: ParityReport | None = None
    torchscript: ParityReport | None = None
    cards: list[Path] = field(default_factory=list)

    def reports(self) -> list[ParityReport]:
        return [r for r in (self.onnx, self.torchscript) if r is not None]

    def summary(self) -> str:
        lines = [report.summary() for report in self.reports()]
        return "\n".join(lines + [f"model card {path}" for path in dict.fromkeys(self.cards)])


def export_run(
    run_dir: str | Path,
    onnx_path: str | Path | None = None,
    torchscript_path: str | Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    onnx: bool = True,
    max_real: int = MAX_REAL_IMAGES,
) -> ExportResult:
    """Export a run's model and check each file against PyTorch.

    Args:
        run_dir: Folder with ``model.safetensors`` and ``pictag.json``.
        onnx_path: Where the ONNX file goes (default ``RUN_DIR/model.onnx``).
        torchscript_path: Where a TorchScript file goes; None: no TorchScript.
        tolerance: Largest allowed absolute difference of any probability.
        onnx: Export ONNX at all (False with a ``torchscript_path`` gives TorchScript only).
        max_real: Most validation/test images of the run to compare on.

    Returns:
        The parity report of each file written.

    Raises:
        ParityError: A file differs from PyTorch by more than ``tolerance``; it is not kept.
        ExportError: No exporter can write the model to ONNX.
        FileNotFoundError: ``run_dir`` is not a run folder.
        ValueError: ``tolerance`` is negative, nothing was asked for, or the run's
            ``report.json`` or ``audit.json`` cannot be read for the model card.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if not onnx and torchscript_path is None:
        raise ValueError("nothing to export: ask for ONNX, TorchScript or both")
    run_dir = Path(run_dir)
    run = load_run(run_dir, "cpu")
    model = ProbabilityModel(run.model, run.heads).eval()
    card = build_model_card(run_dir, run)
    metadata = build_metadata(run.heads, run.preprocess, run.params, run.checkpoint_id, card)
    inputs = parity_inputs(run_dir, run.preprocess, max_real)
    check = _Check(eager_runner(model), inputs, tolerance, card)
    size = run.preprocess.input_size
    result = ExportResult()
    if onnx:
        target = Path(onnx_path) if onnx_path is not None else run_onnx_path(run_dir)
        result.onnx = check.write(
            "onnx", target, lambda tmp: write_onnx(model, metadata, size, tmp), onnx_file_runner
        )
        result.cards.append(card_path(target))
    if torchscript_path is not None:
        heads = list(run.heads)
        result.torchscript = check.write(
            "torchscript",
            Path(torchscript_path),
            lambda tmp: write_torchscript(model, metadata, size, tmp),
            lambda tmp: torchscript_file_runner(tmp, heads),
        )
        result.cards.append(card_path(Path(torchscript_path)))
    return result


@dataclass
class _Check:
    """The parity reference, inputs, tolerance and model card shared by every format."""

    reference: Runner
    inputs: dict[str, list[torch.Tensor]]
    tolerance: float
    card: str

    def write(
        self,
        fmt: str,
        path: Path,
        write: Callable[[Path], str],
        load: Callable[[Path], Runner],
    ) -> ParityReport:
        """Write through a temporary file beside ``path`` that replaces it only when parity
        holds, then the model card beside it; on failure neither is left.

        Args:
            fmt: Format name for the report.
            path: Destination.
            write: Writes the file given and returns the exporter's name.
            load: Loads a written file back as a runner.
        """
        report = ParityReport(fmt, path, self.tolerance)

        def write_and_check(tmp: Path) -> None:
            report.exporter = write(tmp)
            check_parity(self.reference, load(tmp), self.inputs, report)
            if not report.passed:
                raise ParityError(report.summary())

        try:
            atomic_write(path, write_and_check)
        except (ParityError, ExportError):
            path.unlink(missing_ok=True)
            card_path(path).unlink(missing_ok=True)
            raise
        write_text(card_path(path), self.card)
        return report
