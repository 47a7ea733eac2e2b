"""ONNX Runtime CPU sessions with pictag's settings, for feature extraction and prediction.

Kept apart from the exporters so that running ``model.onnx`` imports neither timm nor the
export code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from pictag.models.onnx_cache import discard, keep, optimized_copy, writable_temp

logger = logging.getLogger(__name__)


def create_session(
    ort: ModuleType, path: Path, threads: int | None = None, cache: bool = False
) -> Any:
    """An ONNX Runtime CPU session for ``path`` with pictag's settings (torch's thread count
    unless ``threads`` is given, errors-only logging).

    Args:
        ort: The ``onnxruntime`` module.
        path: The model file.
        threads: Intra-op threads; torch's thread count by default.
        cache: Open ONNX Runtime's optimised copy of ``path`` for this machine, making it first
            if need be (:mod:`pictag.models.onnx_cache`): for files opened again and again,
            such as a run's ``model.onnx``, not for a temporary export.

    Raises:
        Exception: Whatever onnxruntime raises for a file it cannot load.
    """
    copy = optimized_copy(path, ort.__version__) if cache else None
    if copy is None:
        return _open(ort, path, _options(ort, threads))
    if copy.is_file():
        session = _open_copy(ort, copy, threads)
        if session is not None:
            return session
    return _open_and_save(ort, path, copy, threads)


def _open(ort: ModuleType, path: Path, options: Any) -> Any:
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _open_copy(ort: ModuleType, copy: Path, threads: int | None) -> Any | None:
    """A session on an optimised copy, with the optimisation off; None if it cannot be opened."""
    options = _options(ort, threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return _open(ort, copy, options)
    except Exception as err:  # the model itself still opens
        if copy.is_file():
            logger.warning("ignoring %s, which ONNX Runtime cannot open (%s)", copy, err)
        else:  # removed meanwhile (a re-export's new copy replaced it)
            logger.info("%s went away while it was being opened", copy)
        return None


def _open_and_save(ort: ModuleType, path: Path, copy: Path, threads: int | None) -> Any:
    """A session on ``path`` that also saves its optimised graph as ``copy`` (when the folder
    can be written and the save succeeds)."""
    temp = writable_temp(copy)
    if temp is None:
        return _open(ort, path, _options(ort, threads))
    options = _options(ort, threads)
    options.optimized_model_filepath = str(temp)
    try:
        session = _open(ort, path, options)
    except Exception:
        discard(temp)
        logger.info("ONNX Runtime cannot save an optimised copy of %s: opening it alone", path)
        return _open(ort, path, _options(ort, threads))
    keep(temp, copy)
    return session


def _options(ort: ModuleType, threads: int | None) -> Any:
    options = ort.SessionOptions()
    # By default, share torch's thread budget.
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1  # a chain of convolutions has no parallel branches
    options.log_severity_level = 3  # errors only
    # Waiting threads sleep rather than spin: `predict` decodes the next batch on the same
    # cores meanwhile (2 cores: 91 vs 85 img/s end to end; the runtime alone 110 vs 112).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
