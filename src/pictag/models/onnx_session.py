"""ONNX Runtime CPU sessions with pictag's settings, for feature extraction and prediction.

Kept apart from the exporters so that running ``model.onnx`` imports neither timm nor the
export code.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch


def create_session(ort: ModuleType, path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for ``path`` with pictag's settings (torch's thread count
    unless ``threads`` is given, errors-only logging).

    Raises:
        Exception: Whatever onnxruntime raises for a file it cannot load.
    """
    options = ort.SessionOptions()
    # By default, share torch's thread budget.
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1  # a chain of convolutions has no parallel branches
    options.log_severity_level = 3  # errors only
    # Waiting threads sleep rather than spin: `predict` decodes the next batch on the same
    # cores meanwhile (2 cores: 91 vs 85 img/s end to end; the runtime alone 110 vs 112).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
