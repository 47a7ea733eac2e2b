"""The tutorials in ``examples/`` run as a new user runs them: ``pictag train EXAMPLE --out RUN``
then ``pictag evaluate RUN``, timed end to end, with the test-split metrics each reaches, written
to ``benchmarks/results/examples.json`` (with the CPU and how busy other processes kept it).

    .venv/bin/python benchmarks/examples.py [--only mnist cifar10 ...] [--out /tmp/pictag-examples]

Needs ``../shared/data`` (the examples read it by relative path).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench_utils import REPO, LoadMeter, dataset_dir, environment, write_result

EXAMPLES = {  # name -> (YAML or script, the data it reads)
    "mnist": ("examples/mnist.yaml", "mnist-png"),
    "cifar10": ("examples/cifar10.yaml", "cifar10-jpg"),
    "miml-scenes": ("examples/miml-scenes.yaml", "miml-scenes"),
    "utkface": ("examples/utkface.yaml", "utkface-5k"),
    "utkface-gender": ("examples/utkface-gender.yaml", "utkface-5k"),
    "quickstart": ("examples/quickstart.py", "mnist-png"),
}
PICTAG = str(REPO / ".venv" / "bin" / "pictag")


def run_example(name: str, out: Path) -> dict:
    """Train and evaluate one example; its wall times and the test metrics of each head."""
    path, data = EXAMPLES[name]
    dataset_dir(data)
    run = out / name
    with LoadMeter() as meter:
        start = time.perf_counter()
        if path.endswith(".py"):
            command = [sys.executable, path, str(run)]
        else:
            command = [PICTAG, "train", path, "--out", str(run), "--overwrite"]
        subprocess.run(command, cwd=REPO, check=True)
        train_s = time.perf_counter() - start
        if not path.endswith(".py"):  # the script evaluates the run itself
            subprocess.run([PICTAG, "evaluate", str(run)], cwd=REPO, check=True)
        total_s = time.perf_counter() - start
    report = json.loads((run / "report.json").read_text())
    heads = {
        head: {k: v for k, v in section["metrics"].items() if isinstance(v, (int, float))}
        for head, section in report["heads"].items()
    }
    meta = json.loads((run / "pictag.json").read_text())
    return {
        "command": " ".join(command),
        "train_s": round(train_s, 1),
        "train_and_evaluate_s": round(total_s, 1),
        "split": report["split"],
        "n_images": report["n_images"],
        "best_epoch": meta.get("epoch"),
        "heads": heads,
        "binary": {h: s["binary"] for h, s in report["heads"].items() if s.get("binary")},
        "load": meter.to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="+", choices=sorted(EXAMPLES), help="examples to run")
    parser.add_argument("--out", default="/tmp/pictag-examples", help="where the runs go")
    args = parser.parse_args()
    results = {}
    for name in args.only or EXAMPLES:
        results[name] = run_example(name, Path(args.out))
        print(json.dumps({name: results[name]}, indent=1)[:2000], flush=True)
        write_result("examples", {"environment": environment(), "examples": results})


if __name__ == "__main__":
    main()
