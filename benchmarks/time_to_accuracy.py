"""Time to accuracy on a CPU: ``pictag train`` with its defaults (the CPU budget), pictag's
linear probe alone, and a plain hand-written reference of the same steps
(``reference_finetune.py``), each scored on test images none of them saw, with wall times.

For each set: ``pictag train CONFIG`` and ``pictag evaluate RUN --split test`` as a user runs
them (wall time of both, and the plan pictag chose: mode, planned epochs, best epoch), the same
with ``train.mode=linear-probe`` (fitted on train, its L2 chosen on val) and with
``train.refit=true`` added (refitted on train+val, as the reference's probe), with an
8-minute budget (``budget8m``: room for part of an epoch where 5 minutes have none), with no
budget and one fine-tune epoch after the probe (does the epoch gain on the probe?), then the
reference on the same split (its probe and fine-tune on train+val, scored on test after the
probe and after each epoch). Writes
``benchmarks/results/time_to_accuracy.json`` with the CPU and how busy other processes kept it.

    .venv/bin/python benchmarks/time_to_accuracy.py [--only miml utkface pets] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import yaml

from bench_utils import REPO, LoadMeter, dataset_dir, environment, write_result
from pictag.config import config_from_dict
from pictag.data.pipeline import prepare_data
from reference_finetune import run_reference

PICTAG = str(REPO / ".venv" / "bin" / "pictag")
SETS = {  # name -> (data folder, config without a train section: pictag's defaults)
    "miml": (
        "miml-scenes",
        {
            "data": {
                "labels": "{data}/train.csv",
                "images": ["{data}/train", "{data}/test"],
                "policy": "skip",
            },
            "heads": {
                "tags": {
                    "kind": "multilabel",
                    "columns": ["desert", "mountain", "sea", "sunset", "trees"],
                },
            },
        },
    ),
    "utkface": (
        "utkface-5k",
        {
            "data": {
                "format": "filename",
                "images": "{data}",
                "pattern": r"(?P<age>\d+)_(?P<gender>\d)_(?P<race>\d)_",
                "policy": "skip",
                "test_fraction": 0.15,
            },
            "heads": {
                "gender": {"rename": {"0": "male", "1": "female"}},
                "race": {"rename": {"0": "White", "1": "Black", "2": "Asian", "3": "Indian"}},
                "age": {"bins": [13, 20, 30, 45, 60]},
            },
        },
    ),
    "pets": (
        "oxford-pets-3",
        {
            "data": {
                "format": "filename",
                "images": "{data}/images",
                "pattern": r"^(?P<breed>[A-Za-z_]+)_\d+\.jpg$",
                "policy": "skip",
                "test_fraction": 0.3,
            },
            "heads": {"breed": {"kind": "multiclass"}},
        },
    ),
}


def write_config(name: str, out: Path) -> Path:
    folder, raw = SETS[name]
    data = str(dataset_dir(folder))
    text = json.dumps(raw).replace("{data}", data.replace("\\", "/"))
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(json.loads(text)))
    return path


def pictag_run(config: Path, run: Path, sets: list[str]) -> dict:
    """``pictag train`` then ``pictag evaluate --split test``: wall times, test metrics, plan."""
    with LoadMeter() as meter:
        start = time.perf_counter()
        command = [PICTAG, "train", str(config), "--out", str(run), "--overwrite"]
        for item in sets:
            command += ["--set", item]
        log = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
        train_s = time.perf_counter() - start
        subprocess.run([PICTAG, "evaluate", str(run), "--split", "test"], cwd=REPO, check=True)
        total_s = time.perf_counter() - start
    report = json.loads((run / "report.json").read_text())
    meta = json.loads((run / "pictag.json").read_text())
    # The run's plan (the budget's epochs, its patience): pictag.json holds the config of the
    # model kept, written before the plan when that is the probe's.
    plan_file = run / "config.resolved.json"
    train_cfg = json.loads(plan_file.read_text() if plan_file.is_file() else "{}").get(
        "config", meta["config"]
    )["train"]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    plan = [line for line in log.stderr.splitlines() if re.search(r"budget|linear probe", line)]
    return {
        "command": " ".join(command),
        "train_s": round(train_s, 1),
        "train_and_evaluate_s": round(total_s, 1),
        "mode": meta["config"]["train"]["mode"],
        "planned_epochs": train_cfg["epochs"],
        "patience": train_cfg.get("patience"),
        "epochs_run": sum(1 for line in history if line["epoch"] > 0),
        "best_epoch": meta.get("epoch"),
        "test": {head: _primary(section) for head, section in report["heads"].items()},
        "n_test": report["n_images"],
        "plan_log": plan,
        "load": meter.to_dict(),
    }


def _primary(section: dict) -> float:
    metrics = section["metrics"]
    return round(metrics.get("mAP", metrics.get("accuracy")), 4)


def reference(config: Path, epochs: int) -> dict:
    """The plain reference on pictag's split of the same config: train+val to fit, test."""
    cfg = config_from_dict(yaml.safe_load(config.read_text()))
    data = prepare_data(cfg, progress=False)
    fit = data.splits["train"] + data.splits.get("val", [])
    test = data.splits["test"]

    def arrays(samples: list) -> tuple[list[Path], dict[str, np.ndarray]]:
        targets = {
            name: np.stack([head.target(s.labels.get(name)) for s in samples])
            for name, head in data.heads.items()
        }
        return [Path(s.path) for s in samples], targets

    multilabel = {name: head.kind == "multilabel" for name, head in data.heads.items()}
    with LoadMeter() as meter:
        result = run_reference(arrays(fit), arrays(test), multilabel, epochs)
    result["load"] = meter.to_dict()
    result["n_fit"], result["n_test"] = len(fit), len(test)
    for step in result["steps"]:
        step["seconds"] = round(step["seconds"], 1)
        step["scores"] = {k: round(v, 4) for k, v in step["scores"].items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="+", choices=sorted(SETS), help="sets to run")
    parser.add_argument("--epochs", type=int, default=2, help="the reference's epochs")
    parser.add_argument("--out", default="/tmp/pictag-tta", help="where the runs go")
    steps = ("default", "budget8m", "probe", "finetune1", "refit", "reference")
    parser.add_argument("--skip", nargs="*", default=[], choices=steps)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = REPO / "benchmarks" / "results" / "time_to_accuracy.json"
    results = json.loads(path.read_text())["sets"] if path.is_file() else {}
    for name in args.only or SETS:
        config = write_config(name, out)
        entry = results.setdefault(name, {})
        if "default" not in args.skip:
            entry["pictag_default"] = pictag_run(config, out / f"{name}-default", [])
        if "budget8m" not in args.skip:  # a user who waits a few minutes more
            entry["pictag_budget_8m"] = pictag_run(
                config, out / f"{name}-budget8m", ["train.budget=8m"]
            )
        if "probe" not in args.skip:
            entry["pictag_linear_probe"] = pictag_run(
                config, out / f"{name}-probe", ["train.mode=linear-probe"]
            )
        if "finetune1" not in args.skip:  # does one fine-tune epoch gain on the probe?
            entry["pictag_probe_then_1_epoch"] = pictag_run(
                config, out / f"{name}-ft1", ["train.budget=off", "train.epochs=1"]
            )
        if "refit" not in args.skip:  # fits on train+val, as the reference's probe does
            entry["pictag_linear_probe_refit"] = pictag_run(
                config, out / f"{name}-refit", ["train.mode=linear-probe", "train.refit=true"]
            )
        if "reference" not in args.skip:
            entry["reference"] = reference(config, args.epochs)
        print(json.dumps({name: entry}, indent=1), flush=True)
        write_result("time_to_accuracy", {"environment": environment(), "sets": results})


if __name__ == "__main__":
    main()
