"""A whole exported classifier run by OpenVINO: ``images -> {head: probabilities}``.

OpenVINO reads the ``RUN_DIR/model.onnx`` that ``pictag export`` writes for ONNX Runtime as it
is (no conversion step, no second file), and its ONNX front end keeps the file's
``metadata_props``, so the ``pictag`` document (heads, labels, preprocessing) comes with it.
:class:`OpenVinoRunner` has :class:`pictag.models.onnx_runner.OnnxRunner`'s interface
(``load``, ``metadata``, ``path``, ``outputs``, calling it on a batch), so
:class:`pictag.evaluation.predictor.Predictor` runs either one.

Precision: by default OpenVINO computes in the CPU's fastest precision, which is bfloat16 on
CPUs with native bf16 (AMX, AVX512-BF16) and float32 elsewhere. ``precision="f32"`` sets
``INFERENCE_PRECISION_HINT`` to f32 so the results match ONNX Runtime and PyTorch to float
rounding; :attr:`OpenVinoRunner.tolerance` is the parity tolerance that fits what it computes in.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from pictag.models.onnx_runner import (
    METADATA_KEY,
    as_batch,
    head_outputs,
    pooled,
    stream_shares,
)

PRECISIONS = ("auto", "f32")  # auto: OpenVINO's choice for the CPU; f32: forced float32
# Max |probability difference| from a float32 reference, by the precision the CPU computes in.
# f32 is pictag export's own default tolerance. bf16 keeps 8 bits of mantissa (~0.4% per value)
# and the errors of ~50 layers add up: a few 1e-3 on probabilities is usual, so 2e-2 flags a
# broken graph without failing on bf16's ordinary rounding.
TOLERANCES = {"f32": 1e-4, "bf16": 2e-2, "f16": 2e-2}
DEVICE = "CPU"  # pictag runs OpenVINO on the CPU only: CUDA GPUs go through PyTorch

logger = logging.getLogger(__name__)


@dataclass
class OpenVinoRunner:
    """An OpenVINO model, compiled for the CPU, over an exported pictag classifier.

    Attributes:
        compiled: The ``openvino.CompiledModel``.
        metadata: The ``pictag`` metadata document (heads, labels, thresholds, preprocess).
        path: The file it was loaded from.
        precision: What the CPU computes in: ``f32`` or ``bf16`` (read back from OpenVINO).
    """

    backend: ClassVar[str] = "openvino"

    compiled: Any
    metadata: dict[str, Any]
    path: Path
    precision: str
    # (the openvino.Core, the read model, the precision asked for): to compile the streams
    source: tuple[Any, Any, str] | None = field(default=None, repr=False)
    _request: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # (torch's thread count they were compiled for, a queue of idle stream requests or None
    # when they cannot be used)
    _streams: tuple[int, queue.SimpleQueue | None] | None = field(
        default=None, init=False, repr=False
    )
    _streams_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def load(cls, path: str | Path, precision: str = "auto") -> OpenVinoRunner:
        """Read an exported file and compile it for the CPU.

        Args:
            path: A ``model.onnx`` written by ``pictag export``.
            precision: ``auto`` (OpenVINO's default for the CPU) or ``f32``.

        Raises:
            ImportError: openvino is not installed.
            ValueError: ``precision`` is unknown, or the file has no pictag metadata.
            Exception: Whatever OpenVINO raises for a file it cannot read or compile.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}: {precision!r}")
        import openvino

        path = Path(path)
        core = openvino.Core()
        model = core.read_model(str(path))
        key = ["framework", METADATA_KEY]  # where the ONNX front end puts metadata_props
        if not model.has_rt_info(key):
            raise ValueError(f"{path} has no '{METADATA_KEY}' metadata: export it with pictag")
        metadata = json.loads(model.get_rt_info(key).astype(str))
        # One stream over all threads: a plain call runs one whole batch at a time.
        compiled = core.compile_model(
            model,
            DEVICE,
            _config(precision, torch.get_num_threads(), {"PERFORMANCE_HINT": "LATENCY"}),
        )
        return cls(compiled, metadata, path, _precision(compiled), (core, model, precision))

    @property
    def tolerance(self) -> float:
        """Max |probability difference| from a float32 runtime that fits :attr:`precision`."""
        return TOLERANCES.get(self.precision, TOLERANCES["bf16"])

    @property
    def input_name(self) -> str:
        return str(self.metadata["input"]["name"])

    @property
    def outputs(self) -> dict[str, str]:
        """Head name -> graph output name, in head order."""
        return head_outputs(self.metadata)

    def concurrent(self) -> tuple[Callable[[Any], dict[str, np.ndarray]], int]:
        """A model call that ``count`` threads may make at once, and ``count``: for a long
        prediction that keeps several batches in flight as ONNX Runtime does
        (:meth:`pictag.models.onnx_runner.OnnxRunner.concurrent`), the model compiled a second
        time with one OpenVINO stream per batch in flight over torch's thread budget (Lite0,
        2 cores, batches of 8: 0.98-1.18x one call at a time, raw, in three runs), on first
        use and again when the budget changes. The plain call, one at a time, with one thread in the
        budget, a runner built without :meth:`load`, or streams that cannot be used."""
        threads = torch.get_num_threads()
        count = len(stream_shares(threads))
        if count < 2 or self.source is None:
            return self, 1
        with self._streams_lock:
            if self._streams is None or self._streams[0] != threads:
                self._streams = (threads, self._open_streams(threads, count))
            idle = self._streams[1]
        if idle is None:
            return self, 1
        return pooled(idle, self._infer), count

    def _open_streams(self, threads: int, count: int) -> queue.SimpleQueue | None:
        """Idle infer requests, one per stream, each called once; None (logged) when OpenVINO
        cannot compile or run the streams, or computes them in another precision than the
        plain model (which parity checked)."""
        assert self.source is not None
        core, model, precision = self.source
        # Unpinned threads, as ONNX Runtime's: predict's decoding threads share the cores.
        extra = {"NUM_STREAMS": count, "ENABLE_CPU_PINNING": False}
        try:
            compiled = core.compile_model(model, DEVICE, _config(precision, threads, extra))
            if _precision(compiled) != self.precision:
                raise RuntimeError(f"they compute in {_precision(compiled)}, not {self.precision}")
            return self._warmed_up([compiled.create_infer_request() for _ in range(count)])
        except Exception as err:  # OpenVINO raises plain RuntimeErrors
            logger.warning(
                "OpenVINO cannot run %s in %d streams (%s): one model call at a time",
                self.path, count, err,
            )  # fmt: skip
            return None

    def _warmed_up(self, requests: list[Any]) -> queue.SimpleQueue:
        """The requests in a queue, after a first call on each, one after the other and beside
        no plain call: two first inferences at once in a process can deadlock in OpenVINO's
        Python bindings (a review saw 1 hang in 36 cold runs), and a first call is the slowest."""
        warm_up = np.zeros((1, *self.metadata["preprocess"]["input_size"]), np.float32)
        idle: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            for request in requests:
                self._infer(request, warm_up)
                idle.put(request)
        return idle

    def __call__(self, images: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Probabilities of a normalised batch ``[B, 3, H, W]``: head name -> float32 ``[B, C]``."""
        # An infer request is not thread-safe (a server or a user may call from several
        # threads); one shared request behind a lock keeps its buffers between calls.
        with self._lock:
            if self._request is None:
                self._request = self.compiled.create_infer_request()
            return self._infer(self._request, images)

    def _infer(self, request: Any, images: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        # infer copies the outputs (share_outputs=False), so the next call cannot touch them.
        result = request.infer({self.input_name: as_batch(images)})
        return {
            head: np.asarray(result[output], dtype=np.float32)
            for head, output in self.outputs.items()
        }


def _config(precision: str, threads: int, extra: dict[str, Any]) -> dict[str, Any]:
    """Compile settings: ``extra``, ``threads`` (torch's thread budget, as ONNX Runtime's
    sessions have it, so decoding threads and other processes get what the user left them),
    and float32 when ``precision`` is ``f32``."""
    config = {**extra, "INFERENCE_NUM_THREADS": threads}
    if precision == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return config


def _precision(compiled: Any) -> str:
    """What a compiled model computes in (``f32``, ``bf16``, ...)."""
    return str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())


def max_difference(
    runner: Any, reference: Any, images: torch.Tensor | np.ndarray
) -> dict[str, float]:
    """Head name -> max |probability difference| between two runners on the same batch.

    Args:
        runner: The runner checked (e.g. an :class:`OpenVinoRunner`).
        reference: A float32 runner of the same model (ONNX Runtime, or PyTorch wrapped to
            return probabilities).
        images: A normalised batch ``[B, 3, H, W]``.
    """
    got, want = runner(images), reference(images)
    return {head: float(np.max(np.abs(got[head] - want[head]))) for head in want}
