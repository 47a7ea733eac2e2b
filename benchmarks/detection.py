"""Detection with pictag's defaults on the shared box sets: test mAP, wall time and pipeline
efficiency on this CPU.

For each set: ``pictag train`` with nothing but ``heads.objects.kind=detection``,
``data.policy=skip`` and a held-out test split (``data.test_fraction``, split by ``data.seed``;
the test images are never seen in training or tuning), then ``pictag evaluate --split test``.
Pipeline efficiency is the training images/s the run logged (its epochs after the first)
divided by the images/s of a plain forward + loss + backward + AdamW step of the same model
on a batch already in memory (random pixels, one box per image), timed in the same process
right after training.

Sets: ``raccoon`` (Pascal VOC XML, 200 photos, 1 class) and ``pennfudan`` (pedestrians; its
``Annotation/*.txt`` boxes are written to a box CSV first, as a user would convert them).

Usage: ``.venv/bin/python benchmarks/detection.py [--sets raccoon pennfudan] [--budget 5m]``;
results go to ``benchmarks/results/detection.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_utils import LoadMeter, environment, with_earlier_sets, write_result
from pictag.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BOX = re.compile(r"Bounding box for object \d+ .*: \((\d+), (\d+)\) - \((\d+), (\d+)\)")


def pennfudan_csv(out: Path) -> Path:
    """PennFudan's text annotations as a box CSV (its boxes are 1-based inclusive pixels)."""
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for path in sorted((DATA / "pennfudan" / "Annotation").glob("*.txt")):
        text = path.read_text(encoding="latin-1")
        size = re.search(r"Image size \(X x Y x C\) : (\d+) x (\d+)", text)
        image = f"{path.stem}.png"  # found under --images PNGImages/
        for x1, y1, x2, y2 in BOX.findall(text):
            corners = f"{int(x1) - 1},{int(y1) - 1},{x2},{y2}"
            rows.append(f"{image},{size.group(1)},{size.group(2)},person,{corners}")
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def data_args(name: str, tmp: Path) -> list[str]:
    if name == "raccoon":
        return ["--images", str(DATA / "raccoon")]
    labels = pennfudan_csv(tmp / "pennfudan.csv")
    return ["--images", str(DATA / "pennfudan" / "PNGImages"), "--set", f"data.labels={labels}"]


def plain_rate(run: Path, batch: int, steps: int = 6) -> float:
    """Images/s of forward + detection loss + backward + AdamW on an in-memory batch, with
    the memory format and frozen BatchNorm statistics pictag trains with."""
    from pictag.heads import LossOptions, get_kind
    from pictag.heads.boxes import MAX_OBJECTS, PAD
    from pictag.run import load_run
    from pictag.training.optim import freeze_batchnorm

    loaded = load_run(run)
    model = loaded.model.train()
    # As pictag trains a pretrained net: BatchNorm statistics frozen, channels-last memory.
    freeze_batchnorm(model)
    model.to(memory_format=torch.channels_last)
    size = loaded.preprocess.size
    images = torch.randn(batch, 3, *size).contiguous(memory_format=torch.channels_last)
    targets = torch.full((batch, MAX_OBJECTS, 5), PAD)
    targets[:, 0] = torch.tensor([0, 0.2, 0.2, 0.7, 0.8])
    head = loaded.heads["objects"]
    loss_fn = get_kind(head.kind).make_loss(LossOptions(), [1] * head.num_labels)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    rates = []
    for step in range(steps):
        start = time.perf_counter()
        loss = loss_fn(model(images)["objects"], targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:  # the first step warms up
            rates.append(batch / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


def bench(name: str, budget: str, tmp: Path) -> dict:
    run = tmp / name
    args = ["train", *data_args(name, tmp), "--out", str(run), "--budget", budget, "--overwrite"]
    args += ["--set", "heads.objects.kind=detection", "--set", "data.test_fraction=0.2"]
    # raccoon holds byte-identical photos whose boxes differ: the default strict policy stops
    # on them (as it should); skip drops them, as its error message suggests.
    args += ["--set", "data.policy=skip"]
    with LoadMeter() as training:
        assert main(args) == 0, f"training on {name} failed"
    with LoadMeter() as evaluating:
        assert main(["evaluate", str(run), "--split", "test"]) == 0
    report = json.loads((run / "report.json").read_text())
    section = report["heads"]["objects"]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [h["train/images_per_s"] for h in history if "train/images_per_s" in h]
    meta = json.loads((run / "pictag.json").read_text())
    resolved = json.loads((run / "config.resolved.json").read_text())["config"]
    batch = resolved["train"]["batch_size"]
    pictag_rate = sum(rates[1:]) / len(rates[1:]) if len(rates) > 1 else rates[-1]
    plain = plain_rate(run, batch)
    return {
        "set": name,
        "test_images": section["n_images"],
        "test_boxes": section["n_boxes"],
        "map": section["metrics"]["map"],
        "map50": section["metrics"]["map50"],
        "recall": section["metrics"]["recall"],
        "precision": section["metrics"]["precision"],
        "epochs": len(history),
        "train": training.to_dict(),
        "evaluate": evaluating.to_dict(),
        "input_size": meta["preprocess"]["input_size"],
        "train_images_per_s": round(pictag_rate, 2),
        "plain_images_per_s": round(plain, 2),
        "pipeline_efficiency": round(pictag_rate / plain, 3),
    }


def remeasure_plain(runs: Path) -> None:
    """Re-time the plain step of each set's kept run and update its efficiency."""
    path = Path(__file__).parent / "results" / "detection.json"
    results = json.loads(path.read_text())
    for entry in results["runs"]:
        resolved = json.loads((runs / entry["set"] / "config.resolved.json").read_text())
        plain = plain_rate(runs / entry["set"], resolved["config"]["train"]["batch_size"])
        entry["plain_images_per_s"] = round(plain, 2)
        entry["pipeline_efficiency"] = round(entry["train_images_per_s"] / plain, 3)
        print(entry["set"], entry["train_images_per_s"], round(plain, 2))
    results["plain_remeasured"] = environment()
    print(f"wrote {write_result('detection', results)}")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["raccoon", "pennfudan"])
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--runs", type=Path, help="keep the run folders here (default: a temp dir)")
    parser.add_argument(
        "--plain-only",
        action="store_true",
        help="time only the plain step again for the runs kept in --runs, updating the results",
    )
    args = parser.parse_args()
    if args.plain_only:
        return remeasure_plain(args.runs)
    results = {"environment": environment(), "budget": args.budget, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            results["runs"].append(bench(name, args.budget, args.runs or Path(tmp)))
            print(json.dumps(results["runs"][-1], indent=1))
    results["runs"] = with_earlier_sets("detection", results["runs"])
    print(f"wrote {write_result('detection', results)}")


if __name__ == "__main__":
    run()
