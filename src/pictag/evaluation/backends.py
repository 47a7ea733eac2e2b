"""Which runtime computes a :class:`pictag.evaluation.predictor.Predictor`'s probabilities.

Backends: eager PyTorch (``torch``, any device), and on a CPU the exported ``RUN_DIR/model.onnx``
run by ONNX Runtime (``onnxruntime``) or by OpenVINO (``openvino``: OpenVINO's default
precision for the CPU, bfloat16 where the CPU has native bf16; ``openvino-fp32``: float32
forced). ``auto`` takes ONNX Runtime when the export is up to date, and OpenVINO (float32)
instead only when it is measurably faster on this machine: which runtime wins depends on the
CPU (OpenVINO is tuned for Intel's), so it is measured, once per process and model file, as
a long prediction runs them: a seeded batch of predict's size in each of the calls it keeps in
flight at once (two on two or more threads: :meth:`Runner.concurrent`), and the choice is
stored in the run folder for the next process on this machine
(:mod:`pictag.run.backend_choice`). ``auto`` keeps float32 so that its results stay within
float rounding of the ones ``pictag export`` checked; bf16 is there for whoever asks for
``openvino``.

Every OpenVINO runner is checked against ONNX Runtime on the same batch first, with a
tolerance that fits its precision (:attr:`pictag.models.openvino_runner.OpenVinoRunner.tolerance`).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pictag.evaluation.inference import CPU_BATCH
from pictag.models.onnx_runner import OnnxRunner
from pictag.models.openvino_runner import OpenVinoRunner, max_difference
from pictag.run import run_onnx_path, run_onnx_runner, run_openvino_runner
from pictag.run.backend_choice import machine_key, read_auto_choice, write_auto_choice

BACKENDS = ("auto", "onnxruntime", "openvino", "openvino-fp32", "torch")
SAMPLE_IMAGES = 4  # the seeded batch that parity runs on
# Timing: a seeded batch of predict's size in each call in flight, the best of a few rounds
# after a warm-up round (with batches of 4 and two rounds, auto once timed OpenVINO 5 % faster
# on a CPU where it ran predict 15 % slower).
TIMING_REPEATS = 3
# OpenVINO must be this much faster to replace ONNX Runtime: within the noise of a shared CPU,
# keep the runtime pictag export checked, so auto does not flip between runs of a command.
MARGIN = 0.05

logger = logging.getLogger(__name__)

# Model file (path, size, mtime) -> the backend auto chose for it in this process.
_AUTO_CHOICES: dict[tuple[str, int, int], str] = {}
_AUTO_LOCK = threading.Lock()  # two threads loading one run measure it once


class Runner(Protocol):
    """What a Predictor needs of an exported model: :class:`OnnxRunner` and
    :class:`OpenVinoRunner` both fit."""

    metadata: dict[str, Any]
    path: Path

    def __call__(self, images: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Head name -> probabilities ``[B, C]`` of a normalised batch ``[B, 3, H, W]``."""
        ...

    def concurrent(self) -> tuple[Callable[[Any], dict[str, np.ndarray]], int]:
        """A model call like this one that ``count`` threads may make at once, and ``count``."""
        ...


def backend_name(runner: Runner | None) -> str:
    """``torch`` (no runner), ``onnxruntime`` or ``openvino``."""
    if runner is None:
        return "torch"
    return OpenVinoRunner.backend if isinstance(runner, OpenVinoRunner) else "onnxruntime"


def select_runner(
    run_dir: str | Path, meta: dict[str, Any], device: torch.device, backend: str
) -> Runner | None:
    """The exported model to predict with, or None for eager PyTorch.

    Args:
        run_dir: The run folder.
        meta: Its ``pictag.json`` document.
        device: Where the Predictor runs; exported models run on the CPU only.
        backend: One of :data:`BACKENDS`.

    Raises:
        ValueError: ``backend`` is unknown, or a runtime was asked for that cannot be used
            (a GPU, no up-to-date ``model.onnx``, the runtime missing, or OpenVINO results that
            fail the parity check).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "torch" or (backend == "auto" and device.type != "cpu"):
        return None
    onnx_file = run_onnx_path(run_dir)
    if device.type != "cpu":
        raise ValueError(f"backend {backend!r} runs on the CPU, not on {device}")
    if backend != "auto" and not onnx_file.is_file():
        raise ValueError(
            f"backend {backend!r} runs {onnx_file}, which has not been written: write it with "
            f"`pictag export {run_dir}`, or use the backend torch"
        )
    if backend in ("auto", "onnxruntime"):
        onnx = run_onnx_runner(run_dir, meta)
        if backend == "auto":
            return onnx if onnx is None else _auto(run_dir, meta, onnx)
        if onnx is None:
            raise ValueError(
                f"backend 'onnxruntime' needs the CPU and an up-to-date {onnx_file} (write it "
                f"with `pictag export {run_dir}`); see the log for why it was not used"
            )
        return onnx
    runner = run_openvino_runner(run_dir, meta, "f32" if backend == "openvino-fp32" else "auto")
    if runner is None:
        missing = importlib.util.find_spec("openvino") is None
        raise ValueError(
            f"backend {backend!r} needs openvino (pip install openvino)"
            if missing
            else f"backend {backend!r} cannot use {onnx_file}: the log above says why (an "
            f"out-of-date export, which `pictag export {run_dir}` writes again, or an openvino "
            "that fails to load)"
        )
    reference = run_onnx_runner(run_dir, meta)  # None only without onnxruntime
    if reference is not None:
        worst = _parity(runner, reference, sample_batch(runner))
        if worst > runner.tolerance:
            raise ValueError(
                f"OpenVINO ({runner.precision}) differs from ONNX Runtime by {worst:.2e} on "
                f"{onnx_file}, more than {runner.tolerance:g}: use backend 'onnxruntime'"
            )
    return runner


def sample_batch(runner: Runner, images: int = SAMPLE_IMAGES) -> np.ndarray:
    """A seeded ``[images, 3, H, W]`` batch of normalised-looking values (the same in every
    process, so a choice depends on the machine, not on the draw)."""
    shape = (images, *runner.metadata["preprocess"]["input_size"])
    return np.random.default_rng(0).standard_normal(shape, dtype=np.float32)


def _parity(runner: Runner, reference: Runner, images: np.ndarray) -> float:
    return max(max_difference(runner, reference, images).values())


def _auto(run_dir: str | Path, meta: dict[str, Any], onnx: OnnxRunner) -> Runner:
    """ONNX Runtime, or float32 OpenVINO when it is faster here (measured once a process)."""
    stat = onnx.path.stat()
    stamp = (stat.st_size, stat.st_mtime_ns)
    key = (str(onnx.path.resolve()), *stamp)
    with _AUTO_LOCK:
        choice = _AUTO_CHOICES.get(key)
        if choice is None:
            machine = machine_key(stamp, torch.get_num_threads())
            choice = read_auto_choice(run_dir, machine)
            if choice is None:
                choice, measured, timings = _measure(run_dir, meta, onnx)
                write_auto_choice(run_dir, machine, choice, timings)
            else:
                measured = None
                logger.info("auto backend for %s: %s (stored, measured before)", onnx.path, choice)
            _AUTO_CHOICES[key] = choice
            if measured is not None:  # compiled for the measurement: use it
                return measured
    if choice == "openvino":
        # None only if the file changed in between (then the key changes too): keep ORT.
        return run_openvino_runner(run_dir, meta, "f32") or onnx
    return onnx


def _measure(
    run_dir: str | Path, meta: dict[str, Any], onnx: OnnxRunner
) -> tuple[str, OpenVinoRunner | None, dict[str, float]]:
    """``("openvino", runner, ms)`` when float32 OpenVINO passes parity and is faster than ONNX
    Runtime by :data:`MARGIN` on a seeded batch of :data:`CPU_BATCH` images in each call in
    flight as a long prediction runs them (:func:`_in_flight_seconds`), else ``("onnxruntime",
    None, ms)``; ``ms``: the best time of each runtime per batch (empty when OpenVINO could not
    be timed)."""
    openvino = run_openvino_runner(run_dir, meta, "f32")
    if openvino is None:
        return "onnxruntime", None, {}
    worst = _parity(openvino, onnx, sample_batch(onnx))
    if worst > openvino.tolerance:
        logger.warning(
            "OpenVINO differs from ONNX Runtime by %.2e on %s (tolerance %g): using ONNX Runtime",
            worst,
            onnx.path,
            openvino.tolerance,
        )
        return "onnxruntime", None, {}
    runners = {"onnxruntime": onnx, "openvino": openvino}
    images = sample_batch(onnx, CPU_BATCH)
    best = {name: float("inf") for name in runners}
    for repeat in range(1 + TIMING_REPEATS):  # alternate, so a burst of load hits both alike
        for name, runner in runners.items():
            seconds = _in_flight_seconds(runner, images)
            if repeat > 0:  # the first round opens and warms up the streams
                best[name] = min(best[name], seconds)
    faster = best["openvino"] < best["onnxruntime"] * (1 - MARGIN)
    choice = "openvino" if faster else "onnxruntime"
    logger.info(
        "auto backend for %s: ONNX Runtime %.1f ms, OpenVINO %.1f ms per %d images "
        "(batches in flight as predict runs them): %s",
        onnx.path,
        best["onnxruntime"] * 1e3,
        best["openvino"] * 1e3,
        CPU_BATCH,
        choice,
    )
    timings = {name: round(seconds * 1e3, 2) for name, seconds in best.items()}
    return choice, openvino if faster else None, timings


def _in_flight_seconds(runner: Runner, images: np.ndarray) -> float:
    """Seconds per batch of ``images`` when ``runner`` computes as many batches at once as a
    long prediction keeps in flight (:meth:`Runner.concurrent`)."""
    call, count = runner.concurrent()
    with ThreadPoolExecutor(count) as pool:
        start = time.perf_counter()
        list(pool.map(call, [images] * count))
        return (time.perf_counter() - start) / count
