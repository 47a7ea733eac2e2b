"""CPU training with glibc's malloc keeping freed memory (``pictag.allocator``) against glibc's
defaults, in fresh processes, in interleaved rounds.

- ``steps``: EfficientNet-Lite0 (random weights, 3 classes) at 224 px, batch 32, fp32,
  channels-last, BatchNorm frozen, AdamW: the images/s and page faults of each training step
  (the first two are warm-up), and the process's peak memory.
- ``train``: ``pictag train`` on oxford-pets-3 (fine-tune, one epoch, no budget): wall time,
  the epoch's training images/s and peak memory; glibc's defaults kept with
  ``PICTAG_KEEP_FREED_MEMORY=0``.

Result: ``results/allocator.json`` and the README. About 8 minutes on 2 cores:
    python benchmarks/allocator.py [--rounds 3] [--train-rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from bench_utils import REPO, LoadMeter, dataset_dir, environment, write_result

STEPS = 10
WARMUP = 2
CHILD = """
import json, resource, sys, time
import timm, torch
from pictag.allocator import keep_freed_memory

kept = sys.argv[1] == "kept" and keep_freed_memory()
torch.manual_seed(0)
model = timm.create_model("tf_efficientnet_lite0", num_classes=3)
model = model.to(memory_format=torch.channels_last).train()
for module in model.modules():
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        module.eval()
optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
images = torch.randn(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)
targets = torch.randint(0, 3, (32,))
steps = []
for _ in range(int(sys.argv[2])):
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(images), targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    steps.append({"images_per_s": round(32 / seconds, 2), "page_faults": faults})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"kept": kept, "steps": steps, "peak_gb": round(peak, 2)}))
"""
DEFAULTS = {"PICTAG_KEEP_FREED_MEMORY": "0"}


def run_child(command: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Stdout of a command, and its own peak memory in GB."""
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, text=True, env=env, cwd=REPO
        )
        out = process.stdout.read() if process.stdout else ""
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            errors.seek(0)
            raise SystemExit(f"{command} failed with {process.returncode}:\n{errors.read()}")
    return out, round(usage.ru_maxrss / 2**20, 2)


def steps_round(mode: str) -> dict:
    """One fresh process's training steps, with freed memory kept (``kept``) or not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)  # no setting of the user's stops keep_freed_memory
    out, _ = run_child([sys.executable, "-c", CHILD, mode, str(STEPS)], env)
    result = json.loads(out)
    timed = result["steps"][WARMUP:]
    result["median_images_per_s"] = statistics.median(s["images_per_s"] for s in timed)
    result["median_page_faults"] = statistics.median(s["page_faults"] for s in timed)
    return result


def pets_config(folder: Path) -> Path:
    """A pictag config for oxford-pets-3 (breed from the file name), written to ``folder``."""
    data = dataset_dir("oxford-pets-3")
    config = {
        "data": {
            "format": "filename",
            "images": str(data / "images"),
            "pattern": r"^(?P<breed>[A-Za-z_]+)_\d+\.jpg$",
            "policy": "skip",
            "test_fraction": 0.3,
        },
        "heads": {"breed": {"kind": "multiclass"}},
    }
    path = folder / "pets.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def train_round(mode: str, config: Path, folder: Path) -> dict:
    """One ``pictag train`` of one epoch, as it runs (``pictag``) or on glibc's defaults."""
    env = dict(os.environ)
    if mode == "glibc_defaults":
        env.update(DEFAULTS)
    out = folder / mode
    overrides = ["train.mode=fine-tune", "train.budget=off", "train.epochs=1"]
    command = [str(REPO / ".venv" / "bin" / "pictag"), "train", str(config), "--out", str(out)]
    command += ["--overwrite", *[a for o in overrides for a in ("--set", o)]]
    with LoadMeter() as meter:
        _, peak = run_child(command, env)
    epoch = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {
        "wall_s": round(meter.wall_s, 1),
        "train_images_per_s": round(epoch["train/images_per_s"], 2),
        "peak_gb": peak,
        "others_cpu_share": meter.others_cpu_share,
    }


def interleaved(
    rounds: int, measure: Callable[[str], dict], modes: tuple[str, str]
) -> dict[str, list[dict]]:
    """``rounds`` measurements of each mode, in alternating order."""
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    for index in range(rounds):
        for mode in modes if index % 2 == 0 else modes[::-1]:
            results[mode].append(measure(mode))
            print(mode, json.dumps(results[mode][-1])[:300], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-rounds", type=int, default=2)
    args = parser.parse_args()
    steps = interleaved(args.rounds, steps_round, ("kept", "default"))
    with tempfile.TemporaryDirectory() as tmp:
        config = pets_config(Path(tmp))
        train = interleaved(
            args.train_rounds,
            lambda mode: train_round(mode, config, Path(tmp)),
            ("pictag", "glibc_defaults"),
        )
    ratios = [
        round(k["median_images_per_s"] / d["median_images_per_s"], 3)
        for k, d in zip(steps["kept"], steps["default"], strict=True)
    ]
    train_ratios = [
        round(d["wall_s"] / p["wall_s"], 3)
        for p, d in zip(train["pictag"], train["glibc_defaults"], strict=True)
    ]
    payload = {
        "environment": environment(),
        "steps": steps,
        "steps_speedup_rounds": ratios,
        "train_pets_one_epoch": train,
        "train_wall_speedup_rounds": train_ratios,
    }
    print(json.dumps({"steps_speedup": ratios, "train_wall_speedup": train_ratios}))
    write_result("allocator", payload)


if __name__ == "__main__":
    main()
