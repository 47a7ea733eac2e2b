"""``pictag predict`` as a user runs it: a fresh process, imports and exit included.

Each round times, in alternating order, fresh processes of
- ``floor``: ``python -c "import gc; gc.disable(); import torch, torchvision; gc.freeze()"``,
  what any program on torch and torchvision pays to start and exit, imported and exiting as
  ``pictag`` does (without the collections the imports set off, 0.5-0.8 s, and the last one at
  exit, 1-1.5 s), and
- ``predict`` (one per ``--src``): ``python -m pictag predict RUN_DIR FOLDER --format json``
  with the default backend (``auto``, its choice stored in the run by a first, untimed call),
  run from this checkout or from another source tree (``--src LABEL=PATH``, e.g. a
  ``git worktree`` of an older commit) through ``PYTHONPATH``.
Rounds of seconds, so load from other processes and the machine's drift hit a round's timings
alike; the result gives seconds per round, their medians and each ``predict`` minus the floor.

Result: ``results/predict_fresh*.json`` and the README.

Run from the repository root (about 3 minutes for 6 rounds of 200 images on 2 cores):
    python benchmarks/predict_fresh.py [--run RUN_DIR] [--images 200] [--rounds 6]
        [--src before=/tmp/old/src]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench_utils import LoadMeter, environment
from predict_speed import folder_and_run, speed_args, write_named

SRC = Path(__file__).resolve().parents[1] / "src"
FLOOR = [sys.executable, "-c", "import gc; gc.disable(); import torch, torchvision; gc.freeze()"]


def predict_command(run_dir: Path, folder: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pictag",
        "predict",
        str(run_dir),
        str(folder),
        "--format",
        "json",
    ]


def wall(command: list[str], src: Path | None) -> float:
    """Seconds from starting ``command`` to its exit; a failure stops the benchmark."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args, sources = _arguments(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files, run_dir = folder_and_run(args, work)
        command = predict_command(run_dir, work / "images")
        for src in sources.values():
            wall(command, src)  # stores auto's choice; warms the file cache
        timings = {"floor": partial(wall, FLOOR, None)}
        timings |= {
            f"predict_{label}": partial(wall, command, src) for label, src in sources.items()
        }
        seconds: dict[str, list[float]] = {name: [] for name in timings}
        rounds = []
        for index in range(args.rounds):
            names = list(timings) if index % 2 == 0 else list(timings)[::-1]
            with LoadMeter() as meter:
                for name in names:
                    seconds[name].append(timings[name]())
            rounds.append(meter.to_dict())
            print(
                f"round {index + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items())
            )
    medians = {name: round(statistics.median(v), 2) for name, v in seconds.items()}
    result = {
        "setup": {
            "images": f"first {len(files)} JPEGs of miml-scenes/train",
            "floor": " ".join(FLOOR[1:]),
            "command": "python -m pictag predict RUN_DIR FOLDER --format json",
            "sources": {label: _commit(src) for label, src in sources.items()},
            "rounds": args.rounds,
        },
        "seconds_rounds": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "seconds_median": medians,
        "over_floor_median": {
            name: round(
                statistics.median(a - b for a, b in zip(v, seconds["floor"], strict=True)), 2
            )
            for name, v in seconds.items()
            if name != "floor"
        },
        "load_per_round": rounds,
        "environment": environment(),
    }
    print(f"medians: {medians}; over the floor: {result['over_floor_median']}")
    write_named("predict_fresh", args.images, result)
    return 0


def _commit(src: Path) -> str:
    """``PATH at COMMIT``, with ``+ changes`` when the tree differs from it."""
    git = ["git", "-C", str(src)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return f"{src} at {head.stdout.strip()}" + (" + changes" if dirty.stdout.strip() else "")


def _arguments(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Path]]:
    """The shared predict-benchmark arguments, and the source trees by label (``this`` first)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--src", action="append", default=[], metavar="LABEL=PATH")
    own, rest = parser.parse_known_args(argv)
    sources = {"this": SRC}
    for label, _, path in (value.partition("=") for value in own.src):
        sources[label] = Path(path).resolve()
    return speed_args(__doc__, 6, rest), sources


if __name__ == "__main__":
    raise SystemExit(main())
