"""Semantic segmentation with pictag's defaults on the shared mask sets: test mIoU, per-class
IoU, wall time and pipeline efficiency on this CPU.

For each set: ``pictag train`` with one segmentation head reading the set's mask folder (and
its value table, as a user would write it), ``data.policy=skip`` and a held-out test split
(``data.test_fraction``, split by ``data.seed``; the test images are never seen in training or
tuning), then ``pictag evaluate --split test``. Pipeline efficiency is the training images/s the
run logged (its fine-tune epochs after the first) divided by the images/s of a plain forward +
loss + backward + AdamW step of the same model on a batch already in memory, timed in the same
process right after training.

Sets: ``oxford-pets-3`` (trimaps: 1 pet, 2 background, 3 the unclassified border, ignored) and
``pennfudan`` (instance masks, 0 background and one id per pedestrian, read as one class).

Usage: ``.venv/bin/python benchmarks/segmentation.py [--sets oxford-pets-3 pennfudan]
[--budget 5m]``; results go to ``benchmarks/results/segmentation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_utils import LoadMeter, environment, with_earlier_sets, write_result
from pictag.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HEAD = "mask"
SETS = {
    "oxford-pets-3": (
        DATA / "oxford-pets-3" / "images",
        DATA / "oxford-pets-3" / "annotations" / "trimaps",
        "{1: pet, 2: background, 3: ignore}",
    ),
    "pennfudan": (
        DATA / "pennfudan" / "PNGImages",
        DATA / "pennfudan" / "PedMasks",
        "{0: background, 1-255: person}",
    ),
}


def plain_rate(run: Path, batch: int, steps: int = 6) -> float:
    """Images/s of forward + segmentation loss + backward + AdamW on an in-memory batch, with
    the memory format and frozen BatchNorm statistics pictag trains with."""
    from pictag.heads import LossOptions, get_kind
    from pictag.run import load_run
    from pictag.training.optim import freeze_batchnorm

    loaded = load_run(run)
    model = loaded.model.train()
    freeze_batchnorm(model)
    model.to(memory_format=torch.channels_last)
    size = loaded.preprocess.size
    images = torch.randn(batch, 3, *size).contiguous(memory_format=torch.channels_last)
    head = loaded.heads[HEAD]
    targets = torch.randint(0, head.num_labels, (batch, *size), dtype=torch.uint8)
    loss_fn = get_kind(head.kind).make_loss(LossOptions(), [1] * head.num_labels)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    rates = []
    for step in range(steps):
        start = time.perf_counter()
        loss = loss_fn(model(images)[HEAD], targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:  # the first step warms up
            rates.append(batch / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


def bench(name: str, budget: str, tmp: Path) -> dict:
    images, masks, values = SETS[name]
    run = tmp / name
    args = ["train", "--images", str(images), "--out", str(run), "--budget", budget]
    args += ["--overwrite", "--set", "data.test_fraction=0.2", "--set", "data.policy=skip"]
    args += ["--set", f"heads.{HEAD}.kind=segmentation", "--set", f"heads.{HEAD}.masks={masks}"]
    args += ["--set", f"heads.{HEAD}.mask_values={values}"]
    with LoadMeter() as training:
        assert main(args) == 0, f"training on {name} failed"
    with LoadMeter() as evaluating:
        assert main(["evaluate", str(run), "--split", "test"]) == 0
    section = json.loads((run / "report.json").read_text())["heads"][HEAD]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [h["train/images_per_s"] for h in history if "train/images_per_s" in h]
    meta = json.loads((run / "pictag.json").read_text())
    resolved = json.loads((run / "config.resolved.json").read_text())["config"]
    batch = resolved["train"]["batch_size"]
    pictag_rate = sum(rates[1:]) / len(rates[1:]) if len(rates) > 1 else (rates or [None])[-1]
    plain = plain_rate(run, batch)
    return {
        "set": name,
        "test_images": section["n"],
        "miou": section["metrics"]["miou"],
        "dice": section["metrics"]["dice"],
        "pixel_accuracy": section["metrics"]["pixel_accuracy"],
        "iou_per_class": {row["label"]: row["iou"] for row in section["per_label"]},
        "epochs_logged": len(history),
        "fine_tune_epochs": len(rates),
        "train": training.to_dict(),
        "evaluate": evaluating.to_dict(),
        "input_size": meta["preprocess"]["input_size"],
        "train_images_per_s": None if pictag_rate is None else round(pictag_rate, 2),
        "plain_images_per_s": round(plain, 2),
        "pipeline_efficiency": None if pictag_rate is None else round(pictag_rate / plain, 3),
    }


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--runs", type=Path, help="keep the run folders here (default: a temp dir)")
    args = parser.parse_args()
    results = {"environment": environment(), "budget": args.budget, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            results["runs"].append(bench(name, args.budget, args.runs or Path(tmp)))
            print(json.dumps(results["runs"][-1], indent=1))
    results["runs"] = with_earlier_sets("segmentation", results["runs"])
    print(f"wrote {write_result('segmentation', results)}")


if __name__ == "__main__":
    run()
