"""A whole exported classifier run by ONNX Runtime: ``images -> {head: probabilities}``.

``pictag export`` writes ``RUN_DIR/model.onnx`` with one output per head (probabilities after
the head kind's activation) and a ``pictag`` JSON document in the model's ``metadata_props``.
On a CPU, :class:`pictag.evaluation.predictor.Predictor` runs that file instead of eager PyTorch
(3-4x faster for EfficientNet-Lite0 on 2 cores) when :func:`run_onnx_runner` finds it up to
date (:func:`pictag.run.run_onnx_runner`): newer than the weights, exported from the same
checkpoint, with the same heads, labels and input size. Anything else (no file, an old one, no
onnxruntime) gives None and the caller keeps eager PyTorch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pictag.models.onnx_features import create_session

METADATA_KEY = "pictag"  # metadata_props key of the JSON document
METADATA_FORMAT = "pictag-onnx/1"
# Batches in flight at once in a long prediction, each on its share of the threads: on 2 cores
# two one-thread calls ran 112-128 img/s against 106-118 for one two-thread call (Lite0, batch
# 32), since a call's threads no longer wait for each other at every layer, nor all stall
# when a decoding thread takes one of their cores.
STREAMS = 2

Probabilities = Callable[[Any], dict[str, np.ndarray]]


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
    _streamed: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

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
        return head_outputs(self.metadata)

    def __call__(self, images: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Probabilities of a normalised batch ``[B, 3, H, W]``: head name -> float32 ``[B, C]``."""
        return self._run(self.session, images)

    def concurrent(self) -> tuple[Probabilities, int]:
        """A model call that ``count`` threads may make at once, and ``count``: for a long
        prediction that keeps several batches in flight (:data:`STREAMS`), each call on its
        share of torch's thread budget (a second session, opened on first use). With one
        thread in the budget: the plain call, one at a time."""
        import onnxruntime

        threads = torch.get_num_threads()
        count = min(STREAMS, threads)
        if count < 2:
            return self, 1
        with self._lock:
            if self._streamed is None:
                # ONNX Runtime sessions take concurrent run calls; with one intra-op thread
                # each call computes on its caller's thread.
                self._streamed = create_session(onnxruntime, self.path, threads // count)
            session = self._streamed
        return lambda images: self._run(session, images), count

    def _run(self, session: Any, images: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.outputs
        values = session.run(list(outputs.values()), {self.input_name: as_batch(images)})
        return dict(zip(outputs, values, strict=True))


def head_outputs(metadata: dict[str, Any]) -> dict[str, str]:
    """Head name -> graph output name of an exported model, in head order."""
    return {head["name"]: head["output"] for head in metadata["heads"]}


def as_batch(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """A batch as the contiguous float32 array the runtimes take."""
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(images, dtype=np.float32)
