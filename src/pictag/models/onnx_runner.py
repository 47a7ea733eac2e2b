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
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from pictag.models.onnx_session import create_session

METADATA_KEY = "pictag"  # metadata_props key of the JSON document
METADATA_FORMAT = "pictag-onnx/1"
# Batches in flight at once in a long prediction, each in its own session on its share of the
# threads: on 2 cores two one-thread calls ran 112-128 img/s against 106-118 for one two-thread
# call (Lite0, batch 32), since a call's threads no longer wait for each other at every layer,
# nor all stall when a decoding thread takes one of their cores.
STREAMS = 2

Probabilities = Callable[[Any], dict[str, np.ndarray]]
OutputT = TypeVar("OutputT")
logger = logging.getLogger(__name__)


@dataclass
class OnnxRunner:
    """An ONNX Runtime session over an exported pictag classifier.

    Attributes:
        session: The ``onnxruntime.InferenceSession``.
        metadata: The ``pictag`` metadata document (heads, labels, thresholds, preprocess).
        path: The file it was loaded from.
        stamp: The file's ``(size, mtime_ns)`` when it was loaded (None: unknown), so that
            more sessions are only ever opened on the same file.
    """

    session: Any
    metadata: dict[str, Any]
    path: Path
    stamp: tuple[int, int] | None = None
    cache: bool = False  # open ONNX Runtime's optimised copy (pictag.models.onnx_cache)
    _streams: Streams | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def load(cls, path: str | Path, cache: bool = False) -> OnnxRunner:
        """Open an exported file on the CPU.

        Args:
            path: The file.
            cache: Keep and open ONNX Runtime's optimised copy of the file for this machine
                (:mod:`pictag.models.onnx_cache`): for a run's ``model.onnx``, opened again and
                again, not for a file checked once (an export's parity check).

        Raises:
            ImportError: onnxruntime is not installed.
            ValueError: The file has no pictag metadata (not written by ``pictag export``).
            Exception: Whatever onnxruntime raises for a file it cannot load.
        """
        import onnxruntime

        path = Path(path)
        stamp = file_stamp(path)  # before reading: a later change shows as a new stamp
        session = create_session(onnxruntime, path, cache=cache)
        props = session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise ValueError(f"{path} has no '{METADATA_KEY}' metadata: export it with pictag")
        return cls(session, json.loads(props[METADATA_KEY]), path, stamp, cache)

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
        prediction that keeps :data:`STREAMS` batches in flight, each call in its own session
        on its share of torch's thread budget (3 threads: 2 and 1), opened on first use and
        again when the budget changes. The plain call, one at a time, with one thread in the
        budget or when the file changed since :meth:`load` (a re-export: the loaded model
        runs alone rather than beside another)."""
        with self._lock:
            streams = session_streams(self._streams, self.path, self.stamp, self.cache)
            if streams is None:
                return self, 1
            self._streams = streams
        return pooled(streams[1], self._run), len(stream_shares(streams[0]))

    def _run(self, session: Any, images: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.outputs
        values = session.run(list(outputs.values()), {self.input_name: as_batch(images)})
        return dict(zip(outputs, values, strict=True))


Streams = tuple[int, queue.SimpleQueue]  # (torch's thread count, idle sessions opened for it)


def session_streams(
    streams: Streams | None, path: Path, stamp: tuple[int, int] | None, cache: bool = False
) -> Streams | None:
    """The stream sessions on ``path`` for torch's thread budget now: ``streams`` when they were
    opened for it, else new ones (:func:`open_streams`); None with one thread in the budget or
    when the file changed."""
    threads = torch.get_num_threads()
    shares = stream_shares(threads)
    if len(shares) < 2:
        return None
    if streams is not None and streams[0] == threads:
        return streams
    idle = open_streams(path, stamp, shares, cache)
    return None if idle is None else (threads, idle)


def open_streams(
    path: Path, stamp: tuple[int, int] | None, shares: list[int], cache: bool = False
) -> queue.SimpleQueue | None:
    """Idle sessions on ``path``, one per share of threads, for :func:`pooled`; None (logged)
    when the file is no longer the one stamped ``stamp`` when its first session was opened
    (the streams would run another model than the one checked)."""
    import onnxruntime

    if stamp is None or file_stamp(path) != stamp:
        logger.info("%s changed since it was loaded: one model call at a time", path)
        return None
    idle: queue.SimpleQueue = queue.SimpleQueue()
    for share in shares:
        idle.put(create_session(onnxruntime, path, share, cache=cache))
    return idle


def pooled(idle: queue.SimpleQueue, run: Callable[[Any, Any], OutputT]) -> Callable[[Any], OutputT]:
    """A call ``images -> run(worker, images)`` on a worker (a stream's session or infer
    request) taken from ``idle`` and given back after: calls from as many threads as ``idle``
    holds run at once, and further ones wait for a worker."""

    def call(images: Any) -> OutputT:
        worker = idle.get()
        try:
            return run(worker, images)
        finally:
            idle.put(worker)

    return call


def stream_shares(threads: int) -> list[int]:
    """Intra-op threads of each of the (at most :data:`STREAMS`) sessions that split a budget
    of ``threads``: 2 -> [1, 1], 3 -> [2, 1]; one session for one thread."""
    count = max(1, min(STREAMS, threads))
    return [threads // count + (index < threads % count) for index in range(count)]


def file_stamp(path: Path) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, or None if it is gone."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def head_outputs(metadata: dict[str, Any]) -> dict[str, str]:
    """Head name -> graph output name of an exported model, in head order."""
    return {head["name"]: head["output"] for head in metadata["heads"]}


def as_batch(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """A batch as the contiguous float32 array the runtimes take."""
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(images, dtype=np.float32)
