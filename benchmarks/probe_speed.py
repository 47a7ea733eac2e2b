"""The linear probe's two costs on runs that cached their features (``RUN/features/``), each
measured both ways in interleaved rounds:

- ``l2_path``: choosing each head's L2 strength on the cached train/val features with the path
  stopped once the validation loss has risen twice (``PATH_PATIENCE``, the default) against
  the full grid of 8; seconds and the strengths chosen (plain cross-entropy / BCE losses);
- ``features``: the run's exported backbone (``backbone_HxW.onnx``) in ONNX Runtime on random
  batches of ``--batch`` images: one call at a time on the whole thread budget against
  ``OnnxFeatures.concurrent`` (two batches in flight, a session each), images/s.

Result: ``results/probe_speed.json`` and the README. About 3 minutes for three runs:
    python benchmarks/probe_speed.py RUN [RUN ...] [--rounds 2] [--batch 32]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnxruntime
import safetensors.torch
import torch
from torch import nn

from bench_utils import LoadMeter, environment, write_result
from pictag.models.onnx_features import _session
from pictag.training import probe_fit
from pictag.training.probe_fit import WEIGHT_DECAYS

IMAGES = 256


def _loss(target: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if target.dtype.is_floating_point:
        return nn.functional.binary_cross_entropy_with_logits
    return lambda logits, t: nn.functional.cross_entropy(logits, t, ignore_index=-1)


def _classes(target: torch.Tensor) -> int:
    return target.shape[1] if target.dtype.is_floating_point else int(target.max()) + 1


def l2_path(run: Path, patience: int) -> dict:
    """Seconds to choose every head's strength, and the choices, with this path patience."""
    train = safetensors.torch.load_file(str(run / "features" / "train.safetensors"))
    val = safetensors.torch.load_file(str(run / "features" / "val.safetensors"))
    x, v = train.pop("features"), val.pop("features")
    torch.manual_seed(0)
    heads = {name: nn.Linear(x.shape[1], _classes(t)) for name, t in train.items()}
    losses = {name: _loss(t) for name, t in train.items()}
    start = time.perf_counter()
    chosen = probe_fit.choose_weight_decays(heads, (x, train), (v, val), losses, patience=patience)
    return {"seconds": round(time.perf_counter() - start, 2), "chosen": chosen}


def features(run: Path, batch: int, streams: bool) -> float:
    """Images/s of the run's exported backbone, one call at a time or two in flight."""
    path = next((run / "features").glob("backbone_*.onnx"))
    extract = _session(onnxruntime, path)
    assert extract is not None, path
    call, count = extract.concurrent() if streams else (extract, 1)
    images = torch.randn(batch, *extract.expected)
    call(images)  # the first call of a session pays for its memory
    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(call, [images] * (IMAGES // batch)))
    return round(IMAGES // batch * batch / (time.perf_counter() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="train.batch_size's default")
    args = parser.parse_args()
    results = {}
    with LoadMeter() as meter:
        for run in args.runs:
            entry: dict = {"full": [], "stopped": [], "one_call": [], "streams": []}
            for index in range(args.rounds):
                order = ("full", "stopped") if index % 2 == 0 else ("stopped", "full")
                for name in order:
                    patience = probe_fit.PATH_PATIENCE if name == "stopped" else len(WEIGHT_DECAYS)
                    entry[name].append(l2_path(run, patience))
                for name in ("one_call", "streams") if index % 2 == 0 else ("streams", "one_call"):
                    entry[name].append(features(run, args.batch, name == "streams"))
            print(run, entry, flush=True)
            results[str(run)] = entry
    write_result(
        "probe_speed",
        {
            "environment": environment(),
            "batch": args.batch,
            "path_patience": probe_fit.PATH_PATIENCE,
            "runs": results,
            "load": meter.to_dict(),
        },
    )


if __name__ == "__main__":
    main()
