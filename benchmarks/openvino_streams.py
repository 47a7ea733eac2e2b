"""OpenVINO with batches in flight: ``Predictor.predict`` on OpenVINO (float32) with its
streams (two batches at once, each on its share of the threads, as ONNX Runtime runs them)
against the same predictor made to call one batch at a time (the code before), beside raw
OpenVINO and raw ONNX Runtime on pre-decoded tensors, in tightly interleaved rounds.

Each round times, in alternating order, one pass over the images of
- ``raw_openvino_b8``: OpenVINO's plain compiled model (one stream), batches of 8, one call at
  a time; ``raw_openvino_streams_b8``: its streams, two batches at once;
- ``raw_onnxruntime_streams_b8``: ONNX Runtime as ``predict`` runs it (two sessions);
- ``api_openvino``: ``Predictor.predict`` (default batch: 8 on a CPU) with the streams;
  ``api_openvino_one_at_a_time``: the same with the runner's ``concurrent`` replaced by the
  plain call on this instance (what the code before ran); ``api_onnxruntime``.
It also records what ``--backend auto`` measured and chose for the run on this machine.

Result: ``results/openvino_streams.json`` and the README.

Run from the repository root (about 3 minutes for 8 rounds of 200 images on 2 cores):
    python benchmarks/openvino_streams.py [--run RUN_DIR] [--images 200] [--rounds 8]
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime
import openvino
import torch

from bench_utils import environment, interleaved_rounds
from pictag.data.transforms import decode_image
from pictag.evaluation.predictor import Predictor
from pictag.evaluation.prefetch import batches
from pictag.run.backend_choice import AUTO_BACKEND_FILE
from predict_speed import folder_and_run, speed_args, streams_rate, summary, write_named

BATCH = 8  # predict's default on a CPU


def runner_rate(call: Callable, count: int, chunks: list[np.ndarray], images: int) -> float:
    """Images/s of ``call`` over ``chunks`` with ``count`` calls at once (after a warm-up)."""
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(call, chunks[:count]))
        start = time.perf_counter()
        list(pool.map(call, chunks))
        return images / (time.perf_counter() - start)


def timings(run_dir: Path, files: list[Path]) -> dict[str, Callable[[], float]]:
    """Name -> a function that returns images/s of one pass over ``files``."""
    openvino_api = Predictor.from_run(run_dir, "cpu", "openvino-fp32")
    one_at_a_time = Predictor.from_run(run_dir, "cpu", "openvino-fp32")
    plain = one_at_a_time.runner
    plain.concurrent = lambda: (plain, 1)  # type: ignore[method-assign]  # the code before
    onnx_api = Predictor.from_run(run_dir, "cpu", "onnxruntime")
    tensors = torch.stack(
        [onnx_api.transform(decode_image(path, onnx_api.preprocess)) for path in files]
    )
    streams = openvino_api.runner.concurrent()
    chunks = [chunk.numpy() for chunk in batches(tensors, BATCH, streams[1])]
    names = [str(path) for path in files]

    def api(predictor: Predictor) -> float:
        start = time.perf_counter()
        predictor.predict(names)
        return len(names) / (time.perf_counter() - start)

    return {
        "raw_openvino_b8": lambda: runner_rate(plain, 1, chunks, len(names)),
        "raw_openvino_streams_b8": lambda: runner_rate(*streams, chunks, len(names)),
        "raw_onnxruntime_streams_b8": lambda: streams_rate(run_dir, tensors, BATCH),
        "api_openvino": lambda: api(openvino_api),
        "api_openvino_one_at_a_time": lambda: api(one_at_a_time),
        "api_onnxruntime": lambda: api(onnx_api),
    }


def auto_choice(run_dir: Path) -> dict:
    """What ``--backend auto`` measures and chooses here (measured afresh)."""
    (run_dir / AUTO_BACKEND_FILE).unlink(missing_ok=True)
    backend = Predictor.from_run(run_dir, "cpu").backend
    stored = json.loads((run_dir / AUTO_BACKEND_FILE).read_text())["choices"][-1]
    return {"chose": backend, "ms_per_sample_batch": stored["ms"]}


def main(argv: list[str] | None = None) -> int:
    args = speed_args(__doc__, 8, argv, batch=None)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files, run_dir = folder_and_run(args, work)
        rates, meter = interleaved_rounds(timings(run_dir, files), args.rounds)
        auto = auto_choice(run_dir)
    pairs = {
        "api_openvino_over_one_at_a_time": ("api_openvino", "api_openvino_one_at_a_time"),
        "raw_openvino_streams_over_plain": ("raw_openvino_streams_b8", "raw_openvino_b8"),
        "api_openvino_over_raw_openvino_streams": ("api_openvino", "raw_openvino_streams_b8"),
    }
    ratios = {
        name: [a / b for a, b in zip(rates[top], rates[bottom], strict=True)]
        for name, (top, bottom) in pairs.items()
    }
    result = {
        "setup": {
            "model": "tf_efficientnet_lite0 (pretrained offline) + linear-probe head, 5 tags",
            "images": f"first {len(files)} JPEGs of miml-scenes/train (224x224)",
            "batch": BATCH,
            "rounds": args.rounds,
        },
        **summary(rates, ratios),
        "auto": auto,
        "load": meter.to_dict(),
        "environment": {
            **environment(),
            "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__,
        },
    }
    print(f"ratios (median): {result['ratios_median']}; auto: {auto}; load: {result['load']}")
    print(f"medians: { {k: round(statistics.median(v), 1) for k, v in rates.items()} }")
    write_named("openvino_streams", args.images, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
