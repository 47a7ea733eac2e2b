"""Linear probe vs fine-tuning on MIML scenes (multi-label, 5 tags): test mAP and wall time.

Each ``train.mode`` (``linear-probe``, ``fine-tune``, ``probe-then-fine-tune``) trains
EfficientNet-Lite0 (``pretrained: offline``, 224 px) with pictag's defaults through
``pictag.training.trainer.train`` on the official split given by the folders: ``train/`` (1,400
images; pictag carves its validation set from them) and ``test/`` (100 images, the test split).
The 500 CSV rows without an image are dropped by ``data.policy: skip``. The test mAP is computed
here, independently of pictag's metrics: the saved run is loaded with ``load_run``, each test
image goes through ``decode_image`` + ``eval_transform(run.preprocess)``, then sigmoid, then
scikit-learn's macro ``average_precision_score``. Wall time covers the whole ``train`` call
(data checks, image cache, feature extraction, epochs, validation, checkpoints).

Result (2-core Xeon shared with other jobs, fp32, pictag defaults, 2 epochs, the full official
split: ~1,190 train / ~210 val / 100 test images; 8.5 minutes in all):
    linear-probe          test mAP 0.924   train wall  85 s (others held 49% of the CPUs)
    fine-tune             test mAP 0.936   train wall 274 s (others 34%)
    probe-then-fine-tune  test mAP 0.945   train wall 130 s (others 2%)
With 100 test images a point of mAP is within noise; the wall times depend on the load.

Run from the repository root (CPU-heavy; 6-10 minutes on 2 cores with the defaults):
    python benchmarks/probe_vs_finetune.py
"""

from __future__ import annotations

import argparse
import copy
import csv
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from bench_utils import (
    MIML_TAGS,
    LoadMeter,
    dataset_dir,
    environment,
    miml_labels,
    miml_slice,
    write_result,
)
from pictag.config import Config, config_from_dict, config_to_dict
from pictag.data.pipeline import SPLITS_FILE
from pictag.data.transforms import decode_image, eval_transform
from pictag.run import load_run
from pictag.training.trainer import train

MODES = ("linear-probe", "fine-tune", "probe-then-fine-tune")
# The pictag settings this comparison depends on, recorded with every result.
REPORTED_DEFAULTS = {
    "model": ("backbone", "pretrained", "image_size", "drop_rate"),
    "train": (
        "batch_size", "lr", "backbone_lr_scale", "weight_decay", "optimizer", "schedule",
        "warmup_epochs", "freeze_bn", "augment", "hflip", "channels_last", "amp", "cache",
        "workers",
    ),
    "data": ("val_fraction", "seed", "policy"),
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs")
    parser.add_argument(
        "--limit", type=int, help="random training-folder images to use (default: all 1,400)"
    )
    # fp32 by default, as the stored results were measured; --amp auto gives what the CPU's
    # flags choose (fp32 on CPUs without native bf16).
    parser.add_argument("--amp", default="off", choices=("auto", "off"))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--workdir", help="where runs go (default: a temp dir, then deleted)")
    parser.add_argument("--name", default="probe_vs_finetune", help="result file name")
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace, root: Path, work: Path, mode: str) -> Config:
    """pictag's defaults plus the data, the head, the mode and the epoch count."""
    if args.limit is None:
        labels = root / "train.csv"  # the file as found: BOM, Chinese header, 500 missing images
    else:
        labels = miml_slice(root, work / "miml", args.limit, with_test=True, seed=0)
    raw = {
        "data": {
            "format": "csv",
            "labels": str(labels),
            "images": [str(root / "train"), str(root / "test")],
            "policy": "skip",
        },
        "heads": {"tags": {"kind": "multilabel", "columns": MIML_TAGS}},
        "train": {"mode": mode, "epochs": args.epochs, "amp": args.amp},
    }
    return config_from_dict(raw)


@torch.no_grad()
def test_map(run_dir: Path, labels: dict[str, list[int]], batch_size: int = 32) -> dict[str, Any]:
    """Macro mAP (and per-tag AP) of a saved run on the images its split file puts in test."""
    run = load_run(run_dir)
    run.model.to(memory_format=torch.channels_last)
    head = run.heads["tags"]
    order = [MIML_TAGS.index(name) for name in head.labels]  # CSV column order -> head order
    with (run_dir / SPLITS_FILE).open(encoding="utf-8") as handle:
        paths = [Path(row["image"]) for row in csv.DictReader(handle) if row["split"] == "test"]
    transform = eval_transform(run.preprocess)
    probs = []
    for start in range(0, len(paths), batch_size):
        batch = [
            transform(decode_image(p, run.preprocess)) for p in paths[start : start + batch_size]
        ]
        images = torch.stack(batch).contiguous(memory_format=torch.channels_last)
        probs.append(torch.sigmoid(run.model(images)["tags"]).numpy())
    scores = np.concatenate(probs)
    truth = np.array([[labels[p.stem][i] for i in order] for p in paths])
    per_tag = average_precision_score(truth, scores, average=None)
    return {
        "test_images": len(paths),
        "test_mAP": float(average_precision_score(truth, scores, average="macro")),
        "test_AP": {
            name: round(float(ap), 4) for name, ap in zip(head.labels, per_tag, strict=True)
        },
    }


def run_mode(args: argparse.Namespace, root: Path, work: Path, mode: str) -> dict[str, Any]:
    config = make_config(args, root, work, mode)
    run_dir = work / mode
    print(f"== {mode}", flush=True)
    with LoadMeter() as meter:
        result = train(copy.deepcopy(config), run_dir, progress=False)
    start = time.perf_counter()
    scores = test_map(run_dir, miml_labels(root))
    eval_s = time.perf_counter() - start
    history = [
        {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}
        for record in result.history
    ]
    summary = {
        "mode": mode,
        **scores,
        "val_mAP": result.metrics.get("tags/mAP"),
        "best_epoch": result.best_epoch,
        "train_wall_s": round(meter.wall_s, 1),
        "train_others_cpu_share": meter.others_cpu_share,
        "test_eval_s": round(eval_s, 1),
        "history": history,
    }
    print(
        f"{mode}: test mAP {scores['test_mAP']:.4f}, val mAP {summary['val_mAP']}, "
        f"train wall {meter.wall_s:.1f} s (others' CPU share {meter.others_cpu_share})",
        flush=True,
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = dataset_dir("miml-scenes")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        config = config_to_dict(make_config(args, root, Path(tmp), args.modes[0]))
        for mode in args.modes:
            results.append(run_mode(args, root, Path(tmp), mode))
            path = write_result(args.name, _payload(args, config, results))  # after every mode
    for r in results:
        print(
            f"RESULT {r['mode']}: test mAP {r['test_mAP']:.4f} ({r['test_images']} images), "
            f"train wall {r['train_wall_s']:.1f} s"
        )
    print(f"-> {path}")
    return 0


def _payload(
    args: argparse.Namespace, config: dict[str, Any], results: list[dict[str, Any]]
) -> dict[str, Any]:
    settings = {
        section: {key: config[section][key] for key in keys}
        for section, keys in REPORTED_DEFAULTS.items()
    }
    return {
        "benchmark": "probe_vs_finetune",
        "command": " ".join(["python", "benchmarks/probe_vs_finetune.py", *sys.argv[1:]]),
        "dataset": "miml-scenes (train/ -> train + val, test/ -> test)",
        "epochs": args.epochs,
        "limit": args.limit,
        "settings": settings,
        "results": results,
        "total_wall_s": round(sum(r["train_wall_s"] + r["test_eval_s"] for r in results), 1),
        "environment": environment(),
    }


if __name__ == "__main__":
    raise SystemExit(main())
