"""A binary head's operating point on real faces: recall tuned on validation, precision paid.

Trains examples/utkface-gender.yaml (utkface-5k, head ``gender`` with ``positive: female``,
``threshold_by: recall``, ``threshold_target: 0.9``; a linear probe on the offline Lite0), then
evaluates on the held-out test split. Recall and precision on the validation split are
recomputed here with scikit-learn from the saved validation outputs at the stored threshold,
beside what the test report says, and beside the plain argmax (threshold 0.5).

Run from the repository root:
    .venv/bin/python benchmarks/binary_operating_point.py [--out /tmp/pictag-binary]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_score, recall_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pictag
from bench_utils import dataset_dir, environment, write_result
from pictag.run import read_run_info, read_val_outputs

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "utkface-gender.yaml"


def operating_point(probs: np.ndarray, targets: np.ndarray, positive: int, cut: float) -> dict:
    """Recall and precision of the positive class when it is chosen at ``P >= cut``."""
    known = targets >= 0
    truth = targets[known] == positive
    chosen = probs[known, positive] >= cut
    return {
        "threshold": cut,
        "recall": float(recall_score(truth, chosen)),
        "precision": float(precision_score(truth, chosen, zero_division=0)),
        "n": int(known.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/pictag-binary", help="run folder")
    args = parser.parse_args()
    dataset_dir("utkface-5k")  # exits with a message when ../shared/data is absent
    start = time.perf_counter()
    pictag.train(CONFIG, args.out, overwrite=True, progress=False)
    trained = time.perf_counter() - start
    info = read_run_info(args.out)
    params = info.params["gender"]
    probs, targets = read_val_outputs(args.out)
    positive = params["positive"]
    val = operating_point(probs["gender"], targets["gender"], positive, params["threshold"])
    val_argmax = operating_point(probs["gender"], targets["gender"], positive, 0.5)
    report = pictag.evaluate(args.out, progress=False)
    section = report["heads"]["gender"]
    result = {
        "benchmark": "binary_operating_point",
        "command": "python benchmarks/binary_operating_point.py",
        "config": str(CONFIG.relative_to(CONFIG.parents[1])),
        "positive": info.heads["gender"].labels[positive],
        "threshold_by": "recall",
        "threshold_target": 0.9,
        "tuned_threshold": params["threshold"],
        "val_at_tuned": val,
        "val_at_0.5": val_argmax,
        "test_operating_point": section["binary"]["operating_point"],
        "test_metrics": section["metrics"],
        "test_images": report["n_images"],
        "train_wall_s": round(trained, 1),
        "environment": environment(),
    }
    path = write_result("binary_operating_point_utkface", result)
    print(f"val at the tuned threshold {params['threshold']:.3f}: {val}")
    print(f"val at 0.5: {val_argmax}")
    print(f"test: {section['binary']['operating_point']}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
