"""Export a run's model for use without pictag: ONNX with metadata, TorchScript, parity checks,
and a model card beside each file."""

from pictag.export.formats import ExportError
from pictag.export.model_card import build_model_card, card_path
from pictag.export.parity import ParityError, ParityReport
from pictag.export.run_export import DEFAULT_TOLERANCE, ExportResult, export_run

__all__ = [
    "DEFAULT_TOLERANCE",
    "ExportError",
    "ExportResult",
    "ParityError",
    "ParityReport",
    "build_model_card",
    "card_path",
    "export_run",
]
