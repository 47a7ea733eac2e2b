"""Helpers shared by the benchmark scripts: where the real data lives, slices of it, a meter of
how busy the other processes kept the CPUs, and the JSON result file.

The data is the project's shared folder ``../shared/data`` (relative to the repository root);
it is not part of pictag, so a script exits with a message when it is absent.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch

import pictag
from pictag.run.backend_choice import cpu_name

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
MIML_TAGS = ["desert", "mountain", "sea", "sunset", "trees"]


def dataset_dir(name: str) -> Path:
    """``../shared/data/<name>``; exit with a message when it is not there (as on a user's
    machine), since the benchmarks measure pictag on real images only."""
    path = DATA_ROOT / name
    if not path.is_dir():
        sys.exit(
            f"benchmark data not found: {path} (expected ../shared/data/{name} relative to the "
            "repository root). These benchmarks need the project's shared data folder."
        )
    return path


def cifar_slice(root: Path, dest: Path, per_class: int, split: str = "train") -> Path:
    """A ``dest/<split>/<class>/<image>`` tree of symlinks to the first ``per_class`` images of
    each class of ``root/<split>``; returns ``dest``."""
    for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
        target = dest / split / class_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            link = target / image.name
            if not link.exists():
                link.symlink_to(image.resolve())
    return dest


def miml_rows(root: Path) -> tuple[str, list[list[str]]]:
    """The raw header line (BOM and Chinese first header kept) and the rows of ``train.csv``."""
    text = (root / "train.csv").read_text(encoding="utf-8")  # keep the BOM in the header
    lines = text.splitlines()
    return lines[0], list(csv.reader(lines[1:]))


def miml_slice(root: Path, dest: Path, n_train: int | None, with_test: bool, seed: int) -> Path:
    """A copy of ``train.csv`` (same BOM and header) keeping ``n_train`` random rows whose image is
    in ``train/`` (all of them when None) plus, with ``with_test``, every row whose image is in
    ``test/``; rows without an image are dropped. Returns the new CSV's path."""
    header, rows = miml_rows(root)
    in_train = {p.stem for p in (root / "train").iterdir()}
    in_test = {p.stem for p in (root / "test").iterdir()}
    train_rows = [r for r in rows if r and r[0] in in_train]
    if n_train is not None and n_train < len(train_rows):
        # MIML's ids are grouped by scene, so take a random subset, not the first rows.
        train_rows = random.Random(seed).sample(train_rows, n_train)
    keep = train_rows + ([r for r in rows if r and r[0] in in_test] if with_test else [])
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "train.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(header + "\n")
        csv.writer(handle, lineterminator="\n").writerows(keep)
    return path


def miml_labels(root: Path) -> dict[str, list[int]]:
    """Image id -> the five 0/1 tags, straight from ``train.csv``."""
    _, rows = miml_rows(root)
    return {r[0]: [int(v) for v in r[1:6]] for r in rows if r}


def _busy_jiffies() -> int | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]) - idle


@dataclass
class LoadMeter:
    """Wall time of a block and how much CPU the *other* processes took meanwhile.

    ``others_cpu_share`` is the CPU time of all other processes divided by wall time * CPUs:
    0 means we had the machine to ourselves, 0.5 that others kept half of it busy. Linux only
    (None elsewhere).
    """

    wall_s: float = 0.0
    own_cpu_s: float = 0.0
    others_cpu_share: float | None = None
    _start: dict[str, Any] = field(default_factory=dict, repr=False)

    def __enter__(self) -> LoadMeter:
        times = os.times()
        self._start = {
            "wall": time.perf_counter(),
            "own": times.user + times.system + times.children_user + times.children_system,
            "busy": _busy_jiffies(),
        }
        return self

    def __exit__(self, *exc: object) -> None:
        times = os.times()
        self.wall_s = time.perf_counter() - self._start["wall"]
        own = times.user + times.system + times.children_user + times.children_system
        self.own_cpu_s = own - self._start["own"]
        busy = _busy_jiffies()
        if busy is not None and self._start["busy"] is not None and self.wall_s > 0:
            busy_s = (busy - self._start["busy"]) / os.sysconf("SC_CLK_TCK")
            others = max(0.0, busy_s - self.own_cpu_s)
            self.others_cpu_share = round(others / (self.wall_s * (os.cpu_count() or 1)), 3)

    def to_dict(self) -> dict[str, float | None]:
        return {
            "wall_s": round(self.wall_s, 2),
            "own_cpu_s": round(self.own_cpu_s, 2),
            "others_cpu_share": self.others_cpu_share,
        }


def interleaved_rounds(
    timed: dict[str, Callable[[], float]], rounds: int
) -> tuple[dict[str, list[float]], LoadMeter]:
    """Each of ``timed``'s measurements once as a warm-up, then ``rounds`` rounds of all of
    them, in alternating order (so drift and bursts of load hit them alike), each round
    printed; the values by name, and the load meter of the rounds."""
    for measure in timed.values():  # page cache, sessions, streams
        measure()
    values: dict[str, list[float]] = {name: [] for name in timed}
    with LoadMeter() as meter:
        for index in range(rounds):
            order = list(timed) if index % 2 == 0 else list(timed)[::-1]
            for name in order:
                values[name].append(timed[name]())
            print(", ".join(f"{k} {v[-1]:.1f}" for k, v in values.items()), flush=True)
    return values, meter


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "pictag": pictag.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def with_earlier_sets(name: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``runs`` after the runs of ``results/<name>.json`` whose ``set`` this call did not run,
    so a call on some sets keeps the others' results."""
    earlier = RESULTS / f"{name}.json"
    if not earlier.is_file():
        return runs
    done = {r["set"] for r in runs}
    return [r for r in json.loads(earlier.read_text())["runs"] if r["set"] not in done] + runs


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path
