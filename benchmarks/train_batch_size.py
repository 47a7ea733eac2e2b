"""Training speed by batch size on this CPU: is there a batch that the budget should choose?

The plain training step of ``step_timing.plain_step`` (forward, loss, backward and AdamW of the
model pictag builds, BatchNorm frozen as in a fine-tune, channels-last, float32) on a random
batch already in memory, for EfficientNet-Lite0 at 224 px with one 3-class head, at batch sizes
8, 16, 32 (pictag's default) and 64. Rounds interleave the sizes (the order reversed every
other round) so that load from other processes hits them alike; each size runs ~8 s a round.

Run from the repository root (about 3 minutes on 2 cores):
    python benchmarks/train_batch_size.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench_utils import environment, write_result
from pictag.config import config_from_dict
from pictag.heads.labels import Head
from step_timing import plain_step, time_plain, warm_up

SIZES = (8, 16, 32, 64)
SECONDS = 8.0  # per size and round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    heads = {"label": Head("label", "multiclass", ("a", "b", "c"))}
    steps = {}
    for size in SIZES:
        config = config_from_dict(
            {"heads": {"label": "multiclass"}, "train": {"batch_size": size, "amp": "off"}}
        )
        steps[size] = plain_step(config, heads)
        warm_up(steps[size])
    rates: dict[int, list[float]] = {size: [] for size in SIZES}
    shares: list[float] = []
    for index in range(args.rounds):
        for size in SIZES if index % 2 == 0 else SIZES[::-1]:
            start, count = time.perf_counter(), 0
            while time.perf_counter() - start < SECONDS / 2:  # how many steps fill SECONDS
                steps[size]()
                count += 1
            measured = time_plain(steps[size], max(2, count * 2), size)
            rates[size].append(measured["images_per_s"])
            shares.append(measured["others_cpu_share"])
        print(f"round {index + 1}: " + ", ".join(f"{s}: {r[-1]:.1f}" for s, r in rates.items()))
    result = {
        "setup": "tf_efficientnet_lite0 (offline weights), 224 px, 1 multiclass head, float32, "
        "channels-last, BatchNorm frozen, AdamW; plain step on a batch in memory",
        "images_per_s_rounds": {str(s): r for s, r in rates.items()},
        "images_per_s_median": {str(s): round(statistics.median(r), 2) for s, r in rates.items()},
        "others_cpu_share_max": max(shares),
        "environment": environment(),
    }
    print(result["images_per_s_median"])
    print(f"wrote {write_result('train_batch_size', result)}")


if __name__ == "__main__":
    main()
