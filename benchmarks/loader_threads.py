"""Speed of pictag's training loader (decode-once cache + per-image augmentation + collation)
with torch's default intra-op threads against one thread, alternating rounds.

With ``train.workers: 0`` the per-image transforms run in the training process, where every small
tensor op (resize, crop, normalise) is split across torch's intra-op threads. When other jobs
share the CPUs, a thread that is switched out stalls the op's barrier and the loader slows down
far more than the model step does.

Result (2-core Xeon, CIFAR-10 slice of 340 images, batch 32, image cache in memory; medians of
3 alternating rounds):
    quiet machine (others < 4% of the CPUs), 224 px: 0.72 ms an image with 2 threads, 0.95 with 1
    others holding 62-87% of the CPUs,       224 px: 62-121 ms with 2 threads, 1.4-3.3 with 1
    the same load,                            32 px: 0.59-0.65 ms with 2 threads, 0.58-0.60 with 1
A quiet Lite0 training step costs ~50 ms an image, so the loader is cheap when the machine is
quiet and as slow as the model itself when it is busy.

Run from the repository root:
    python benchmarks/loader_threads.py --size 224
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from bench_utils import LoadMeter, cifar_slice, dataset_dir, environment, write_result
from pictag.config import config_from_dict
from pictag.data.pipeline import prepare_data
from pictag.run import build_model
from pictag.training.loaders import make_loaders
from pictag.training.runtime import setup_runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, choices=(32, 224), default=224)
    parser.add_argument("--limit", type=int, default=40, help="images per class")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    model = {"backbone": "small_cnn", "pretrained": "none"} if args.size == 32 else {}
    rounds: dict[int, list[float]] = {default_threads: [], 1: []}
    loads: list[float | None] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = cifar_slice(dataset_dir("cifar10-jpg"), Path(tmp), args.limit)
        config = config_from_dict(
            {
                "data": {"format": "folder", "images": [str(root)]},
                "model": model,
                "train": {"cache": "memory", "amp": "off"},
            }
        )
        data = prepare_data(config, None, decode=False, progress=False)
        _, pre = build_model(config.model, data.heads, config.heads)
        loaders = make_loaders(data, pre, config, setup_runtime("cpu", "off"), progress=False)
        for _ in range(args.rounds):
            for threads in rounds:
                torch.set_num_threads(threads)
                with LoadMeter() as meter:
                    seen = sum(images.shape[0] for images, _ in loaders.train)
                rounds[threads].append(round(1e3 * meter.wall_s / seen, 3))
                loads.append(meter.others_cpu_share)
                print(f"{args.size} px, {threads} thread(s): {rounds[threads][-1]} ms/img "
                      f"(others' CPU share {meter.others_cpu_share})", flush=True)  # fmt: skip
    torch.set_num_threads(default_threads)
    payload = {
        "benchmark": "loader_threads",
        "command": " ".join(["python", "benchmarks/loader_threads.py", *sys.argv[1:]]),
        "size": args.size,
        "ms_per_image": {f"{t}_threads": v for t, v in rounds.items()},
        "median_ms_per_image": {f"{t}_threads": statistics.median(v) for t, v in rounds.items()},
        "others_cpu_share": loads,
        "environment": environment(),
    }
    path = write_result(f"loader_threads_{args.size}", payload)
    print(f"RESULT {payload['median_ms_per_image']} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
