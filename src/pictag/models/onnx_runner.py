"""A whole exported classifier run by ONNX Runtime: ``images -> {head: probabilities}``.

``pictag export`` writes ``RUN_DIR/model.onnx`` with one output per head (probabilities after
the head kind's activation) and a ``pictag`` JSON document in the model's ``metadata_props``.
On a CPU, :class:`pictag.evaluation.predictor.Predictor` runs that file instead of eager PyTorch
(3-4x faster for EfficientNet-Lite0 on 2 cores) when :func:`run_onnx_runner` finds it up to
date: newer than the weights, exported from the same checkpoint, with the same heads, labels
and input size. Anything else (no file, an old one, no onnxruntime) gives None and the caller
keeps eager PyTorch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pictag.models.onnx_features import create_session, first_line
from pictag.models.run import META_FILE, WEIGHTS_FILE

ONNX_FILE = "model.onnx"  # the default export path inside a run folder
METADATA_KEY = "pictag"  # metadata_props key of the JSON document
METADATA_FORMAT = "pictag-onnx/1"

logger = logging.getLogger(__name__)


@dataclass
class OnnxRunner:
    """An ONNX Runtime session over an exported pictag classifier.

    Attributes:
        session: The ``onnxruntime.InferenceSession``.
        metadata: The ``pictag`` metadata document (heads, labels, thresholds, preprocess).
        path: The file it was loaded from.
    """

    session: Any
    metadata: dict[str, Any]
    path: Path

    @classmethod
    def load(cls, path: str | Path) -> OnnxRunner:
        """Open an exported file on the CPU.

        Raises:
            ImportError: onnxruntime is not installed.
            ValueError: The file has no pictag metadata (not written by ``pictag export``).
            Exception: Whatever onnxruntime raises for a file it cannot load.
        """
        import onnxruntime

        path = Path(path)
        session = create_session(onnxruntime, path)
        props = session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise ValueError(f"{path} has no '{METADATA_KEY}' metadata: export it with pictag")
        return cls(session, json.loads(props[METADATA_KEY]), path)

    @property
    def input_name(self) -> str:
        return str(self.metadata["input"]["name"])

    @property
    def outputs(self) -> dict[str, str]:
        """Head name -> graph output name, in head order."""
        return {head["name"]: head["output"] for head in self.metadata["heads"]}

    def __call__(self, images: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Probabilities of a normalised batch ``[B, 3, H, W]``: head name -> float32 ``[B, C]``."""
        if isinstance(images, torch.Tensor):
            images = images.detach().to("cpu", torch.float32).numpy()
        array = np.ascontiguousarray(images, dtype=np.float32)
        outputs = self.outputs
        values = self.session.run(list(outputs.values()), {self.input_name: array})
        return dict(zip(outputs, values, strict=True))


def stale_reason(path: Path, run_dir: Path, meta: Mapping[str, Any], runner: OnnxRunner) -> str:
    """Why an exported file does not belong to the run's current model ('' when it does).

    Args:
        path: The exported file.
        run_dir: The run folder.
        meta: The run's ``pictag.json`` document.
        runner: The file, loaded.
    """
    exported = runner.metadata
    if path.stat().st_mtime_ns < (run_dir / WEIGHTS_FILE).stat().st_mtime_ns:
        return f"it is older than {WEIGHTS_FILE}"
    if exported.get("checkpoint_id") != meta.get("checkpoint_id"):
        return "it was exported from another checkpoint"
    run_heads = [(h["name"], h["kind"], list(h["labels"])) for h in meta["heads"]]
    onnx_heads = [(h["name"], h["kind"], list(h["labels"])) for h in exported.get("heads", [])]
    if run_heads != onnx_heads:
        return f"its heads or labels differ from {META_FILE}"
    if list(exported["preprocess"]["input_size"]) != list(meta["preprocess"]["input_size"]):
        return "its input size differs from the run's"
    return ""


def run_onnx_runner(run_dir: str | Path, meta: Mapping[str, Any]) -> OnnxRunner | None:
    """The runner of ``RUN_DIR/model.onnx`` when it is up to date with the run, else None
    (the reason is logged).

    Args:
        run_dir: The run folder.
        meta: Its ``pictag.json`` document (as :func:`pictag.models.run.load_run` read it).
    """
    run_dir = Path(run_dir)
    path = run_dir / ONNX_FILE
    if not path.is_file():
        return None
    try:
        runner = OnnxRunner.load(path)
    except ImportError as error:
        logger.info("onnxruntime unavailable (%s): predicting with eager PyTorch", error)
        return None
    except Exception as error:  # onnxruntime raises its own, unexported exception types
        logger.warning(
            "cannot load %s (%s): predicting with eager PyTorch", path, first_line(error)
        )
        return None
    reason = stale_reason(path, run_dir, meta, runner)
    if reason:
        logger.warning(
            "%s is out of date (%s): predicting with eager PyTorch; run `pictag export %s` "
            "to refresh it",
            path,
            reason,
            run_dir,
        )
        return None
    return runner
