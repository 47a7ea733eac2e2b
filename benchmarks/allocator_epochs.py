"""Memory over a multi-epoch ``pictag train`` with glibc keeping freed memory
(``pictag.allocator``) against glibc's defaults, with and without DataLoader worker processes.

Keeping freed memory turns off glibc's trimming and mmap for the whole process, and forked
workers inherit it. This measures whether the heap then grows from epoch to epoch (it must not:
an hour-long run would run out of memory) and what the workers cost: every 0.5 s it reads the
proportional set size (PSS: shared pages split between the processes that share them) of the
training process and of each of its children from ``/proc``, and files each reading under the
epoch that was running (by the lines of ``metrics.jsonl``).

Set: oxford-pets-3 (breed from the file name), fine-tune (no probe), no budget.
Result: ``results/allocator_epochs.json``. About 15 minutes on 2 cores:
    python benchmarks/allocator_epochs.py [--epochs 4] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from allocator import DEFAULTS, pets_config
from bench_utils import REPO, LoadMeter, environment, write_result

MODES = ("pictag", "glibc_defaults")
SAMPLE_S = 0.5


def pss_mb(pid: int) -> float:
    """The proportional set size of one process in MB (0 once it has gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (DataLoader workers, their helpers)."""
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = Path(f"/proc/{parent}/task").iterdir()
            kids = [int(k) for t in tasks for k in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        found += kids
        stack += kids
    return found


def epochs_done(metrics: Path) -> int:
    """Fine-tune epochs finished so far (the lines of ``metrics.jsonl``)."""
    try:
        return len(metrics.read_text().splitlines())
    except FileNotFoundError:
        return 0


def train_round(mode: str, workers: int, epochs: int, config: Path, folder: Path) -> dict:
    """One ``pictag train``: the peak PSS of the main process and of all processes, per epoch."""
    env = dict(os.environ)
    if mode == "glibc_defaults":
        env.update(DEFAULTS)
    out = folder / f"{mode}-{workers}"
    overrides = ["train.mode=fine-tune", "train.budget=off", f"train.epochs={epochs}"]
    overrides.append(f"train.workers={workers}")
    command = [str(REPO / ".venv" / "bin" / "pictag"), "train", str(config), "--out", str(out)]
    command += ["--overwrite", *[a for o in overrides for a in ("--set", o)]]
    peaks: dict[int, dict[str, float]] = {}
    with LoadMeter() as meter, tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        while process.poll() is None:
            epoch = epochs_done(out / "metrics.jsonl") + 1
            main = pss_mb(process.pid)
            total = main + sum(pss_mb(child) for child in children(process.pid))
            peak = peaks.setdefault(epoch, {"main_mb": 0.0, "all_mb": 0.0})
            peak["main_mb"] = max(peak["main_mb"], round(main))
            peak["all_mb"] = max(peak["all_mb"], round(total))
            time.sleep(SAMPLE_S)
        if process.returncode:
            errors.seek(0)
            raise SystemExit(f"{command} failed with {process.returncode}:\n{errors.read()}")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    speeds = [round(json.loads(line)["train/images_per_s"], 2) for line in lines]
    return {
        "mode": mode,
        "workers": workers,
        "wall_s": round(meter.wall_s, 1),
        "train_images_per_s": speeds,
        # the last entry is what follows training: thresholds, the test split, the report
        "peak_pss_by_epoch": {e if e <= epochs else "after": p for e, p in sorted(peaks.items())},
        "others_cpu_share": meter.others_cpu_share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        config = pets_config(Path(tmp))
        for index, workers in enumerate(args.workers):
            for mode in MODES if index % 2 == 0 else MODES[::-1]:
                runs.append(train_round(mode, workers, args.epochs, config, Path(tmp)))
                print(json.dumps(runs[-1]), flush=True)
    write_result("allocator_epochs", {"environment": environment(), "runs": runs})


if __name__ == "__main__":
    main()
