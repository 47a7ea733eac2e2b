"""The headline of ``predict_speed.py`` alone, in tightly interleaved rounds: ``pictag predict``
and ``Predictor.predict`` on ONNX Runtime against the fastest raw ONNX Runtime on pre-decoded
tensors.

Each round times, in alternating order, raw ONNX Runtime at batches of 8 and of 32, each in one
session on all threads and as ``predict`` runs it (two batches in flight, one session each,
the batches evened out as ``predict`` evens them), the Python API with the model loaded and
warm (``Predictor.predict``), and the whole command in-process (``pictag predict RUN_DIR FOLDER
--format json --backend onnxruntime``: loading the run, opening and first using its sessions,
JSON included) at its default batch and at 32 (its default before). The ratio of a round is
end to end / the fastest raw runtime of that round; a round takes seconds, so load from other
processes and this machine's drift (10-20 % from hour to hour) hit its timings alike, unlike
the minute-long rounds of ``predict_speed.py``. OpenVINO is left out (ONNX Runtime is the
faster raw runtime on this CPU, see ``predict_speed.json``).

Result: see ``results/predict_headline*.json`` and the README.

Run from the repository root (about 3 minutes for 10 rounds of 200 images on 2 cores):
    python benchmarks/predict_headline.py [--run RUN_DIR] [--images 600] [--rounds 10]
A ``--run`` of another backbone than Lite0 writes ``predict_headline_BACKBONE*.json``.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import torch

from bench_utils import environment, interleaved_rounds
from pictag.data.transforms import decode_image
from pictag.evaluation.predictor import Predictor
from pictag.evaluation.prefetch import batches
from pictag.models.onnx_session import create_session
from pictag.run import ONNX_FILE, read_run_info
from predict_speed import folder_and_run, speed_args, streams_rate, summary, write_named
from predict_throughput import command_rate

RAW_BATCHES = (8, 32)  # the raw runtime at each; the fastest of a round is the yardstick


def timings(
    run_dir: Path, folder: Path, files: list[Path], batch: int | None
) -> dict[str, Callable]:
    """Name -> a function that returns images/s of one pass over ``files``; ``batch`` is the
    API's and the command's (None: their default), the command also runs at 32 (the default
    before 8 on a CPU)."""
    predictor = Predictor.from_run(run_dir, "cpu", "onnxruntime")
    tensors = torch.stack(
        [predictor.transform(decode_image(path, predictor.preprocess)) for path in files]
    )
    session = create_session(onnxruntime, run_dir / ONNX_FILE)
    names = [str(path) for path in files]

    def raw_single(size: int) -> float:
        start = time.perf_counter()
        for chunk in batches(tensors, size):
            session.run(None, {"images": chunk.numpy()})
        return len(files) / (time.perf_counter() - start)

    def api() -> float:
        start = time.perf_counter()
        predictor.predict(names, batch_size=batch)
        return len(files) / (time.perf_counter() - start)

    raw: dict[str, Callable] = {}
    for size in RAW_BATCHES:
        raw[f"raw_onnxruntime_b{size}"] = lambda size=size: raw_single(size)
        raw[f"raw_onnxruntime_streams_b{size}"] = lambda size=size: streams_rate(
            run_dir, tensors, size
        )
    return {
        **raw,
        "api_onnxruntime": api,
        "predict_onnxruntime": lambda: command_rate(
            run_dir, folder, len(files), "onnxruntime", batch
        ),
        "predict_onnxruntime_b32": lambda: command_rate(
            run_dir, folder, len(files), "onnxruntime", 32
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = speed_args(__doc__, 10, argv, batch=None)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files, run_dir = folder_and_run(args, work)
        backbone = read_run_info(run_dir).config.model.backbone
        timed = timings(run_dir, work / "images", files, args.batch)
        rates, meter = interleaved_rounds(timed, args.rounds)
    raw = [rate for name, rate in rates.items() if name.startswith("raw_")]
    fastest = [max(round_rates) for round_rates in zip(*raw, strict=True)]
    ratios = {
        f"{name}_over_fastest_raw": [
            rate / best for rate, best in zip(rates[name], fastest, strict=True)
        ]
        for name in ("api_onnxruntime", "predict_onnxruntime", "predict_onnxruntime_b32")
    }
    result = {
        "setup": {
            "model": f"{backbone} + a 5-tag head"
            + (" (a linear probe on the offline weights)" if args.run is None else ""),
            "images": f"first {len(files)} JPEGs of miml-scenes/train (224x224)",
            "batch": args.batch or "default",
            "raw_batches": RAW_BATCHES,
            "rounds": args.rounds,
        },
        **summary(rates, ratios),
        "load": meter.to_dict(),
        "environment": {**environment(), "onnxruntime": onnxruntime.__version__},
    }
    print(f"ratios (median): {result['ratios_median']}; load: {result['load']}")
    # Another model than the default run's Lite0 gets a file of its own.
    # (A hub name such as hf-hub:timm/resnet50.a1_in1k holds characters a file name cannot.)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", backbone)
    stem = "predict_headline" if backbone == "tf_efficientnet_lite0" else f"predict_headline_{safe}"
    write_named(stem, args.images, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
