"""How close ``Predictor.predict`` can come to the raw runtime at all: the CPU seconds of each part.

``predict`` must decode, resize, crop and normalise every JPEG, and on a machine whose cores
the model already keeps busy, that work takes CPU time from it, however well it overlaps. So
the best end-to-end / raw ratio is ``raw CPU / (raw CPU + preparation CPU)``, reached only if
the overlap were perfect and nothing else cost anything. Each round times, in alternating
order, on the same 200 JPEGs:

- ``raw``: ONNX Runtime on pre-decoded, normalised tensors in batches of 8, one session on all
  threads (the fastest raw runtime of ``predict_headline.py`` on this CPU);
- ``prep``: the preparation alone, one thread (``Predictor._load`` then ``model_input``, per
  batch of 8, as ``predict``'s decode pool runs them);
- ``api``: ``Predictor.predict`` on ONNX Runtime, the model loaded and warm.

Each gets its wall time and this process's CPU time (all threads). Reported per round and as
medians: the achieved ratio (raw wall / api wall), the bound (raw CPU / (raw CPU + prep CPU)),
what ``api`` spends beyond raw + prep (threads, cache misses from sharing the cores, the
assembly of predictions) and how busy it keeps the cores (api CPU / (wall x CPUs)).

Result: ``results/predict_cpu_bound.json`` and the README.

Run from the repository root (about 2 minutes on 2 cores):
    python benchmarks/predict_cpu_bound.py [--run RUN_DIR] [--rounds 10]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import torch

from bench_utils import LoadMeter, environment, write_result
from pictag.data.transforms import decode_image
from pictag.evaluation.predictor import Predictor
from pictag.evaluation.prefetch import batches
from pictag.models.onnx_session import create_session
from pictag.run import ONNX_FILE
from predict_speed import folder_and_run, speed_args

BATCH = 8  # predict's default on a CPU, and the fastest raw batch here


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) of one call of ``work``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def passes(run_dir: Path, files: list[Path]) -> dict[str, Callable[[], object]]:
    """Name -> one pass of that part over ``files``."""
    predictor = Predictor.from_run(run_dir, "cpu", "onnxruntime")
    tensors = torch.stack(
        [predictor.transform(decode_image(path, predictor.preprocess)) for path in files]
    )
    session = create_session(onnxruntime, run_dir / ONNX_FILE)
    named = [(str(path), str(path)) for path in files]

    def raw() -> None:
        for chunk in batches(tensors, BATCH):
            session.run(None, {"images": chunk.numpy()})

    def prep() -> None:
        for chunk in batches(named, BATCH):
            predictor.model_input([predictor._load(item) for item in chunk])

    return {"raw": raw, "prep": prep, "api": lambda: predictor.predict([n for n, _ in named])}


def rounds(parts: dict[str, Callable[[], object]], count: int) -> list[dict[str, list[float]]]:
    """``count`` rounds (after a warm-up pass of each) of every part, in alternating order."""
    for work in parts.values():
        work()
    results = []
    for index in range(count):
        order = list(parts) if index % 2 == 0 else list(parts)[::-1]
        measured = {name: list(timed(parts[name])) for name in order}
        results.append(measured)
        print(", ".join(f"{k} {v[0]:.3f} s wall {v[1]:.3f} s CPU" for k, v in measured.items()))
    return results


def derived(measured: dict[str, list[float]], cpus: int) -> dict[str, float]:
    """The ratios of one round."""
    (raw_wall, raw_cpu), (_, prep_cpu), (api_wall, api_cpu) = (
        measured["raw"],
        measured["prep"],
        measured["api"],
    )
    return {
        "achieved": raw_wall / api_wall,
        "bound": raw_cpu / (raw_cpu + prep_cpu),
        "api_cpu_beyond_raw_and_prep_s": api_cpu - raw_cpu - prep_cpu,
        "api_cores_busy": api_cpu / (api_wall * cpus),
        "raw_cores_busy": raw_cpu / (raw_wall * cpus),
    }


def main(argv: list[str] | None = None) -> int:
    args = speed_args(__doc__, 10, argv, batch=BATCH)
    cpus = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        files, run_dir = folder_and_run(args, Path(tmp))
        parts = passes(run_dir, files)
        with LoadMeter() as meter:
            measured = rounds(parts, args.rounds)
    per_round = [derived(m, cpus) for m in measured]
    result = {
        "setup": {
            "model": "tf_efficientnet_lite0 + a 5-tag head" if args.run is None else args.run,
            "images": f"first {len(files)} JPEGs of miml-scenes/train (224x224)",
            "batch": BATCH,
            "rounds": args.rounds,
            "threads": cpus,
        },
        "seconds_rounds": {
            name: {
                "wall": [round(m[name][0], 3) for m in measured],
                "cpu": [round(m[name][1], 3) for m in measured],
            }
            for name in parts
        },
        "rounds": [{k: round(v, 3) for k, v in r.items()} for r in per_round],
        "median": {k: round(statistics.median(r[k] for r in per_round), 3) for k in per_round[0]},
        "load": meter.to_dict(),
        "environment": {**environment(), "onnxruntime": onnxruntime.__version__},
    }
    print(f"median: {result['median']}; load: {result['load']}")
    print(f"wrote {write_result('predict_cpu_bound', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
