"""The two export formats: ONNX (with metadata) and TorchScript, of one probability model.

Both export :class:`ProbabilityModel`: the classifier followed by each head kind's activation,
returning one tensor per head in head order, so a consumer gets probabilities without knowing
which head needs a softmax and which a sigmoid.

ONNX goes first through torch's TorchScript exporter, on a copy whose TensorFlow-style "same"
padding is fixed for the input size (:mod:`pictag.models.static_padding`), then through
``torch.export`` when that fails or the trace may depend on the input, as the detection and
segmentation heads' traces do (:mod:`pictag.models.onnx_export`). The TorchScript format
(``torch.jit.trace``) is deprecated -- torch 2.15 warns to switch to ``torch.export`` -- but
still works; it is offered for C++/LibTorch consumers, with the metadata as the extra file
``pictag.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pictag.data.schema import Head
from pictag.export.metadata import write_onnx_metadata
from pictag.heads import get_kind
from pictag.models.onnx_export import EXPORT_ORDER, export_onnx, first_line
from pictag.models.onnx_runner import OnnxRunner

TORCHSCRIPT_EXTRA = "pictag.json"  # name of the metadata file inside a TorchScript archive

Runner = Callable[[torch.Tensor], dict[str, np.ndarray]]
logger = logging.getLogger(__name__)


class ExportError(ValueError):
    """A model that no exporter can write; the message gives each exporter's error."""


class ProbabilityModel(nn.Module):
    """``images [B, 3, H, W] -> (probabilities of each head, in head order)``.

    Args:
        classifier: Returns ``{head: logits}``.
        heads: Head name -> head; decides the order of the outputs and each activation.
    """

    def __init__(self, classifier: nn.Module, heads: dict[str, Head]) -> None:
        super().__init__()
        self.classifier = classifier
        self.kinds = {name: head.kind for name, head in heads.items()}

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.classifier(images)
        return tuple(get_kind(kind).activate(logits[name]) for name, kind in self.kinds.items())


def eager_runner(model: ProbabilityModel) -> Runner:
    """The probabilities of ``model`` in eager PyTorch (fp32, NCHW): the parity reference."""

    @torch.inference_mode()
    def run(images: torch.Tensor) -> dict[str, np.ndarray]:
        values = model.eval()(images)
        return {name: v.numpy() for name, v in zip(model.kinds, values, strict=True)}

    return run


def write_onnx(
    model: ProbabilityModel, metadata: dict[str, Any], input_size: tuple[int, int, int], path: Path
) -> str:
    """Export ``model`` to ``path`` with ``metadata`` in its ``metadata_props``.

    Returns:
        The exporter that worked: ``torch.export`` or ``torchscript``.

    Raises:
        ExportError: Neither exporter could export the model.
    """
    outputs = [head["output"] for head in metadata["heads"]]
    errors = []
    for dynamo in EXPORT_ORDER:
        name = "torch.export" if dynamo else "torchscript"
        try:
            export_onnx(model, input_size, path, metadata["input"]["name"], outputs, dynamo)
        except Exception as error:  # exporters raise many types; try the other one
            errors.append(f"{name}: {first_line(error)}")
            logger.info("ONNX export with %s failed: %s", name, first_line(error))
            continue
        write_onnx_metadata(path, metadata)
        return name
    raise ExportError("the model cannot be exported to ONNX (" + "; ".join(errors) + ")")


def onnx_file_runner(path: Path) -> Runner:
    """ONNX Runtime on an exported file, with the session settings Predictor uses."""
    return OnnxRunner.load(path)


def write_torchscript(
    model: ProbabilityModel, metadata: dict[str, Any], input_size: tuple[int, int, int], path: Path
) -> str:
    """Trace ``model`` and save it to ``path`` with the metadata as ``pictag.json``.

    Returns:
        How it was made: ``torch.jit.trace``.
    """
    example = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    model.eval()
    with _deprecation_noted():
        traced = torch.jit.trace(model, example, check_trace=False)
        extra = {TORCHSCRIPT_EXTRA: json.dumps(metadata, ensure_ascii=False)}
        torch.jit.save(traced, str(path), _extra_files=extra)
    return "torch.jit.trace"


def torchscript_file_runner(path: Path, heads: list[str]) -> Runner:
    """A saved TorchScript file, loaded back as a consumer would load it."""
    with _deprecation_noted(log=False):
        loaded = torch.jit.load(str(path), map_location="cpu")

    @torch.inference_mode()
    def run(images: torch.Tensor) -> dict[str, np.ndarray]:
        with _deprecation_noted(log=False):
            values = loaded(images)
        return {name: v.numpy() for name, v in zip(heads, values, strict=True)}

    return run


@contextlib.contextmanager
def _deprecation_noted(log: bool = True) -> Iterator[None]:
    """Collect torch.jit's deprecation FutureWarnings into one log line (or none); other
    warnings are passed on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    deprecated = [w for w in caught if _is_jit_deprecation(w)]
    if log and deprecated:
        logger.info(
            "note: torch %s deprecates TorchScript (%s); the file works, but prefer the ONNX "
            "export for new consumers",
            torch.__version__,
            deprecated[0].message,
        )
    for other in caught:
        if not _is_jit_deprecation(other):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)


def _is_jit_deprecation(warning: warnings.WarningMessage) -> bool:
    return issubclass(warning.category, FutureWarning) and "deprecated" in str(warning.message)
